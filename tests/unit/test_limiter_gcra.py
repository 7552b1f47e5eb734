"""GCRA core, adaptive factor and InProcessLimiter, all on an injected clock (no sleeping)."""

from __future__ import annotations

import threading
import time

import pytest

from consumer.limiter import RESERVE_AHEAD_S, AccountLimit, AdaptivePolicy, InProcessLimiter, RateFactor
from consumer.limiter.gcra import CATCH_UP_INTERVALS, decide, emission_interval, gcra, next_slot, push_out, reserve, window_capacity, window_wait
from tests.fixtures.builders import Recorder, max_in_window
from tests.fixtures.clock import FakeClock

TEN = AccountLimit(10.0)
INTERVAL = emission_interval(10.0, 0.02)  # 0.102 s


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


def test_the_window_holds_a_burst_to_the_rate_per_second() -> None:
    clock = FakeClock(0.0)
    limiter = InProcessLimiter({}, AccountLimit(10.0, burst=10), safety_margin=0.01, clock=clock)
    assert [limiter.acquire("acct") for _ in range(10)] == [0.0] * 10
    clock.advance(0.2)  # GCRA alone would grant again after one interval
    assert limiter.acquire("acct") == pytest.approx(0.81)
    clock.advance(0.81)
    assert limiter.acquire("acct") == 0.0


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


def test_threads_hammering_never_put_more_than_the_rate_into_a_window() -> None:
    # the clock is read first for the decision, under the limiter's lock: record the reading
    # each thread's grant was decided on
    seen = threading.local()

    def clock() -> float:
        now = time.monotonic()
        seen.readings.append(now)
        return now

    limiter = InProcessLimiter({}, AccountLimit(200.0), clock=clock)
    span = 200 * emission_interval(200.0, 0.02)  # 1.02 s
    grants: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + 2.0

    def hammer() -> None:
        while time.monotonic() < stop:
            seen.readings = []
            if limiter.acquire("acct") == 0.0:
                with lock:
                    grants.append(seen.readings[0])  # the decision's (a later one times the answer's way back)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10.0)
    assert not any(t.is_alive() for t in threads)
    grants.sort()
    # more than a window's worth of grants, so that windows are compared; how full the budget is
    # kept is test_grants_are_spaced_and_fill_the_budget's (a fake clock: threads starved of CPU on
    # a busy machine ask too seldom to fill a window, which says nothing of the limiter)
    assert len(grants) > 200
    assert max_in_window(grants, span - 2e-6) <= 200


def test_window_wait_counts_the_latest_capacity_grants() -> None:
    assert window_capacity(10.0) == 10 and window_capacity(2.5) == 2 and window_capacity(0.5) == 1
    assert window_wait([0.0, 0.5], 0.6, 3, 1.0) == 0.0  # room in the window
    assert window_wait([0.0, 0.2, 0.5], 0.6, 3, 1.0) == pytest.approx(0.4)  # the oldest leaves at 1.0
    assert window_wait([0.0, 0.2, 0.5], 1.0, 3, 1.0) == 0.0
    assert window_wait([9.0, 0.0, 0.2, 0.5], 0.6, 3, 1.0) == pytest.approx(0.4), "only the latest capacity count"


def test_a_late_caller_catches_up_within_the_window() -> None:
    interval = 0.101
    first = decide(None, [], 10.0, interval, 1, 10)
    assert first == (0.0, 10.0 + interval)
    late = decide(first.tat, [10.0], first.tat + 0.05, interval, 1, 10)
    assert late.wait_s == 0.0 and late.tat == pytest.approx(10.0 + 2 * interval), "50 ms late: back on the grid"
    too_late = CATCH_UP_INTERVALS * interval + 0.01
    idle = decide(late.tat, [10.0], late.tat + too_late, interval, 1, 10)
    assert idle.tat == pytest.approx(late.tat + too_late + interval), "idle longer than the catch-up: no banked grants"
    caught_up = [10.0 + k * 0.05 for k in range(10)]  # ten grants in 0.45 s (callers catching up)
    tat = caught_up[-1] + interval
    denied = decide(tat, caught_up, tat, interval, 1, 10)
    assert denied.wait_s == pytest.approx(10.0 + 10 * interval - tat), "the window waits for the oldest to leave"
    assert denied.tat == pytest.approx(tat), "a window denial leaves the TAT as it was"


