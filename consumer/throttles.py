"""Whether an account's System.LimitControl answers are persistent: a lone one is network jitter
bunching two calls at the edge of CAMS's window, not a smaller budget; more than the tolerance
within ``THROTTLE_WINDOW_S`` make the limiter slow the account down. Pure: the clock is passed in."""

from __future__ import annotations

from collections import defaultdict, deque

THROTTLE_WINDOW_S = 2.0


class ThrottleCount:
    """Per account, its recent throttles. Not thread-safe: the sender calls it under its lock."""

    def __init__(self, tolerance: int, window_s: float = THROTTLE_WINDOW_S):
        self._tolerance = tolerance
        self._window_s = window_s
        self._at: defaultdict[str, deque[float]] = defaultdict(deque)

    def persistent(self, account: str, now: float) -> bool:
        """Record a throttle of ``account`` at ``now``; True when it had more than the tolerance lately."""
        recent = self._at[account]
        recent.append(now)
        while recent and recent[0] < now - self._window_s:
            recent.popleft()
        return len(recent) > self._tolerance
