"""The benchmark's arithmetic on the endpoint's call records (bench/measure.py)."""

from __future__ import annotations

import pytest

from bench.measure import bracketed_ratios, call_window, percentile


def calls(sizes: list[int], gap_s: float = 0.1) -> list[dict[str, object]]:
    return [{"code": "OK", "received_at": k * gap_s, "accepted_at": k * gap_s + 0.005, "recipients": n} for k, n in enumerate(sizes)]


def test_evenly_spaced_full_calls_give_their_exact_rate_and_fill() -> None:
    steady = call_window(calls([1000] * 50), 1000)["steady"]
    assert steady["recipients_per_s"] == pytest.approx(10_000)
    assert steady["mean_recipients_per_call"] == 1000 and steady["partial_calls"] == 0


def test_the_rate_is_not_tipped_by_the_calls_at_the_window_ends() -> None:
    # calls catching up in pairs around a steady 10/s: 15 ms apart, then 185 ms
    records = [{"code": "OK", "received_at": (k // 2) * 0.2 + (k % 2) * 0.015, "accepted_at": (k // 2) * 0.2 + 0.02, "recipients": 1000} for k in range(192)]
    steady = call_window(records, 1000)["steady"]
    assert steady["recipients_per_s"] == pytest.approx(10_000, rel=0.002)
    assert steady["span_recipients_per_s"] > 1.004 * 10_000, "first-to-last is tipped by the call it ends on"


def test_the_first_linger_and_the_drain_tail_are_left_out() -> None:
    sizes = [400, 700] + [1000] * 40 + [300, 200]
    steady = call_window(calls(sizes), 1000, drain_tail=2000)["steady"]
    assert (steady["first_call"], steady["last_call"]) == (2, 40)  # 41 leaves only the tail to come
    assert steady["partial_calls"] == 0 and steady["recipients_per_s"] == pytest.approx(10_000)


def test_the_drain_starts_at_the_first_partial_call_of_the_last_quarter() -> None:
    # one instance ran dry early: its partial calls come while more than the tail is still to come
    sizes = [1000] * 80 + [500] + [1000] * 10 + [500] * 6
    steady = call_window(calls(sizes), 1000, drain_tail=2000)["steady"]
    assert steady["last_call"] == 79 and steady["partial_calls"] == 0
    # a partial call in the middle of the backlog is not the drain: it counts against the fill
    sizes = [1000] * 20 + [500] + [1000] * 70
    steady = call_window(calls(sizes), 1000, drain_tail=2000)["steady"]
    assert steady["partial_calls"] == 1 and steady["mean_recipients_per_call"] < 1000


def test_percentile_interpolates() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([5.0], 99) == 5.0


def test_the_window_starts_once_the_backlog_is_there() -> None:
    # three instances already running while the backlog is produced: their first calls leave partial
    sizes = [1000, 930, 1000, 929] + [1000] * 40
    steady = call_window(calls(sizes), 1000, since=0.35)["steady"]
    assert steady["first_call"] == 4 and steady["partial_calls"] == 0
    assert call_window(calls(sizes), 1000)["steady"]["partial_calls"] == 2


def test_a_run_is_compared_with_the_bare_rates_on_both_sides_of_it() -> None:
    # the machine slows down from 100,000 to 80,000 bare messages/s across two runs of 45,000 and 40,000
    assert bracketed_ratios([45_000.0, 40_000.0], [100_000.0, 90_000.0, 80_000.0]) == pytest.approx([45 / 95, 40 / 85])
    with pytest.raises(ValueError, match="2 runs need 3 bare rates"):
        bracketed_ratios([1.0, 2.0], [1.0, 2.0])
