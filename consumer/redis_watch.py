"""How long the Redis calls of the limiter and the ledger take, and whether Redis is slow.

A Redis that answers, only slowly (a busy server, a far replica, a failing network), is no
outage: nothing falls back, but every token and every claim waits for it. ``RedisWatch`` times
each call, hands the seconds to ``observe(component, op, seconds)`` (the
``chatapp_redis_call_seconds`` histogram), logs a warning for a call slower than ``slow_s`` (at
most once per ``warn_every_s`` per component) and reports ``slow()`` while the recent average of
a component (an exponentially weighted one, a tenth for each new call) is above ``slow_s``:
``/readyz`` shows it as degraded.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("consumer.redis")

SLOW_S = 0.05
"""A Redis call slower than this is slow (a healthy one takes a millisecond or less)."""
WEIGHT = 0.1
"""The weight of each new call in a component's recent average."""

Observe = Callable[[str, str, float], None]


def _ignore(component: str, op: str, seconds: float) -> None:
    pass


class RedisWatch:
    """Per component (``limiter``, ``ledger``): the recent average latency and the last warning."""

    def __init__(self, observe: Observe = _ignore, slow_s: float = SLOW_S, warn_every_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self._observe = observe
        self._slow_s = slow_s
        self._warn_every_s = warn_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._average: dict[str, float] = {}
        self._warned_at: dict[str, float] = {}

    @contextmanager
    def timed(self, component: str, op: str) -> Iterator[None]:
        """Time the Redis call made inside (a failed call counts too: a timeout is the slowest)."""
        started = self._clock()
        try:
            yield
        finally:
            self.record(component, op, self._clock() - started)

    def record(self, component: str, op: str, seconds: float) -> None:
        self._observe(component, op, seconds)
        now = self._clock()
        with self._lock:
            average = self._average.get(component, seconds)
            self._average[component] = average + WEIGHT * (seconds - average)
            warn = seconds > self._slow_s and now - self._warned_at.get(component, -math.inf) >= self._warn_every_s
            if warn:
                self._warned_at[component] = now
        if warn:
            log.warning(
                "Redis is slow: a %s %s call took %.0f ms (slow above %.0f ms); the %s waits for every such call",
                component,
                op,
                seconds * 1000,
                self._slow_s * 1000,
                component,
            )

    def slow(self) -> bool:
        """True while a component's recent average is above ``slow_s``."""
        with self._lock:
            return any(average > self._slow_s for average in self._average.values())
