"""What becomes of a batch after its call: a pure table from the call's outcome and what the
batch has been through to the route the sender carries out.

| the call                               | and                                   | route      | the sender                                  |
|----------------------------------------|---------------------------------------|------------|---------------------------------------------|
| OK                                     |                                       | SENT       | every slice SENT                            |
| throttled (System.LimitControl, 429)   | throttled fewer than ``throttle_max_retries`` times | THROTTLED | grant refunded; the limiter slows the account down past the tolerance; queued again after ``retry_after``, not a failure |
| timeout, 5xx, connection error, no credentials | failed fewer than ``max_attempts - 1`` times | RETRY | queued again after a backoff with jitter |
| parameter error whose message names recipients of the call | | NAMED      | their requests FAILED, the rest queued again whole |
| parameter error                        | more than one request in the call     | SPLIT      | halved, both halves queued (held back 1 s past the account's bisection share while other batches wait: ``bisection.py``) |
| anything else (permission, subscription, a parameter error of one request, retries spent) | | FAILED | every slice FAILED with the API's code |
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from .cams.errors import Outcome


class Route(enum.Enum):
    SENT = "sent"
    THROTTLED = "throttled"
    RETRY = "retry"
    NAMED = "named"
    SPLIT = "split"
    FAILED = "failed"


@dataclass(frozen=True)
class SendPolicy:
    """Retry budget and backoff of the sender (from Config).

    ``throttle_tolerance``: System.LimitControl answers an account may get lately before the
    limiter slows it down (see throttles.py); one within it is just retried.

    ``arrival_tolerance_s``: how long a call may take from its slot to being on the wire before
    the limiter is told it may have reached CAMS late (see ``limiter/lateness.py``); half the
    limiter's safety margin (of a 1-second window), which absorbs it.
    """

    max_attempts: int
    backoff_ms: int
    backoff_max_ms: int
    throttle_max_retries: int
    throttle_tolerance: int = 2
    arrival_tolerance_s: float = 0.005


class Budget(NamedTuple):
    """How many throttles and transient failures a batch may take before it fails."""

    throttle_max_retries: int
    max_attempts: int


def route(outcome: Outcome, throttles: int, failures: int, requests: int, names_offenders: bool, budget: Budget) -> Route:
    """The route of a batch of ``requests`` slices, throttled ``throttles`` times and failed
    ``failures`` times before, whose call came to ``outcome`` (its message naming some of its
    recipients: ``names_offenders``)."""
    if outcome is Outcome.OK:
        return Route.SENT
    if outcome is Outcome.THROTTLED and throttles < budget.throttle_max_retries:
        return Route.THROTTLED
    if outcome is Outcome.TRANSIENT and failures + 1 < budget.max_attempts:
        return Route.RETRY
    if outcome is Outcome.INVALID_REQUEST and names_offenders:
        return Route.NAMED
    if outcome is Outcome.INVALID_REQUEST and requests > 1:
        return Route.SPLIT
    return Route.FAILED
