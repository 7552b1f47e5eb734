"""GCRA core, adaptive factor and InProcessLimiter, all on an injected clock (no sleeping)."""

from __future__ import annotations

import threading
import time

import pytest

from consumer.limiter import AccountLimit, AdaptivePolicy, InProcessLimiter, RateFactor
from consumer.limiter.gcra import catch_up_s, emission_interval, gcra, push_out
from tests.fixtures.clock import FakeClock

TEN = AccountLimit(10.0)
INTERVAL = emission_interval(10.0, 0.02)  # 0.102 s


class Recorder:
    """A LimiterObserver that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def granted(self, account: str) -> None:
        self.calls.append(("granted", (account,)))

    def denied(self, account: str, wait_s: float) -> None:
        self.calls.append(("denied", (account, wait_s)))

    def rate_changed(self, account: str, rate: float) -> None:
        self.calls.append(("rate_changed", (account, rate)))

    def backend_error(self, account: str, exc: BaseException) -> None:
        self.calls.append(("backend_error", (account, exc)))

    def fallback_changed(self, active: bool) -> None:
        self.calls.append(("fallback_changed", (active,)))


def grant_times(limiter: InProcessLimiter, clock: FakeClock, account: str, seconds: float) -> list[float]:
    """Drive ``account`` like the dispatcher does (ask, wait what it says) for ``seconds``; return grant times."""
    end, times = clock.now + seconds, []
    while clock.now < end:
        wait = limiter.acquire(account)
        if wait == 0.0:
            times.append(clock.now)
        else:
            clock.advance(wait)
    return times


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most grants in any closed window of ``window`` seconds."""
    j, best = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


# --- pure core -------------------------------------------------------------------------------


def test_gcra_grants_then_spaces_by_interval() -> None:
    first = gcra(None, 5.0, 0.1, 1)
    assert first == (0.0, 5.1)
    second = gcra(first.tat, 5.04, 0.1, 1)
    assert second.wait_s == pytest.approx(0.06) and second.tat == 5.1  # denied: state unchanged
    assert gcra(first.tat, 5.1, 0.1, 1) == (0.0, pytest.approx(5.2))


def test_gcra_idle_never_banks_more_than_burst() -> None:
    tat = gcra(None, 0.0, 0.1, 3).tat
    # a long idle period, then back-to-back asks at one instant: exactly `burst` go through
    now, granted = 500.0, 0
    while (verdict := gcra(tat, now, 0.1, 3)).wait_s == 0.0:
        tat, granted = verdict.tat, granted + 1
    assert granted == 3
    assert verdict.wait_s == pytest.approx(0.1)


def test_push_out_delays_next_grant_without_burst() -> None:
    tat = push_out(None, 10.0, 2.0, 0.1, 3)
    assert gcra(tat, 11.99, 0.1, 3).wait_s == pytest.approx(0.01)
    first = gcra(tat, 12.0, 0.1, 3)
    assert first.wait_s == 0.0
    assert gcra(first.tat, 12.0, 0.1, 3).wait_s == pytest.approx(0.1)
    assert push_out(20.0, 10.0, 1.0, 0.1, 1) == 20.0  # never pulls a later TAT in


def test_rate_factor_decrease_floor_holdoff_and_recovery() -> None:
    policy = AdaptivePolicy()
    f = RateFactor().throttled(0.0, policy)
    assert f.at(0.0, policy) == 0.5
    assert f.throttled(0.5, policy) is f  # echo within the hold-off
    assert f.at(2.0, policy) == pytest.approx(0.6)  # +5 % per second
    assert f.at(100.0, policy) == 1.0  # capped at the configured rate
    for t in range(1, 10):
        f = f.throttled(float(t) * 1.0, policy)
    assert f.at(9.0, policy) == pytest.approx(0.1)  # floor


# --- InProcessLimiter ------------------------------------------------------------------------


def test_grants_are_spaced_and_fill_the_budget() -> None:
    clock = FakeClock()
    limiter = InProcessLimiter({}, TEN, clock=clock)
    times = grant_times(limiter, clock, "acct", 10.0)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) == pytest.approx(INTERVAL)
    assert max_in_window(times) == 10
    assert len(times) == 1 + int(10.0 / INTERVAL)  # 99 of 100: only the margin is given up


def test_safety_margin_is_what_keeps_a_window_at_the_limit() -> None:
    eight = AccountLimit(8.0)  # 1/8 s is exact in binary: no float noise at the window edges
    clock = FakeClock(0.0)
    without = InProcessLimiter({}, eight, safety_margin=0.0, clock=clock)
    assert max_in_window(grant_times(without, clock, "acct", 3.0)) == 9  # 0, 1/8, ..., 1: one too many
    clock = FakeClock(0.0)
    margin = InProcessLimiter({}, eight, safety_margin=0.05, clock=clock)
    times = grant_times(margin, clock, "acct", 3.0)
    assert min(b - a for a, b in zip(times, times[1:])) == pytest.approx(1.05 / 8)
    assert max_in_window(times) == 8


