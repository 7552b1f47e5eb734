"""The receipts' two stores, one contract, in process and in Redis (a real redis-server): the
join (TaskId and number -> request) and the receipts seen (claims, done, released; shared by
two receivers through one Redis)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from redis import Redis

from consumer.receipts.dedupe import MemorySeen, RedisSeen, Seen, SeenStore
from consumer.receipts.join import CallJoin, JoinStore, MemoryJoin, RedisJoin, encode_entry
from consumer.receipts.parse import Match
from tests.fixtures.redis import PrivateRedis


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


def test_a_report_is_claimed_once_repeats_are_seen_and_a_second_receiver_waits(stores) -> None:
    _, seen, other = stores(30)
    assert seen.claim(["a", "b", "a"], "push-1") == [Seen.NEW, Seen.NEW, Seen.SEEN], "a repeat within one push"
    assert other.claim(["a", "c"], "push-2") == [Seen.BUSY, Seen.NEW], "held by push-1, not yet published"
    seen.done(["a"])
    seen.release(["b"], "push-1")
    other.release(["c"], "push-1")  # not its claim: kept
    assert other.claim(["a", "b", "c"], "push-3") == [Seen.SEEN, Seen.NEW, Seen.BUSY]
    assert seen.claim([], "push-4") == [] and seen.healthy()


def test_the_claims_of_a_receiver_that_died_run_out(stores) -> None:
    _, seen, other = stores(0.3)
    assert seen.claim(["k"], "dead") == [Seen.NEW]
    assert other.claim(["k"], "retry") == [Seen.BUSY]
    deadline = time.monotonic() + 10
    while (answer := other.claim(["k"], "retry")) != [Seen.NEW] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert answer == [Seen.NEW]
