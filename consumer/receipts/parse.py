"""CAMS's receipt push (``ChatAppStatus``, HTTP batch mode) read into ``Receipt`` values, and a
receipt joined to its request made into a ``SendStatus`` record. Pure: no I/O, no clock.

A push is a UTF-8 JSON array of report objects (docs: /work/shared/reference/ChatAppStatus.md).
``parse_push`` takes the whole body: a body that is no JSON array (or a lone report object, taken
as an array of one) is ``Malformed``; inside the array each report stands alone, so one that lacks
``MessageId`` or ``To`` (or is no object) is listed as a problem while the others go on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from ..validate import canonical

STATUSES = {
    "sent": "SENT",
    "delivered": "DELIVERED",
    "read": "READ",
    "failed": "FAILED",
    "deleted": "DELETED",
    "subscribe": "SUBSCRIBED",
    "unsubscribe": "UNSUBSCRIBED",
}
"""CAMS's ``Status`` (any case) -> the ``SendStatus`` enum symbol; anything else is UNKNOWN."""
UNKNOWN = "UNKNOWN"
MAX_FIELD_CHARS = 1024
"""A string field longer than this is cut to it (an error description, say)."""


class Malformed(Exception):
    """A push body that is not a receipts array: ``reason`` is a short word for the metric label."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Receipt(NamedTuple):
    """One report of a push, its fields as CAMS named them, strings cut to ``MAX_FIELD_CHARS``."""

    message_id: str
    to: str
    status: str
    """The ``SendStatus`` symbol (``STATUSES``; UNKNOWN for a status not listed)."""
    task_id: str | None
    timestamp_ms: int | None
    error_code: str | None
    error_description: str | None
    template_code: str | None
    conversation_type: str | None
    conversation_id: str | None

    @property
    def number(self) -> str:
        """The recipient as the join keeps it (``validate.canonical``: no leading +)."""
        return canonical(self.to, phone=True)

    @property
    def seen_key(self) -> str:
        """What a repeat of this report has in common with it: the message, its recipient and
        the status (a message's Delivered and its Read are two statuses, both published)."""
        return seen_key(self.message_id, self.to, self.status)


def seen_key(message_id: str, to: str, status: str) -> str:
    """``Receipt.seen_key`` of its parts (``to`` as the report wrote it)."""
    return f"{message_id}\x1f{canonical(to, phone=True)}\x1f{status}"


class Match(NamedTuple):
    """What the join knows of a recipient of an accepted call."""

    request_id: str
    correlation_id: bytes | None
    sent_at_ms: int | None
    group_message_id: str | None


def _text(value: Any) -> str | None:
    if type(value) is str:  # the usual case first
        return value[:MAX_FIELD_CHARS] or None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError
    text = str(value)
    return text[:MAX_FIELD_CHARS] if text else None


def _timestamp(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError
    stamp = int(value)  # a number, or digits in a string; ValueError otherwise
    if not 0 <= stamp < 1 << 62:
        raise ValueError
    return stamp


def receipt(report: Any) -> Receipt:
    """One report object as a ``Receipt``; ValueError (with what is wrong) when it cannot be one."""
    if not isinstance(report, dict):
        raise ValueError("not an object")
    try:
        message_id, to = _text(report.get("MessageId")), _text(report.get("To"))
        status = _text(report.get("Status"))
        task_id = _text(report.get("TaskId"))
        timestamp = _timestamp(report.get("Timestamp"))
        rest = [_text(report.get(name)) for name in ("ErrorCode", "ErrorDescription", "TemplateCode", "ConversationType", "ConversationId")]
    except (TypeError, ValueError, OverflowError):
        raise ValueError("a field has the wrong type") from None
    if not message_id or not to:
        raise ValueError("no MessageId or To")
    symbol = STATUSES.get(status.lower(), UNKNOWN) if status else UNKNOWN
    return Receipt(message_id, to, symbol, task_id, timestamp, *rest)


def parse_push(body: bytes) -> tuple[list[Receipt], list[str]]:
    """The receipts of a push body, in its order, and what was wrong with each report that could
    not be read (one line each); ``Malformed`` when the body is no receipts array."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Malformed("not-json", str(exc)[:200]) from None
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list):
        raise Malformed("not-an-array", type(document).__name__)
    receipts: list[Receipt] = []
    problems: list[str] = []
    for index, report in enumerate(document):
        try:
            receipts.append(receipt(report))
        except ValueError as exc:
            problems.append(f"report {index}: {exc}")
    return receipts, problems


def status_record(item: Receipt, match: Match | None, received_at_ms: int) -> dict[str, Any]:
    """The ``SendStatus`` record (schemas/send_status.avsc) of a receipt and what the join found."""
    return {
        "request_id": match.request_id if match else None,
        "to": item.to,
        "status": item.status,
        "error_code": item.error_code,
        "error_description": item.error_description,
        "message_id": item.message_id,
        "task_id": item.task_id,
        "group_message_id": match.group_message_id if match else None,
        "template_code": item.template_code,
        "conversation_type": item.conversation_type,
        "conversation_id": item.conversation_id,
        "occurred_at": item.timestamp_ms,
        "received_at": received_at_ms,
    }


def seconds_since_send(item: Receipt, match: Match | None) -> float | None:
    """From the call's acceptance to the receipt's status (None when either is unknown or the
    receipt says it came first: clocks apart)."""
    if match is None or match.sent_at_ms is None or item.timestamp_ms is None or item.timestamp_ms < match.sent_at_ms:
        return None
    return (item.timestamp_ms - match.sent_at_ms) / 1000
