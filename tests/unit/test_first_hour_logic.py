"""The pure parts of the first-hour commands: repeats held back (``repeats``), a JSON request
checked before it is encoded (``request_json``), the summary line (``summary``) and the rows
``results`` prints (``results``)."""

from __future__ import annotations

import logging

import pytest

from consumer.codec import PlainAvroCodec, RegistryAvroCodec
from consumer.config_checks import bootstrap_problem
from consumer.events import Events
from consumer.kafka.records import Record
from consumer.models import SendResult, Status
from consumer.repeats import Repeats
from consumer.request_json import BadJson, strict_record
from consumer.results import TABLE, dead_letter_row, result_row, table_line, wanted
from consumer.summary import subscribe_summary
from tests.fixtures.clock import FakeClock


def _record(text: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("consumer.librdkafka", level, __file__, 1, text, args, None)


def test_repeats_lets_one_line_of_a_kind_through_per_window_and_counts_the_rest():
    clock = FakeClock()
    repeats = Repeats(10.0, clock)
    fail = "FAIL [rdkafka#consumer-%d] localhost:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed (after %dms in state CONNECT)"
    passed = []
    for attempt in range(50):  # 50 retries in 5 s, each with other numbers
        record = _record(fail, attempt % 3, attempt)
        if repeats.filter(record):
            passed.append(record.getMessage())
        clock.advance(0.1)
    assert len(passed) == 1
    clock.advance(6.0)
    later = _record(fail, 1, 99)
    assert repeats.filter(later)
    assert later.getMessage().endswith("(same message repeated 49 times in 11s)")
    other = _record("SASL authentication failed")
    assert repeats.filter(other) and other.getMessage() == "SASL authentication failed"
    assert repeats.filter(_record(fail, 1, 1, level=logging.ERROR)), "another level is another kind"


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"request_id": "a", "expire_at": 1}, "unknown field 'expire_at': did you mean 'expires_at'?"),
        (
            {"recipients": [{"to": "1"}, {"to": "2", "payload": [], "flow_action": {"flow_tokn": "x"}}]},
            "unknown field 'recipients[1].flow_action.flow_tokn': did you mean 'flow_token'?",
        ),
        ({"zzzzzzz": 1}, "unknown field 'zzzzzzz': the fields are request_id, account, channel_type,"),
        (["not", "an", "object"], "a line must be a JSON object (one SendRequest), got list"),
        ({"expires_at": "2030-01-01"}, "expires_at '2030-01-01' has no UTC offset"),
        ({"expires_at": 1_800_000_000}, "expires_at 1800000000 looks like seconds"),
    ],
)
def test_strict_record_names_the_field_and_the_fix(record, problem):
    with pytest.raises(BadJson) as caught:
        strict_record(record)
    assert str(caught.value).startswith(problem)


def test_strict_record_turns_iso_times_into_milliseconds_and_leaves_the_rest():
    record = {"request_id": "a", "expires_at": "2030-01-01T00:00:00.250Z", "recipients": [{"to": "1", "template_params": {"expire_at": "kept"}}]}
    assert strict_record(record) == {**record, "expires_at": 1_893_456_000_250}, "a map's keys are the user's, not fields"
    assert strict_record({"expires_at": None}) == {"expires_at": None}


def test_the_summary_line_counts_since_the_last_one_and_its_budget_use():
    clock, lines = FakeClock(), []
    events = Events()
    log = logging.getLogger("test.summary")
    log.info = lambda fmt, line: lines.append(line)  # type: ignore[method-assign]
    subscribe_summary(events, log, 30.0, {"default": 10.0}, clock)
    events.emit("results.acknowledged", counts={"SENT": 100, "REJECTED": 1}, ages_s=[])
    events.emit("record.dead_lettered", source=None, reason="not-avro", detail="")
    for _ in range(150):
        events.emit("call.answered", account="default", code="OK", latency_s=0.1, bisection=False)
    events.emit("loop.state", buffered=0, waiting=0, ledger_healthy=True)
    assert lines == []
    clock.advance(30.0)
    events.emit("loop.state", buffered=0, waiting=0, ledger_healthy=True)
    clock.advance(30.0)
    events.emit("loop.state", buffered=0, waiting=0, ledger_healthy=True)
    assert lines == [
        "last 30s: SENT 100, FAILED 0, REJECTED 1, EXPIRED 0; dead-lettered 1; calls 150 (default 50% of 10/s)",
        "last 30s: SENT 0, FAILED 0, REJECTED 0, EXPIRED 0; dead-lettered 0; calls 0",
    ]


