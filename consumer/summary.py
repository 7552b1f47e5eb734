"""``run``'s periodic summary line, built from the pipeline's events (``events.py``).

Every ``interval_s`` seconds (checked on each loop turn, ``loop.state``) one INFO line says what
happened since the previous one: results by status, dead letters, API calls and the share of the
accounts' call budget they used (calls over rate × seconds; with several instances the budget
is the group's, shared). Sender threads emit the call events: the counts are kept under a lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping

from .events import Events
from .models import Status

ORDER = [status.value for status in Status]


class Summary:
    """What happened since the last line; ``line`` renders and resets it."""

    def __init__(self, rates: Mapping[str, float], clock: Callable[[], float] = time.monotonic) -> None:
        self._rates = rates
        self._clock = clock
        self._lock = threading.Lock()
        self._since = clock()
        self._results: Counter[str] = Counter()
        self._calls: Counter[str] = Counter()
        self._dead_letters = 0

    def results(self, counts: Mapping[str, int]) -> None:
        with self._lock:
            self._results.update(counts)

    def dead_lettered(self) -> None:
        with self._lock:
            self._dead_letters += 1

    def called(self, account: str) -> None:
        with self._lock:
            self._calls[account] += 1

    def due(self, interval_s: float) -> bool:
        return self._clock() - self._since >= interval_s

    def line(self) -> str:
        """``last 30s: SENT 120, FAILED 0, REJECTED 1, EXPIRED 0; dead-lettered 2; calls 14 (default 47% of 10/s)``."""
        with self._lock:
            now = self._clock()
            elapsed = max(now - self._since, 1e-9)
            results, calls, dead = self._results, self._calls, self._dead_letters
            self._results, self._calls, self._dead_letters, self._since = Counter(), Counter(), 0, now
        statuses = ", ".join(f"{status} {results.get(status, 0)}" for status in ORDER)
        budget = ", ".join(
            f"{account} {100 * count / (self._rates[account] * elapsed):.0f}% of {self._rates[account]:g}/s" for account, count in sorted(calls.items()) if account in self._rates
        )  # fmt: skip
        return f"last {elapsed:.0f}s: {statuses}; dead-lettered {dead}; calls {sum(calls.values())}" + (f" ({budget})" if budget else "")


def subscribe_summary(
    events: Events, log: logging.Logger, interval_s: float, rates: Mapping[str, float], clock: Callable[[], float] = time.monotonic
) -> Summary | None:
    """Log ``Summary.line`` every ``interval_s`` seconds (0: never, None returned)."""
    if interval_s <= 0:
        return None
    summary = Summary(rates, clock)

    def tick(**_: object) -> None:
        if summary.due(interval_s):
            log.info("%s", summary.line())

    events.on("results.acknowledged", lambda counts, ages_s: summary.results(counts))
    events.on("record.dead_lettered", lambda source, reason, detail: summary.dead_lettered())
    events.on("call.answered", lambda account, code, latency_s, bisection: summary.called(account))
    events.on("loop.state", tick)
    return summary
