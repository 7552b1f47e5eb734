"""consumer.ledger: the in-memory ledger with an injected clock, and RedisLedger on real Redis
(the machine's, and a private redis-server made read-only or full)."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest
import redis

from consumer.ledger import CLAIMED, DONE, IN_FLIGHT, InMemoryLedger, LedgerEntry, RedisLedger, fingerprint
from consumer.limiter import connect
from consumer.models import BatchKey, SendRequest, SendResult, Settled, SliceOutcome, Source, Status
from tests.fixtures.clock import FakeClock

RETENTION = 3600


def wall_clock() -> FakeClock:
    return FakeClock(1_767_225_600.0)


def req(request_id: str, account: str = "acct", numbers: tuple[str, ...] = ("8613900000001",), template: str = "welcome") -> SendRequest:
    key = BatchKey(account, "whatsapp", template, None, "en", "861", None, None, None, None, None, None, None, None, None)
    return SendRequest(request_id, key, [{"to": n} for n in numbers], None, Source("t", 0, 0, 0))


def result(request_id: str, status: Status = Status.SENT, **fields) -> SendResult:
    values = dict(
        code="OK" if status is Status.SENT else "Ram.PermissionDeny",
        message=None if status is Status.SENT else "no permission ✗ 权限",
        recipients=1,
        attempts=2,
        group_message_id="G-1" if status is Status.SENT else None,
        api_request_id="R-1",
        batch_id="b-abc-1",
        completed_at_ms=1_767_225_600_123,
    )
    values.update(fields)
    return SendResult(request_id, status, **values)


def settled(request: SendRequest, r: SendResult) -> list[Settled]:
    """``r`` as the group of one request that the sender would have marked done."""
    return [Settled(SliceOutcome(r.status, r.code, r.message, r.attempts, r.group_message_id, r.api_request_id, r.batch_id), r.completed_at_ms, [request])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fingerprint_tells_content_apart_and_ignores_key_order() -> None:
    a = req("x")
    assert fingerprint(a) == fingerprint(req("x"))
    assert fingerprint(a) != fingerprint(req("x", numbers=("8613900000002",)))
    assert fingerprint(a) != fingerprint(req("x", account="other"))
    assert fingerprint(a) != fingerprint(req("x", template="goodbye"))
    swapped = req("x")
    swapped.recipients = [{"to": "1", "template_params": {"a": "1", "b": "2"}}]
    same = req("x")
    same.recipients = [{"template_params": {"b": "2", "a": "1"}, "to": "1"}]
    assert fingerprint(swapped) == fingerprint(same)


# -- both ledgers: the same contract ----------------------------------------------------------------


@pytest.fixture
def client(shared_redis: str):
    c = redis.Redis.from_url(shared_redis, socket_timeout=2.0)
    yield c
    c.close()


@pytest.fixture(params=["memory", "redis"])
def ledger(request):
    if request.param == "memory":
        return InMemoryLedger(RETENTION)
    return RedisLedger(request.getfixturevalue("client"), RETENTION, key_prefix="t:")


def test_claim_is_won_once_and_the_loser_sees_the_winner(ledger) -> None:
    assert ledger.claim([req("a"), req("b")], "host:1") == [None, None]
    again = ledger.claim([req("a"), req("c")], "host:2")
    assert again[1] is None
    assert (again[0].state, again[0].owner, again[0].fingerprint) == (CLAIMED, "host:1", fingerprint(req("a")))


def test_a_request_twice_in_one_claim_is_claimed_once(ledger) -> None:
    first, second = ledger.claim([req("a"), req("a")], "host:1")
    assert first is None and (second.state, second.owner) == (CLAIMED, "host:1")


def test_ids_are_scoped_by_account(ledger) -> None:
    ledger.claim([req("a", account="one")], "host:1")
    ledger.mark_done(settled(req("a", account="one"), result("a")))
    assert ledger.claim([req("a", account="two")], "host:1") == [None]


def test_in_flight_then_done_keeps_the_fingerprint(ledger) -> None:
    a = req("a")
    ledger.claim([a], "host:1")
    ledger.mark_in_flight([a], "host:1")
    [entry] = ledger.lookup([a])
    assert (entry.state, entry.owner, entry.fingerprint) == (IN_FLIGHT, "host:1", fingerprint(a))
    ledger.mark_done(settled(a, result("a")))
    [entry] = ledger.lookup([a])
    assert (entry.state, entry.result, entry.fingerprint) == (DONE, result("a"), fingerprint(a))


def test_release_drops_a_claim_and_orphans_a_mark_in_flight(ledger) -> None:
    claimed, sent, others = req("claimed"), req("sent"), req("others")
    ledger.claim([claimed, sent], "me")
    ledger.claim([others], "someone")
    ledger.mark_in_flight([sent], "me")
    ledger.release([claimed, sent, others], "me")
    gone, orphan, kept = ledger.lookup([claimed, sent, others])
    assert gone is None
    assert (orphan.state, orphan.owner, orphan.since, orphan.fingerprint) == (IN_FLIGHT, "", 0.0, fingerprint(sent))
    assert (kept.state, kept.owner) == (CLAIMED, "someone")


def test_take_over_replaces_only_the_entry_it_was_given(ledger) -> None:
    a = req("a")
    ledger.claim([a], "dead")
    [stale] = ledger.claim([a], "me")
    assert ledger.take_over(a, stale, "me")
    assert ledger.lookup([a])[0].owner == "me"
    assert not ledger.take_over(a, stale, "other"), "another instance that saw the same stale mark loses"
    assert ledger.lookup([a])[0].owner == "me"


@pytest.mark.parametrize(
    "stored",
    [
        result("sent"),
        result("failed", Status.FAILED),
        result("bare", Status.EXPIRED, code=None, message=None, group_message_id=None, api_request_id=None, batch_id=None, attempts=0),
        result("split", group_message_id="G-1,G-2", batch_id="b-1,b-2"),
    ],
)
def test_stored_result_round_trips_equal(ledger, stored: SendResult) -> None:
    request = req(stored.request_id)
    ledger.claim([request], "me")
    ledger.mark_done(settled(request, stored))
    [entry] = ledger.claim([request], "other")
    assert (entry.state, entry.owner, entry.result) == (DONE, None, stored)


# -- InMemoryLedger -------------------------------------------------------------------------------


def test_in_memory_entries_expire_after_retention() -> None:
    clock = wall_clock()
    ledger = InMemoryLedger(RETENTION, clock=clock)
    ledger.mark_done(settled(req("a"), result("a")))
    clock.now += RETENTION + 1
    assert ledger.lookup([req("a")]) == [None]


def test_in_memory_oldest_entries_go_beyond_max_entries() -> None:
    clock = wall_clock()
    ledger = InMemoryLedger(RETENTION, clock=clock, max_entries=3)
    for i in range(5):
        ledger.claim([req(f"r{i}")], "me")
        clock.now += 1
    assert [e is not None for e in ledger.lookup([req(f"r{i}") for i in range(5)])] == [False, False, True, True, True]


def test_in_memory_a_done_mark_moves_the_id_to_the_newest_end() -> None:
    ledger = InMemoryLedger(RETENTION, clock=wall_clock(), max_entries=3)
    ledger.claim([req("a"), req("b"), req("c")], "me")
    ledger.mark_done(settled(req("a"), result("a")))
    ledger.claim([req("d")], "me")
    assert [e is not None for e in ledger.lookup([req(i) for i in "abcd"])] == [True, False, True, True]  # b was the oldest mark


# -- RedisLedger ----------------------------------------------------------------------------------


def test_redis_keys_carry_the_prefix_the_account_and_the_retention_ttl(client) -> None:
    ledger = RedisLedger(client, RETENTION, key_prefix="test:ledger:")
    ledger.claim([req("a")], "host:1")
    ledger.mark_done(settled(req("b", account="other"), result("b")))
    assert sorted(k.decode() for k in client.keys("*")) == ["test:ledger:{acct}:a", "test:ledger:{other}:b"]
    for key in client.keys("*"):
        assert RETENTION - 5 <= client.ttl(key) <= RETENTION


def test_redis_a_mark_is_as_fresh_as_its_owners_last_beat(client) -> None:
    ledger = RedisLedger(client, RETENTION, key_prefix="t:", stale_s=30)
    a = req("a")
    ledger.claim([a], "host:1")
    mark = json.loads(client.get("t:{acct}:a"))
    client.set("t:{acct}:a", json.dumps({**mark, "t": 1000.0}), keepttl=True)  # written long ago
    [old] = ledger.lookup([a])
    assert old.since < time.time() - 3600
    ledger.beat("host:1")
    [fresh] = ledger.lookup([a])
    assert time.time() - 5 <= fresh.since <= time.time()
    assert 25 <= client.ttl("t:owner:host:1") <= 30, "a beat lasts stale_s"


def test_redis_owner_thread_beats(client) -> None:
    ledger = RedisLedger(client, RETENTION, key_prefix="t:", stale_s=1, owner="beater")
    deadline = time.monotonic() + 5
    while client.get("t:owner:beater") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    ledger.close()
    assert client.get("t:owner:beater") is not None


def test_redis_down_with_the_service_client_never_raises() -> None:
    down = connect(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    ledger = RedisLedger(down, RETENTION, key_prefix="chatapp:ledger:")
    started = time.monotonic()
    assert ledger.claim([req("a")], "me") == [None], "claimed: sent without de-duplication"
    ledger.mark_done(settled(req("a"), result("a")))
    ledger.release([req("a")], "me")
    assert ledger.take_over(req("a"), LedgerEntry(CLAIMED, "x", 0.0, token=b"x"), "me")
    assert not ledger.healthy()
    assert time.monotonic() - started < 5
    down.close()


@pytest.fixture
def readonly_redis(private_redis):
    """The private redis-server, made a replica of a master that does not exist: every write is
    answered READONLY, reads still work."""
    client = connect(private_redis.url, timeout_s=2.0)
    client.replicaof("127.0.0.1", free_port())
    yield client
    client.replicaof("NO", "ONE")
    client.close()


def test_redis_error_replies_are_an_outage_and_marks_are_written_once_it_is_over(readonly_redis, caplog) -> None:
    ledger = RedisLedger(readonly_redis, RETENTION, key_prefix="t:")
    a = req("a")
    with caplog.at_level(logging.INFO, logger="consumer.ledger"):
        assert ledger.claim([a], "me") == [None]
        ledger.mark_done(settled(a, result("a")))  # kept for later
        assert not ledger.healthy()
        readonly_redis.replicaof("NO", "ONE")
        assert ledger.claim([req("b")], "me") == [None]
        assert ledger.healthy()
    assert ledger.lookup([a])[0].result == result("a"), "the mark kept during the outage was written with the next call"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ReadOnlyError" in warnings[0].getMessage()
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_redis_noscript_after_a_flush_loads_the_script_again(client) -> None:
    ledger = RedisLedger(client, RETENTION, key_prefix="t:")
    a = req("a")
    ledger.claim([a], "dead")
    [stale] = ledger.claim([a], "me")
    client.script_flush()
    assert ledger.take_over(a, stale, "me") and ledger.healthy()
