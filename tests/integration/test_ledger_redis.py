"""consumer.ledger_redis: RedisLedger on real Redis (the machine's db 15, and a private redis-server made
read-only): the contract both ledgers keep, and what only Redis has (keys, TTLs, beats, scripts)."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest
import redis

from consumer.fingerprint import fingerprint
from consumer.ledger import CLAIMED, IN_FLIGHT
from consumer.ledger_redis import RELEASE_CHUNK, RedisLedger
from consumer.limiter import connect
from tests.fixtures.builders import req, result, settled
from tests.fixtures.ledger_contract import (  # noqa: F401 (collected here, with this module's ledger)
    test_a_request_twice_in_one_claim_is_claimed_once,
    test_claim_is_won_once_and_the_loser_sees_the_winner,
    test_ids_are_scoped_by_account,
    test_in_flight_then_done_keeps_the_fingerprint_and_the_mark_its_calls_task_id,
    test_release_drops_a_claim_and_orphans_a_mark_in_flight,
    test_stored_result_round_trips_equal,
    test_take_over_replaces_only_the_entry_it_was_given,
)

RETENTION = 3600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def client(shared_redis: str):
    c = redis.Redis.from_url(shared_redis, socket_timeout=2.0)
    yield c
    c.close()


@pytest.fixture
def ledger(client):
    return RedisLedger(client, RETENTION, key_prefix="t:")


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


def test_redis_a_revocations_release_of_thousands_in_chunks(client) -> None:
    """A revocation gives up thousands of requests at once (``RELEASE_CHUNK`` a script call):
    every one of the owner's claims goes, its marks in flight are orphaned with their
    fingerprints, other owners' marks and results stay, whatever chunk or account they are in."""
    ledger = RedisLedger(client, RETENTION, key_prefix="t:")
    mine = [req(f"m{i}", account=("one", "two")[i % 2]) for i in range(4 * RELEASE_CHUNK + 500)]
    sent, others, done = mine[::7], [req(f"o{i}") for i in range(300)], [req(f"d{i}") for i in range(300)]
    claimed_only = [r for i, r in enumerate(mine) if i % 7]
    ledger.claim(mine + done, "me")
    ledger.claim(others, "someone")
    ledger.mark_in_flight(sent, "me")
    ledger.mark_done([group for r in done for group in settled(r, result(r.request_id))])
    ledger.release(mine + others + done, "me")
    assert not client.exists(*[f"t:{{{r.key.account}}}:{r.request_id}" for r in claimed_only]), "a claim survived"
    orphans = ledger.lookup(sent)
    assert all((e.state, e.owner, e.since, e.fingerprint) == (IN_FLIGHT, "", 0.0, fingerprint(r)) for e, r in zip(orphans, sent))
    assert {(e.state, e.owner) for e in ledger.lookup(others)} == {(CLAIMED, "someone")}
    assert [e.result for e in ledger.lookup(done)] == [result(r.request_id) for r in done]


def test_redis_a_revocation_releases_thousands_in_a_few_script_calls(private_redis) -> None:
    """The group waits for the revocation, and the main loop with it (decision 0040): releasing
    the claims of 10,000 requests given up takes one script call a thousand, by the Redis
    server's own count of commands (it was a GET and a compare-and-swap call each)."""
    client = redis.Redis.from_url(private_redis.url, socket_timeout=10.0)
    ledger = RedisLedger(client, RETENTION, key_prefix="t:")
    given_up = [req(f"r{i}") for i in range(10 * RELEASE_CHUNK)]
    ledger.claim(given_up, "me")
    client.config_resetstat()
    ledger.release(given_up, "me")
    stats = client.info("commandstats")
    scripts = sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))
    assert 0 < scripts <= 10, f"{scripts} script calls to release {len(given_up)} claims"
    assert stats.get("cmdstat_del", {}).get("calls", 0) == len(given_up), "every claim dropped"
    assert not client.keys("t:*")
    client.close()
