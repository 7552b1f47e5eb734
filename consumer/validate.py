"""Pure checks of a decoded SendRequest.

``Validator.problems(request)`` returns every reason a decoded request cannot be sent (empty
when it can); the reasons go into the REJECTED result's message. Limits below are the API's
where it documents them and the service's own otherwise (documented in the README's schema
reference). Every field a producer sends is bounded, and a message echoes at most
``SHOWN_CHARS`` characters of any value, so a REJECTED result stays short whatever it answers.
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
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Control characters (C0, DEL, C1) and Unicode bidirectional controls: refused in ids and addresses."""
MAX_REQUEST_BYTES = 1_048_576
MAX_RECIPIENTS = 1000
MAX_ID_CHARS = 128
MAX_TEMPLATE_NAME_CHARS = 512
MAX_LANGUAGE_CHARS = 35
MAX_ADDRESS_CHARS = 64
MAX_TEXT_CHARS = 1024
MAX_PARAMS = 100
MAX_PARAM_KEY_CHARS = 128
MAX_PARAM_VALUE_CHARS = MAX_TEXT_CHARS
MAX_PAYLOADS = 10
MAX_SECTIONS = 10
MAX_PRODUCTS = 30
FALLBACK_DURATION_S = (60, 43_200)
TTL_S = (30, 1_209_600)
SHOWN_CHARS = 64
MAX_LISTED = 10
"""Problems listed before the recipients' list ends with "..."."""


def canonical(address: str, phone: bool) -> str:
    """The address compared for repeats: on phone channels the number without a leading +."""
    return address[1:] if phone and address[:1] == "+" else address


def shown(value: str) -> str:
    """How a message echoes ``value``: its repr, cut to ``SHOWN_CHARS`` characters (… marks a cut)."""
    text = repr(value[:SHOWN_CHARS])
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def _text_problem(value: str, limit: int, identifier: bool = True) -> str | None:
    """What is wrong with a string field's size or (for ids and addresses) its characters."""
    if len(value) > limit:
        return f"is {len(value)} characters (max {limit})"
    if identifier and UNSAFE.search(value):
        return "holds a control or bidirectional character"
    return None


def _map_problem(mapping: dict[str, str]) -> str | None:
    """What is wrong with a string map (template parameters, flow data), from its name on."""
    if len(mapping) > MAX_PARAMS:
        return f" has {len(mapping)} entries (max {MAX_PARAMS})"
    for key, value in mapping.items():
        if len(key) > MAX_PARAM_KEY_CHARS or len(value) > MAX_PARAM_VALUE_CHARS:
            return f"[{shown(key)}] is too long (key {MAX_PARAM_KEY_CHARS}, value {MAX_PARAM_VALUE_CHARS} characters max)"
    return None


def _product_problem(action: dict[str, Any]) -> str | None:
    sections = action["sections"]
    items = [item["product_retailer_id"] for section in sections for item in section["product_items"]]
    texts = [action["thumbnail_product_retailer_id"] or "", *(section["title"] for section in sections), *items]
    if len(sections) > MAX_SECTIONS or len(items) > MAX_PRODUCTS or any(_text_problem(t, MAX_ID_CHARS) for t in texts):
        return f"at most {MAX_SECTIONS} sections and {MAX_PRODUCTS} products, titles and ids of {MAX_ID_CHARS} characters"
    return None


def _flow_problem(action: dict[str, Any]) -> str | None:
    token = action["flow_token"]
    if token is not None and (problem := _text_problem(token, MAX_TEXT_CHARS)):
        return f"flow_token {problem}"
    problem = _map_problem(action["flow_action_data"])
    return None if problem is None else "flow_action_data" + problem


def _recipient_problems(index: int, recipient: dict[str, Any], phone: bool, seen: set[str] | None, out: list[str]) -> None:
    """``seen``: the canonical addresses of the request's earlier recipients (None when it has one)."""
    to = recipient["to"]
    if phone:
        if not PHONE.fullmatch(to):
            out.append(f"recipients[{index}].to is not a phone number (6-15 digits, optional +)")
    elif not to or len(to) > MAX_ADDRESS_CHARS:
        out.append(f"recipients[{index}].to must be 1-{MAX_ADDRESS_CHARS} characters")
    elif UNSAFE.search(to):
        out.append(f"recipients[{index}].to holds a control or bidirectional character")
    if seen is not None:
        address = canonical(to, phone)
        if address in seen:
            out.append(f"recipients[{index}].to repeats an earlier recipient of this request")
        seen.add(address)
    kind = recipient["recipient_type"]
    if kind is not None and (problem := _text_problem(kind, MAX_ID_CHARS)):
        out.append(f"recipients[{index}].recipient_type {problem}")
    params = recipient["template_params"]
    if params and (problem := _map_problem(params)):
        out.append(f"recipients[{index}].template_params{problem}")
    payload = recipient["payload"]
    if payload and (len(payload) > MAX_PAYLOADS or any(len(p) > MAX_TEXT_CHARS for p in payload)):
        out.append(f"recipients[{index}].payload: at most {MAX_PAYLOADS} entries of {MAX_TEXT_CHARS} characters")
    product = recipient["product_action"]
    if product is not None and (problem := _product_problem(product)):
        out.append(f"recipients[{index}].product_action: {problem}")
    flow = recipient["flow_action"]
    if flow is not None and (problem := _flow_problem(flow)):
        out.append(f"recipients[{index}].flow_action.{problem}")


