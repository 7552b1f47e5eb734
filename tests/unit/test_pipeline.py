"""The main loop's duties in process: intake, admission, the in-flight book, back-pressure,
publishing, commits, and the rebalance and shutdown steps, over an in-memory Kafka port and
sender (tests/fixtures/fake_kafka.py)."""

from __future__ import annotations

import io
import logging
import queue
import time
from collections.abc import Callable
from typing import Any

import pytest
from chatapp_devkit.samples import phone, request_record
from fastavro import schemaless_reader

from consumer.admission import Policy, WaitingRoom
from consumer.backpressure import BufferBound
from consumer.batching import Batcher
from consumer.codec import RESULT_SCHEMA, PlainAvroCodec
from consumer.destinations import ReplyDestinations
from consumer.events import Events
from consumer.inflight import InFlightBook
from consumer.intake import Intake
from consumer.ledger import InMemoryLedger
from consumer.metrics import Metrics
from consumer.observers import subscribe_logs, subscribe_metrics
from consumer.offsets import OffsetTracker
from consumer.pipeline import Evidence, Pipeline, no_evidence
from consumer.rebalance import Handover
from consumer.reply import Replies
from consumer.validate import Validator
from tests.fixtures.clock import FakeClock
from tests.fixtures.fake_kafka import FakeKafka, FakeSender

REQUESTS, RESULTS, DLQ = "requests", "results", "dlq"
CODEC = PlainAvroCodec()
RESEND = Policy("me", "resend", 60)


class Loop:
    """A pipeline and its hand-over, wired as app.py wires them, over the fakes."""

    def __init__(self, max_buffered: int = 50_000, max_bytes: int = 1 << 26, linger_s: float = 0.0, reply_to_pattern: str | None = None,
                 exactly_once: bool = False, commit_interval_s: float = 0.0, policy: Policy = RESEND,
                 evidence: Evidence = no_evidence, ledger_clock: Callable[[], float] = time.time):  # fmt: skip
        self.metrics = Metrics()
        events = Events()
        subscribe_metrics(events, self.metrics)
        subscribe_logs(events, logging.getLogger("test.pipeline"))
        tracker = OffsetTracker()
        self.kafka = FakeKafka(lambda ps: self.handover.on_assign(ps), lambda ps: self.handover.on_revoke(ps), lambda ps: self.handover.on_lost(ps),
                               lambda positions: self.pipeline.committed(positions), transactional=exactly_once)  # fmt: skip
        finished: queue.SimpleQueue = queue.SimpleQueue()
        self.ledger = InMemoryLedger(3600, clock=ledger_clock)
        self.sender = FakeSender(finished.put, self.ledger)
        destinations = ReplyDestinations(RESULTS, reply_to_pattern, (REQUESTS, DLQ))
        intake = Intake(CODEC.decode_request, Validator({"default"}).problems, destinations, tracker.partition)
        replies = Replies(self.kafka, CODEC, RESULTS, DLQ, events, tracker.finish)
        book = InFlightBook(BufferBound(max_buffered, 0, 1000), max_bytes)
        self.pipeline = Pipeline(self.kafka, intake, book, Batcher(1000, linger_s), self.sender, replies, tracker, self.ledger,  # type: ignore[arg-type]
                                 policy, events, commit_interval_s, finished, exactly_once=exactly_once, evidence=evidence)  # fmt: skip
        self.handover = Handover(self.pipeline, 1.0, "me", logging.getLogger("test.pipeline"))
        self.pipeline.on_abort = self.handover.rewind

    def turn(self) -> None:
        records = self.pipeline.consume()
        if records:
            self.pipeline.take_in(records)
        self.pipeline.step()

    def request(self, request_id: str, number: int, partition: int = 0, **fields: Any) -> None:
        record = request_record(request_id, "welcome", "en", [phone(number)])
        record.update(fields)
        self.kafka.add(REQUESTS, partition, CODEC.encode_request(record))

    def results(self, visible: bool = False) -> list[dict[str, Any]]:
        """Every result produced, or (``visible``) those a read_committed reader sees."""
        produced = [p for p in self.kafka.visible if p.topic == RESULTS] if visible else self.kafka.on(RESULTS)
        return [schemaless_reader(io.BytesIO(p.value), RESULT_SCHEMA, None) for p in produced]  # type: ignore[misc]


