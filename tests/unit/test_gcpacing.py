"""consumer.gcpacing: when the main loop collects garbage, and which generation."""

from __future__ import annotations

import gc
import math

import pytest

from consumer import gcpacing
from consumer.gcpacing import (
    BACKSTOP,
    OLDER,
    OVERDUE,
    QUIET_S,
    UNPACED_CALLS,
    UNPACED_REQUESTS,
    YOUNG_REQUESTS,
    Pacer,
    generation_due,
)

FRESH = (0, 0, 0)


def test_nothing_is_collected_before_enough_requests_came_in() -> None:
    assert generation_due(YOUNG_REQUESTS - 1, 0, FRESH, 1.0) is None


def test_the_young_generation_is_collected_in_a_gap_before_a_waiting_call() -> None:
    assert generation_due(YOUNG_REQUESTS, 0, FRESH, QUIET_S) == 0
    assert generation_due(YOUNG_REQUESTS, 0, FRESH, 0.09) == 0


@pytest.mark.parametrize("quiet_s", [QUIET_S - 0.001, 0.0])
def test_it_waits_while_a_waiting_call_is_due_soon_until_overdue(quiet_s: float) -> None:
    assert generation_due(YOUNG_REQUESTS * OVERDUE - 1, 0, FRESH, quiet_s) is None
    assert generation_due(YOUNG_REQUESTS * OVERDUE, 0, FRESH, quiet_s) == 0


def test_calls_do_not_count_while_calls_wait_for_their_slots() -> None:
    assert generation_due(10, UNPACED_CALLS, FRESH, 1.0) is None


def test_never_while_a_granted_call_is_on_its_way() -> None:
    assert generation_due(UNPACED_REQUESTS, UNPACED_CALLS, FRESH, -0.001) is None


def test_with_no_call_waiting_it_waits_for_many_requests() -> None:
    """No gap will be needed, and rare collections walk fewer buffered requests."""
    assert generation_due(UNPACED_REQUESTS - 1, 0, FRESH, math.inf) is None
    assert generation_due(UNPACED_REQUESTS, 0, FRESH, math.inf) == 0


def test_with_no_call_waiting_calls_bound_the_wait_where_requests_come_slowly() -> None:
    assert generation_due(10, UNPACED_CALLS - 1, FRESH, math.inf) is None
    assert generation_due(10, UNPACED_CALLS, FRESH, math.inf) == 0


def test_the_pacer_counts_requests_and_calls_since_the_last_collection() -> None:
    pacer = Pacer()
    pacer.took(YOUNG_REQUESTS)
    assert pacer.due(calls=7, counts=FRESH, quiet_s=QUIET_S - 0.001) is None  # no gap yet: nothing resets
    assert pacer.due(calls=7, counts=FRESH, quiet_s=QUIET_S) == 0
    pacer.took(YOUNG_REQUESTS - 1)
    assert pacer.due(calls=7, counts=FRESH, quiet_s=1.0) is None  # requests counted from the collection
    assert pacer.due(calls=7 + UNPACED_CALLS - 1, counts=FRESH, quiet_s=math.inf) is None  # calls too
    assert pacer.due(calls=7 + UNPACED_CALLS, counts=FRESH, quiet_s=math.inf) == 0
    assert pacer.due(calls=7 + UNPACED_CALLS, counts=FRESH, quiet_s=math.inf) is None


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
