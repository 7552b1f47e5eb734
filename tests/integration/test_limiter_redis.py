"""RedisLimiter over real Redis: one budget across processes, shared adaptive factor, outage fallback.

The shared tests use db 15 (or `CHATAPP_TEST_REDIS_DB`) of the Redis at 127.0.0.1:6379 under a unique key prefix (deleted in
teardown); the outage test runs its own redis-server on a free port, killed and restarted in the test.
"""

from __future__ import annotations

import logging
import multiprocessing
import socket
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from redis import Redis

from consumer.limiter import RESERVE_AHEAD_S, AccountLimit, RedisLimiter, connect
from consumer.limiter.gcra import emission_interval
from tests.fixtures.builders import Recorder, max_in_window
from tests.fixtures.clock import FakeClock
from tests.fixtures.redis import SHARED_URL, PrivateRedis

TEN = AccountLimit(10.0)


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"test:limiter:{uuid.uuid4().hex}:"
    yield prefix
    client = Redis.from_url(SHARED_URL, socket_timeout=2.0)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def make_limiter(prefix: str) -> Iterator[Callable[..., RedisLimiter]]:
    """Builds RedisLimiters on the shared Redis (own client each, like separate instances); closes them after."""
    made: list[RedisLimiter] = []

    def make(**kwargs: object) -> RedisLimiter:
        limiter = RedisLimiter(connect(SHARED_URL), {}, TEN, key_prefix=prefix, fallback_instances=3, **kwargs)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        limiter.close()


# --- one budget across processes -------------------------------------------------------------


def dispatch_loop(url: str, prefix: str, start_at: float, duration_s: float, reserve: bool = False) -> tuple[bool, list[float]]:
    """One instance's dispatcher (runs in a spawned process): ask, sleep what the limiter says, repeat;
    with ``reserve``, take a slot up to half a second ahead and go at it (no second ask).

    Returns whether it was ready before ``start_at`` and the wall-clock times of its grants (of
    its slots).
    """
    limiter = RedisLimiter(connect(url), {}, TEN, key_prefix=prefix, fallback_instances=3)
    limiter.effective_rate("acct")  # connect and load the script before the clock starts
    ready = time.time() < start_at
    time.sleep(max(0.0, start_at - time.time()))
    grants: list[float] = []
    while (now := time.time()) < start_at + duration_s:
        if reserve:  # the slot's time as this process sees it (a late wake-up is the caller's to report)
            answer = limiter.reserve("acct")
            assert answer.answered_at is not None
            due = time.time() - (time.monotonic() - answer.answered_at) - answer.late_s + answer.wait_s  # the answer, less its way back
            if answer.reserved and due < start_at + duration_s:
                grants.append(due)
            time.sleep(max(0.0, due - time.time()))
            continue
        wait = limiter.acquire("acct")
        if wait == 0.0:
            grants.append(now)
        else:
            time.sleep(min(wait, start_at + duration_s - now))
    limiter.close()
    return ready, grants


@pytest.mark.parametrize("reserve", [False, True], ids=["acquire", "reserve"])
def test_three_processes_share_one_budget_exactly(prefix: str, reserve: bool) -> None:
    duration = 5.0
    start_at = time.time() + 3.0
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        results = pool.starmap_async(dispatch_loop, [(SHARED_URL, prefix, start_at, duration, reserve)] * 3).get(timeout=30)
    assert all(ready for ready, _ in results), "a process started late: the run did not overlap"
    per_process = [len(grants) for _, grants in results]
    times = sorted(t for _, grants in results for t in grants)
    budget = TEN.rate_per_second * duration
    print(
        f"\ngrants per process {per_process}, total {len(times)} of {budget:.0f} "
        f"({len(times) / budget:.1%}), max in any 1 s window {max_in_window(times)}, "
        f"min gap {min(b - a for a, b in zip(times, times[1:])) * 1000:.1f} ms"
    )
    assert all(n > 0 for n in per_process)
    assert max_in_window(times) <= 10
    assert len(times) >= 0.95 * budget


