"""LatenessGauge: how much later than usual a call may have reached CAMS."""

from __future__ import annotations

import pytest

from consumer.limiter import AccountLimit, InProcessLimiter
from consumer.limiter.lateness import WARM_UP, LatenessGauge
from tests.fixtures.clock import FakeClock


def test_the_first_calls_count_whole_then_only_what_exceeds_the_fastest_and_the_tolerance() -> None:
    gauge = LatenessGauge(tolerance_s=0.005)
    assert gauge.lateness(0.030) == pytest.approx(0.025), "no usual time yet: the call's whole time (less the tolerance)"
    assert gauge.lateness(0.031) == pytest.approx(0.026), "a slow first call is no usual time"
    for _ in range(WARM_UP - 3):
        assert gauge.lateness(0.012) == pytest.approx(0.007)
    assert gauge.lateness(0.014) == pytest.approx(0.009)
    assert gauge.lateness(0.012) == 0.0  # enough calls seen: the fastest is the usual time
    assert gauge.lateness(0.016) == 0.0  # 4 ms over the fastest: jitter the margin absorbs
    assert gauge.lateness(0.072) == pytest.approx(0.055), "60 ms over the fastest, less the tolerance"


def test_the_usual_time_is_the_fastest_of_the_recent_calls_only() -> None:
    gauge = LatenessGauge(tolerance_s=0.0, history=WARM_UP)
    for took in (0.001, *[0.050] * WARM_UP):  # the 1 ms call leaves the history
        gauge.lateness(took)
    assert gauge.lateness(0.060) == pytest.approx(0.010)


def test_a_late_arrival_moves_the_call_sharing_its_window() -> None:
    clock = FakeClock(0.0)
    limiter = InProcessLimiter({}, AccountLimit(10.0), safety_margin=0.01, clock=clock)
    interval = 0.101
    for k in range(10):
        clock.now = k * interval
        assert limiter.acquire("acct", f"t{k}") == 0.0
    limiter.arrived_late("acct", "t0", 0.040)  # the first call reached CAMS 40 ms after its grant
    limiter.arrived_late("acct", "never-granted", 1.0)  # unknown tickets change nothing
    clock.now = 10 * interval
    assert limiter.acquire("acct", "t10") == pytest.approx(0.040), "waits for the late call to leave the window"
    clock.advance(0.040)
    assert limiter.acquire("acct", "t10") == 0.0
    clock.now = 11 * interval
    assert limiter.acquire("acct", "t11") == 0.0, "the next call is on its slot again"


def test_a_refunded_grant_leaves_the_window() -> None:
    clock = FakeClock(0.0)
    limiter = InProcessLimiter({}, AccountLimit(10.0, burst=10), safety_margin=0.01, clock=clock)
    assert [limiter.acquire("acct", f"t{k}") for k in range(10)] == [0.0] * 10
    clock.advance(0.2)
    assert limiter.acquire("acct", "t10") > 0.5, "the window is full"
    limiter.refund("acct", "t3")  # CAMS answered System.LimitControl: that call did not count
    limiter.refund("acct", "unknown")
    assert limiter.acquire("acct", "t10") == 0.0
