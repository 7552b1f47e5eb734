"""The fingerprint of a request: a hash of what it asks for (its account, batch key fields and
recipients), kept in the ledger so that a request id reused for other content is told apart from
a copy of the request (``admission.py``).

The content hashed is the JSON of ``[key fields, recipients]`` with every object's keys sorted, as
``json.dumps(..., sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)`` writes
it, hashed with BLAKE2b (16 bytes, hex): the order of a map's entries (template parameters, flow
data) does not count, the order of a list's items (recipients, payload, products) does. The
values are stored in the Redis ledger and compared with the ones other instances, and earlier
versions, wrote: the bytes hashed must never change (decision 0020 says how they are made cheaply).
"""

from __future__ import annotations

import functools
import hashlib
import json

from .models import BatchKey, Recipient, SendRequest

_CONTENT = json.encoder.c_make_encoder(None, str, json.encoder.encode_basestring, None, ":", ",", True, False, True)  # type: ignore[attr-defined]
"""``json.dumps(..., sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)``'s
own C encoder, made once: ``json.dumps`` with these options builds a ``JSONEncoder`` and its C
encoder on every call, twice the time of the encoding itself (the output is the same, byte for
byte: fingerprints stored by earlier versions still match)."""


@functools.lru_cache(maxsize=1024)
def _key_content(key: BatchKey) -> str:
    """The JSON of a batch key's fields (requests of one key share it: made once)."""
    return "".join(_CONTENT(key, 0))


def _recipients_content(recipients: list[Recipient]) -> str:
    """The JSON of the recipients. A recipient as decoded with an address and at most one
    template parameter, nothing else (the usual one), is written here, in the encoder's sorted
    key order with its own string escaping; any other goes through the encoder."""
    parts: list[str] = []
    for recipient in recipients:
        get = recipient.get
        params, to = get("template_params"), get("to")
        if (len(recipient) == 6 and type(to) is str and type(params) is dict and len(params) <= 1 and get("recipient_type", _ABSENT) is None
                and get("payload") == [] and get("product_action", _ABSENT) is None and get("flow_action", _ABSENT) is None):  # fmt: skip
            if not params:
                parts.append(_USUAL_RECIPIENT + '{},"to":' + _STRING(to) + "}")
                continue
            ((name, value),) = params.items()
            if type(name) is str and type(value) is str:
                parts.append(_USUAL_RECIPIENT + "{" + _STRING(name) + ":" + _STRING(value) + '},"to":' + _STRING(to) + "}")
                continue
        parts.append("".join(_CONTENT(recipient, 0)))
    return "[" + ",".join(parts) + "]"


_STRING = json.encoder.encode_basestring  # the C function the encoder escapes strings with (ensure_ascii=False)
_ABSENT = object()
_USUAL_RECIPIENT = '{"flow_action":null,"payload":[],"product_action":null,"recipient_type":null,"template_params":'


def fingerprint(request: SendRequest) -> str:
    """The request's fingerprint, worked out once a request (its claim, in-flight and done marks
    all carry it) and kept on it."""
    if request.fingerprint is None:
        content = "[" + _key_content(request.key) + "," + _recipients_content(request.recipients) + "]"
        request.fingerprint = hashlib.blake2b(content.encode(), digest_size=16).hexdigest()
    return request.fingerprint