def test_a_late_call_costs_its_lateness_once_not_on_every_later_slot() -> None:
    """One call 60 ms late: the calls after it keep their slots; only the one that shares its
    window (ten grants later) waits, once. Plain GCRA would push every later slot back."""
    clock = FakeClock(0.0)
    limiter = InProcessLimiter({}, TEN, safety_margin=0.01, clock=clock)
    interval = emission_interval(10.0, 0.01)
    grants: list[float] = []
    for k in range(40):
        clock.now = max(clock.now, k * interval + (0.06 if k == 5 else 0.0))  # callers come at their slot
        while (wait := limiter.acquire("acct")) > 0.0:
            clock.advance(wait)
        grants.append(clock.now)
    on_grid = [k * interval for k in range(40)]
    shifted = [k for k in range(40) if grants[k] != pytest.approx(on_grid[k])]
    assert shifted == [5, 15, 25, 35], "only the late call's lane moves"
    assert grants[15] - grants[5] == pytest.approx(10 * interval)
    assert max_in_window(grants, 10 * interval - 2e-6) == 10


def test_random_lateness_never_overfills_a_window_and_is_won_back() -> None:
    """Callers late by up to 100 ms (a GC pause) one time in twenty: any 11 grants still span the
    window (1.01 s), and the rate stays within 1 % of 10 / 1.01 calls/s (GCRA alone, losing each
    late call's lateness on every later slot, gets 2 % less)."""
    import random

    rng = random.Random(3)
    clock = FakeClock(0.0)
    limiter = InProcessLimiter({}, TEN, safety_margin=0.01, clock=clock)
    grants: list[float] = []
    while len(grants) < 2000:
        wait = limiter.acquire("acct")
        if wait == 0.0:
            grants.append(clock.now)
            continue
        late = rng.uniform(0.0, 0.1) if rng.random() < 0.05 else 0.0
        clock.advance(wait + late)
    spans = [grants[i + 10] - grants[i] for i in range(len(grants) - 10)]
    assert min(spans) >= 1.01 - 1e-6
    rate = (len(grants) - 1) / (grants[-1] - grants[0])
    assert rate > 0.99 * 10 / 1.01, f"lateness is won back ({rate:.3f}/s)"


# --- reservations ----------------------------------------------------------------------------


def test_next_slot_is_where_decide_would_grant() -> None:
    interval = 0.101
    assert next_slot(None, [], 5.0, interval, 1, 10) == (0.0, 5.0 + interval)
    assert next_slot(5.2, [], 5.0, interval, 1, 10) == (pytest.approx(0.2), pytest.approx(5.2 + interval)), "GCRA's slot"
    full = [4.3 + k * 0.01 for k in range(10)]  # ten grants bunched (callers catching up)
    wait, tat = next_slot(5.0, full, 5.0, interval, 1, 10)
    assert wait == pytest.approx(4.3 + 10 * interval - 5.0), "the window's slot"
    assert decide(5.0, full, 5.0 + wait, interval, 1, 10).wait_s == 0.0
    assert tat == pytest.approx(5.0 + wait + interval), "an idle TAT behind the window: back on the grid from the slot"


def test_reserve_takes_the_next_slot_within_the_horizon_only() -> None:
    interval = 0.101
    taken = reserve(5.3, [], 5.0, interval, 1, 10, ahead_s=0.5)
    assert taken == (True, pytest.approx(0.3), pytest.approx(5.3 + interval))
    refused = reserve(5.8, [], 5.0, interval, 1, 10, ahead_s=0.5)
    assert refused == (False, pytest.approx(0.3), 5.8), "ask again when the slot is 0.5 s away; the state stays"
    assert reserve(5.3, [], 5.0, interval, 1, 10, ahead_s=0.0) == (False, pytest.approx(0.3), 5.3), "ahead 0: acquire"


def test_reservations_keep_to_the_grid_and_the_window() -> None:
    """Twenty callers reserving at one instant get twenty successive slots one interval apart
    (up to the horizon); the others are told when to ask again."""
    clock = FakeClock(0.0)
    limiter = InProcessLimiter({}, TEN, clock=clock)
    answers = [limiter.reserve("acct", f"t{k}") for k in range(20)]
    reserved = [r.wait_s for r in answers if r.reserved]
    assert reserved == pytest.approx([k * INTERVAL for k in range(len(reserved))])
    assert len(reserved) == 1 + int(RESERVE_AHEAD_S / INTERVAL), "no further ahead than RESERVE_AHEAD_S"
    late = [r for r in answers if not r.reserved]
    assert late and all(r.wait_s == pytest.approx(len(reserved) * INTERVAL - RESERVE_AHEAD_S) for r in late)
    assert limiter.reserve("acct", "x", ahead_s=5.0).reserved is False, "the horizon is capped at RESERVE_AHEAD_S"
    assert all(r.rate == 10.0 and r.late_s == 0.0 for r in answers)


