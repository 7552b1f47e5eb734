"""Differential fuzz of the hand-written request reader against fastavro (issue 18, point 12).

For every input the pipeline's ``decode_request`` must give fastavro's answer: the same request,
or ``DecodeError`` exactly when fastavro refuses the bytes. The reader itself may only say None
(leave it to fastavro) or what fastavro says. Inputs: valid encodings with arbitrary varints (1 to
11 bytes, any top byte) in place of ``ttl_s`` and ``expires_at``, varints spliced anywhere, random
byte changes and truncations of valid encodings, and random bytes. Seeded: the same cases each run.
"""

from __future__ import annotations

import io
import random

import pytest
from chatapp_devkit.samples import request_record
from fastavro import schemaless_reader

from consumer.codec import REQUEST_SCHEMA, REQUEST_SCHEMA_JSON, DecodeError, PlainAvroCodec, _long
from consumer.request_reader import EARLIEST_MS, LATEST_MS, RequestReader, from_record
from tests.fixtures.builders import random_record

CODEC = PlainAvroCodec()


def fastavro_answer(value: bytes):
    """fastavro's request, or None when it refuses the bytes."""
    buffer = io.BytesIO(value)
    try:
        record = schemaless_reader(buffer, REQUEST_SCHEMA, None)
    except Exception:
        return None
    return from_record(record, len(value)) if buffer.tell() == len(value) else None


def assert_same_answer(reader: RequestReader, value: bytes) -> None:
    expected = fastavro_answer(value)
    read = reader.read(value)
    assert read is None or read == expected, value
    if expected is None:
        with pytest.raises(DecodeError):
            CODEC.decode_request(value)
    else:
        assert CODEC.decode_request(value) == expected, value


def random_varint(rng: random.Random) -> bytes:
    """1 to 11 bytes of base-128 varint, ten-byte ones (any last byte) twice as often."""
    size = rng.choice([1, 2, 5, 9, 10, 10, 11])
    return bytes(0x80 | rng.randrange(128) for _ in range(size - 1)) + bytes((rng.randrange(128),))


def framed(rng: random.Random, i: int) -> tuple[bytes, bytes]:
    """A valid encoding cut around ``ttl_s`` and ``expires_at`` (the fields just before the
    recipients): (the bytes before ttl_s, the recipients' bytes)."""
    record = random_record(rng, i)
    record.update(ttl_s=None, expires_at=None)
    whole = CODEC.encode_request(record)
    record["recipients"] = []
    head = CODEC.encode_request(record)[:-3]  # ttl_s null, expires_at null, empty array
    return head, whole[len(head) + 2 :]


def optional_long(rng: random.Random) -> bytes:
    """A ``["null", long]`` value: null, a wild varint, or a value at a range edge."""
    roll = rng.random()
    if roll < 0.15:
        return b"\x00"
    if roll < 0.3:
        return b"\x02" + _long(rng.choice([EARLIEST_MS - 1, EARLIEST_MS, LATEST_MS, LATEST_MS + 1, 2**63 - 1, -(2**63), 30, -1]))
    return b"\x02" + random_varint(rng)


def test_wild_varints_in_ttl_and_expires_at_read_as_fastavro_reads_them() -> None:
    rng = random.Random(1812)
    reader = RequestReader(REQUEST_SCHEMA_JSON)
    frames = [framed(rng, i) for i in range(60)]
    for _ in range(2500):
        head, recipients = rng.choice(frames)
        assert_same_answer(reader, head + optional_long(rng) + optional_long(rng) + recipients)


def test_mutated_encodings_and_random_bytes_read_as_fastavro_reads_them() -> None:
    rng = random.Random(1813)
    reader = RequestReader(REQUEST_SCHEMA_JSON)
    bases = [v for v in (CODEC.encode_request(random_record(rng, i)) for i in range(120)) if len(v) < 1500][:40]
    for _ in range(2500):
        value = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(value))
            kind = rng.random()
            if kind < 0.4:
                value[at : at + rng.randint(0, 3)] = random_varint(rng)
            elif kind < 0.8:
                value[at] = rng.randrange(256)
            else:
                del value[at:]
                break
        assert_same_answer(reader, bytes(value))
    for _ in range(500):
        assert_same_answer(reader, rng.randbytes(rng.randint(0, 64)))


@pytest.mark.parametrize("top", [2, 3, 64, 127])
def test_a_ten_byte_ttl_with_a_large_top_byte_is_fastavros_wrapped_value(top: int) -> None:
    value = CODEC.encode_request(request_record("r", "t", "en", ["8613900000001"], ttl_s=30))
    at = value.index(b"\x02" + _long(30) + b"\x00") + 1
    value = value[:at] + b"\xff" * 9 + bytes((top,)) + value[at + 1 :]
    assert RequestReader(REQUEST_SCHEMA_JSON).read(value) is None  # left to fastavro
    assert CODEC.decode_request(value).key.ttl_s == fastavro_answer(value).key.ttl_s < 0


@pytest.mark.parametrize("millis", [EARLIEST_MS - 1, LATEST_MS + 1, 2**63 - 1])
def test_an_expiry_outside_the_datetime_range_is_refused_as_fastavro_refuses_it(millis: int) -> None:
    value = CODEC.encode_request(request_record("r", "t", "en", ["8613900000001"]))
    at = value.index(b"\x00\x02\x1a8613")
    value = value[:at] + b"\x02" + _long(millis) + value[at + 1 :]
    assert fastavro_answer(value) is None
    assert RequestReader(REQUEST_SCHEMA_JSON).read(value) is None
    with pytest.raises(DecodeError):
        CODEC.decode_request(value)
