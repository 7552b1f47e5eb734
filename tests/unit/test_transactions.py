"""Exactly-once mode's choreography over the in-memory Kafka port (tests/fixtures/fake_kafka.py):
one transaction per commit interval holds the results and the offsets they finish; an aborted
one is read again and answered from the ledger, never sent twice; a lost partition aborts the
open transaction; a revocation commits it; a fenced producer commits nothing more. And the
settings: the transactional id and the refusals."""

from __future__ import annotations

import pytest

from consumer.config import ConfigError, load
from consumer.kafka import Fenced, producer_config, transactional_id
from consumer.models import Status
from tests.unit.test_pipeline import REQUESTS, Loop

P0, P1 = (REQUESTS, 0), (REQUESTS, 1)


def _loop(commit_interval_s: float = 0.0) -> Loop:
    loop = Loop(exactly_once=True, commit_interval_s=commit_interval_s)
    loop.kafka.assign([P0, P1])
    return loop


def _visible_ids(loop: Loop) -> list[str]:
    return sorted(r["request_id"] for r in loop.results(visible=True))


def test_one_transaction_holds_an_intervals_results_with_the_offsets_they_finish() -> None:
    loop = _loop()
    for i in range(3):
        loop.request(f"r{i}", i)
    loop.turn()
    assert loop.kafka.transactions[-1] == ("commit", 0, {P0: (0, "")})  # nothing finished yet: the position read from
    loop.sender.finish()
    loop.turn()
    kind, records, positions = loop.kafka.transactions[-1]
    assert (kind, records) == ("commit", 3)  # the three results in one transaction, not one each
    assert positions == {P0: (3, "")}
    assert _visible_ids(loop) == ["r0", "r1", "r2"]
    assert loop.pipeline.tracker.committed_positions() == {P0: 3}


def test_an_aborted_transaction_is_read_again_and_answered_from_the_ledger_without_a_second_send() -> None:
    loop = _loop()
    loop.request("r0", 0)
    loop.request("r1", 1)
    loop.turn()
    loop.sender.finish()
    loop.kafka.abort_next = True
    loop.turn()  # results produced, the commit aborted: the partition is read again from 0
    assert loop.kafka.transactions[-1][0] == "abort" and _visible_ids(loop) == []
    assert loop.kafka.rewinds == [{P0: 0}]
    loop.turn()  # read again: answered from the ledger
    loop.turn()
    assert _visible_ids(loop) == ["r0", "r1"]
    assert loop.sender.sent == ["r0", "r1"]  # sent once
    assert loop.kafka.positions_committed() == {P0: 2}


def test_queued_work_at_an_abort_is_abandoned_and_sent_once_after_the_rewind() -> None:
    loop = _loop()
    loop.request("r0", 0)
    loop.turn()
    loop.sender.finish()
    loop.request("r1", 1)  # queued at the sender when the transaction aborts
    loop.kafka.abort_next = True
    loop.turn()
    assert loop.kafka.rewinds == [{P0: 0}] and loop.sender.batches == []
    loop.turn()  # r0 answered from the ledger, r1 claimed and queued again
    loop.sender.finish()
    loop.turn()
    loop.turn()
    assert _visible_ids(loop) == ["r0", "r1"]
    assert loop.sender.sent == ["r0", "r1"]  # r1's first batch was abandoned before its call


def test_a_lost_partition_aborts_the_open_transaction_and_the_others_are_read_again() -> None:
    loop = _loop(commit_interval_s=3600)
    loop.request("r0", 0, partition=0)
    loop.request("r1", 1, partition=1)
    loop.turn()
    loop.sender.finish()
    loop.turn()  # both results produced in the open transaction, not committed
    loop.kafka.lose([P1])
    assert loop.kafka.transactions == [("abort", 2, {})]
    assert loop.kafka.rewinds == [{P0: 0}]
    loop.turn()
    loop.pipeline.commit(asynchronous=False)
    assert _visible_ids(loop) == ["r0"]  # r1 is the next owner's to answer
    assert loop.kafka.positions_committed() == {P0: 1}


