"""consumer.request_reader: the hot path's reader gives what fastavro gives, or leaves the value to it.

fastavro is the reference: for every value, ``RequestReader.read`` returns exactly
``from_record(fastavro's record)`` or None (never a different answer, and None whenever fastavro
raises), and ``PlainAvroCodec.decode_request`` always equals the fastavro path.
"""

from __future__ import annotations

import io
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from chatapp_devkit.samples import request_record
from fastavro import schemaless_reader

import consumer.codec as codec_module
from consumer import request_reader
from consumer.codec import REQUEST_SCHEMA, REQUEST_SCHEMA_JSON, DecodeError, PlainAvroCodec, RegistryAvroCodec, _long, _string
from consumer.models import BatchKey
from consumer.request_reader import RequestReader, from_record
from tests.fixtures.builders import random_record

CODEC = PlainAvroCodec()
TEXTS = [None, "", "a", "otp_login", "ünïcødé ✓ 中文 🚀", "x" * 63, "y" * 64, "z" * 300]


def fastavro_view(value: bytes):
    return from_record(schemaless_reader(io.BytesIO(value), REQUEST_SCHEMA, None), len(value))


def test_random_requests_read_as_fastavro_reads_them() -> None:
    rng = random.Random(11)
    reader = RequestReader(REQUEST_SCHEMA_JSON)
    values = [CODEC.encode_request(random_record(rng, i)) for i in range(400)]
    for _ in range(2):  # the second round finds every header in the cache (or probes past it)
        for value in values:
            assert reader.read(value) == fastavro_view(value)


def test_known_headers_are_found_again_and_the_cache_stays_bounded(monkeypatch) -> None:
    monkeypatch.setattr(request_reader, "MAX_HEADERS", 5)
    reader = RequestReader(REQUEST_SCHEMA_JSON)
    templates = [f"t{'x' * n}" for n in range(12)]  # twelve headers of twelve lengths
    values = [CODEC.encode_request(request_record(f"r{i}", templates[i % 12], "en", ["8613900000001"])) for i in range(48)]
    for value in values:
        read = reader.read(value)
        assert read == fastavro_view(value)
        assert read.key.template_code in templates
    assert sum(len(filed) for filed in reader._headers.values()) <= 5


def test_headers_alike_in_their_first_bytes_are_told_apart_and_few_are_filed_together(monkeypatch) -> None:
    monkeypatch.setattr(request_reader, "MAX_FILED", 3)
    reader = RequestReader(REQUEST_SCHEMA_JSON)
    templates = [f"{'same-start-' * 3}{n}" for n in range(7)] + [f"{'same-start-' * 3}{n}x" for n in range(7)]  # of two lengths
    values = [CODEC.encode_request(request_record(f"r{i}", templates[i % 14], "en", ["8613900000001"])) for i in range(56)]
    for value in values:
        read = reader.read(value)
        assert read == fastavro_view(value)
    assert [len(filed) for filed in reader._headers.values()] == [3, 3]  # one prefix per template length, each full
    filed_keys = {id(key) for filed in reader._headers.values() for _, key in filed}
    for value in values[-3:]:  # the headers filed last are found again: their key objects
        assert id(reader.read(value).key) in filed_keys


def test_requests_of_one_key_share_one_batch_key_object() -> None:
    reader = RequestReader(REQUEST_SCHEMA_JSON)
    first, second = (reader.read(CODEC.encode_request(request_record(f"r{i}", "welcome", "en", [f"861390000000{i}"]))) for i in range(2))
    assert first.key is second.key
    assert first.key == BatchKey("default", "whatsapp", "welcome", None, "en", "8613800000000", *[None] * 9)


@pytest.mark.parametrize("action", ["product_action", "flow_action"])
def test_product_and_flow_actions_are_left_to_fastavro(action: str) -> None:
    record = request_record("r", "welcome", "en", ["8613900000001", "8613900000002"])
    record["recipients"][1][action] = (
        {"thumbnail_product_retailer_id": "t", "sections": [{"title": "S", "product_items": [{"product_retailer_id": "p"}]}]}
        if action == "product_action" else {"flow_token": "tok", "flow_action_data": {"screen": "A"}}
    )  # fmt: skip
    value = CODEC.encode_request(record)
    assert RequestReader(REQUEST_SCHEMA_JSON).read(value) is None
    assert CODEC.decode_request(value) == from_record(record, len(value)) == fastavro_view(value)


def _blocks(items: list[bytes], sizes: list[int], byte_counted: bool) -> bytes:
    """An Avro array or map body written in blocks of ``sizes`` items (negative counts with
    byte sizes when ``byte_counted``, as writers that block their output do)."""
    out, at = b"", 0
    for size in sizes:
        body = b"".join(items[at : at + size])
        at += size
        out += _long(-size) + _long(len(body)) + body if byte_counted else _long(size) + body
    return out + b"\x00"


@pytest.mark.parametrize("byte_counted", [False, True])
def test_arrays_and_maps_in_several_blocks(byte_counted: bool) -> None:
    base = request_record("r", "welcome", "en", [])
    head = CODEC.encode_request(base)[:-2]  # up to expires_at (null) and the empty recipients array
    head += b"\x00"
    params = _blocks([_string("a") + _string("1"), _string("b") + _string("2"), _string("c") + _string("3")], [1, 2], byte_counted)
    payload = _blocks([_string("p1"), _string("p2")], [1, 1], byte_counted)
    recipient = _string("8613900000001") + b"\x00" + params + payload + b"\x00\x00"
    value = head + _blocks([recipient, recipient.replace(b"8613900000001", b"8613900000002")], [1, 1], byte_counted)
    expected = fastavro_view(value)
    assert expected.recipients[1]["template_params"] == {"a": "1", "b": "2", "c": "3"}
    assert expected.recipients[1]["payload"] == ["p1", "p2"]
    read = RequestReader(REQUEST_SCHEMA_JSON).read(value)
    assert read == (None if byte_counted else expected)
    assert CODEC.decode_request(value) == expected


