"""When the cyclic garbage collector runs: in a gap between API calls every few thousand
requests while the budget holds calls back; rarely otherwise.

Pure: the main loop passes how many requests it took in and how many calls the sender made
since the last collection, the collector's counts and how long no call needs the interpreter
(the sender's ``quiet_for``); this says which generation to collect now, if any.

A collection holds the interpreter lock for its whole length, so the collector must neither run
while a sender thread wakes for its rate-limit slot (the call goes out late and its share of the
account's budget is lost) nor let its young generation grow large. Left to itself it does both:
it counts allocations net of frees, and in a steady stream every request taken in is matched by
an older one finished and freed, so the count stays low while the young generation grows to
hundreds of thousands of objects; one collection of it then took 100-300 ms, at whatever moment
(bench, one instance at the budget, the same hour: saturation 0.962-0.991 left to itself, 0.992
with no young collections at all).

So while calls wait for their slots the main loop collects after ``YOUNG_REQUESTS`` requests,
once no call is due for ``QUIET_S`` (right after a call went out the next one is a slot away).
When the budget is not what holds the calls back (none waits for a slot, or calls go out back
to back) there is no gap to wait for and a pause delays no slot: then the main loop collects
only after ``UNPACED_REQUESTS`` requests or ``UNPACED_CALLS`` calls, whichever comes first. A
young collection walks every request taken in since the last one that is still buffered, so
rare collections cost less: requests finished in between are never walked (bench pipeline, one
process: 0.43 s of collections per 200,000 requests every 8,000, 0.11 s every 100,000). Calls
bound the wait where requests come slowly: each call leaves a reference cycle behind (httpx,
httpcore). The interpreter's own threshold stays high, a backstop.
"""

from __future__ import annotations

import gc
import math

YOUNG_REQUESTS = 2_000
"""Requests taken in between young collections. Requests come 1,000 a turn, often several turns
before a gap: in one saturation run the 41 collections came after 2,000-8,000 requests (mostly
3,000-5,000) and took 4-60 ms, median 21."""
UNPACED_REQUESTS = 100_000
"""Requests taken in after which the young generation is collected, gap or not."""
UNPACED_CALLS = 500
"""Calls made after which the young generation is collected, gap or not: their reference cycles
are the garbage that needs the collector."""
QUIET_S = 0.05
"""A gap this long before the next call is due is enough for a young collection (infinite: no
call waits for the limiter)."""
OLDER = (200, 100)
"""Young collections before the middle generation is collected (400,000 requests when paced), middle ones
before the oldest. A middle collection walks every request still buffered, however often it
runs, and takes longer than any gap between calls: the rarer the better (at 50 young collections
of 1,000 requests each, saturation fell to 0.967-0.984). Cycles that outlive a young collection
wait longer for it, a few hundred calls' worth."""
BACKSTOP = 200_000
"""The interpreter's own young threshold (net allocations): reached only when the main loop
takes nothing in for long, or allocates much between two turns."""


def install() -> None:
    gc.set_threshold(BACKSTOP, *OLDER)


def generation_due(taken: int, calls: int, counts: tuple[int, int, int], quiet_s: float) -> int | None:
    """The generation to collect now (the oldest one whose count passed its threshold, as the
    interpreter picks), or None: too few requests taken in and calls made yet, or a collection
    would be paced and no gap of ``QUIET_S`` has come."""
    paced = YOUNG_REQUESTS <= taken and QUIET_S <= quiet_s < math.inf
    if not (paced or taken >= UNPACED_REQUESTS or calls >= UNPACED_CALLS):
        return None
    _, young_runs, middle_runs = counts
    if middle_runs > OLDER[1]:
        return 2
    if young_runs > OLDER[0]:
        return 1
    return 0