def test_a_revocation_commits_the_open_transaction_with_the_revoked_partitions_offsets() -> None:
    loop = _loop(commit_interval_s=3600)
    loop.request("r0", 0, partition=0)
    loop.request("r1", 1, partition=1)
    loop.turn()
    loop.sender.finish()
    loop.turn()
    assert loop.kafka.transactions == []
    loop.kafka.revoke([P1])
    assert loop.kafka.transactions == [("commit", 2, {P0: (1, ""), P1: (1, "")})]
    assert _visible_ids(loop) == ["r0", "r1"]


def test_a_fenced_producer_commits_nothing_more_and_leaves() -> None:
    loop = _loop()
    loop.request("r0", 0)
    loop.turn()
    loop.sender.finish()
    loop.kafka.fence_next = True
    with pytest.raises(Fenced):
        loop.turn()
    loop.handover.fenced()
    assert loop.kafka.transactions[-1] == ("commit", 0, {P0: (0, "")})  # the first, with no result; none after
    assert _visible_ids(loop) == [] and loop.kafka.assigned == set() and loop.sender.stopped


def test_the_transactional_id_is_the_group_and_the_instance_and_each_worker_its_own() -> None:
    env = {"CHATAPP_PROCESSING_GUARANTEE": "exactly-once", "CHATAPP_INSTANCE_ID": "pod-0", "CHATAPP_GROUP_ID": "g"}
    config = load(env)
    assert transactional_id(config) == "g.pod-0"
    assert transactional_id(config, 2) == "g.pod-0.w2"
    options = producer_config(config, transactional_id(config))
    assert options["transactional.id"] == "g.pod-0" and options["transaction.timeout.ms"] == 10_000
    assert transactional_id(load({})) is None and "transactional.id" not in producer_config(load({}))


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"CHATAPP_PROCESSING_GUARANTEE": "exactly-once"}, "CHATAPP_INSTANCE_ID: required"),
        ({"CHATAPP_PROCESSING_GUARANTEE": "exactly-once", "CHATAPP_INSTANCE_ID": "a b"}, "CHATAPP_INSTANCE_ID: letters"),
        (
            {"CHATAPP_PROCESSING_GUARANTEE": "exactly-once", "CHATAPP_INSTANCE_ID": "a", "CHATAPP_TRANSACTION_TIMEOUT_MS": "1000"},
            "CHATAPP_TRANSACTION_TIMEOUT_MS",
        ),
        ({"CHATAPP_PROCESSING_GUARANTEE": "exactly-twice"}, "CHATAPP_PROCESSING_GUARANTEE: must be one of"),
        ({"CHATAPP_KAFKA_PRODUCER_OPT_TRANSACTIONAL_ID": "x"}, "cannot be overridden"),
    ],
)
def test_exactly_once_settings_are_refused_with_one_line_each(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(env)
    assert any(problem in line for line in caught.value.problems), caught.value.problems


def test_at_least_once_needs_no_instance_id_and_commits_without_transactions() -> None:
    assert load({}).processing_guarantee == "at-least-once"
    loop = Loop()
    loop.kafka.assign([P0])
    loop.request("r0", 0)
    loop.turn()
    assert loop.sender.finish(Status.SENT) == 1
    loop.turn()
    loop.turn()
    assert loop.kafka.transactions == [] and loop.kafka.positions_committed() == {P0: 1}


def test_delivery_reports_of_an_aborted_transaction_coming_late_are_forgotten() -> None:
    loop = _loop(commit_interval_s=3600)
    loop.request("r0", 0, partition=0)
    loop.request("r1", 1, partition=1)
    loop.turn()
    loop.sender.finish()
    loop.pipeline.publish_finished()  # produced, not yet acknowledged
    assert loop.pipeline.replies.outstanding == 2
    loop.kafka.lose([P1])  # aborts; the reports come after
    loop.turn()  # the late reports are ignored: r0 does not count as finished from them
    assert loop.pipeline.replies.outstanding == 0
    loop.turn()
    loop.pipeline.commit(asynchronous=False)
    assert _visible_ids(loop) == ["r0"] and loop.kafka.positions_committed() == {P0: 1}
    assert loop.pipeline.replies.outstanding == 0 and loop.sender.sent == ["r0", "r1"]