def test_the_window_holds_a_burst_to_the_rate_per_second(prefix: str) -> None:
    """burst 10 lets ten calls go at once; GCRA alone would allow the 11th one interval later,
    the shared window (the script's list of the latest grants) only once the first is 1.01 s old."""
    limiter = RedisLimiter(connect(SHARED_URL), {}, AccountLimit(10.0, burst=10), safety_margin=0.01, key_prefix=prefix, fallback_instances=3)
    try:
        started = time.monotonic()
        assert [limiter.acquire("acct") for _ in range(10)] == [0.0] * 10
        time.sleep(0.2)  # the scenario: 0.2 s pass after the burst
        wait = limiter.acquire("acct")
        assert wait == pytest.approx(1.01 - (time.monotonic() - started), abs=0.05)
        client = Redis.from_url(SHARED_URL)
        recent = client.zrange(f"{prefix}{{acct}}:recent", 0, -1, withscores=True)
        ttl = client.pttl(f"{prefix}{{acct}}:recent")
        client.close()
        assert len(recent) == 10 and recent[-1][1] - recent[0][1] < 0.1  # the ten grants of the burst
        assert 1000 < ttl <= 2010  # one window after the last grant, plus a second
        # grants that arrived late count later: the 11th call waits for them
        for ticket, _ in recent:
            limiter.arrived_late("acct", ticket.decode(), 0.3)
        limiter.arrived_late("acct", "gone", 5.0)  # a ticket the window no longer holds: nothing to move
        assert limiter.acquire("acct") == pytest.approx(1.31 - (time.monotonic() - started), abs=0.05)
        # a throttled call did not count at CAMS: refunded, it leaves the window
        limiter.refund("acct", recent[0][0].decode())
        assert limiter.acquire("acct") == 0.0
    finally:
        limiter.close()


def test_reservations_follow_the_in_process_rules_across_instances(make_limiter: Callable[..., RedisLimiter], prefix: str) -> None:
    """The script's reserve is gcra.reserve: successive slots one interval apart whichever
    instance asks, none past the horizon, and the window's entry at the slot's own time."""
    a, b = make_limiter(), make_limiter()
    interval = emission_interval(10.0, 0.02)
    started = time.monotonic()
    answers = [(a if k % 2 else b).reserve("acct", f"t{k}") for k in range(12)]
    elapsed = time.monotonic() - started
    reserved = [r.wait_s for r in answers if r.reserved]
    assert 1 + int(RESERVE_AHEAD_S / interval) <= len(reserved) <= 1 + int((RESERVE_AHEAD_S + elapsed) / interval)
    for k, wait in enumerate(reserved):  # each was decided up to `elapsed` after the first
        assert k * interval - elapsed - 0.002 <= wait <= k * interval + 0.002
    refused = [r for r in answers if not r.reserved]
    assert refused and all(0.0 < r.wait_s <= len(reserved) * interval - RESERVE_AHEAD_S + 0.002 for r in refused)
    assert all(r.rate == 10.0 and 0.0 <= r.late_s < 0.05 for r in answers)
    client = Redis.from_url(SHARED_URL)
    scores = [score for _, score in client.zrange(f"{prefix}{{acct}}:recent", 0, -1, withscores=True)]
    ttl = client.pttl(f"{prefix}{{acct}}:recent")
    client.close()
    held = len(reserved)  # fewer than the window's ten: half a window ahead at most
    assert len(scores) == held and scores[-1] - scores[0] == pytest.approx((held - 1) * interval, abs=0.002), "every slot taken, at its time"
    assert 1000 + 10 * interval * 1000 < ttl <= 2000 + (held + 9) * interval * 1000, "one window after the last slot, plus a second"
    assert a.acquire("acct") > 0.0 and b.reserve("acct", ahead_s=0.0).reserved is False, "the slots held ahead are taken"
    a.refund("acct", f"t{len(reserved) - 1}")  # the latest slot's call will not be made: its place in the window is free
    client = Redis.from_url(SHARED_URL)
    assert client.zcard(f"{prefix}{{acct}}:recent") == held - 1
    client.close()


# --- shared adaptive factor ------------------------------------------------------------------


def test_throttle_seen_by_one_instance_slows_the_other(make_limiter: Callable[..., RedisLimiter]) -> None:
    rec = Recorder()
    a, b = make_limiter(), make_limiter(observer=rec)
    assert b.effective_rate("acct") == 10.0
    a.throttled("acct")
    a.throttled("acct")  # echo within the hold-off: still one halving
    assert b.effective_rate("acct") == pytest.approx(5.0, abs=0.1)
    assert b.acquire("acct") == 0.0
    assert b.acquire("acct") == pytest.approx(emission_interval(5.0, 0.02), abs=0.01)
    assert b.effective_rate("other") == 10.0  # per account
    time.sleep(1.0)  # the scenario: one second of recovery
    assert b.effective_rate("acct") == pytest.approx(5.5, abs=0.1)  # +5 % of configured per second
    rates = [args[1] for name, args in rec.calls if name == "rate_changed" and args[0] == "acct"]
    assert rates[0] == 10.0 and rates[1] == pytest.approx(5.0, abs=0.1)


def test_retry_after_holds_every_instance(make_limiter: Callable[..., RedisLimiter], prefix: str) -> None:
    a, b = make_limiter(), make_limiter()
    a.throttled("acct", retry_after_s=2.0)
    assert b.acquire("acct") == pytest.approx(2.0, abs=0.05)
    assert a.acquire("acct") == pytest.approx(2.0, abs=0.05)
    client = Redis.from_url(SHARED_URL)
    tat_ttl = client.pttl(f"{prefix}{{acct}}:tat")
    rate_ttl = client.pttl(f"{prefix}{{acct}}:rate")
    client.close()
    assert 2000 < tat_ttl <= 3000  # the state expires once it no longer matters
    assert 10000 < rate_ttl <= 11000  # (1 - 0.5) / 0.05 s of recovery, plus a second


