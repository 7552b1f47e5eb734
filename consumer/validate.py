"""Pure checks of a decoded SendRequest record, and its conversion to a ``SendRequest``.

``problems(record, accounts)`` returns every reason the request cannot be sent (empty when it
can); the reasons go into the REJECTED result's message. Limits below are the API's where it
documents them and the service's own otherwise (documented in the README).
"""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Any

from .models import BatchKey, SendRequest, Source

CHANNELS = frozenset({"whatsapp", "messenger", "instagram", "viber"})
PHONE_CHANNELS = frozenset({"whatsapp", "viber"})
FALLBACK_RULES = frozenset({"undelivered", "sentFailed"})
VIBER_LABELS = frozenset({"pormotion", "transaction"})
PHONE = re.compile(r"\+?[1-9][0-9]{5,14}")
MAX_RECIPIENTS = 1000
MAX_ID_CHARS = 128
MAX_ADDRESS_CHARS = 64
MAX_PARAMS = 100
MAX_PARAM_KEY_CHARS = 128
MAX_PARAM_VALUE_CHARS = 1024
MAX_PAYLOADS = 10
FALLBACK_DURATION_S = (60, 43_200)
MIN_TTL_S = 30


def _recipient_problems(index: int, recipient: dict[str, Any], phone: bool, seen: set[str]) -> list[str]:
    out: list[str] = []
    to = recipient["to"]
    where = f"recipients[{index}]"
    if phone and not PHONE.fullmatch(to):
        out.append(f"{where}.to is not a phone number (6-15 digits, optional +)")
    elif not to or len(to) > MAX_ADDRESS_CHARS:
        out.append(f"{where}.to must be 1-{MAX_ADDRESS_CHARS} characters")
    if to in seen:
        out.append(f"{where}.to repeats an earlier recipient of this request")
    seen.add(to)
    params = recipient["template_params"]
    if len(params) > MAX_PARAMS:
        out.append(f"{where}.template_params has {len(params)} entries (max {MAX_PARAMS})")
    for key, value in params.items():
        if len(key) > MAX_PARAM_KEY_CHARS or len(value) > MAX_PARAM_VALUE_CHARS:
            out.append(f"{where}.template_params[{key[:32]!r}] is too long (key {MAX_PARAM_KEY_CHARS}, value {MAX_PARAM_VALUE_CHARS} characters max)")
            break
    payload = recipient["payload"]
    if len(payload) > MAX_PAYLOADS or any(len(p) > MAX_PARAM_VALUE_CHARS for p in payload):
        out.append(f"{where}.payload: at most {MAX_PAYLOADS} entries of {MAX_PARAM_VALUE_CHARS} characters")
    return out


def problems(record: dict[str, Any], accounts: Container[str]) -> list[str]:
    """Every reason this record cannot be sent, in field order; [] when it is valid."""
    out: list[str] = []
    request_id = record["request_id"]
    if not request_id or len(request_id) > MAX_ID_CHARS:
        out.append(f"request_id must be 1-{MAX_ID_CHARS} characters")
    account = record["account"] or "default"
    if account not in accounts:
        out.append(f"account {account!r} is not configured")
    channel = record["channel_type"]
    if channel not in CHANNELS:
        out.append(f"channel_type must be one of {', '.join(sorted(CHANNELS))}")
    if not (record["template_code"] or record["template_name"]):
        out.append("template_code or template_name is required")
    if not record["language"]:
        out.append("language is required")
    sender = record["from_number"]
    if channel in PHONE_CHANNELS and not PHONE.fullmatch(sender):
        out.append("from_number is not a phone number (6-15 digits, optional +)")
    elif not sender:
        out.append("from_number is required")
    if record["fallback_rule"] is not None and record["fallback_rule"] not in FALLBACK_RULES:
        out.append("fallback_rule must be undelivered or sentFailed")
    duration = record["fallback_duration_s"]
    if duration is not None and not FALLBACK_DURATION_S[0] <= duration <= FALLBACK_DURATION_S[1]:
        out.append(f"fallback_duration_s must be between {FALLBACK_DURATION_S[0]} and {FALLBACK_DURATION_S[1]} (got {duration})")
    if record["label"] is not None and record["label"] not in VIBER_LABELS:
        out.append("label must be pormotion or transaction")
    if record["ttl_s"] is not None and record["ttl_s"] < MIN_TTL_S:
        out.append(f"ttl_s must be at least {MIN_TTL_S}")
    recipients = record["recipients"]
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        out.append(f"recipients must hold 1-{MAX_RECIPIENTS} entries (got {len(recipients)})")
    else:
        seen: set[str] = set()
        phone = channel in PHONE_CHANNELS
        for index, recipient in enumerate(recipients):
            out.extend(_recipient_problems(index, recipient, phone, seen))
            if len(out) >= 10:
                out.append("...")
                break
    return out


def to_request(record: dict[str, Any], source: Source) -> SendRequest:
    """The pipeline's view of a valid record: its batching key, recipients and deadline."""
    key = BatchKey(
        record["account"] or "default",
        record["channel_type"],
        record["template_code"],
        record["template_name"],
        record["language"],
        record["from_number"],
        record["fallback_id"],
        record["fallback_content"],
        record["fallback_rule"],
        record["fallback_duration_s"],
        record["task_id"],
        record["cust_space_id"],
        record["label"],
        record["tag"],
        record["ttl_s"],
    )
    expires = record["expires_at"]
    expires_ms = None if expires is None else int(expires.timestamp() * 1000) if hasattr(expires, "timestamp") else int(expires)
    return SendRequest(record["request_id"], key, record["recipients"], expires_ms, source)
