"""consumer.logs: phone numbers masked (first 4, last 2 kept), everything else left alone."""

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
        ("12345678", "1234**78"),  # shortest masked run: 8 digits
        ("123456789012345", "1234*********45"),  # 15 digits, the E.164 maximum
        ("send to 8613812345678 failed", "send to 8613*******78 failed"),
        ("to=8613812345678,8613899999901", "to=8613*******78,8613*******01"),
        ("'8613812345678'", "'8613*******78'"),
        ('{"To": "8613812345678"}', '{"To": "8613*******78"}'),
        ("(+447700900123)", "(+4477******23)"),
    ],
)
def test_phone_numbers_keep_first_four_and_last_two_digits(text: str, masked: str) -> None:
    assert mask(text) == masked


def test_masked_number_keeps_its_length() -> None:
    for digits in range(8, 16):
        number = "9" * digits
        out = mask(number)
        assert len(out) == digits
        assert out[:4] == "9999" and out[-2:] == "99"
        assert set(out[4:-2]) == {"*"}


@pytest.mark.parametrize(
    "text",
    [
        "partition 3 offset 123456",
        "2026-01-01T00:00:00.123Z",
        "2026-01-01T12:34:56+08:00",
        "2026-01-01 12:34:56,789",
        "12:34:56 INFO consumer.sender: batch b-1a2b3c-42: Chatapp.Timeout, retry 2 in 0.35s",
        "1234567",  # 7 digits: too short to be masked
        "12345",
        "retry 3 of 6 in 0.20s",
        "192.168.100.200:6379",
        "drain timeout 30s",
        "request req-8613812345678 done",  # part of an identifier
        "batch b-4f2a1c-12345678",
        "key chatapp_12345678901",
        "550e8400-e29b-41d4-a716-446655440000",
        "1234567890123456789",  # longer than any phone number
    ],
)
def test_timestamps_offsets_short_numbers_and_identifiers_are_left_alone(text: str) -> None:
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