@pytest.fixture
def loop() -> Loop:
    loop = Loop()
    loop.kafka.assign([(REQUESTS, 0), (REQUESTS, 1)])
    return loop


def test_a_request_is_batched_sent_answered_and_committed_once_its_result_is_acknowledged(loop: Loop) -> None:
    loop.request("r1", 1)
    loop.request("r2", 2)
    loop.turn()
    assert [len(b.slices) for b in loop.sender.batches] == [2]  # linger 0: due at once, one call for both
    assert loop.kafka.positions_committed().get((REQUESTS, 0), 0) == 0  # not past a request without a durable result
    assert loop.sender.finish() == 1
    loop.turn()  # publishes; the delivery reports come on the next serve
    loop.turn()
    assert sorted((r["request_id"], r["status"]) for r in loop.results()) == [("r1", "SENT"), ("r2", "SENT")]
    assert loop.kafka.positions_committed() == {(REQUESTS, 0): 2}
    assert loop.pipeline.book.recipients == 0


def test_undecodable_records_are_dead_lettered_and_invalid_ones_rejected(loop: Loop) -> None:
    loop.kafka.add(REQUESTS, 0, b"\x00garbage", headers=[("trace", b"t")])
    loop.request("bad", 1, channel_type="telegram")
    loop.request("routed", 2)
    loop.kafka.incoming[-1] = loop.kafka.incoming[-1]._replace(reply_to="__consumer_offsets")
    loop.turn()
    loop.turn()
    assert len(loop.kafka.on(DLQ)) == 1 and dict(loop.kafka.on(DLQ)[0].headers)["chatapp.dlq.reason"] in (b"not-avro", b"truncated")
    results = {r["request_id"]: (r["status"], r["code"]) for r in loop.results()}
    assert results == {"bad": ("REJECTED", "Chatapp.InvalidRequest"), "routed": ("REJECTED", "Chatapp.ReplyToNotAllowed")}
    assert loop.sender.batches == []
    assert loop.kafka.positions_committed() == {(REQUESTS, 0): 3}


def test_a_second_copy_of_a_request_on_its_way_gets_the_same_result_without_a_second_send(loop: Loop) -> None:
    loop.request("r1", 1, partition=0)
    loop.request("r1", 1, partition=1)
    loop.turn()
    assert sum(len(b.slices) for b in loop.sender.batches) == 1
    loop.sender.finish(group_message_id="G1")
    loop.turn()
    loop.turn()
    assert [(r["request_id"], r["group_message_id"]) for r in loop.results()] == [("r1", "G1"), ("r1", "G1")]
    assert loop.kafka.positions_committed() == {(REQUESTS, 0): 1, (REQUESTS, 1): 1}
    assert loop.metrics.registry.get_sample_value("chatapp_duplicates_total", {"kind": "in_process"}) == 1


def test_a_request_done_before_is_answered_from_the_ledger_and_not_sent(loop: Loop) -> None:
    loop.request("r1", 1)
    loop.turn()
    loop.sender.finish(group_message_id="G1")
    loop.turn()
    loop.turn()
    loop.request("r1", 1)  # a producer's retry, later
    loop.turn()
    loop.turn()
    assert loop.sender.batches == []
    assert [r["group_message_id"] for r in loop.results()] == ["G1", "G1"]


