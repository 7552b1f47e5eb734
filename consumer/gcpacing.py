"""When the cyclic garbage collector runs: in a gap between API calls every few thousand
requests while calls wait for their rate-limit slots; rarely while none does; never while a
granted call is on its way to the wire.

Pure: the main loop tells a ``Pacer`` how many requests it took in, and asks it each turn with
the sender's call count, the collector's counts and how long no call needs the interpreter (the
sender's ``quiet_for``); it says which generation to collect now, if any.

A collection holds the interpreter lock for its whole length, so the collector must neither run
while a sender thread wakes for its rate-limit slot (the call goes out late and its share of the
account's budget is lost) nor let its young generation grow large. Left to itself it does both:
it counts allocations net of frees, and in a steady stream every request taken in is matched by
an older one finished and freed, so the count stays low while the young generation grows to
hundreds of thousands of objects; one collection of it then took 100-300 ms, at whatever moment
(bench, one instance at the budget, the same hour: saturation 0.962-0.991 left to itself, 0.992
with no young collections at all).

So, by ``quiet_s``:

- below 0 (a call was granted and is not on the wire yet): never; it will be in a moment.
- 0 to infinite (a call waits for its slot: the budget holds calls back): after
  ``YOUNG_REQUESTS`` requests, once no call is due for ``QUIET_S`` (right after a call went out
  the next one is a slot away), or at once after ``OVERDUE`` times that many, when slots come
  too close together for a gap.
- infinite (no call waits for the limiter: the budget is not what holds calls back, as when a
  backlog is drained faster than any limit): after ``UNPACED_REQUESTS`` requests or
  ``UNPACED_CALLS`` calls, whichever comes first. A young collection walks every request taken
  in since the last one that is still buffered, so rare collections cost less: requests
  finished in between are never walked (bench pipeline, one process: about 2 us of collection
  per request when it came every 8,000, 0.5 us every 100,000). Calls bound the wait where
  requests come slowly: each call leaves a reference cycle behind (httpx, httpcore).

The interpreter's own threshold stays high, a backstop.
"""

from __future__ import annotations

import gc
import math

YOUNG_REQUESTS = 2_000
"""Requests taken in between young collections while calls wait for their slots. Requests come
1,000 a turn, often several turns before a gap: in one saturation run the 41 collections came
after 2,000-8,000 requests (mostly 3,000-5,000) and took 4-60 ms, median 21."""
OVERDUE = 4
"""While calls wait for their slots, after this many times ``YOUNG_REQUESTS`` the young
generation is collected gap or not."""
QUIET_S = 0.05
"""A gap this long before the next call is due is enough for a young collection."""
UNPACED_REQUESTS = 100_000
"""Requests taken in after which the young generation is collected while no call waits for the limiter."""
UNPACED_CALLS = 500
"""Calls made after which the young generation is collected while no call waits for the limiter:
their reference cycles are the garbage that needs the collector."""
OLDER = (200, 100)
"""Young collections before the middle generation is collected (400,000 requests when paced),
middle ones before the oldest. A middle collection walks every request still buffered, however
often it runs, and takes longer than any gap between calls: the rarer the better (at 50 young
collections of 1,000 requests each, saturation fell to 0.967-0.984). Cycles that outlive a
young collection wait longer for the middle one."""
BACKSTOP = 200_000
"""The interpreter's own young threshold (net allocations): reached only when the main loop
takes nothing in for long, or allocates much between two turns."""


def install() -> None:
    gc.set_threshold(BACKSTOP, *OLDER)


def generation_due(taken: int, calls: int, counts: tuple[int, int, int], quiet_s: float) -> int | None:
    """The generation to collect now (the oldest one whose count passed its threshold, as the
    interpreter picks), or None: a granted call is on its way, too few requests taken in (or
    calls made) yet, or no gap of ``QUIET_S`` before a waiting call's slot yet."""
    if quiet_s < 0.0:
        return None
    if quiet_s < math.inf:
        due = taken >= YOUNG_REQUESTS * OVERDUE or (taken >= YOUNG_REQUESTS and quiet_s >= QUIET_S)
    else:
        due = taken >= UNPACED_REQUESTS or calls >= UNPACED_CALLS
    if not due:
        return None
    _, young_runs, middle_runs = counts
    if middle_runs > OLDER[1]:
        return 2
    if young_runs > OLDER[0]:
        return 1
    return 0


class Pacer:
    """The main loop's bookkeeping: requests taken in and calls made since the last collection."""

    def __init__(self) -> None:
        self._taken = 0
        self._calls_then = 0

    def took(self, requests: int) -> None:
        self._taken += requests

    def due(self, calls: int, counts: tuple[int, int, int], quiet_s: float) -> int | None:
        """``generation_due`` for the sender's running count of ``calls``; a generation returned
        is taken as collected (the caller collects it at once) and the counts start again."""
        generation = generation_due(self._taken, calls - self._calls_then, counts, quiet_s)
        if generation is not None:
            self._taken, self._calls_then = 0, calls
        return generation
