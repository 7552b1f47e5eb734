"""Sample SendRequest records: the demo's traffic, the ``chatapp-devkit produce-samples`` command's, the tests'
and the benchmark's. Numbers come from a fictitious range; nothing here reaches a phone."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

TEMPLATES = ("order_shipped", "otp_login", "payment_due", "welcome", "promo_autumn")
LANGUAGES = ("en", "es")
FROM_NUMBER = "8613800000000"


def request_record(
    request_id: str,
    template: str,
    language: str,
    numbers: Sequence[str],
    account: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "request_id": request_id,
        "account": account,
        "channel_type": "whatsapp",
        "template_code": template,
        "template_name": None,
        "language": language,
        "from_number": FROM_NUMBER,
        "fallback_id": None,
        "fallback_content": None,
        "fallback_rule": None,
        "fallback_duration_s": None,
        "task_id": None,
        "cust_space_id": None,
        "label": None,
        "tag": None,
        "ttl_s": None,
        "expires_at": None,
        "recipients": [
            {"to": n, "recipient_type": None, "template_params": {"name": f"Customer {n[-4:]}"}, "payload": [], "product_action": None, "flow_action": None}
            for n in numbers
        ],
    }
    record.update(fields)
    return record


def phone(i: int) -> str:
    return f"86139{i:08d}"


def sample_records(
    count: int,
    templates: Sequence[str] = TEMPLATES,
    languages: Sequence[str] = LANGUAGES,
    prefix: str = "req",
    start: int = 0,
) -> Iterator[dict[str, Any]]:
    """``count`` single-recipient requests spread round-robin over templates × languages."""
    pairs = [(t, lang) for t in templates for lang in languages]
    for i in range(start, start + count):
        template, language = pairs[i % len(pairs)]
        yield request_record(f"{prefix}-{i}", template, language, [phone(i)])
