"""KafkaIO.close is bounded: a librdkafka close that hangs (a rebalance during close) cannot hold shutdown."""

from __future__ import annotations

import threading
import time

from consumer.config import load
from consumer.kafka_io import KafkaIO


class HangingConsumer:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.closed = False

    def close(self) -> None:
        self.release.wait(30.0)
        self.closed = True


def kafka_io() -> KafkaIO:
    config = load({"CHATAPP_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    return KafkaIO(config, lambda ps: None, lambda ps: None, lambda ps: None, lambda positions: None)


def test_a_hung_close_is_given_up_after_the_timeout() -> None:
    io = kafka_io()
    real, hanging = io._consumer, HangingConsumer()
    io._consumer = hanging
    try:
        started = time.monotonic()
        assert io.close(timeout_s=0.3) is False
        assert 0.3 <= time.monotonic() - started < 2.0
        assert not hanging.closed
    finally:
        hanging.release.set()
        real.close()


def test_a_close_that_finishes_reports_it() -> None:
    io = kafka_io()
    assert io.close(timeout_s=10.0) is True


class StuckAssignment:
    """A consumer whose revocation never comes: partitions stay assigned however long it is polled."""

    def __init__(self) -> None:
        self.unsubscribed = False
        self.polls = 0

    def unsubscribe(self) -> None:
        self.unsubscribed = True

    def assignment(self) -> list[str]:
        return ["still-assigned"]

    def poll(self, timeout: float) -> None:
        self.polls += 1
        time.sleep(timeout)


def test_leaving_the_group_unsubscribes_and_gives_up_at_the_deadline() -> None:
    io = kafka_io()
    real, stuck = io._consumer, StuckAssignment()
    io._consumer = stuck
    try:
        started = time.monotonic()
        assert io.leave_group(timeout_s=0.3) is False
        assert 0.3 <= time.monotonic() - started < 2.0
        assert stuck.unsubscribed and stuck.polls > 1, "the revocation is waited for by polling"
    finally:
        real.close()


def test_leaving_with_nothing_assigned_is_immediate() -> None:
    io = kafka_io()
    try:
        assert io.leave_group(timeout_s=10.0) is True
    finally:
        io.close()
