"""Receipts pushes read (pure): CAMS's report objects, bad reports beside good ones, status
records, the TaskId and join entries the sender makes."""

from __future__ import annotations

import io
import random

import orjson
import pytest
from fastavro import schemaless_reader, schemaless_writer

from consumer import config as settings
from consumer.models import Batch, Slice
from consumer.receipts.encode import STATUS_SCHEMA, StatusEncoder, encode_status
from consumer.receipts.join import decode_entry, encode_entry
from consumer.receipts.metrics import STATUSES as STATUS_SYMBOLS
from consumer.receipts.parse import MAX_FIELD_CHARS, Malformed, Match, parse_push, receipt, seconds_since_send, status_record
from consumer.receipts.recorder import call_join, new_task_id, task_key
from tests.fixtures.builders import req
from tests.fixtures.receipts import cams_report


def test_a_cams_push_is_read_report_by_report_in_its_order() -> None:
    body = orjson.dumps([cams_report("m1", "+8613900000001", "Delivered", "t1", 1_700_000_000_000), cams_report("m1", "8613900000001", "Read", "t1", 1)])
    (delivered, read), problems = parse_push(body)
    assert problems == []
    assert (delivered.message_id, delivered.to, delivered.number, delivered.status, delivered.task_id) == (
        "m1",
        "+8613900000001",
        "8613900000001",
        "DELIVERED",
        "t1",
    )
    assert delivered.timestamp_ms == 1_700_000_000_000 and delivered.template_code and delivered.conversation_type == "utility"
    assert read.status == "READ" and read.seen_key != delivered.seen_key
    assert read.seen_key == receipt(cams_report("m1", "+8613900000001", "read", "other", 5)).seen_key, "a repeat: same message, number and status"


@pytest.mark.parametrize(
    ("cams", "symbol"),
    [("Sent", "SENT"), ("DELIVERED", "DELIVERED"), ("Failed", "FAILED"), ("Deleted", "DELETED"), ("subscribe", "SUBSCRIBED"), ("unsubscribe", "UNSUBSCRIBED"),
     ("Pending", "UNKNOWN"), ("", "UNKNOWN")],
)  # fmt: skip
def test_statuses_map_to_the_schema_enum_and_unknown_ones_are_kept(cams: str, symbol: str) -> None:
    assert receipt(cams_report("m", "1", cams, None, 1)).status == symbol


def test_one_bad_report_never_drops_the_good_ones() -> None:
    good = cams_report("m1", "8613900000001", "Sent", "t", 1)
    body = orjson.dumps([42, good, {"Status": "Read"}, {**good, "Timestamp": "soon"}, {**good, "To": ["a"]}, None, {**good, "MessageId": "m2"}])
    receipts, problems = parse_push(body)
    assert [r.message_id for r in receipts] == ["m1", "m2"]
    assert len(problems) == 5 and problems[0].startswith("report 0: ")


def test_a_lone_report_object_is_a_push_of_one_and_anything_else_is_malformed() -> None:
    assert len(parse_push(orjson.dumps(cams_report("m", "1", "Sent", None, 1)))[0]) == 1
    assert parse_push(b"[]") == ([], [])
    for body, reason in ((b"{nope", "not-json"), (b"", "not-json"), (b'"x"', "not-an-array"), (b"7", "not-an-array"), (b"\xff\xfe", "not-json")):
        with pytest.raises(Malformed) as caught:
            parse_push(body)
        assert caught.value.reason == reason


def test_long_fields_are_cut_and_odd_timestamps_refused() -> None:
    long = receipt(cams_report("m", "1", "Failed", "t", 1, ErrorDescription="x" * 10_000))
    assert long.error_description is not None and len(long.error_description) == MAX_FIELD_CHARS
    assert receipt(cams_report("m", "1", "Sent", "t", "1700000000000")).timestamp_ms == 1_700_000_000_000  # digits in a string
    assert receipt({**cams_report("m", "1", "Sent", "t", 0), "Timestamp": None}).timestamp_ms is None
    for stamp in (-1, 1 << 63, True, "1.5e3", [1]):
        with pytest.raises(ValueError):
            receipt(cams_report("m", "1", "Sent", "t", stamp))


def test_status_records_encode_to_the_schema_with_the_join_or_without() -> None:
    item = receipt(cams_report("m1", "+8613900000001", "Failed", "t1", 1_700_000_005_000))
    match = Match("req-1", b"corr", 1_700_000_000_000, "gm-1")
    for found, request_id, group in ((match, "req-1", "gm-1"), (None, None, None)):
        value = StatusEncoder("s-value").encode(status_record(item, found, 1_700_000_009_000))
        record = schemaless_reader(io.BytesIO(value), STATUS_SCHEMA, None)
        assert isinstance(record, dict)
        assert (record["request_id"], record["group_message_id"], record["status"], record["error_code"]) == (request_id, group, "FAILED", "131026")
        assert record["occurred_at"].timestamp() == 1_700_000_005 and record["received_at"].timestamp() == 1_700_000_009
    assert seconds_since_send(item, match) == 5.0
    assert seconds_since_send(item, None) is None and seconds_since_send(item, match._replace(sent_at_ms=1_800_000_000_000)) is None