def test_a_zero_interval_subscribes_nothing():
    assert subscribe_summary(Events(), logging.getLogger("test.summary"), 0, {}) is None


def test_result_rows_filter_and_line_up():
    row = {"completed_at": "2026-12-07T03:57:54.165+00:00", "request_id": "r" * 40, "status": "SENT", "code": "OK", "recipients": 2, "message": "OK"}
    assert wanted(row, None, set()) and wanted(row, "r" * 40, {"SENT"})
    assert not wanted(row, "other", set()) and not wanted(row, None, {"FAILED"})
    line = table_line(row, TABLE)
    assert line.startswith("03:57:54.165  " + "r" * 22 + "…  SENT ")
    assert line.endswith(" 2           OK")


def test_a_dead_letter_row_reads_its_headers():
    record = Record("dlq", 0, 7, 0, b"req-1", b"xyz", [("chatapp.dlq.reason", b"not-avro"), ("chatapp.dlq.topic", b"requests"), ("chatapp.dlq.partition", b"3"),
                                                      ("chatapp.dlq.offset", b"41"), ("other", None)])  # fmt: skip
    row = dead_letter_row(record)
    assert (row["request_id"], row["status"], row["source"], row["bytes"], row["offset"]) == ("req-1", "not-avro", "requests[3]@41", 3, 7)


def test_debug_lines_are_never_held_back():
    repeats = Repeats(10.0, FakeClock())
    assert all(repeats.filter(_record("Sent FetchRequest (v11, 90 bytes @ 0, CorrId %d)", n, level=logging.DEBUG)) for n in range(20))


@pytest.mark.parametrize(
    ("servers", "problem"),
    [
        ("localhost:9092", None),
        ("b-1.kafka.example.com:9096,b-2.kafka.example.com:9096,", None),
        ("[::1]:9092", None),
        ("SASL_SSL://broker:9093", None),
        ("localhost", "'localhost' has no port: give host:port, e.g. localhost:9092?"),
        ("a:9092, 10.0.0.7", "'10.0.0.7' has no port: give host:port, e.g. 10.0.0.7:9092?"),
        ("a:9092,,b:9092", None),  # empty entries are skipped, as librdkafka does
        ("host:", "'host:' is not host:port: give host:port[,host:port...], e.g. localhost:9092"),
        ("host:port", "'host:port' is not host:port"),
    ],
)
def test_bootstrap_servers_need_a_port_each(servers, problem):
    found = bootstrap_problem(servers)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(f"CHATAPP_KAFKA_BOOTSTRAP_SERVERS: {problem}")


def test_results_decode_what_either_codec_wrote():
    """``results`` reads the reply topic with the service's codec: plain Avro, or the registry's
    wire format with the writer schema fetched by the id in the value."""
    schemas: dict[int, str] = {}

    def register(subject: str, schema: str) -> int:
        schemas[7] = schema
        return 7

    result = SendResult("req-9", Status.FAILED, "Template.NotFound", "no such template", 3, attempts=2, batch_id="b-1", completed_at_ms=1_893_456_000_250)
    for codec in (PlainAvroCodec(), RegistryAvroCodec(schemas.__getitem__, register, "results-value", "requests-value")):
        row = result_row(Record("results", 1, 5, 0, b"req-9", codec.encode_result(result), None), codec)
        assert row == {"request_id": "req-9", "status": "FAILED", "code": "Template.NotFound", "message": "no such template", "group_message_id": None,
                       "api_request_id": None, "recipients": 3, "attempts": 2, "batch_id": "b-1", "completed_at": "2030-01-01T00:00:00.250+00:00",
                       "partition": 1, "offset": 5}  # fmt: skip
    garbage = result_row(Record("results", 0, 1, 0, b"k", b"\x00\x01", None), PlainAvroCodec())
    assert (garbage["request_id"], garbage["status"]) == ("k", "UNDECODABLE")