def _text_ok(out: list[str], name: str, value: str | None, limit: int, identifier: bool = True) -> bool:
    """Append the problem of an optional string field's size or characters; True when it has none."""
    problem = None if value is None else _text_problem(value, limit, identifier)
    if problem is not None:
        out.append(f"{name} {problem}")
    return problem is None


def _within(out: list[str], name: str, value: int | None, bounds: tuple[int, int]) -> None:
    """Append the problem of an optional int field outside ``bounds`` (inclusive)."""
    if value is not None and not bounds[0] <= value <= bounds[1]:
        out.append(f"{name} must be between {bounds[0]} and {bounds[1]} (got {value})")


def key_problems(key: BatchKey, accounts: Container[str]) -> list[str]:
    """Every reason the request-level fields cannot be sent, in field order."""
    out: list[str] = []
    if _text_ok(out, "account", key.account, MAX_ID_CHARS) and key.account not in accounts:
        out.append(f"account {shown(key.account)} is not configured")
    channel = key.channel_type
    if channel not in CHANNELS:
        out.append(f"channel_type must be one of {', '.join(sorted(CHANNELS))}")
    code_ok = _text_ok(out, "template_code", key.template_code, MAX_ID_CHARS)
    if _text_ok(out, "template_name", key.template_name, MAX_TEMPLATE_NAME_CHARS) and code_ok and not (key.template_code or key.template_name):
        out.append("template_code or template_name is required")
    if _text_ok(out, "language", key.language, MAX_LANGUAGE_CHARS) and not key.language:
        out.append("language is required")
    sender = key.from_number
    if channel in PHONE_CHANNELS:
        if not PHONE.fullmatch(sender):
            out.append("from_number is not a phone number (6-15 digits, optional +)")
    elif _text_ok(out, "from_number", sender, MAX_ADDRESS_CHARS) and not sender:
        out.append("from_number is required")
    _text_ok(out, "fallback_id", key.fallback_id, MAX_ID_CHARS)
    _text_ok(out, "fallback_content", key.fallback_content, MAX_TEXT_CHARS, identifier=False)
    if key.fallback_rule is not None and key.fallback_rule not in FALLBACK_RULES:
        out.append("fallback_rule must be undelivered or sentFailed")
    _within(out, "fallback_duration_s", key.fallback_duration_s, FALLBACK_DURATION_S)
    _text_ok(out, "task_id", key.task_id, MAX_ID_CHARS)
    _text_ok(out, "cust_space_id", key.cust_space_id, MAX_ID_CHARS)
    if key.label is not None and key.label not in VIBER_LABELS:
        out.append("label must be pormotion or transaction")
    _text_ok(out, "tag", key.tag, MAX_ID_CHARS)
    _within(out, "ttl_s", key.ttl_s, TTL_S)
    return out


class Validator:
    """``problems`` of decoded requests; the request-level part is worked out once per BatchKey
    (requests of one key share it) and remembered, for valid keys only (whose fields are bounded),
    for up to ``max_keys`` keys."""

    def __init__(self, accounts: Container[str], max_keys: int = 1024):
        self._accounts = accounts
        self._max_keys = max_keys
        self._valid_keys: set[BatchKey] = set()

    def problems(self, request: SendRequest) -> list[str]:
        """Every reason this request cannot be sent, in field order; [] when it is valid."""
        out: list[str] = []
        if request.size_bytes > MAX_REQUEST_BYTES:
            out.append(f"the request is {request.size_bytes} bytes (max {MAX_REQUEST_BYTES})")
        request_id = request.request_id
        if not request_id or len(request_id) > MAX_ID_CHARS:
            out.append(f"request_id must be 1-{MAX_ID_CHARS} characters")
        elif UNSAFE.search(request_id):
            out.append("request_id holds a control or bidirectional character")
        key = request.key
        if key not in self._valid_keys:
            known = key_problems(key, self._accounts)
            if known:
                out.extend(known)
            else:
                if len(self._valid_keys) >= self._max_keys:
                    self._valid_keys.clear()
                self._valid_keys.add(key)
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
            if len(out) >= MAX_LISTED:
                out.append("...")
                break
        return out
