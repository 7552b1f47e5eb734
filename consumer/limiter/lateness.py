"""How much later than usual a call may have reached CAMS: the limiter's correction for late arrivals.

Pure: the sender feeds it each call's time from grant to answer. A call's answer comes no sooner
than the fastest recent call's (the usual time on the wire and at CAMS), so the time beyond that
fastest one is the most the call can have been held up between its grant and CAMS counting it.
Up to ``tolerance_s`` of it is ordinary jitter that the limiter's safety margin absorbs; the rest
is reported as lateness. Until ``WARM_UP`` calls have been seen there is no usual time yet (the
first calls also pay for opening connections): all of a call's time counts.
"""

from __future__ import annotations

from collections import deque

HISTORY = 32
"""Recent calls whose fastest answer is the usual time."""
WARM_UP = 10
"""Calls seen before the fastest of them is trusted as the usual time."""


class LatenessGauge:
    """Not thread-safe: the sender calls it under its lock."""

    def __init__(self, tolerance_s: float, history: int = HISTORY):
        self._tolerance_s = tolerance_s
        self._recent: deque[float] = deque(maxlen=history)

    def lateness(self, took_s: float) -> float:
        """Seconds the call that took ``took_s`` from grant to answer may have arrived late (0.0: none)."""
        usual = min(self._recent) if len(self._recent) >= WARM_UP else 0.0
        self._recent.append(took_s)
        return max(0.0, took_s - usual - self._tolerance_s)