def test_under_receipts_a_dead_instances_requests_in_flight_are_settled_by_their_calls_receipts_or_resent_after_the_wait() -> None:
    witnessed: set[str] = set()
    asked: list[tuple[str, list[str]]] = []

    def evidence(calls: list[tuple[str, list[str]]]) -> list[bool]:
        asked.extend(calls)
        return [task_id in witnessed for task_id, _ in calls]

    clock = FakeClock(time.time() - 61)  # when the dead instance wrote its marks: stale (60 s), within the receipts wait (30 s)
    loop = Loop(policy=Policy("me", "receipts", 60, 30), evidence=evidence, ledger_clock=clock)
    loop.kafka.assign([(REQUESTS, 0)])
    loop.pipeline.waiting = WaitingRoom(every_s=0.0)
    for request_id, number in (("r1", 1), ("r2", 2), ("r3", 3)):
        loop.request(request_id, number)
    requests = {r.request_id: r for r in (CODEC.decode_request(record.value) for record in loop.kafka.incoming)}
    loop.ledger.mark_in_flight([requests["r1"]], "dead", task_id="t1")
    loop.ledger.mark_in_flight([requests["r3"]], "dead", task_id="t3")
    clock.advance(-30)
    loop.ledger.mark_in_flight([requests["r2"]], "dead", task_id="t2")  # 91 s ago: the wait is over
    clock.now = time.time()
    witnessed.add("t1")
    loop.turn()
    assert [s.request.request_id for b in loop.sender.batches for s in b.slices] == ["r2"], "resent: no receipt came within the wait"
    assert len(loop.pipeline.waiting) == 1, "r3 waits for a receipt"
    witnessed.add("t3")
    loop.turn()
    loop.turn()
    settled = {r["request_id"]: r for r in loop.results()}
    assert {rid: (r["status"], r["code"]) for rid, r in settled.items()} == {"r1": ("SENT", "OK"), "r3": ("SENT", "OK")}
    assert "inflight_policy=receipts" in settled["r1"]["message"]
    assert asked[:3] == [("t1", [phone(1)]), ("t2", [phone(2)]), ("t3", [phone(3)])], "each call's TaskId with the request's canonical numbers"
    assert loop.metrics.registry.get_sample_value("chatapp_duplicates_total", {"kind": "inflight_settled"}) == 2
    assert loop.metrics.registry.get_sample_value("chatapp_duplicates_total", {"kind": "inflight_resent"}) == 1


def test_back_pressure_pauses_the_partitions_at_the_bound_and_resumes_below_three_quarters() -> None:
    loop = Loop(max_buffered=4, linger_s=60.0)
    loop.kafka.assign([(REQUESTS, 0)])
    for i in range(4):
        loop.request(f"r{i}", i)
    loop.turn()
    assert loop.kafka.paused == {(REQUESTS, 0)}
    loop.pipeline.batcher.linger_s = 0.0
    loop.turn()
    loop.sender.finish()
    loop.turn()
    assert loop.kafka.paused == set()
    # a partition assigned while paused comes paused, and resumed while not
    loop.kafka.assign([(REQUESTS, 1)])
    assert loop.kafka.paused == set()


def test_records_of_a_partition_no_longer_ours_are_left_to_the_next_owner(loop: Loop) -> None:
    loop.request("r1", 1, partition=0)
    loop.kafka.revoke([(REQUESTS, 0)])
    loop.turn()
    assert loop.sender.batches == [] and loop.results() == []


def test_a_revoked_partitions_queued_work_is_abandoned_and_its_finished_work_committed() -> None:
    loop = Loop(linger_s=60.0)
    loop.kafka.assign([(REQUESTS, 0), (REQUESTS, 1)])
    loop.request("done", 1, partition=0)
    loop.pipeline.batcher.linger_s = 0.0
    loop.turn()
    loop.sender.finish()
    loop.pipeline.batcher.linger_s = 60.0
    loop.request("queued", 2, partition=0)
    loop.request("kept", 3, partition=1)
    loop.turn()
    loop.kafka.revoke([(REQUESTS, 0)])
    # the finished one was published and committed before the hand-over; the queued one abandoned, unsent
    assert [r["request_id"] for r in loop.results()] == ["done"]
    assert loop.kafka.positions_committed()[(REQUESTS, 0)] == 1
    assert loop.pipeline.book.pending("queued") is None and loop.pipeline.book.pending("kept") is not None
    assert loop.pipeline.tracker.partitions == [(REQUESTS, 1)]


