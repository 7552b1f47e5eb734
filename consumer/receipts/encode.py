"""``SendStatus`` records (schemas/send_status.avsc) as the status topic's values: plain Avro
binary, or the Confluent wire format (schema registered under ``<status topic>-value`` on first
use) when a Schema Registry is configured, as results are.

Written by hand like results (``codec.ResultEncoder``): a record costs a few string encodings,
about a twentieth of fastavro's schemaless writer with its logical types (tests compare the
bytes with fastavro's). The field order is the schema's: a check at import fails if it moves.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

from fastavro import parse_schema

from ..codec import _long, _optional_string, _string, load_schema  # the Avro primitives results are written with
from ..request_reader import _long as _read_long
from ..request_reader import _optional
from ..request_reader import _string as _read_string

STATUS_SCHEMA_JSON = load_schema("send_status")
STATUS_SCHEMA = parse_schema(STATUS_SCHEMA_JSON)
_HEADER = struct.Struct(">bI")
_OPTIONAL = ("error_code", "error_description", "message_id", "task_id", "group_message_id", "template_code", "conversation_type", "conversation_id")
_FIELDS = ["request_id", "to", "status", *_OPTIONAL, "occurred_at", "received_at"]
_STATUS_INDEX = {symbol: i for i, symbol in enumerate(STATUS_SCHEMA_JSON["fields"][2]["type"]["symbols"])}
if [f["name"] for f in STATUS_SCHEMA_JSON["fields"]] != _FIELDS:
    raise RuntimeError("send_status.avsc fields changed: update consumer/receipts/encode.py")


def encode_status(record: dict[str, Any]) -> bytes:
    """The Avro binary of a ``SendStatus`` record (``parse.status_record``)."""
    occurred = record["occurred_at"]
    return b"".join(
        (
            _optional_string(record["request_id"]),
            _string(record["to"]),
            _long(_STATUS_INDEX[record["status"]]),
            *(_optional_string(record[name]) for name in _OPTIONAL),
            b"\x00" if occurred is None else b"\x02" + _long(occurred),
            _long(record["received_at"]),
        )
    )


_SYMBOLS = STATUS_SCHEMA_JSON["fields"][2]["type"]["symbols"]


def status_identity(value: bytes, offset: int = 0) -> tuple[str | None, str, str]:
    """(message_id, to, status) of a ``SendStatus`` value written by ``encode_status`` (its Avro
    binary from ``offset``: 5 past a wire-format header); what a receipt's ``seen_key`` is made of.
    Reads only the fields up to ``message_id``."""
    pos = offset
    _, pos = _optional(value, pos, _read_string)  # request_id
    to, pos = _read_string(value, pos)
    status, pos = _read_long(value, pos)
    _, pos = _optional(value, pos, _read_string)  # error_code
    _, pos = _optional(value, pos, _read_string)  # error_description
    message_id, _ = _optional(value, pos, _read_string)
    return message_id, to, _SYMBOLS[status]


class StatusEncoder:
    """``register(subject, schema JSON) -> id`` when values use the wire format, else None."""

    def __init__(self, subject: str, register: Callable[[str, str], int] | None = None):
        self._subject = subject
        self._register = register
        self._header: bytes | None = None if register else b""

    @property
    def header_bytes(self) -> int:
        """Bytes before the Avro binary in a value: 5 with a registry, else 0."""
        return 0 if self._register is None else _HEADER.size

    def encode(self, record: dict[str, Any]) -> bytes:
        if self._header is None:
            assert self._register is not None
            self._header = _HEADER.pack(0, self._register(self._subject, json.dumps(STATUS_SCHEMA_JSON)))
        return self._header + encode_status(record)
