"""The receipts' two stores, one contract, in process and in Redis (a real redis-server): the
join (TaskId and number -> request) and the receipts seen (claims, done, released; shared by
two receivers through one Redis)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from redis import Redis

from consumer.events import Events
from consumer.limiter import connect
from consumer.models import Batch, Slice
from consumer.receipts.dedupe import MemorySeen, RedisSeen, Seen, SeenStore, Stale
from consumer.receipts.join import CallJoin, JoinStore, MemoryJoin, RedisJoin, encode_entry
from consumer.receipts.parse import Match
from consumer.receipts.recorder import JoinRecorder
from tests.fixtures.builders import req
from tests.fixtures.redis import PrivateRedis
from tests.fixtures.service import wait_for


@pytest.fixture(params=["memory", "redis"])
def stores(request: pytest.FixtureRequest, tmp_path) -> Iterator[Callable[[float], tuple[JoinStore, SeenStore, SeenStore]]]:
    """Factory: (join, seen, seen of a second receiver) with claims of ``claim_s``."""
    servers: list[PrivateRedis] = []
    made: list[tuple[JoinStore, SeenStore, SeenStore]] = []

    def make(claim_s: float) -> tuple[JoinStore, SeenStore, SeenStore]:
        if request.param == "memory":
            seen = MemorySeen(3600, claim_s)
            trio: tuple[JoinStore, SeenStore, SeenStore] = (MemoryJoin(3600), seen, seen)
        else:
            server = PrivateRedis(tmp_path)
            server.start()
            servers.append(server)
            trio = (
                RedisJoin(Redis.from_url(server.url), 3600),
                RedisSeen(Redis.from_url(server.url), 3600, claim_s),
                RedisSeen(Redis.from_url(server.url), 3600, claim_s),
            )
        made.append(trio)
        return trio

    yield make
    for trio in made:
        for store in trio:
            store.close()
    for server in servers:
        server.kill()


def test_the_join_finds_each_recipient_of_each_call_and_nothing_else(stores) -> None:
    join, _, _ = stores(30)
    join.record(
        [CallJoin("t1", 1_000, "gm-1", {"861": encode_entry("r1", b"c1"), "862": encode_entry("r2", None)}), CallJoin("t2", 2_000, None, {"861": b"r3"})]
    )
    found = join.lookup([("t1", "861"), ("t1", "862"), ("t2", "861"), ("t2", "862"), ("t3", "861"), (None, "861")])
    assert found == [Match("r1", b"c1", 1_000, "gm-1"), Match("r2", None, 1_000, "gm-1"), Match("r3", None, 2_000, None), None, None, None]
    # producers that set task_id themselves: the latest request to send a number under it wins
    join.record([CallJoin("t1", 3_000, "gm-2", {"861": b"r9"})])
    assert join.lookup([("t1", "861"), ("t1", "862")]) == [Match("r9", None, 3_000, "gm-2"), Match("r2", None, 3_000, "gm-2")]
    assert join.lookup([]) == []


def test_a_call_is_witnessed_by_a_receipt_for_one_of_its_numbers_under_its_task_id(stores) -> None:
    join, _, _ = stores(30)
    assert join.witnessed([("t1", ["861"])]) == [False]
    join.witness([("t1", "861"), ("t1", "862"), ("t2", "863"), (None, "864")])
    join.witness([("t1", "861")])  # a repeat changes nothing
    assert join.witnessed([("t1", ["869", "862"]), ("t1", ["863"]), ("t2", ["863"]), ("t3", ["861"]), ("t2", [])]) == [True, False, True, False, False]
    assert join.lookup([("t1", "861")]) == [None], "evidence is not a join entry"


def test_a_report_is_claimed_once_repeats_are_seen_and_a_second_receiver_waits(stores) -> None:
    _, seen, other = stores(30)
    assert seen.claim(["a", "b", "a"], "push-1") == [Seen.NEW, Seen.NEW, Seen.SEEN], "a repeat within one push"
    assert other.claim(["a", "c"], "push-2") == [Seen.BUSY, Seen.NEW], "held by push-1, not yet published"
    seen.done(["a"])
    seen.release(["b"], "push-1")
    other.release(["c"], "push-1")  # not its claim: kept
    assert other.claim(["a", "b", "c"], "push-3") == [Seen.SEEN, Seen.NEW, Seen.BUSY]
    assert seen.claim([], "push-4") == [] and seen.healthy()


def test_the_claims_of_a_receiver_that_died_are_taken_over_with_the_first_holders_mark(stores) -> None:
    _, seen, other = stores(0.3)
    assert seen.claim(["k", "j"], "dead", "0:5,1:7") == [Seen.NEW, Seen.NEW]
    seen.done(["j"])
    assert other.claim(["k"], "retry", "0:9,1:9") == [Seen.BUSY]
    deadline = time.monotonic() + 10
    while (answer := other.claim(["k", "j"], "retry", "0:9,1:9")) == [Seen.BUSY, Seen.SEEN] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert answer == [Stale("0:5,1:7"), Seen.SEEN], "taken over, with where the topic ended when it was first claimed"
    assert other.claim(["k"], "retry", "") == [Seen.SEEN], "this push holds it now"
    assert seen.claim(["k"], "third", "0:11") == [Seen.BUSY], "held afresh"
    other.release(["k"], "retry")
    assert seen.claim(["k"], "third", "0:11") == [Seen.NEW]


def test_the_recorder_writes_each_accepted_call_and_counts_what_it_could_not(private_redis) -> None:
    """The sender's side against a real Redis, then a dead one: recorded, then counted lost."""
    events = Events()
    counted: dict[str, int] = {"recorded": 0, "lost": 0}
    events.on("receipts.joined", lambda recipients: counted.__setitem__("recorded", counted["recorded"] + recipients))
    events.on("receipts.join_failed", lambda recipients, error: counted.__setitem__("lost", counted["lost"] + recipients))
    store = RedisJoin(connect(private_redis.url), 3600)
    recorder = JoinRecorder(store, events)
    request = req("r1", numbers=("+8613900000001", "8613900000002"))
    batch = Batch("b-1", request.key, [Slice(request, request.recipients)])
    task = recorder.key_for(batch).task_id
    recorder.accepted(batch, "gm-1")
    assert wait_for(lambda: counted["recorded"] == 2, 10), counted
    found = store.lookup([(task, "8613900000001"), (task, "8613900000002")])
    assert [(m.request_id, m.group_message_id) for m in found if m] == [("r1", "gm-1"), ("r1", "gm-1")]
    private_redis.kill()
    later = Batch("b-2", request.key, [Slice(request, request.recipients)])
    recorder.key_for(later)
    recorder.accepted(later, "gm-2")  # returns at once: the tries happen on the recorder's thread
    recorder.close(timeout_s=20)
    assert counted == {"recorded": 2, "lost": 2}