def test_an_abandoned_request_is_sent_for_its_copy_on_a_partition_still_ours() -> None:
    loop = Loop(linger_s=60.0)
    loop.kafka.assign([(REQUESTS, 0), (REQUESTS, 1)])
    loop.request("r1", 1, partition=0)
    loop.request("r1", 1, partition=1)  # a copy, following the first
    loop.turn()
    loop.kafka.revoke([(REQUESTS, 0)])
    loop.pipeline.batcher.linger_s = 0.0
    loop.turn()
    loop.sender.finish(group_message_id="G")
    loop.turn()
    loop.turn()
    assert [(r["request_id"], r["group_message_id"]) for r in loop.results()] == [("r1", "G")]
    assert loop.kafka.positions_committed() == {(REQUESTS, 0): 0, (REQUESTS, 1): 1}  # nothing of partition 0 was answered here


def _shut_down_with_r1_lingering(loop: Loop, *arriving: str) -> int:
    """r1 buffered (its batch lingers), finished as the shutdown serves results; requests
    ``arriving`` meanwhile are on the partition, not yet read. Returns what ``shutdown`` returns."""
    loop.pipeline.batcher.linger_s = 60.0
    loop.request("r1", 1)
    loop.turn()
    loop.sender.finish()  # nothing submitted yet: the batch lingers
    assert loop.pipeline.book.recipients == 1

    def finish_on_serve(wait_s: float, serve=loop.pipeline.serve_results) -> None:
        loop.sender.finish()
        serve(wait_s)

    loop.pipeline.serve_results = finish_on_serve  # type: ignore[method-assign]
    for number, request_id in enumerate(arriving, start=2):
        loop.request(request_id, number)
    return loop.handover.shutdown()


def test_shutdown_sends_what_is_buffered_commits_and_leaves(loop: Loop) -> None:
    assert _shut_down_with_r1_lingering(loop) == 2
    assert [r["request_id"] for r in loop.results()] == ["r1"]
    assert loop.kafka.positions_committed()[(REQUESTS, 0)] == 1
    assert loop.sender.stopped and loop.kafka.assigned == set()


def test_a_shutdown_commit_the_group_refuses_mid_rebalance_is_made_again_before_leaving(loop: Loop) -> None:
    loop.kafka.refuse_commits = 3  # the member's generation gone until it has rejoined
    assert _shut_down_with_r1_lingering(loop, "fetched-while-rejoining") == 2  # consumed by the rejoin: dropped, left uncommitted
    assert [r["request_id"] for r in loop.results()] == ["r1"]
    assert loop.kafka.positions_committed()[(REQUESTS, 0)] == 1  # r1's result, not the record read while rejoining
    assert loop.kafka.refuse_commits == 0 and loop.kafka.assigned == set()


def test_a_shutdown_the_group_refuses_every_commit_leaves_saying_which_partitions_go_uncommitted(loop: Loop, monkeypatch, caplog) -> None:
    from consumer import rebalance

    monkeypatch.setattr(rebalance, "REJOIN_COMMIT_S", 0.2)
    loop.kafka.refuse_commits = 10**9
    with caplog.at_level(logging.WARNING, logger="test.pipeline"):
        assert _shut_down_with_r1_lingering(loop, "fetched-while-rejoining") == 2  # consumed by the rejoin: dropped, left uncommitted
    assert (REQUESTS, 0) not in loop.kafka.positions_committed()
    assert f"offsets of {REQUESTS}[0] not committed before leaving" in caplog.text
    assert loop.kafka.assigned == set()