def test_burst_then_steady_rate_and_idle_does_not_accumulate() -> None:
    clock = FakeClock()
    limiter = InProcessLimiter({"bursty": AccountLimit(10.0, burst=3)}, TEN, clock=clock)
    assert [limiter.acquire("bursty") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("bursty") == pytest.approx(INTERVAL)
    clock.advance(3600.0)  # an hour idle still buys only `burst`
    assert [limiter.acquire("bursty") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("bursty") > 0.0
    times = grant_times(limiter, clock, "bursty", 5.0)
    assert max_in_window(times) <= 3 + int(1.0 / INTERVAL)  # burst + floor(window / interval)


def test_accounts_are_independent_and_default_applies() -> None:
    clock = FakeClock()
    limiter = InProcessLimiter({"slow": AccountLimit(2.0)}, TEN, clock=clock)
    assert limiter.acquire("slow") == 0.0
    assert limiter.acquire("slow") == pytest.approx(emission_interval(2.0, 0.02))
    for account in ("a", "b", "c"):  # unknown accounts: default limit, own state each
        assert limiter.acquire(account) == 0.0
        assert limiter.acquire(account) == pytest.approx(INTERVAL)
    limiter.throttled("a")
    assert limiter.effective_rate("a") == 5.0
    assert limiter.effective_rate("b") == 10.0
    assert limiter.effective_rate("slow") == 2.0


def test_throttled_halves_then_recovers_to_configured_rate() -> None:
    clock = FakeClock()
    rec = Recorder()
    limiter = InProcessLimiter({}, TEN, clock=clock, observer=rec)
    limiter.acquire("acct")
    limiter.throttled("acct")
    limiter.throttled("acct")  # same overload echoed by a call in flight: no second halving
    assert limiter.effective_rate("acct") == 5.0
    clock.advance(1.0)
    limiter.throttled("acct")
    assert limiter.effective_rate("acct") == pytest.approx(2.75)  # (0.5 + 0.05) * 0.5
    for _ in range(10):
        clock.advance(1.0)
        limiter.throttled("acct")
    assert limiter.effective_rate("acct") == pytest.approx(1.0)  # floor: 10 % of configured
    clock.advance(4.0)
    assert limiter.effective_rate("acct") == pytest.approx(3.0)  # +0.5/s (5 % of 10)
    times = grant_times(limiter, clock, "acct", 2.0)
    assert min(b - a for a, b in zip(times, times[1:])) > INTERVAL * 2.5  # still slow
    clock.advance(30.0)
    assert limiter.effective_rate("acct") == 10.0
    rates = [args[1] for name, args in rec.calls if name == "rate_changed"]
    assert rates[:2] == [10.0, 5.0] and min(rates) == pytest.approx(1.0)


def test_retry_after_pushes_the_next_grant_out() -> None:
    clock = FakeClock()
    limiter = InProcessLimiter({}, TEN, clock=clock)
    assert limiter.acquire("acct") == 0.0
    limiter.throttled("acct", retry_after_s=3.0)
    assert limiter.acquire("acct") == pytest.approx(3.0)
    clock.advance(3.0)
    assert limiter.acquire("acct") == 0.0
    assert limiter.acquire("acct") == pytest.approx(emission_interval(6.5, 0.02))  # 0.5 + 3 s of recovery


def test_observer_sees_grants_and_denials() -> None:
    clock = FakeClock()
    rec = Recorder()
    limiter = InProcessLimiter({}, TEN, clock=clock, observer=rec)
    limiter.acquire("acct")
    limiter.acquire("acct")
    assert rec.calls == [
        ("rate_changed", ("acct", 10.0)),
        ("granted", ("acct",)),
        ("denied", ("acct", pytest.approx(INTERVAL))),
    ]
    assert limiter.healthy()


def test_threads_hammering_never_get_grants_closer_than_the_interval_less_the_catch_up() -> None:
    # the clock is read once per decision, under the limiter's lock: record the reading each
    # thread's grant was decided on
    seen = threading.local()

    def clock() -> float:
        seen.now = time.monotonic()
        return seen.now

    limiter = InProcessLimiter({}, AccountLimit(200.0), clock=clock)
    interval = emission_interval(200.0, 0.02)
    grants: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + 1.0

    def hammer() -> None:
        while time.monotonic() < stop:
            if limiter.acquire("acct") == 0.0:
                with lock:
                    grants.append(seen.now)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10.0)
    assert not any(t.is_alive() for t in threads)
    grants.sort()
    assert len(grants) >= 150  # eight busy threads keep the 196/s budget nearly full
    assert min(b - a for a, b in zip(grants, grants[1:])) >= interval - catch_up_s(0.02) - 1e-6


def test_a_late_caller_keeps_the_schedule_within_the_catch_up() -> None:
    from consumer.limiter.gcra import gcra

    interval = 0.101
    first = gcra(None, 10.0, interval, 1, catch_up=0.003)
    assert first == (0.0, 10.0 + interval)
    late = gcra(first.tat, first.tat + 0.002, interval, 1, catch_up=0.003)
    assert late.wait_s == 0.0 and late.tat == pytest.approx(10.0 + 2 * interval), "2 ms late: back on the grid"
    idle = gcra(late.tat, late.tat + 0.5, interval, 1, catch_up=0.003)
    assert idle.tat == pytest.approx(late.tat + 0.5 + interval), "idle longer than the catch-up: no banked grants"


def test_with_catch_up_rate_plus_one_grants_never_fit_in_one_second() -> None:
    """Callers always late by a random 0-2.5 ms: the grid holds, and any 11 grants span > 1 s."""
    import random

    from consumer.limiter.gcra import catch_up_s, emission_interval, gcra

    rng = random.Random(3)
    interval, catch = emission_interval(10, 0.01), catch_up_s(0.01)
    tat, now, grants = None, 0.0, []
    while len(grants) < 2000:
        verdict = gcra(tat, now, interval, 1, catch)
        if verdict.wait_s == 0.0:
            grants.append(now)
            tat = verdict.tat
            now = tat + rng.uniform(0.0, 0.0025)  # the next caller wakes at its slot, up to 2.5 ms late
        else:
            now += verdict.wait_s
    spans = [grants[i + 10] - grants[i] for i in range(len(grants) - 10)]
    assert min(spans) > 1.0
    assert (len(grants) - 1) / (grants[-1] - grants[0]) > 0.995 * 10 / 1.01, "lateness is not lost"
