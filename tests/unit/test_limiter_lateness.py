"""lateness: how late after its slot a call may have reached CAMS."""

from __future__ import annotations

import pytest

from consumer.limiter import AccountLimit, InProcessLimiter
from consumer.limiter.lateness import lateness
from tests.fixtures.clock import FakeClock


def test_all_of_a_calls_time_from_its_slot_to_the_wire_counts_beyond_the_tolerance() -> None:
    assert lateness(0.030, 0.005) == pytest.approx(0.025)
    assert lateness(0.005, 0.005) == 0.0, "within the tolerance: jitter the margin absorbs"
    assert lateness(0.0, 0.005) == 0.0
    for _ in range(50):  # however many calls took as long before: nothing is usual
        lateness(0.020, 0.0025)
    assert lateness(0.020, 0.0025) == pytest.approx(0.0175)


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
