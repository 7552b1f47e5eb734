"""A SendRequest written as JSON, as ``produce`` takes it: pure checks before it is encoded.

``strict_record`` refuses a field the schema does not have (naming the one meant: ``expire_at``
→ ``expires_at``), anywhere in the record (recipients, product and flow actions), and turns
``expires_at`` written as ISO-8601 (``2026-12-07T10:00:00Z``, with its offset) into epoch
milliseconds. Every problem is one ``BadJson`` line naming the field and the fix.
"""

from __future__ import annotations

import difflib
from datetime import datetime
from typing import Any

from .codec import REQUEST_SCHEMA_JSON

SECONDS_BEFORE = 100_000_000_000
"""An ``expires_at`` below this (the year 1973 in milliseconds) is taken for seconds: refused."""


class BadJson(Exception):
    """A JSON record that is not a SendRequest as written; the message names the field and the fix."""


def _record_of(kind: Any) -> dict[str, Any] | None:
    """The record schema ``kind`` holds: itself, an array's or map's items, a union's member."""
    if isinstance(kind, list):
        return next((r for member in kind if (r := _record_of(member)) is not None), None)
    if isinstance(kind, dict):
        if kind.get("type") == "record":
            return kind
        if kind.get("type") in ("array", "map"):
            return _record_of(kind.get("items", kind.get("values")))
    return None


def _check_fields(value: Any, schema: dict[str, Any], where: str) -> None:
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_fields(item, schema, f"{where}[{index}]")
        return
    if not isinstance(value, dict):
        return
    fields = {field["name"]: field for field in schema["fields"]}
    for name, item in value.items():
        path = f"{where}.{name}" if where else name
        field = fields.get(name)
        if field is None:
            near = difflib.get_close_matches(name, list(fields), n=1)
            fix = f"did you mean {near[0]!r}?" if near else f"the fields are {', '.join(fields)}"
            raise BadJson(f"unknown field {path!r}: {fix} (docs/schemas.md)")
        inner = _record_of(field["type"])
        if inner is not None and item is not None:
            _check_fields(item, inner, path)


def expires_at_ms(value: Any) -> Any:
    """``expires_at`` as the schema takes it: epoch milliseconds, from an ISO-8601 time with an offset."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        except ValueError:
            raise BadJson(f"expires_at {value!r} is not an ISO-8601 time: give e.g. 2026-12-07T10:00:00Z or epoch milliseconds") from None
        if moment.tzinfo is None:
            raise BadJson(f"expires_at {value!r} has no UTC offset: add Z or one such as +08:00")
        return int(moment.timestamp() * 1000)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < SECONDS_BEFORE:
        raise BadJson(f"expires_at {value} looks like seconds: give milliseconds ({value * 1000})")
    return value


def strict_record(record: Any) -> dict[str, Any]:
    """``record`` checked field by field against the request schema, ``expires_at`` in milliseconds."""
    if not isinstance(record, dict):
        raise BadJson(f"a line must be a JSON object (one SendRequest), got {type(record).__name__}")
    _check_fields(record, REQUEST_SCHEMA_JSON, "")
    if record.get("expires_at") is not None:
        record = {**record, "expires_at": expires_at_ms(record["expires_at"])}
    return record
