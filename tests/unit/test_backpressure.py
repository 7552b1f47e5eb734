"""BufferBound: the back-pressure bound follows the rate a process actually sends at."""

from __future__ import annotations

from consumer.backpressure import MIN_SPAN_S, RATE_WINDOW_S, BufferBound


def test_the_cap_until_the_rate_is_known() -> None:
    bound = BufferBound(cap=50_000, seconds=5.0, floor=10_000)
    assert bound.limit(0.0) == 50_000, "no results yet"
    bound.finished(1000, 0.0)
    assert bound.limit(MIN_SPAN_S / 2) == 50_000, "half a second of results says little"


def test_a_share_of_the_budget_holds_seconds_of_its_own_rate() -> None:
    bound = BufferBound(cap=50_000, seconds=5.0, floor=10_000)
    for k in range(11):  # one instance of three: 1,000 recipients every 0.3 s, 3,333/s
        bound.finished(1000, k * 0.3)
    assert bound.limit(3.0) == 5 * 11_000 // 3


def test_the_whole_budget_keeps_the_cap_and_a_trickle_keeps_the_floor() -> None:
    whole = BufferBound(cap=50_000, seconds=5.0, floor=10_000)
    for k in range(31):  # 10,000/s
        whole.finished(1000, k * 0.1)
    assert whole.limit(3.0) == 50_000
    trickle = BufferBound(cap=50_000, seconds=5.0, floor=10_000)
    trickle.finished(10, 0.0)
    assert trickle.limit(2.0) == 10_000


def test_old_results_leave_the_rate_and_an_idle_process_gets_the_cap_back() -> None:
    bound = BufferBound(cap=50_000, seconds=5.0, floor=10_000)
    for k in range(31):
        bound.finished(100, k * 0.1)  # 1,000/s: the floor
    assert bound.limit(3.0) == 10_000
    assert bound.limit(3.0 + RATE_WINDOW_S + 0.1) == 50_000, "nothing finished lately: a new backlog may fill the cap"


def test_zero_seconds_is_the_plain_cap_and_the_floor_never_exceeds_it() -> None:
    off = BufferBound(cap=50_000, seconds=0.0, floor=10_000)
    for k in range(31):
        off.finished(10, k * 0.1)
    assert off.limit(3.0) == 50_000
    small = BufferBound(cap=2_000, seconds=5.0, floor=10_000)
    for k in range(31):
        small.finished(1, k * 0.1)
    assert small.limit(3.0) == 2_000
