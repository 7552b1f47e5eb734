"""consumer.codec.PlainAvroCodec: roundtrips, and garbage always ends in DecodeError."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from chatapp_devkit.samples import request_record

from consumer.codec import DecodeError, PlainAvroCodec
from consumer.models import SendResult, Status

CODEC = PlainAvroCodec()


def full_record() -> dict:
    record = request_record(
        "req-42",
        "order_shipped",
        "en",
        ["8613900000001", "8613900000002"],
        account="acme",
        fallback_id="fb",
        fallback_content="Fallback ✓ 中文",
        fallback_rule="undelivered",
        fallback_duration_s=120,
        task_id="t",
        cust_space_id="cs",
        tag="tag",
        expires_at=datetime(2026, 1, 1, 0, 0, 0, 123_000, tzinfo=UTC),
    )
    record["recipients"][1].update(
        recipient_type="individual",
        payload=["p1", "p2"],
        product_action={
            "thumbnail_product_retailer_id": "thumb",
            "sections": [{"title": "Shoes", "product_items": [{"product_retailer_id": "s1"}]}],
        },
        flow_action={"flow_token": "tok", "flow_action_data": {"screen": "WELCOME"}},
    )
    return record


def result_record() -> dict:
    return SendResult(
        "req-42",
        Status.SENT,
        "OK",
        None,
        2,
        attempts=1,
        group_message_id="G",
        api_request_id="R",
        batch_id="b-1",
        completed_at_ms=1_767_225_600_123,
    ).to_record()


def test_request_roundtrip_is_equal() -> None:
    record = full_record()
    assert CODEC.decode(CODEC.encode_request(record)) == record


def test_minimal_request_gets_schema_defaults() -> None:
    record = CODEC.decode(CODEC.encode_request({"request_id": "r", "language": "en", "from_number": "861", "recipients": [{"to": "862"}]}))
    assert record["channel_type"] == "whatsapp"
    assert record["account"] is None
    assert record["expires_at"] is None
    assert record["recipients"][0]["template_params"] == {}
    assert record["recipients"][0]["payload"] == []


def test_expires_at_decodes_as_tz_aware_datetime() -> None:
    decoded = CODEC.decode(CODEC.encode_request(full_record()))
    assert decoded["expires_at"].tzinfo is not None
    assert decoded["expires_at"].timestamp() == 1_767_225_600.123


def test_result_encodes_and_decodes_with_the_result_schema() -> None:
    import io

    from fastavro import schemaless_reader

    from consumer.codec import RESULT_SCHEMA

    value = CODEC.encode_result(SendResult.from_record(result_record()))
    decoded = schemaless_reader(io.BytesIO(value), RESULT_SCHEMA, None)
    decoded["completed_at"] = int(decoded["completed_at"].timestamp() * 1000)
    assert SendResult.from_record(decoded) == SendResult.from_record(result_record())


@pytest.mark.parametrize("cut", [1, 5, 20, -1])
def test_truncated_value_is_reason_truncated(cut: int) -> None:
    value = CODEC.encode_request(full_record())
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(value[:cut])
    assert caught.value.reason == "truncated"
    assert str(caught.value).startswith("truncated: ")


def test_every_prefix_of_a_valid_value_is_a_decode_error() -> None:
    value = CODEC.encode_request(full_record())
    for cut in range(len(value)):
        with pytest.raises(DecodeError):
            CODEC.decode(value[:cut])


def test_empty_value_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(b"")
    assert caught.value.reason == "truncated"


def test_trailing_bytes_are_reported() -> None:
    value = CODEC.encode_request(full_record()) + b"\x00\x01"
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(value)
    assert caught.value.reason == "trailing-bytes"
    assert "2 bytes left" in caught.value.detail


def test_a_result_record_is_not_a_request() -> None:
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(CODEC.encode_result(SendResult.from_record(result_record())))
    assert caught.value.reason in {"trailing-bytes", "not-avro", "truncated"}


def test_random_bytes_only_ever_raise_decode_error() -> None:
    rng = random.Random(20_260_101)
    reasons: dict[str, int] = {}
    for i in range(2000):
        value = rng.randbytes(rng.randrange(0, 200))
        try:
            CODEC.decode(value)
        except DecodeError as exc:
            reasons[exc.reason] = reasons.get(exc.reason, 0) + 1
            assert exc.reason in {"truncated", "not-avro", "trailing-bytes"}
            assert len(exc.detail) <= 200
        except Exception as exc:  # pragma: no cover - the failure we are looking for
            pytest.fail(f"value #{i} {value!r} raised {type(exc).__name__}: {exc}")
    assert reasons  # garbage was seen as garbage


def test_mutated_valid_values_only_ever_raise_decode_error() -> None:
    rng = random.Random(7)
    base = bytearray(CODEC.encode_request(full_record()))
    for i in range(2000):
        value = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            value[rng.randrange(len(value))] = rng.randrange(256)
        try:
            CODEC.decode(bytes(value))
        except DecodeError:
            pass
        except Exception as exc:  # pragma: no cover - the failure we are looking for
            pytest.fail(f"mutation #{i} raised {type(exc).__name__}: {exc}")


def test_huge_declared_lengths_fail_fast_as_decode_error() -> None:
    # zig-zag varint of a huge string length for request_id, then nothing
    value = b"\xfe\xff\xff\xff\x0f"
    with pytest.raises(DecodeError):
        CODEC.decode(value)


def test_registry_down_is_retried_then_dead_lettered_as_unavailable(monkeypatch) -> None:
    import consumer.codec as codec_module
    from consumer.codec import DecodeError, RegistryAvroCodec

    calls = []

    def down(schema_id: int) -> str:
        calls.append(schema_id)
        raise ConnectionError("registry refused the connection")

    monkeypatch.setattr(codec_module, "REGISTRY_RETRIES", 2)
    monkeypatch.setattr(codec_module.time, "sleep", lambda s: None)
    codec = RegistryAvroCodec(down, lambda subject, schema: 1, "r-value", "q-value")
    with pytest.raises(DecodeError) as caught:
        codec.decode(b"\x00\x00\x00\x00\x07" + b"\x02")
    assert caught.value.reason == "schema-registry-unavailable"
    assert calls == [7, 7, 7]


def test_the_hand_written_result_encoder_writes_what_fastavro_writes() -> None:
    """ResultEncoder must be byte-identical to fastavro for every shape of result."""
    import io
    import random

    from fastavro import schemaless_writer

    from consumer.codec import RESULT_SCHEMA, ResultEncoder
    from consumer.models import Status

    rng = random.Random(5)
    texts = [None, "", "OK", "System.LimitControl", "ünïcødé ✓ 中文", "x" * 300, "8900000100021234"]
    encoder = ResultEncoder()
    for _ in range(3000):
        result = SendResult(
            request_id=rng.choice(["r", "req-1", "ü-" * 40, "x" * 200]) + str(rng.randrange(10**9)),
            status=rng.choice(list(Status)),
            code=rng.choice(texts),
            message=rng.choice(texts),
            recipients=rng.choice([0, 1, 63, 64, 127, 128, 1000, 2**31 - 1]),
            attempts=rng.choice([0, 1, 2, 50, 10_000]),
            group_message_id=rng.choice(texts),
            api_request_id=rng.choice(texts),
            batch_id=rng.choice(texts),
            completed_at_ms=rng.choice([0, 1, 1_795_595_443_442, 2**62]),
        )
        expected = io.BytesIO()
        schemaless_writer(expected, RESULT_SCHEMA, result.to_record())
        assert encoder.encode(result) == expected.getvalue(), result


def test_a_settled_group_encodes_as_its_results_one_by_one() -> None:
    """encode_settled (one encoding of what a group shares) gives each request's result exactly
    as encode_result does, with the plain codec and with the registry's wire-format header."""
    from consumer.codec import RegistryAvroCodec
    from consumer.models import SendRequest, Settled, SliceOutcome, Source

    requests = [
        SendRequest(f"req-{i}-ü" + "x" * size, None, [{}] * n, None, Source("t", 0, i, 0))  # type: ignore[arg-type]
        for i, (size, n) in enumerate([(0, 1), (60, 64), (0, 1000), (200, 1)])
    ]  # ids of one and of two varint bytes
    for outcome in (SliceOutcome(Status.SENT, "OK", None, 1, "G-1", "R-1", "b-1"), SliceOutcome(Status.EXPIRED, "Chatapp.Expired", "late ✗", 0)):
        group = Settled(outcome, 1_795_595_443_442, requests)
        registry = RegistryAvroCodec(lambda schema_id: "", lambda subject, schema: 42, "replies-value", "requests-value")
        for codec in (CODEC, registry):
            assert codec.encode_settled(group) == [codec.encode_result(group.result(r)) for r in requests]
        assert registry.encode_settled(group)[0][:5] == b"\x00\x00\x00\x00\x2a"