def test_a_registry_encoder_registers_once_and_frames_each_value() -> None:
    registered: list[str] = []
    encoder = StatusEncoder("chatapp.send-status-value", lambda subject, schema: registered.append(subject) or 7)
    record = status_record(receipt(cams_report("m", "1", "Sent", None, 1)), None, 2)
    first, second = encoder.encode(record), encoder.encode(record)
    assert registered == ["chatapp.send-status-value"] and first[:5] == b"\x00\x00\x00\x00\x07" and first == second


def test_join_entries_keep_the_request_and_its_correlation_id() -> None:
    assert decode_entry(encode_entry("req-1", b"a\x00b"), b"12", b"gm") == Match("req-1", b"a\x00b", 12, "gm")
    assert decode_entry(encode_entry("req-1", None), None, None) == Match("req-1", None, None, None)


def test_a_batch_without_task_id_gets_a_taskid_of_its_own_kept_by_retries_and_halves() -> None:
    request = req("r1", numbers=("+8613900000001", "8613900000002"))
    batch = Batch("b-1", request.key, [Slice(request, request.recipients)])
    first = task_key(batch)
    assert first.task_id is not None and len(first.task_id) == 24 and first.task_id.isdigit()
    assert task_key(batch) == first and batch.task_id == first.task_id, "the same TaskId for every call of the batch"
    theirs = Batch("b-2", request.key._replace(task_id="theirs"), [])
    assert task_key(theirs).task_id == "theirs" and theirs.task_id is None
    join = call_join(batch, first.task_id, "gm-1", 5)
    assert join.entries == {"8613900000001": b"r1", "8613900000002": b"r1"} and join.group_message_id == "gm-1"
    assert len({new_task_id() for _ in range(1000)}) == 1000


def test_the_hand_written_encoder_writes_fastavros_bytes() -> None:
    rng = random.Random(7)
    texts = [None, "", "x", "é✓ 权限", "z" * 300]
    for _ in range(500):
        record = {name: rng.choice(texts) for name in ("request_id", "error_code", "error_description", "message_id", "task_id", "group_message_id",
                                                        "template_code", "conversation_type", "conversation_id")}  # fmt: skip
        record.update(to=rng.choice(texts[1:]), status=rng.choice(STATUS_SYMBOLS), occurred_at=rng.choice([None, 0, 1, 1_700_000_000_123, 1 << 60]),
                      received_at=rng.choice([0, 63, 64, 1_700_000_000_999]))  # fmt: skip
        expected = io.BytesIO()
        schemaless_writer(expected, STATUS_SCHEMA, record)
        assert encode_status(record) == expected.getvalue(), record


@pytest.mark.parametrize("token", ["short", "x" * 257, "has/slash-0123456789", "has space 0123456789", "quest?ion-0123456789", "ünïcode-0123456789"])
def test_a_token_that_cannot_be_a_url_segment_is_refused_without_showing_it(token: str) -> None:
    with pytest.raises(settings.ConfigError) as caught:
        settings.load({"CHATAPP_RECEIPTS_TOKEN": token})
    (problem,) = caught.value.problems
    assert problem.startswith("CHATAPP_RECEIPTS_TOKEN: must be 16 to 256") and token not in problem


def test_the_receipts_settings_default_as_the_contract_says() -> None:
    config = settings.load({"CHATAPP_RECEIPTS_TOKEN": "a-good_token.0123456789"})
    assert (config.receipts_port, config.status_topic, config.receipts_join, config.receipts_retention_s) == (9402, "chatapp.send-status", "off", 7 * 86400)
    assert "a-good_token" not in repr(config) and "a-good_token" not in str(config.redacted())


def test_a_claim_shorter_than_the_publish_timeout_is_refused() -> None:
    with pytest.raises(settings.ConfigError) as caught:
        settings.load({"CHATAPP_RECEIPTS_CLAIM_S": "5", "CHATAPP_RECEIPTS_PUBLISH_TIMEOUT_S": "4.5"})
    assert caught.value.problems == ["CHATAPP_RECEIPTS_CLAIM_S: must be at least CHATAPP_RECEIPTS_PUBLISH_TIMEOUT_S + 2"]
    assert settings.load({"CHATAPP_RECEIPTS_CLAIM_S": "5", "CHATAPP_RECEIPTS_PUBLISH_TIMEOUT_S": "3"}).receipts_claim_s == 5