def test_reservations_and_grants_on_the_spot_share_one_budget() -> None:
    """Callers that reserve ahead (and go at their slot) mixed with callers that take a grant
    now or ask again: every window holds at most the account's calls, and the budget is used."""
    import random

    rng = random.Random(7)
    clock = FakeClock(0.0)
    limiter = InProcessLimiter({}, TEN, safety_margin=0.01, clock=clock)
    calls: list[float] = []
    while clock.now < 20.0:
        if rng.random() < 0.5:
            answer = limiter.reserve("acct", ahead_s=rng.uniform(0.0, 1.0))
            if answer.reserved:
                calls.append(clock.now + answer.wait_s)
            clock.advance(rng.uniform(0.0, 0.05))
        else:
            wait = limiter.acquire("acct")
            if wait == 0.0:
                calls.append(clock.now)
            else:
                clock.advance(min(wait, rng.uniform(0.0, 0.05)))
    calls.sort()
    assert max_in_window(calls, 1.01 - 2e-6) <= 10
    assert len(calls) >= 0.97 * 20 * 10 / 1.01


def test_a_reserved_slot_can_be_refunded_and_arrive_late() -> None:
    clock = FakeClock(0.0)
    burst = InProcessLimiter({}, AccountLimit(10.0, burst=10), safety_margin=0.01, clock=clock)
    assert [burst.reserve("acct", f"t{k}").wait_s for k in range(10)] == [0.0] * 10
    assert burst.reserve("acct", "t10") == (False, pytest.approx(1.01 - RESERVE_AHEAD_S), 10.0, 0.0, 0.0), "the window's slot (1.01 s) is past the horizon"
    burst.refund("acct", "t0")  # a slot whose call will not be made (or that CAMS did not count)
    assert burst.reserve("acct", "t10") == (True, pytest.approx(0.101), 10.0, 0.0, 0.0), "its place in the window is free: GCRA's slot"

    clock = FakeClock(0.0)
    even = InProcessLimiter({}, TEN, safety_margin=0.01, clock=clock)
    slots = []
    for k in range(10):  # each slot reserved as far ahead as the horizon lets it
        clock.now = max(0.0, k * 0.101 - RESERVE_AHEAD_S)
        slots.append(clock.now + even.reserve("acct", f"t{k}").wait_s)
    assert slots == pytest.approx([k * 0.101 for k in range(10)])
    assert even.reserve("acct", "x").wait_s == pytest.approx(1.01 - clock.now - RESERVE_AHEAD_S)
    even.arrived_late("acct", "t0", 0.3)  # the first call reached CAMS 0.3 s after its slot
    assert even.reserve("acct", "t10").wait_s == pytest.approx(1.111 - clock.now - RESERVE_AHEAD_S), "the window waits for the oldest that counts"


# --- boundaries ------------------------------------------------------------------------------


def test_a_grant_due_within_a_microsecond_is_given_now_as_the_redis_limiter_does() -> None:
    """Decisions are to the microsecond (redis.py's Lua grants a wait <= 0.000001): a wait of
    exactly 1 us is a grant, 1.5 us is a wait, for both rules."""
    assert gcra(1e-6, 0.0, 0.1, 1) == (0.0, pytest.approx(0.1 + 1e-6))
    assert gcra(1.5e-6, 0.0, 0.1, 1).wait_s == pytest.approx(1.5e-6)
    assert window_wait([0.0], 0.0, 1, 1e-6) == 0.0
    assert window_wait([0.0], 0.0, 1, 1.5e-6) == pytest.approx(1.5e-6)


def test_an_idle_tat_is_clamped_to_now_unless_within_the_catch_up() -> None:
    assert gcra(9.5, 10.0, 0.5, 1) == (0.0, 10.5)  # no catch-up by default: back from now
    assert gcra(8.0, 10.0, 0.5, 1, catch_up=2.0) == (0.0, 8.5)  # exactly catch_up behind: still on its grid
    assert gcra(7.5, 10.0, 0.5, 1, catch_up=2.0) == (0.0, 10.5)  # further behind: from now


def test_a_window_denial_leaves_a_tat_behind_now_as_it_was() -> None:
    """A caller back within its catch-up, held by a full window: the state to store is its TAT,
    not ``now`` (which would give up the catch-up)."""
    denied = decide(9.95, [9.9, 9.95], 10.0, 0.1, 1, 2)
    assert denied.wait_s == pytest.approx(0.1) and denied.tat == 9.95


def test_a_slot_within_a_microsecond_past_the_horizon_is_still_reserved() -> None:
    """As redis.py's Lua (refused only when ``wait - ahead > 0.000001``)."""
    assert reserve(2e-6, [], 0.0, 0.1, 1, 10, ahead_s=1e-6) == (True, 2e-6, pytest.approx(0.1 + 2e-6))
    assert reserve(3e-6, [], 0.0, 0.1, 1, 10, ahead_s=1e-6) == (False, pytest.approx(2e-6), 3e-6)
