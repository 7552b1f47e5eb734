"""consumer.ledger: the in-memory ledger with an injected clock, and RedisLedger on real Redis."""

from __future__ import annotations

import logging
import socket
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from consumer.ledger import DONE, IN_FLIGHT, InMemoryLedger, LedgerEntry, RedisLedger
from consumer.models import SendRequest, SendResult, Settled, SliceOutcome, Source, Status
from tests.fixtures.clock import FakeClock

RETENTION = 3600


def wall_clock() -> FakeClock:
    return FakeClock(1_767_225_600.0)


def result(request_id: str, status: Status = Status.SENT, **fields) -> SendResult:
    values = dict(
        code="OK" if status is Status.SENT else "Ram.PermissionDeny",
        message=None if status is Status.SENT else "no permission ✗ 权限",
        recipients=3,
        attempts=2,
        group_message_id="G-1" if status is Status.SENT else None,
        api_request_id="R-1",
        batch_id="b-abc-1",
        completed_at_ms=1_767_225_600_123,
    )
    values.update(fields)
    return SendResult(request_id, status, **values)


def settled(*results: SendResult) -> list[Settled]:
    """Each result as the group of one request that the sender would have marked done."""
    return [
        Settled(SliceOutcome(r.status, r.code, r.message, r.attempts, r.group_message_id, r.api_request_id, r.batch_id), r.completed_at_ms,
                [SendRequest(r.request_id, None, [{}] * r.recipients, None, Source("t", 0, 0, 0))])  # type: ignore[arg-type]
        for r in results
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- InMemoryLedger -------------------------------------------------------------------------------


def test_in_memory_unknown_ids_are_absent() -> None:
    ledger = InMemoryLedger(RETENTION, clock=wall_clock())
    assert ledger.lookup(["a", "b"]) == {}
    assert ledger.lookup([]) == {}
    assert ledger.healthy()


def test_in_memory_in_flight_then_done() -> None:
    clock = wall_clock()
    ledger = InMemoryLedger(RETENTION, clock=clock)
    ledger.mark_in_flight(["a", "b"], "host:1")
    assert ledger.lookup(["a", "b"]) == {
        "a": LedgerEntry(IN_FLIGHT, "host:1", clock.now),
        "b": LedgerEntry(IN_FLIGHT, "host:1", clock.now),
    }
    clock.now += 5
    done = result("a")
    ledger.mark_done(settled(done))
    found = ledger.lookup(["a", "b"])
    assert found["a"] == LedgerEntry(DONE, None, clock.now, done)
    assert found["b"].state == IN_FLIGHT


def test_in_memory_lookup_of_many_returns_only_known_ids() -> None:
    ledger = InMemoryLedger(RETENTION, clock=wall_clock())
    ledger.mark_done(settled(*(result(f"r{i}") for i in range(0, 100, 2))))
    found = ledger.lookup([f"r{i}" for i in range(100)])
    assert sorted(found) == sorted(f"r{i}" for i in range(0, 100, 2))
    assert all(entry.state == DONE and entry.result.request_id == rid for rid, entry in found.items())


def test_in_memory_entries_expire_after_retention() -> None:
    clock = wall_clock()
    ledger = InMemoryLedger(60, clock=clock)
    ledger.mark_in_flight(["old"], "me")
    clock.now += 30
    ledger.mark_done(settled(result("young")))
    clock.now += 29.9
    assert set(ledger.lookup(["old", "young"])) == {"old", "young"}
    clock.now += 0.1  # old: exactly 60 s
    assert set(ledger.lookup(["old", "young"])) == {"young"}
    clock.now += 30
    assert ledger.lookup(["old", "young"]) == {}


def test_in_memory_marking_again_renews_retention() -> None:
    clock = wall_clock()
    ledger = InMemoryLedger(60, clock=clock)
    ledger.mark_in_flight(["a", "b"], "me")
    clock.now += 50
    ledger.mark_done(settled(result("a")))
    clock.now += 20
    found = ledger.lookup(["a", "b"])
    assert set(found) == {"a"}
    assert found["a"].state == DONE


def test_in_memory_oldest_entries_go_beyond_max_entries() -> None:
    clock = wall_clock()
    ledger = InMemoryLedger(RETENTION, clock=clock, max_entries=3)
    for i in range(5):
        ledger.mark_in_flight([f"r{i}"], "me")
        clock.now += 1
    assert sorted(ledger.lookup([f"r{i}" for i in range(5)])) == ["r2", "r3", "r4"]


# -- RedisLedger ----------------------------------------------------------------------------------


@pytest.fixture
def client(shared_redis: str):
    c = redis.Redis.from_url(shared_redis, socket_timeout=2.0)
    yield c
    c.close()


def test_redis_keys_carry_the_prefix_and_the_retention_ttl(client) -> None:
    ledger = RedisLedger(client, RETENTION, key_prefix="test:ledger:")
    ledger.mark_in_flight(["a"], "host:1")
    ledger.mark_done(settled(result("b")))
    assert sorted(k.decode() for k in client.keys("*")) == ["test:ledger:a", "test:ledger:b"]
    for key in ("test:ledger:a", "test:ledger:b"):
        assert RETENTION - 5 <= client.ttl(key) <= RETENTION


def test_redis_default_prefix(client) -> None:
    RedisLedger(client, 60).mark_in_flight(["x"], "me")
    assert client.exists("chatapp:ledger:x") == 1


def test_redis_in_flight_entry(client) -> None:
    ledger = RedisLedger(client, RETENTION, key_prefix="t:")
    before = time.time()
    ledger.mark_in_flight(["a", "b"], "host:7")
    found = ledger.lookup(["a", "b", "missing"])
    assert set(found) == {"a", "b"}
    entry = found["a"]
    assert (entry.state, entry.owner, entry.result) == (IN_FLIGHT, "host:7", None)
    assert before <= entry.since <= time.time()
    assert ledger.healthy()


@pytest.mark.parametrize(
    "stored",
    [
        result("sent"),
        result("failed", Status.FAILED),
        result("bare", Status.EXPIRED, code=None, message=None, group_message_id=None, api_request_id=None, batch_id=None, attempts=0),
        result("split", group_message_id="G-1,G-2", batch_id="b-1,b-2"),
    ],
)
def test_redis_stored_result_round_trips_equal(client, stored: SendResult) -> None:
    ledger = RedisLedger(client, RETENTION, key_prefix="t:")
    ledger.mark_in_flight([stored.request_id], "me")
    ledger.mark_done(settled(stored))
    entry = ledger.lookup([stored.request_id])[stored.request_id]
    assert entry.state == DONE
    assert entry.owner is None
    assert entry.result == stored


def test_redis_lookup_of_many(client) -> None:
    ledger = RedisLedger(client, RETENTION, key_prefix="t:")
    ledger.mark_done(settled(*(result(f"r{i}") for i in range(0, 500, 5))))
    found = ledger.lookup([f"r{i}" for i in range(500)])
    assert sorted(found) == sorted(f"r{i}" for i in range(0, 500, 5))


def test_redis_prefixes_keep_ledgers_apart(client) -> None:
    RedisLedger(client, RETENTION, key_prefix="one:").mark_in_flight(["a"], "me")
    assert RedisLedger(client, RETENTION, key_prefix="two:").lookup(["a"]) == {}


def test_redis_empty_lookup_does_not_touch_redis() -> None:
    class Exploding:
        def __getattr__(self, name):
            raise AssertionError(f"redis.{name} called")

    assert RedisLedger(Exploding(), 60).lookup([]) == {}


def test_redis_down_with_the_service_client_never_raises() -> None:
    from consumer.limiter import connect

    down = connect(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    ledger = RedisLedger(down, RETENTION, key_prefix="chatapp:ledger:")
    started = time.monotonic()
    assert ledger.lookup(["a"]) == {}
    ledger.mark_done(settled(result("a")))
    assert not ledger.healthy()
    assert time.monotonic() - started < 3
    down.close()


def test_redis_down_lookup_finds_nothing_and_never_raises() -> None:
    # no retries, as the service's own client (consumer.limiter.connect): redis-py's default of
    # 10 retries with backoff would make each call here take ~4 s
    down = redis.Redis(
        port=free_port(), socket_timeout=0.2, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    ledger = RedisLedger(down, RETENTION)
    assert ledger.healthy()
    started = time.monotonic()
    assert ledger.lookup(["a", "b"]) == {}
    assert not ledger.healthy()
    ledger.mark_in_flight(["a"], "me")
    ledger.mark_done(settled(result("a")))
    assert not ledger.healthy()
    assert time.monotonic() - started < 3
    down.close()


class FlakyRedis:
    """The real client, or ConnectionError from every call while ``down``."""

    def __init__(self, real: redis.Redis) -> None:
        self.real = real
        self.down = False

    def mget(self, keys):
        if self.down:
            raise redis.ConnectionError("connection refused")
        return self.real.mget(keys)

    def pipeline(self, transaction: bool = True):
        pipe = self.real.pipeline(transaction=transaction)
        if self.down:
            def fail():
                raise redis.ConnectionError("connection refused")

            pipe.execute = fail
        return pipe


def test_redis_outage_is_logged_once_and_recovery_makes_it_healthy(client, caplog) -> None:
    flaky = FlakyRedis(client)
    ledger = RedisLedger(flaky, RETENTION, key_prefix="t:")
    ledger.mark_in_flight(["a"], "me")
    flaky.down = True
    with caplog.at_level(logging.INFO, logger="consumer.ledger"):
        assert ledger.lookup(["a"]) == {}
        ledger.mark_done(settled(result("a")))  # lost
        assert ledger.lookup(["a"]) == {}
        assert not ledger.healthy()
        flaky.down = False
        assert ledger.lookup(["a"])["a"].state == IN_FLIGHT
        assert ledger.healthy()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    assert len(infos) == 1 and "reachable again" in infos[0].getMessage()


def test_in_memory_a_done_mark_moves_the_id_to_the_newest_end() -> None:
    clock = wall_clock()
    ledger = InMemoryLedger(RETENTION, clock=clock, max_entries=3)
    ledger.mark_in_flight(["a", "b", "c"], "me")
    ledger.mark_done(settled(result("a")))
    ledger.mark_in_flight(["d"], "me")
    assert sorted(ledger.lookup(["a", "b", "c", "d"])) == ["a", "c", "d"]  # b was the oldest mark
