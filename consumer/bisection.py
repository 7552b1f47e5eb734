"""What finding the request CAMS refuses in a batch may cost: pure decisions, clock injected.

A call refused for its content (INVALID_REQUEST) names no request as a rule, so the sender
halves the batch and sends both halves until the offender stands alone: one bad request among
N costs about 2·log2(N) calls (21 for 1,000 single-recipient requests), all charged to the
account's budget of 10 calls/s. Two bounds keep that cost in check:

- ``named_offenders``: when the answer's message names recipients of the batch (a number, as
  written or canonical), those requests fail at once and the rest is sent again whole: one call
  instead of a bisection.
- ``BisectionBudget``: calls made for halves of refused batches may take ``share`` of the
  account's calls over the last ``window_s`` (plus ``burst``, enough to isolate one offender in a
  full batch). Past it, while other batches of the account wait, new halves wait ``DEFER_S``
  before they queue: other traffic keeps the rest of the budget, and a budget nobody else needs
  still goes to the halves. No request fails for the budget; its offenders are found later.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable

from .models import Batch, Slice

SHARE = 0.2
BURST = 24
WINDOW_S = 60.0
DEFER_S = 1.0
MIN_NAMED_DIGITS = 6


def named_offenders(batch: Batch, message: str | None) -> list[Slice]:
    """The slices whose recipients the API's ``message`` names ([] when it names none, or all)."""
    if not message or len(batch.slices) < 2:
        return []
    named = [
        piece
        for piece in batch.slices
        if any(len(to) >= MIN_NAMED_DIGITS and (to in message or to.lstrip("+") in message) for to in (r["to"] for r in piece.recipients))
    ]
    return named if len(named) < len(batch.slices) else []


class BisectionBudget:
    """Per account: have the calls made for halves stayed within their share? ``called``
    records every call made."""

    def __init__(self, share: float = SHARE, burst: int = BURST, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self._share = share
        self._burst = burst
        self._window_s = window_s
        self._clock = clock
        self._calls: defaultdict[str, deque[float]] = defaultdict(deque)
        self._bisections: defaultdict[str, deque[float]] = defaultdict(deque)

    def called(self, account: str, bisection: bool) -> None:
        now = self._clock()
        self._calls[account].append(now)
        if bisection:
            self._bisections[account].append(now)

    def within_share(self, account: str) -> bool:
        since = self._clock() - self._window_s
        calls, bisections = self._calls[account], self._bisections[account]
        for stamps in (calls, bisections):
            while stamps and stamps[0] < since:
                stamps.popleft()
        return len(bisections) < self._burst + self._share * len(calls)
