"""consumer.gcpacing: when the main loop collects garbage, and which generation."""

from __future__ import annotations

import gc
import math

import pytest

from consumer import gcpacing
from consumer.gcpacing import BACKSTOP, OLDER, QUIET_S, UNPACED_CALLS, UNPACED_REQUESTS, YOUNG_REQUESTS, generation_due

FRESH = (0, 0, 0)


def test_nothing_is_collected_before_enough_requests_came_in() -> None:
    assert generation_due(YOUNG_REQUESTS - 1, 0, FRESH, 1.0) is None


def test_the_young_generation_is_collected_in_a_gap() -> None:
    assert generation_due(YOUNG_REQUESTS, 0, FRESH, QUIET_S) == 0
    assert generation_due(YOUNG_REQUESTS, 0, FRESH, 0.09) == 0


@pytest.mark.parametrize("quiet_s", [QUIET_S - 0.001, 0.0, -0.2])
def test_it_waits_while_a_call_is_due_soon(quiet_s: float) -> None:
    assert generation_due(UNPACED_REQUESTS - 1, UNPACED_CALLS - 1, FRESH, quiet_s) is None


@pytest.mark.parametrize("quiet_s", [math.inf, 0.0, -0.2])
def test_unpaced_it_waits_for_many_requests(quiet_s: float) -> None:
    """No call waits for a slot (infinite) or calls go out back to back: no gap will come, and
    rare collections walk fewer buffered requests."""
    assert generation_due(UNPACED_REQUESTS - 1, 0, FRESH, quiet_s) is None
    assert generation_due(UNPACED_REQUESTS, 0, FRESH, quiet_s) == 0


@pytest.mark.parametrize("quiet_s", [math.inf, 0.0])
def test_unpaced_it_waits_for_fewer_calls_where_requests_come_slowly(quiet_s: float) -> None:
    assert generation_due(10, UNPACED_CALLS - 1, FRESH, quiet_s) is None
    assert generation_due(10, UNPACED_CALLS, FRESH, quiet_s) == 0


def test_older_generations_are_collected_once_their_counts_pass_the_thresholds() -> None:
    assert generation_due(YOUNG_REQUESTS, 0, (123, OLDER[0], 0), 1.0) == 0
    assert generation_due(YOUNG_REQUESTS, 0, (123, OLDER[0] + 1, 0), 1.0) == 1
    assert generation_due(YOUNG_REQUESTS, 0, (123, OLDER[0] + 1, OLDER[1] + 1), 1.0) == 2


def test_the_net_allocation_count_does_not_decide() -> None:
    """It stays low in a steady stream (each request taken in frees an older one), so it must
    neither hold a collection back nor bring one forward."""
    assert generation_due(YOUNG_REQUESTS, 0, (0, 0, 0), 1.0) == 0
    assert generation_due(YOUNG_REQUESTS - 1, 0, (BACKSTOP - 1, 0, 0), 1.0) is None


def test_install_leaves_the_interpreter_a_backstop_only() -> None:
    before = gc.get_threshold()
    try:
        gcpacing.install()
        assert gc.get_threshold() == (BACKSTOP, *OLDER)
    finally:
        gc.set_threshold(*before)