# --- outage fallback and recovery ------------------------------------------------------------


def timed(call: Callable[[], float]) -> float:
    """Run ``call``; it must not stall the dispatcher."""
    started = time.monotonic()
    result = call()
    assert time.monotonic() - started < 1.0
    return result


def test_outage_falls_back_to_a_share_and_recovers(private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="consumer.limiter")
    clock = FakeClock()  # paces re-probes and the fallback limiter; Redis keeps its own clock
    rec = Recorder()
    limiter = RedisLimiter(connect(private_redis.url), {}, TEN, fallback_instances=3, clock=clock, observer=rec)
    try:
        assert limiter.acquire("acct") == 0.0
        assert limiter.healthy()

        private_redis.kill()
        assert timed(lambda: limiter.acquire("acct")) == 0.0  # served by the fallback
        assert not limiter.healthy()
        assert ("fallback_changed", (True,)) in rec.calls
        assert limiter.effective_rate("acct") == 3.0  # floor(10 / 3)
        assert limiter.acquire("acct") == pytest.approx(emission_interval(3.0, 0.02))

        def errors() -> int:
            return sum(1 for name, _ in rec.calls if name == "backend_error")

        before = errors()
        clock.advance(1.1)
        assert timed(lambda: limiter.acquire("acct")) == 0.0  # one probe, failed: still fallback
        assert errors() == before + 1
        clock.advance(0.5)
        timed(lambda: limiter.acquire("acct"))
        assert not limiter.healthy()
        assert errors() == before + 1  # no probe within a second of the last one

        private_redis.start()
        clock.advance(0.3)
        limiter.acquire("acct")
        assert not limiter.healthy()  # Redis is back, but no probe is due yet
        clock.advance(0.3)
        assert limiter.acquire("acct") == 0.0  # the probe: granted by the shared script again
        assert limiter.healthy()
        assert limiter.acquire("acct") == pytest.approx(emission_interval(10.0, 0.02), abs=0.02)
        assert limiter.effective_rate("acct") == 10.0
    finally:
        limiter.close()

    assert [args for name, args in rec.calls if name == "fallback_changed"] == [(True,), (False,)]
    assert [args[1] for name, args in rec.calls if name == "rate_changed"] == [10.0, 3.0, 10.0]
    records = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "consumer.limiter"]
    assert [level for level, _ in records] == ["WARNING", "INFO"]
    assert "Redis unavailable" in records[0][1] and "restored" in records[1][1]


# --- error replies ---------------------------------------------------------------------------


def make_read_only(client: Redis) -> None:
    with socket.socket() as s:  # a master that does not exist: the server stays a read-only replica
        s.bind(("127.0.0.1", 0))
        client.replicaof("127.0.0.1", s.getsockname()[1])


@pytest.mark.parametrize("fault", ["readonly", "oom", "noperm"])
def test_error_replies_are_an_outage_and_a_read_only_replica_no_recovery(private_redis: PrivateRedis, fault: str) -> None:
    admin = Redis.from_url(private_redis.url, socket_timeout=2.0)
    url = private_redis.url
    if fault == "readonly":
        make_read_only(admin)
    elif fault == "oom":
        admin.config_set("maxmemory", 1)  # below what the server uses: every write is refused OOM
    else:
        admin.acl_setuser("reader", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@read", "+ping", "+@connection"])
        url = f"redis://reader:pw@127.0.0.1:{private_redis.port}/0"
    clock = FakeClock()
    limiter = RedisLimiter(connect(url), {}, TEN, key_prefix="t:", fallback_instances=2, clock=clock)
    try:
        assert limiter.acquire("acct") == 0.0, "granted by the in-process fallback"
        assert not limiter.healthy()
        clock.advance(1.1)
        assert not limiter.healthy(), "the probe writes: a server refusing writes is no recovery"
        admin.replicaof("NO", "ONE")
        admin.config_set("maxmemory", 0)
        admin.acl_setuser("reader", commands=["+@all"])
        clock.advance(1.1)
        assert limiter.healthy()
    finally:
        limiter.close()
        admin.close()


def test_a_flushed_script_is_loaded_again_without_an_outage(make_limiter: Callable[..., RedisLimiter]) -> None:
    limiter = make_limiter()
    assert limiter.acquire("acct") == 0.0
    Redis.from_url(SHARED_URL, socket_timeout=2.0).script_flush()
    assert limiter.acquire("acct") > 0.0, "denied by the shared script, not granted by a fallback"
    assert limiter.healthy()
