"""What a SendChatappMassMessage call's result means for the batch: the error taxonomy.

``classify(http_status, code, retry_after_s=None)`` applies the first matching rule:

=====  ===========================================================  ===============
order  rule                                                         outcome
=====  ===========================================================  ===============
1      Code == "OK" and HTTP 2xx                                    OK
2      x-acs-retry-after > 0 (any status, any code but OK)          THROTTLED
3      HTTP status in the status table: 429                         THROTTLED
       413, 414 (the request itself is too large: split it)         INVALID_REQUEST
       408                                                          TRANSIENT
4      Code in the exact table:
       System.LimitControl                                          THROTTLED
       ServiceUnavailable, InternalError, ServiceTimeout,
       SignatureNonceUsed (a retry gets a new nonce),
       Chatapp.Timeout, Chatapp.ConnectionError, Chatapp.BadResponse TRANSIENT
       Ram.PermissionDeny, Product.Unsubscript,
       Unknown.ResourceOwnerId, SignatureDoesNotMatch,
       IncompleteSignature, MissingSecurityToken,
       MissingAccessKeyId                                           PERMANENT
5      Code starts with a prefix in the prefix table (first wins):
       Throttling                                                   THROTTLED
       InternalError., ServiceUnavailable.                          TRANSIENT
       InvalidAccessKeyId, InvalidSecurityToken, InvalidTimeStamp,
       InvalidAction, InvalidVersion, Forbidden, Ram., NoPermission PERMANENT
       Missing (MissingParameter...), InvalidParam (InvalidParameter...),
       Invalid., Parameter., IllegalParam                           INVALID_REQUEST
6      no HTTP response (status None) or HTTP 5xx                   TRANSIENT
7      anything else: unknown 4xx, HTTP 2xx/3xx with Code != "OK"   PERMANENT
=====  ===========================================================  ===============

THROTTLED: wait (retry_after_s when given) and resend the same batch. TRANSIENT: resend later.
PERMANENT: no resend helps (auth, subscription, template, ...): every request in the batch fails.
INVALID_REQUEST: the whole batch was rejected because of its content, so the service may split
the batch to find the offending request.

``Chatapp.*`` are the client's own codes for calls that got no usable answer (``CODE_*``).
"""

from __future__ import annotations

import enum


class Outcome(str, enum.Enum):
    OK = "OK"
    THROTTLED = "THROTTLED"
    TRANSIENT = "TRANSIENT"
    PERMANENT = "PERMANENT"
    INVALID_REQUEST = "INVALID_REQUEST"


CODE_OK = "OK"
CODE_TIMEOUT = "Chatapp.Timeout"
CODE_CONNECTION_ERROR = "Chatapp.ConnectionError"
CODE_BAD_RESPONSE = "Chatapp.BadResponse"

_STATUSES: dict[int, Outcome] = {
    429: Outcome.THROTTLED,
    413: Outcome.INVALID_REQUEST,
    414: Outcome.INVALID_REQUEST,
    408: Outcome.TRANSIENT,
}

_CODES: dict[str, Outcome] = {
    "System.LimitControl": Outcome.THROTTLED,
    "ServiceUnavailable": Outcome.TRANSIENT,
    "InternalError": Outcome.TRANSIENT,
    "ServiceTimeout": Outcome.TRANSIENT,
    "SignatureNonceUsed": Outcome.TRANSIENT,
    CODE_TIMEOUT: Outcome.TRANSIENT,
    CODE_CONNECTION_ERROR: Outcome.TRANSIENT,
    CODE_BAD_RESPONSE: Outcome.TRANSIENT,
    "Ram.PermissionDeny": Outcome.PERMANENT,
    "Product.Unsubscript": Outcome.PERMANENT,
    "Unknown.ResourceOwnerId": Outcome.PERMANENT,
    "SignatureDoesNotMatch": Outcome.PERMANENT,
    "IncompleteSignature": Outcome.PERMANENT,
    "MissingSecurityToken": Outcome.PERMANENT,
    "MissingAccessKeyId": Outcome.PERMANENT,
}

_PREFIXES: tuple[tuple[str, Outcome], ...] = (
    ("Throttling", Outcome.THROTTLED),
    ("InternalError.", Outcome.TRANSIENT),
    ("ServiceUnavailable.", Outcome.TRANSIENT),
    ("InvalidAccessKeyId", Outcome.PERMANENT),
    ("InvalidSecurityToken", Outcome.PERMANENT),
    ("InvalidTimeStamp", Outcome.PERMANENT),
    ("InvalidAction", Outcome.PERMANENT),
    ("InvalidVersion", Outcome.PERMANENT),
    ("Forbidden", Outcome.PERMANENT),
    ("Ram.", Outcome.PERMANENT),
    ("NoPermission", Outcome.PERMANENT),
    ("Missing", Outcome.INVALID_REQUEST),
    ("InvalidParam", Outcome.INVALID_REQUEST),
    ("Invalid.", Outcome.INVALID_REQUEST),
    ("Parameter.", Outcome.INVALID_REQUEST),
    ("IllegalParam", Outcome.INVALID_REQUEST),
)
"""Checked in order after the exact table (so MissingSecurityToken stays PERMANENT): first match wins."""


def _by_code(code: str) -> Outcome | None:
    outcome = _CODES.get(code)
    if outcome is not None:
        return outcome
    return next((outcome for prefix, outcome in _PREFIXES if code.startswith(prefix)), None)


def classify(http_status: int | None, code: str | None, *, retry_after_s: float | None = None) -> Outcome:
    """The outcome of one call, from its HTTP status (None: no response), Code and x-acs-retry-after."""
    if code == CODE_OK and http_status is not None and 200 <= http_status < 300:
        return Outcome.OK
    if retry_after_s is not None and retry_after_s > 0:
        return Outcome.THROTTLED
    outcome = _STATUSES.get(http_status) if http_status else None
    if outcome is None and code:
        outcome = _by_code(code)
    if outcome is not None:
        return outcome
    if http_status is None or http_status >= 500:
        return Outcome.TRANSIENT
    return Outcome.PERMANENT
