"""How many recipients may wait in a process before its partitions pause.

Pure: the main loop tells it how many recipients each batch of results finished, and asks for the
bound with the time passed in.

The configured cap (``max_buffered_recipients``) bounds memory. Below it, a process needs only
enough to keep its calls full for a few seconds at the rate it actually sends: when instances
share an account's budget, each sends a share of it, and reading the whole cap's worth of backlog
at once only burns CPU that their granted calls were waiting for (a call put on the wire late
costs the account budget, see limiter/lateness.py). So once ``MIN_SPAN_S`` of results tell the
rate, the bound is ``seconds`` of it, never below ``floor`` (enough for a full batch of each of a
few batch keys) nor above the cap. Until then, and with ``seconds`` = 0, it is the cap.
"""

from __future__ import annotations

from collections import deque

RATE_WINDOW_S = 5.0
"""How far back finished recipients count toward the send rate."""
MIN_SPAN_S = 1.0
"""Results over at least this long before the rate is trusted."""


class BufferBound:
    def __init__(self, cap: int, seconds: float, floor: int) -> None:
        self._cap = cap
        self._seconds = seconds
        self._floor = min(floor, cap)
        self._finished: deque[tuple[float, int]] = deque()  # (when, recipients finished)
        self._recent_total = 0

    def finished(self, recipients: int, now: float) -> None:
        """``recipients`` left the buffer with their results at ``now``."""
        if self._seconds and recipients:
            self._finished.append((now, recipients))
            self._recent_total += recipients

    def limit(self, now: float) -> int:
        """The recipients that may wait at ``now`` before partitions pause."""
        while self._finished and self._finished[0][0] < now - RATE_WINDOW_S:
            self._recent_total -= self._finished.popleft()[1]
        if not self._finished:
            return self._cap
        span = now - self._finished[0][0]
        if span < MIN_SPAN_S:
            return self._cap
        rate = self._recent_total / span
        return max(self._floor, min(self._cap, int(rate * self._seconds)))
