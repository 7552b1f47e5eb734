"""KafkaIO.close is bounded: a librdkafka close that hangs (a rebalance during close) cannot hold shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from consumer.config import load
from consumer.kafka import KafkaIO


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


@contextmanager
def consumer_replaced_by(stand_in: object) -> Iterator[KafkaIO]:
    """A KafkaIO whose consumer is ``stand_in``; the real one is closed afterwards."""
    io = kafka_io()
    real, io._consumer = io._consumer, stand_in
    try:
        yield io
    finally:
        real.close()


def test_a_hung_close_is_given_up_after_the_timeout() -> None:
    hanging = HangingConsumer()
    try:
        with consumer_replaced_by(hanging) as io:
            started = time.monotonic()
            assert io.close(timeout_s=0.3) is False
            assert 0.3 <= time.monotonic() - started < 2.0
            assert not hanging.closed
    finally:
        hanging.release.set()


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
    stuck = StuckAssignment()
    with consumer_replaced_by(stuck) as io:
        started = time.monotonic()
        assert io.leave_group(timeout_s=0.3) is False
        assert 0.3 <= time.monotonic() - started < 2.0
        assert stuck.unsubscribed and stuck.polls > 1, "the revocation is waited for by polling"


def test_leaving_with_nothing_assigned_is_immediate() -> None:
    io = kafka_io()
    try:
        assert io.leave_group(timeout_s=10.0) is True
    finally:
        io.close()


class _Exited(Exception):
    pass


def _exit_recorder(monkeypatch) -> list[int]:
    import consumer.cli as cli

    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise _Exited

    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    monkeypatch.setattr(cli.logging, "shutdown", lambda: None)  # the test session keeps its handlers
    return codes


def test_run_and_demo_exit_at_once_when_the_close_was_abandoned(monkeypatch) -> None:
    import argparse

    import chatapp_devkit.cli as devkit_cli
    import chatapp_devkit.demo as demo

    import consumer.cli as cli

    codes = _exit_recorder(monkeypatch)
    assert cli._leave(3, close_abandoned=False) == 3 and codes == []
    with pytest.raises(_Exited):
        cli._leave(1, close_abandoned=True)
    assert codes == [1]
    monkeypatch.setattr(demo, "run_demo", lambda requests: demo.DemoOutcome(0, close_abandoned=True))
    with pytest.raises(_Exited):
        devkit_cli.cmd_demo(argparse.Namespace(requests=10))
    assert codes == [1, 0]
    monkeypatch.setattr(demo, "run_demo", lambda requests: demo.DemoOutcome(1, close_abandoned=False))
    assert devkit_cli.cmd_demo(argparse.Namespace(requests=10)) == 1 and codes == [1, 0]
