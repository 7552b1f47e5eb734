"""``SendStatus`` records (schemas/send_status.avsc) as the status topic's values: plain Avro
binary, or the Confluent wire format (schema registered under ``<status topic>-value`` on first
use) when a Schema Registry is configured, as results are."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from typing import Any

from fastavro import parse_schema, schemaless_writer

from ..codec import load_schema

STATUS_SCHEMA_JSON = load_schema("send_status")
STATUS_SCHEMA = parse_schema(STATUS_SCHEMA_JSON)
_HEADER = struct.Struct(">bI")


class StatusEncoder:
    """``register(subject, schema JSON) -> id`` when values use the wire format, else None."""

    def __init__(self, subject: str, register: Callable[[str, str], int] | None = None):
        self._subject = subject
        self._register = register
        self._header: bytes | None = None if register else b""

    def encode(self, record: dict[str, Any]) -> bytes:
        if self._header is None:
            assert self._register is not None
            self._header = _HEADER.pack(0, self._register(self._subject, json.dumps(STATUS_SCHEMA_JSON)))
        out = io.BytesIO()
        out.write(self._header)
        schemaless_writer(out, STATUS_SCHEMA, record)
        return out.getvalue()
