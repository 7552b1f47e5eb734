"""Gateway checks of the local CAMS endpoint: ACS3-HMAC-SHA256 verification, clock skew, nonces, STS.

Verification rebuilds the canonical request with ``consumer.cams.signing`` (the code the client
signs with) from the decoded query and the headers named in ``SignedHeaders``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from chatapp_devkit.local_cams.errors import ApiError, message_for
from consumer.cams.signing import (
    EMPTY_BODY_SHA256,
    canonical_request,
    parse_authorization,
    signature,
)

ACTION = "SendChatappMassMessage"
VERSION = "2020-06-06"
MAX_CLOCK_SKEW_S = 15 * 60
# headers every request must sign; STS adds x-acs-security-token
REQUIRED_SIGNED = ("host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256")


@dataclass(frozen=True, slots=True)
class Account:
    """An AccessKey pair the endpoint knows; ``security_token`` set means STS credentials."""

    secret: str
    security_token: str | None = None


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """One API request as received: decoded query, lower-case header names, raw body."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who sent a request that passed verification, and its nonce (checked by ``NonceCache``)."""

    access_key_id: str
    nonce: str


def claimed_access_key_id(headers: Mapping[str, str]) -> str:
    """The AccessKeyId an Authorization header names, or "" when there is none (for the record)."""
    try:
        return parse_authorization(headers.get("authorization", "")).access_key_id
    except ValueError:
        return ""


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise ApiError(400, f"MissingParameter.{name}", f"{name} is mandatory for this action.")
    return value


def _check_date(value: str, now: float) -> None:
    try:
        sent = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "InvalidTimeStamp.Format") from None
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)
    if abs(sent.timestamp() - now) > MAX_CLOCK_SKEW_S:
        raise ApiError(400, "InvalidTimeStamp.Expired", f"x-acs-date {value} is more than 15 minutes off.")


def authenticate(request: SignedRequest, accounts: Mapping[str, Account], now: float) -> Credentials:
    """Verify action, version, signature, date and STS token; raise ``ApiError`` like the gateway."""
    headers = request.headers
    if _header(headers, "x-acs-action") != ACTION:
        raise ApiError(400, "InvalidAction.NotFound")
    if _header(headers, "x-acs-version") != VERSION:
        raise ApiError(400, "InvalidVersion")
    try:
        auth = parse_authorization(headers.get("authorization", ""))
    except ValueError as exc:
        raise ApiError(400, "IncompleteSignature", f"{message_for('IncompleteSignature')} {exc}") from None
    account = accounts.get(auth.access_key_id)
    if account is None:
        raise ApiError(403, "InvalidAccessKeyId.NotFound")
    if account.security_token and "x-acs-security-token" not in headers:
        raise ApiError(403, "MissingSecurityToken")
    required = REQUIRED_SIGNED + (("x-acs-security-token",) if account.security_token else ())
    unsigned = [name for name in required if name not in auth.signed_headers]
    absent = [name for name in auth.signed_headers if name not in headers]
    if unsigned or absent:
        detail = f"unsigned: {unsigned}" if unsigned else f"signed but missing: {absent}"
        raise ApiError(400, "IncompleteSignature", f"The request signature is incomplete ({detail}).")
    body_sha256 = hashlib.sha256(request.body).hexdigest() if request.body else EMPTY_BODY_SHA256
    if headers["x-acs-content-sha256"] != body_sha256:
        raise ApiError(400, "SignatureDoesNotMatch", "x-acs-content-sha256 does not match the request body.")
    canonical = canonical_request(request.method, request.path, request.query, headers, auth.signed_headers, body_sha256)
    if not hmac.compare_digest(signature(account.secret, canonical), auth.signature):
        raise ApiError(400, "SignatureDoesNotMatch")
    _check_date(headers["x-acs-date"], now)
    if account.security_token and headers["x-acs-security-token"] != account.security_token:
        raise ApiError(403, "InvalidSecurityToken.MismatchWithAccessKey")
    return Credentials(auth.access_key_id, headers["x-acs-signature-nonce"])


class NonceCache:
    """(AccessKeyId, nonce) pairs seen in the last ``ttl_s`` seconds; not thread-safe (callers lock).

    A request is accepted while its date is within 15 minutes either way, so a nonce must be
    remembered for twice that to stop every replay.
    """

    def __init__(self, ttl_s: float = 2 * MAX_CLOCK_SKEW_S) -> None:
        self._ttl_s = ttl_s
        self._seen: set[tuple[str, str]] = set()
        self._order: deque[tuple[float, tuple[str, str]]] = deque()

    def claim(self, credentials: Credentials, now: float) -> bool:
        """Remember the nonce; False when it was already used."""
        while self._order and now - self._order[0][0] > self._ttl_s:
            self._seen.discard(self._order.popleft()[1])
        key = (credentials.access_key_id, credentials.nonce)
        if key in self._seen:
            return False
        self._seen.add(key)
        self._order.append((now, key))
        return True
