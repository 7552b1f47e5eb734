"""consumer.routing: what becomes of a batch after its call, as a table."""

from __future__ import annotations

import pytest

from consumer.cams.errors import Outcome
from consumer.routing import Budget, Route, route

BUDGET = Budget(throttle_max_retries=3, max_attempts=4)


@pytest.mark.parametrize(
    ("outcome", "throttles", "failures", "requests", "named", "expected"),
    [
        (Outcome.OK, 0, 0, 5, False, Route.SENT),
        (Outcome.OK, 9, 9, 1, False, Route.SENT),
        (Outcome.THROTTLED, 2, 0, 5, False, Route.THROTTLED),
        (Outcome.THROTTLED, 3, 0, 5, False, Route.FAILED),  # throttled too often
        (Outcome.TRANSIENT, 0, 2, 5, False, Route.RETRY),  # the fourth attempt is the last
        (Outcome.TRANSIENT, 0, 3, 5, False, Route.FAILED),
        (Outcome.TRANSIENT, 5, 0, 5, False, Route.RETRY),  # throttles are not failures
        (Outcome.INVALID_REQUEST, 0, 0, 5, True, Route.NAMED),
        (Outcome.INVALID_REQUEST, 0, 0, 5, False, Route.SPLIT),
        (Outcome.INVALID_REQUEST, 0, 0, 1, False, Route.FAILED),  # one request: it is the offender
        (Outcome.PERMANENT, 0, 0, 5, False, Route.FAILED),
        (Outcome.PERMANENT, 0, 0, 5, True, Route.FAILED),  # a permission error names no offender
    ],
)
def test_route(outcome: Outcome, throttles: int, failures: int, requests: int, named: bool, expected: Route) -> None:
    assert route(outcome, throttles, failures, requests, named, BUDGET) is expected
