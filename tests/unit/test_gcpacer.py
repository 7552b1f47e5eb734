"""consumer.gcpacer.GcPacer with a fake collector and clock: when it collects, and what."""

from __future__ import annotations

import gc

import pytest

from consumer.gcpacer import FULL, GUARD_S, YOUNG, GcPacer
from tests.fixtures.clock import FakeClock


class FakeCollector:
    """Counts like CPython's gc (collecting empties the young count); each collection takes
    ``pause[generation]`` seconds of the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.pause = {YOUNG: 0.02, FULL: 0.3}
        self.young = 0
        self.collected: list[int] = []
        self.enabled = True
        self.frozen = False

    def get_count(self) -> tuple[int, int, int]:
        return (self.young, 0, 0)

    def collect(self, generation: int = 2) -> int:
        self.collected.append(generation)
        self.clock.advance(self.pause[generation])
        self.young = 0
        return 0

    def freeze(self) -> None:
        self.frozen = True

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True


def make(threshold: int = 1000, **kw) -> tuple[GcPacer, FakeCollector, FakeClock, list]:
    clock = FakeClock()
    collector = FakeCollector(clock)
    pauses: list = []
    pacer = GcPacer(collector, clock, young_threshold=threshold, on_pause=lambda g, s: pauses.append((g, s)), **kw)
    pacer.start()
    collector.collected.clear()
    return pacer, collector, clock, pauses


def test_start_takes_over_from_the_automatic_collector() -> None:
    pacer, collector, _, _ = make()
    assert not collector.enabled and collector.frozen
    pacer.stop()
    assert collector.enabled


def test_nothing_is_collected_below_the_threshold_whatever_the_quiet_time() -> None:
    pacer, collector, _, _ = make()
    collector.young = 999
    assert pacer.step(lambda: float("inf")) is None
    assert collector.collected == []


def test_a_due_collection_waits_for_a_quiet_time_long_enough_for_it() -> None:
    pacer, collector, _, pauses = make()
    collector.young = 1000
    assert pacer.step(lambda: 0.0) is None, "a call is on its way"
    assert pacer.step(lambda: pacer.estimate_s[YOUNG] + GUARD_S - 0.001) is None, "it would not fit"
    assert pacer.step(lambda: 0.08) == YOUNG
    assert collector.collected == [YOUNG] and pauses == [(YOUNG, pytest.approx(0.02))]


def test_the_quiet_time_is_asked_only_when_a_collection_is_due() -> None:
    pacer, collector, _, _ = make()
    collector.young = 10

    def never() -> float:
        raise AssertionError("asked the sender for nothing")

    assert pacer.step(never) is None


def test_estimates_follow_measured_pauses_up_at_once_and_down_slowly() -> None:
    pacer, collector, _, _ = make()
    collector.pause[YOUNG] = 0.05
    collector.young = 1000
    pacer.step(lambda: 1.0)
    assert pacer.estimate_s[YOUNG] == pytest.approx(0.05)
    collector.pause[YOUNG] = 0.01
    collector.young = 1000
    pacer.step(lambda: 1.0)
    assert 0.01 < pacer.estimate_s[YOUNG] < 0.05
    collector.young = 1000
    assert pacer.step(lambda: 0.04) is None, "the estimate (45 ms) has not come down that far yet"


def test_never_quiet_still_collects_once_garbage_reaches_the_force_factor() -> None:
    pacer, collector, _, _ = make(force_factor=5)
    collector.young = 4999
    assert pacer.step(lambda: 0.0) is None
    collector.young = 5000
    assert pacer.step(lambda: 0.0) == YOUNG


def test_full_collections_come_every_interval_when_quiet_and_are_forced_after_two() -> None:
    pacer, collector, clock, _ = make(full_every_s=60.0)
    clock.advance(60.0)
    assert pacer.step(lambda: 0.1) is None, "a full collection does not fit in 100 ms"
    assert pacer.step(lambda: 1.0) == FULL
    clock.advance(119.0)
    assert pacer.step(lambda: 0.0) is None
    clock.advance(1.0)
    assert pacer.step(lambda: 0.0) == FULL, "120 s without one: made anyway"


def test_a_young_collection_is_made_when_a_due_full_one_does_not_fit() -> None:
    pacer, collector, clock, _ = make(full_every_s=60.0)
    clock.advance(60.0)
    collector.young = 1000
    assert pacer.step(lambda: 0.1) == YOUNG
    assert pacer.step(lambda: 1.0) == FULL, "the full collection is still due"


def test_the_real_collector_is_switched_back_on_at_stop() -> None:
    was = gc.isenabled()
    pacer = GcPacer()
    try:
        pacer.start()
        assert not gc.isenabled()
        assert pacer.step(lambda: float("inf")) in (None, YOUNG)
        pacer.stop()
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        if not was:
            gc.disable()
