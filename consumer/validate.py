"""Pure checks of a decoded SendRequest.

``Validator.problems(request)`` returns every reason a decoded request cannot be sent (empty
when it can); the reasons go into the REJECTED result's message. Limits below are the API's
where it documents them and the service's own otherwise (documented in the README).
"""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Any

from .models import BatchKey, SendRequest

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


def _recipient_problems(index: int, recipient: dict[str, Any], phone: bool, seen: set[str] | None, out: list[str]) -> None:
    """``seen``: the addresses of the request's earlier recipients (None when it has one)."""
    to = recipient["to"]
    if phone:
        if not PHONE.fullmatch(to):
            out.append(f"recipients[{index}].to is not a phone number (6-15 digits, optional +)")
    elif not to or len(to) > MAX_ADDRESS_CHARS:
        out.append(f"recipients[{index}].to must be 1-{MAX_ADDRESS_CHARS} characters")
    if seen is not None:
        if to in seen:
            out.append(f"recipients[{index}].to repeats an earlier recipient of this request")
        seen.add(to)
    params = recipient["template_params"]
    if len(params) > MAX_PARAMS:
        out.append(f"recipients[{index}].template_params has {len(params)} entries (max {MAX_PARAMS})")
    for key, value in params.items():
        if len(key) > MAX_PARAM_KEY_CHARS or len(value) > MAX_PARAM_VALUE_CHARS:
            out.append(f"recipients[{index}].template_params[{key[:32]!r}] is too long (key {MAX_PARAM_KEY_CHARS}, value {MAX_PARAM_VALUE_CHARS} characters max)")
            break
    payload = recipient["payload"]
    if payload and (len(payload) > MAX_PAYLOADS or any(len(p) > MAX_PARAM_VALUE_CHARS for p in payload)):
        out.append(f"recipients[{index}].payload: at most {MAX_PAYLOADS} entries of {MAX_PARAM_VALUE_CHARS} characters")


def key_problems(key: BatchKey, accounts: Container[str]) -> list[str]:
    """Every reason the request-level fields cannot be sent, in field order."""
    out: list[str] = []
    if key.account not in accounts:
        out.append(f"account {key.account!r} is not configured")
    channel = key.channel_type
    if channel not in CHANNELS:
        out.append(f"channel_type must be one of {', '.join(sorted(CHANNELS))}")
    if not (key.template_code or key.template_name):
        out.append("template_code or template_name is required")
    if not key.language:
        out.append("language is required")
    sender = key.from_number
    if channel in PHONE_CHANNELS and not PHONE.fullmatch(sender):
        out.append("from_number is not a phone number (6-15 digits, optional +)")
    elif not sender:
        out.append("from_number is required")
    if key.fallback_rule is not None and key.fallback_rule not in FALLBACK_RULES:
        out.append("fallback_rule must be undelivered or sentFailed")
    duration = key.fallback_duration_s
    if duration is not None and not FALLBACK_DURATION_S[0] <= duration <= FALLBACK_DURATION_S[1]:
        out.append(f"fallback_duration_s must be between {FALLBACK_DURATION_S[0]} and {FALLBACK_DURATION_S[1]} (got {duration})")
    if key.label is not None and key.label not in VIBER_LABELS:
        out.append("label must be pormotion or transaction")
    if key.ttl_s is not None and key.ttl_s < MIN_TTL_S:
        out.append(f"ttl_s must be at least {MIN_TTL_S}")
    return out


class Validator:
    """``problems`` of decoded requests; the request-level part is worked out once per BatchKey
    (requests of one key share it) and remembered for up to ``max_keys`` keys."""

    def __init__(self, accounts: Container[str], max_keys: int = 10_000):
        self._accounts = accounts
        self._max_keys = max_keys
        self._key_problems: dict[BatchKey, list[str]] = {}

    def problems(self, request: SendRequest) -> list[str]:
        """Every reason this request cannot be sent, in field order; [] when it is valid."""
        out: list[str] = []
        request_id = request.request_id
        if not request_id or len(request_id) > MAX_ID_CHARS:
            out.append(f"request_id must be 1-{MAX_ID_CHARS} characters")
        key = request.key
        known = self._key_problems.get(key)
        if known is None:
            if len(self._key_problems) >= self._max_keys:
                self._key_problems.clear()
            known = self._key_problems[key] = key_problems(key, self._accounts)
        out.extend(known)
        phone = key.channel_type in PHONE_CHANNELS
        recipients = request.recipients
        if len(recipients) == 1:  # the usual request: nothing to repeat
            _recipient_problems(0, recipients[0], phone, None, out)
            return out
        if not 1 <= len(recipients) <= MAX_RECIPIENTS:
            out.append(f"recipients must hold 1-{MAX_RECIPIENTS} entries (got {len(recipients)})")
            return out
        seen: set[str] = set()
        for index, recipient in enumerate(recipients):
            _recipient_problems(index, recipient, phone, seen, out)
            if len(out) >= 10:
                out.append("...")
                break
        return out
