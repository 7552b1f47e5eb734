"""consumer.logs: every field of every line scrubbed: phone numbers masked (with or without
separators, inside identifiers too), credentials in URLs hidden; small numbers left alone."""

from __future__ import annotations

import io
import json
import logging

import pytest

from consumer.logs import JsonFormatter, TextFormatter, mask, setup


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("8613812345678", "8613*******78"),
        ("+8613812345678", "+8613*******78"),
        ("1234567", "12***67"),  # shortest masked run: 7 digits; below 10 only the first 2 are kept
        ("12345678", "12****78"),
        ("123456789012345", "1234*********45"),  # 15 digits, the E.164 maximum
        ("1234567890123456789", "1234*************89"),  # longer runs are masked too
        ("send to 8613812345678 failed", "send to 8613*******78 failed"),
        ("to=8613812345678,8613899999901", "to=8613*******78,8613*******01"),
        ("8613812345678 8613899999901", "8613*******78 8613*******01"),
        ("'8613812345678'", "'8613*******78'"),
        ('{"To": "8613812345678"}', '{"To": "8613*******78"}'),
        ("(+447700900123)", "(+4477******23)"),
        # inside identifiers: after a dash, an underscore, a letter
        ("request req-8613812345678 done", "request req-8613*******78 done"),
        ("key chatapp_12345678901", "key chatapp_1234*****01"),
        ("id8613812345678x", "id8613*******78x"),
        # written with separators: spaces, dashes, dots, parentheses
        ("+86 139 0000 0001", "+86 13* **** **01"),
        ("+86-139-0000-0001", "+86-13*-****-**01"),
        ("+1 (415) 555-2671", "+1 (415) ***-**71"),
        ("415.555.2671", "415.5**.**71"),
        ("+86 13900000001", "+86 1390*****01"),
    ],
)
def test_phone_numbers_are_masked(text: str, masked: str) -> None:
    assert mask(text) == masked


def test_masked_number_keeps_its_length() -> None:
    for digits in range(7, 16):
        number = "9" * digits
        out = mask(number)
        head = 4 if digits >= 10 else 2
        assert len(out) == digits
        assert out[:head] == "9" * head and out[-2:] == "99"
        assert set(out[head:-2]) == {"*"}


@pytest.mark.parametrize(
    "text",
    [
        "partition 3 offset 123456",
        "2026-01-01T00:00:00.123Z",
        "2026-01-01T12:34:56+08:00",
        "2026-01-01 12:34:56,789",
        "partition 5 2026-01-01",
        "12:34:56 INFO consumer.sender: batch b-1a2b3c-42: Chatapp.Timeout, retry 2 in 0.35s",
        "123456",  # 6 digits: too short to be masked
        "12345",
        "retry 3 of 6 in 0.20s",
        "waited 0.30000000000000004s",
        "192.168.100.200:6379",
        "5 192.168.100.200",
        "http://127.0.0.1:9400/metrics",
        "port 65535, 50000 recipients in 1000 calls, partitions [0, 1, 2, 3]",
        "drain timeout 30s",
        "batch b-4f2a1c-12345678",  # the service's own batch ids
        "request 550e8400-1234-5678-a716-446655440000 done",  # a UUID, even one with long digit runs
    ],
)
def test_timestamps_offsets_small_numbers_and_identifiers_are_left_alone(text: str) -> None:
    assert mask(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "partition 3 offset 123456789",
        # reply.py's dead-letter line once a partition passes 10 million messages
        "dead-lettered chatapp.send-requests[3]@12345678: not-avro: IndexError",
    ],
)
def test_large_kafka_offsets_are_not_masked(text: str) -> None:
    assert mask(text) == text


def make_record(msg: str, *args, **extra) -> logging.LogRecord:
    record = logging.LogRecord("consumer.test", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_formatter_masks_the_message_and_adds_context_fields() -> None:
    record = make_record("send to %s failed", "8613812345678", request_id="req-1", batch_id="b-1", account="acme")
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "send to 8613*******78 failed"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "consumer.test"
    assert (entry["request_id"], entry["batch_id"], entry["account"]) == ("req-1", "b-1", "acme")
    assert entry["ts"].endswith("Z") and "T" in entry["ts"]


def test_json_formatter_masks_exceptions() -> None:
    try:
        raise ValueError("bad recipient 8613812345678")
    except ValueError:
        import sys

        record = logging.LogRecord("consumer.test", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert "8613*******78" in entry["exc"]
    assert "8613812345678" not in entry["exc"]


def test_text_formatter_masks_the_whole_line() -> None:
    line = TextFormatter().format(make_record("to %s", "+8613812345678"))
    assert line.endswith("WARNING consumer.test: to +8613*******78")


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_setup_json_on_a_non_terminal_stream(restore_root_logger) -> None:
    stream = io.StringIO()
    setup("INFO", "auto", stream)
    logging.getLogger("consumer.x").info("to %s", "8613812345678")
    logging.getLogger("consumer.x").debug("hidden")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["msg"] == "to 8613*******78"


def test_setup_text_format(restore_root_logger) -> None:
    stream = io.StringIO()
    setup("DEBUG", "text", stream)
    logging.getLogger("consumer.x").debug("to %s", "8613812345678")
    assert stream.getvalue().rstrip().endswith("DEBUG   consumer.x: to 8613*******78")
    assert logging.getLogger("httpx").level == logging.WARNING


def test_json_formatter_scrubs_every_extra_field() -> None:
    """request_id, batch_id and any other extra field: masked like the message; numbers that
    need no mask stay numbers."""
    record = make_record(
        "resending %s",
        "req-8613812345678",
        request_id="req-8613812345678",
        batch_id="b-4f2a1c-7",
        account="acme_+86 139 0000 0001",
        partition=3,
        offset=12345678,
        recipients=[{"to": "8613899999901"}],
        endpoint="https://u:pw-Zq9@cams.example",
    )
    entry = json.loads(JsonFormatter(worker=2).format(record))
    assert entry["msg"] == "resending req-8613*******78"
    assert entry["request_id"] == "req-8613*******78"
    assert entry["batch_id"] == "b-4f2a1c-7"
    assert entry["account"] == "acme_+86 13* **** **01"
    assert entry["partition"] == 3 and entry["worker"] == 2
    assert entry["offset"] == "12****78"  # a number that needs the mask becomes its masked text
    assert entry["recipients"] == "[{'to': '8613*******01'}]"
    assert entry["endpoint"] == "https://u:***@cams.example"


def test_credentials_in_urls_are_hidden_in_messages_and_exceptions() -> None:
    try:
        raise ConnectionError("cannot reach redis://:pw-Zq9@redis.internal:6379/0?password=pw-Zq9")
    except ConnectionError:
        import sys

        record = logging.LogRecord("consumer.test", logging.ERROR, __file__, 1, "CAMS at %s", ("https://u:pw-Zq9@cams.example",), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "pw-Zq9" not in line
    entry = json.loads(line)
    assert entry["msg"] == "CAMS at https://u:***@cams.example"
    assert "redis://:***@redis.internal:6379/0?password=***" in entry["exc"]
    assert "pw-Zq9" not in TextFormatter().format(record)