def test_damaged_values_are_never_read_differently_from_fastavro() -> None:
    """Truncations and random byte changes: the reader says None or what fastavro says, and
    None whenever fastavro raises; decode_request raises DecodeError exactly then."""
    rng = random.Random(3)
    reader = RequestReader(REQUEST_SCHEMA_JSON)
    bases = [value for value in (CODEC.encode_request(random_record(rng, i)) for i in range(200)) if len(value) < 2000][:30]
    damaged = [base[:cut] for base in bases[:5] for cut in range(len(base))]
    for _ in range(4000):
        value = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            value[rng.randrange(len(value))] = rng.randrange(256)
        damaged.append(bytes(value))
    damaged.append(bases[0] + b"\x00")
    unreadable = 0
    for value in damaged:
        try:
            expected = fastavro_view(value)
        except Exception:
            expected = None
        read = reader.read(value)
        assert read is None or read == expected, value
        if expected is None:
            unreadable += 1
            with pytest.raises(DecodeError):
                CODEC.decode_request(value)
    assert unreadable > 1000  # the damage was seen as damage


def test_registry_values_written_with_the_bundled_schema_take_the_fast_reader(monkeypatch) -> None:
    evolved = json.loads(json.dumps(REQUEST_SCHEMA_JSON))
    evolved["fields"].append({"name": "campaign", "type": ["null", "string"], "default": None})
    schemas = {1: json.dumps(REQUEST_SCHEMA_JSON), 2: json.dumps(evolved)}
    codec = RegistryAvroCodec(lambda schema_id: schemas[schema_id], lambda subject, schema: 1, "r-value", "q-value")
    record = request_record("r-1", "welcome", "en", ["8613900000001"])
    value = codec.encode_request(record)
    assert value[:5] == b"\x00\x00\x00\x00\x01"
    from fastavro import parse_schema, schemaless_writer

    out = io.BytesIO()
    schemaless_writer(out, parse_schema(evolved), {**record, "campaign": "autumn"})
    evolved_value = b"\x00\x00\x00\x00\x02" + out.getvalue()
    assert codec.decode_request(evolved_value) == from_record(record, len(evolved_value))  # resolved by fastavro: the new field dropped

    def no_fastavro(record: dict[str, Any], size_bytes: int = 0) -> Any:
        raise AssertionError("went through fastavro")

    monkeypatch.setattr(codec_module, "from_record", no_fastavro)
    assert codec.decode_request(value) == from_record(record, len(value))
    with pytest.raises(AssertionError, match="went through fastavro"):
        codec.decode_request(evolved_value)


# -- from_record (the view of a record fastavro decoded) ------------------------------------------


def test_from_record_builds_the_batch_key_from_every_request_field() -> None:
    record = request_record(
        "req-1", "tpl", "es", ["8613900000001"], account="acme", channel_type="viber", template_name="name", from_number="8613800000000",
        fallback_id="fb", fallback_content="content", fallback_rule="sentFailed", fallback_duration_s=120, task_id="task",
        cust_space_id="space", label="transaction", tag="tag", ttl_s=60,
    )  # fmt: skip
    request = from_record(record)
    assert request.key == BatchKey(
        "acme", "viber", "tpl", "name", "es", "8613800000000", "fb", "content", "sentFailed", 120, "task", "space", "transaction", "tag", 60
    )
    assert request.request_id == "req-1"
    assert request.recipients is record["recipients"]


@pytest.mark.parametrize("account", [None, ""])
def test_no_account_is_the_default_account(account: str | None) -> None:
    record = request_record("r", "welcome", "en", ["8613900000001"], account=account)
    assert from_record(record).key.account == "default"
    assert RequestReader(REQUEST_SCHEMA_JSON).read(CODEC.encode_request(record)).key.account == "default"


def test_from_record_without_expiry() -> None:
    assert from_record(request_record("r", "welcome", "en", ["8613900000001"])).expires_at_ms is None


@pytest.mark.parametrize(
    "expires",
    [
        datetime(2026, 1, 1, 0, 0, 0, 123_000, tzinfo=UTC),
        datetime(2026, 1, 1, 8, 0, 0, 123_000, tzinfo=timezone(timedelta(hours=8))),  # the same instant in another zone
        1_767_225_600_123,
    ],
)
def test_from_record_expiry_as_datetime_in_any_zone_or_as_millis(expires: Any) -> None:
    record = request_record("r", "welcome", "en", ["8613900000001"], expires_at=expires)
    assert from_record(record).expires_at_ms == 1_767_225_600_123


def test_expiry_keeps_every_millisecond_on_both_paths() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    reader = RequestReader(REQUEST_SCHEMA_JSON)
    for ms in (1_767_225_600_000, 1_767_225_600_001, 1_767_225_600_999, 1_900_000_000_123, 1):
        value = CODEC.encode_request(request_record("r", "welcome", "en", ["8613900000001"], expires_at=epoch + timedelta(milliseconds=ms)))
        assert fastavro_view(value).expires_at_ms == ms
        assert reader.read(value).expires_at_ms == ms


def test_headers_too_long_to_be_valid_are_read_but_not_remembered() -> None:
    reader = RequestReader(REQUEST_SCHEMA_JSON)
    value = CODEC.encode_request(request_record("r", "t", "en", ["8613900000001"], fallback_content="x" * 20_000))
    assert reader.read(value) == fastavro_view(value)
    assert reader._headers == {}
