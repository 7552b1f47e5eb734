"""Avro ``SendRequest`` bytes → ``models.SendRequest``: the hot path's reader, written for this schema.

fastavro decodes a record generically into dicts (about 11 µs for a one-recipient request on the
benchmark machine, as long as a bare consumer spends on a message in all). This reader knows
the schema's layout and does two things fastavro cannot:

- **The request-level fields are read once per batch key.** After ``request_id`` come the 15
  fields that make the ``BatchKey`` (``account`` … ``ttl_s``), in ``BatchKey``'s order. Requests of
  one key carry the same bytes there, so the reader keeps the bytes of every header it has read
  with the ``BatchKey`` they make, filed under their first ``PREFIX_BYTES`` bytes, and recognises
  a known header by looking its first bytes up and comparing the few headers filed there (no
  copy of the value). Avro's binary encoding is self-delimiting, so bytes equal to a known
  header are that header.
- **Recipients are read straight into the dicts fastavro would build** (same keys, same values).

Everything else is left to fastavro: ``read`` returns None for a recipient with a product or
flow action, a negative (byte-counted) block count, and any bytes it does not understand (a
truncated value, bad UTF-8, an unknown union branch, trailing bytes). The codec then decodes
that value with fastavro, which has the last word on malformed input and raises ``DecodeError``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, overload

from .models import NO_SOURCE, BatchKey, Recipient, SendRequest

MAX_HEADERS = 1024
"""Distinct headers remembered; when full, the cache starts again (a workload of unique keys
only pays the header's parse, about what fastavro costs)."""
PREFIX_BYTES = 15
"""Headers are filed under this many first bytes: none is shorter (15 fields of a byte at least)."""
MAX_FILED = 8
"""Headers filed under one prefix; past it the oldest one makes room (a producer sending many
keys that begin alike cannot make a lookup compare more than this many)."""
MAX_HEADER_BYTES = 16_384
"""Longer headers are not remembered (no valid one is: ``validate`` bounds every field), so the
cache holds at most ``MAX_HEADERS`` × this many bytes whatever producers send."""


class _Unhandled(Exception):
    """Bytes this reader leaves to fastavro."""


def _long(data: bytes, pos: int) -> tuple[int, int]:
    """Avro ``long``/``int`` at ``pos``: zig-zag over a little-endian base-128 varint of at most
    64 bits (ten bytes, the last 0 or 1); longer ones are left to fastavro, which wraps them."""
    byte = data[pos]
    pos += 1
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos
    n = byte & 0x7F
    shift = 7
    while True:
        byte = data[pos]
        pos += 1
        if shift == 63 and byte > 1:  # bits past the 64th: fastavro keeps the low 64 of them
            raise _Unhandled
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (n >> 1) ^ -(n & 1), pos
        shift += 7


def _string(data: bytes, pos: int) -> tuple[str, int]:
    byte = data[pos]
    if byte < 0x80 and not byte & 1:  # lengths under 64: one byte
        end = pos + 1 + (byte >> 1)
        pos += 1
    else:
        size, pos = _long(data, pos)
        if size < 0:
            raise _Unhandled
        end = pos + size
    if end > len(data):
        raise _Unhandled
    return data[pos:end].decode(), end


def _optional(data: bytes, pos: int, read: Any) -> tuple[Any, int]:
    """A ``["null", T]`` union."""
    branch = data[pos]
    if branch == 0:
        return None, pos + 1
    if branch == 2:
        return read(data, pos + 1)
    raise _Unhandled


def _block_count(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]
    if byte < 0x80 and not byte & 1:  # under 64 items: one byte (the usual case)
        return byte >> 1, pos + 1
    count, pos = _long(data, pos)
    if count < 0:  # followed by the block's size in bytes: rare, fastavro reads it
        raise _Unhandled
    return count, pos


def _string_map(data: bytes, pos: int) -> tuple[dict[str, str], int]:
    out: dict[str, str] = {}
    count, pos = _block_count(data, pos)
    while count:
        for _ in range(count):
            key, pos = _string(data, pos)
            out[key], pos = _string(data, pos)
        if data[pos]:
            count, pos = _block_count(data, pos)
        else:  # the usual end: one block
            return out, pos + 1
    return out, pos


def _string_array(data: bytes, pos: int) -> tuple[list[str], int]:
    out: list[str] = []
    count, pos = _block_count(data, pos)
    while count:
        for _ in range(count):
            item, pos = _string(data, pos)
            out.append(item)
        count, pos = _block_count(data, pos)
    return out, pos


def _recipients(data: bytes, pos: int) -> tuple[list[Recipient], int]:
    out: list[Recipient] = []
    count, pos = _block_count(data, pos)
    while count:
        for _ in range(count):  # a zero byte is null, an empty map or array: the usual values, inlined
            to, pos = _string(data, pos)
            if data[pos]:
                recipient_type, pos = _optional(data, pos, _string)
            else:
                recipient_type, pos = None, pos + 1
            if data[pos]:
                params, pos = _string_map(data, pos)
            else:
                params, pos = {}, pos + 1
            if data[pos]:
                payload, pos = _string_array(data, pos)
            else:
                payload, pos = [], pos + 1
            if data[pos] or data[pos + 1]:  # a product or a flow action
                raise _Unhandled
            pos += 2
            out.append({"to": to, "recipient_type": recipient_type, "template_params": params, "payload": payload,
                        "product_action": None, "flow_action": None})  # fmt: skip
        if data[pos]:
            count, pos = _block_count(data, pos)
        else:  # the usual end: one block
            return out, pos + 1
    return out, pos


def _header_readers(schema: dict[str, Any]) -> list[Any]:
    """How to read each request-level field, checked against BatchKey when a reader is made."""
    fields = schema["fields"][1 : 1 + len(BatchKey._fields)]
    names = [f["name"] for f in fields]
    if schema["fields"][0]["name"] != "request_id" or names != list(BatchKey._fields):
        raise RuntimeError(f"send_request.avsc fields changed ({names}): update request_reader")
    readers: list[Any] = []
    for f in fields:
        kind = f["type"]
        if kind == "string":
            readers.append(_string)
        elif kind == ["null", "string"]:
            readers.append(lambda data, pos: _optional(data, pos, _string))
        elif kind == ["null", "int"]:
            readers.append(lambda data, pos: _optional(data, pos, _long))
        else:
            raise RuntimeError(f"send_request.avsc field {f['name']} has type {kind}: update request_reader")
    return readers


class RequestReader:
    def __init__(self, schema: dict[str, Any]):
        self._header_fields = _header_readers(schema)
        self._headers: dict[bytes, list[tuple[bytes, BatchKey]]] = {}
        """Known headers with their keys, by their first ``PREFIX_BYTES`` bytes."""
        self._known = 0

    def read(self, data: bytes, start: int = 0) -> SendRequest | None:
        """The request in ``data[start:]`` (its size: all of ``data``), or None to leave it to fastavro."""
        try:
            request_id, pos = _string(data, start)
            key, pos = self._header(data, pos)
            branch = data[pos]
            if branch == 0:
                expires_at_ms, pos = None, pos + 1
            elif branch == 2:
                expires_at_ms, pos = _long(data, pos + 1)
                if not EARLIEST_MS <= expires_at_ms <= LATEST_MS:  # fastavro refuses it: no datetime
                    return None
            else:
                return None
            recipients, pos = _recipients(data, pos)
        except (_Unhandled, IndexError, UnicodeDecodeError):
            return None
        if pos != len(data):
            return None
        return SendRequest(request_id, key, recipients, expires_at_ms, NO_SOURCE, len(data))

    def _header(self, data: bytes, pos: int) -> tuple[BatchKey, int]:
        filed = self._headers.get(data[pos : pos + PREFIX_BYTES])
        if filed is not None:
            for header, key in filed:
                if data.startswith(header, pos):
                    return key, pos + len(header)
        start = pos
        values = []
        for read in self._header_fields:
            value, pos = read(data, pos)
            values.append(value)
        if not values[0]:  # no account: the default one
            values[0] = "default"
        key = BatchKey(*values)
        if pos - start > MAX_HEADER_BYTES:
            return key, pos
        if self._known >= MAX_HEADERS:
            self._headers.clear()
            self._known = 0
        header = data[start:pos]
        filed = self._headers.setdefault(header[:PREFIX_BYTES], [])
        if len(filed) >= MAX_FILED:
            del filed[0]
        else:
            self._known += 1
        filed.append((header, key))
        return key, pos


def from_record(record: dict[str, Any], size_bytes: int = 0) -> SendRequest:
    """The same view of a record fastavro decoded (``expires_at`` a datetime, or milliseconds)."""
    key = BatchKey(*(record[name] for name in BatchKey._fields))
    if not key.account:
        key = key._replace(account="default")
    return SendRequest(record["request_id"], key, record["recipients"], _millis(record["expires_at"]), NO_SOURCE, size_bytes)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


@overload
def _millis(instant: datetime | int) -> int: ...
@overload
def _millis(instant: None) -> None: ...
@overload
def _millis(instant: datetime | int | None) -> int | None: ...


def _millis(instant: datetime | int | None) -> int | None:
    """Milliseconds since the epoch, exactly (``timestamp() * 1000`` is a float and can lose one);
    a naive datetime is UTC, as Avro's timestamp-millis is."""
    if instant is None or isinstance(instant, int):
        return instant
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return (instant - _EPOCH) // _MILLISECOND


EARLIEST_MS = _millis(datetime.min.replace(tzinfo=UTC))
LATEST_MS = _millis(datetime.max.replace(tzinfo=UTC))
"""The ``expires_at`` range fastavro reads (a datetime's, years 1-9999); it refuses the rest."""
