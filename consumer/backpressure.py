"""How many recipients may wait in a process before its partitions pause.

Pure: the main loop tells it how many recipients of which batch key each group of results
finished, and asks for the bound with the time passed in.

The configured cap (``max_buffered_recipients``) bounds memory. Below it, a process needs only
enough to keep its calls full for a few seconds at the rate it actually sends: when instances
share an account's budget, each sends a share of it, and reading the whole cap's worth of backlog
at once only burns CPU that their granted calls were waiting for (a call put on the wire late
costs the account budget, see limiter/lateness.py). So once ``MIN_SPAN_S`` of results tell the
rate, the bound is ``seconds`` of it, never above the cap.

Nor below ``BATCHES_PER_KEY`` full batches of each batch key sent lately: the scheduler serves
the keys in turn, and a key whose turn comes while only a partial batch of it waits sends that
one partial once it is old (see scheduler.py). Reading pauses at the bound and resumes below
three quarters of it, and the first fetches after a resume take a while: a bound of a few full
batches per key keeps one full batch of every key waiting through that low point, so a share of
the budget split over many keys still leaves full. Until the rate is known, and with ``seconds``
= 0, the bound is the cap.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable

RATE_WINDOW_S = 5.0
"""How far back finished recipients count toward the send rate and their keys toward the floor."""
MIN_SPAN_S = 1.0
"""Results over at least this long before the rate is trusted."""
BATCHES_PER_KEY = 3
"""Full batches of each key sent lately that the bound always has room for."""


class BufferBound:
    def __init__(self, cap: int, seconds: float, batch_recipients: int) -> None:
        self._cap = cap
        self._seconds = seconds
        self._per_key = BATCHES_PER_KEY * batch_recipients
        self._finished: deque[tuple[float, int]] = deque()  # (when, recipients finished)
        self._recent_total = 0
        self._keys: OrderedDict[Hashable, float] = OrderedDict()  # batch key -> when its last results finished, oldest first

    def finished(self, recipients: int, key: Hashable, now: float) -> None:
        """``recipients`` of batch ``key`` left the buffer with their results at ``now``."""
        if self._seconds and recipients:
            self._finished.append((now, recipients))
            self._recent_total += recipients
            self._keys[key] = now
            self._keys.move_to_end(key)

    def limit(self, now: float) -> int:
        """The recipients that may wait at ``now`` before partitions pause."""
        horizon = now - RATE_WINDOW_S
        while self._finished and self._finished[0][0] < horizon:
            self._recent_total -= self._finished.popleft()[1]
        keys = self._keys
        while keys and next(iter(keys.values())) < horizon:
            keys.popitem(last=False)
        if not self._finished:
            return self._cap
        span = now - self._finished[0][0]
        if span < MIN_SPAN_S:
            return self._cap
        rate = self._recent_total / span
        floor = len(keys) * self._per_key
        return min(self._cap, max(floor, int(rate * self._seconds)))
