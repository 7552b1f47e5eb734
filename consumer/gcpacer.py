"""Garbage collection between rate-limit slots instead of whenever allocations cross a threshold.

The requests waiting in the buffer are long-lived containers, and the collector walks them. With
CPython's automatic collection (thresholds raised to 50,000 / 50 / 100) a young collection took
40-100 ms of CPU under the GIL and a full one 200-250 ms (saturation benchmark). A pause that
falls on a worker's slot sends the call late, and that part of the account's budget is lost; one
that falls between a grant and the call reaching CAMS bunches it with the next calls into one
CAMS window (a throttle). The calls of that benchmark came a total of 480 ms later than their
slots in 20 s; with the pacer, 150 ms.

So automatic collection is off, and the main loop asks the pacer at every step:

- a young collection (``gc.collect(1)``: the new objects, and survivors go straight to the old
  generation) is due after ``young_threshold`` net new tracked objects: 5-20 ms pauses;
- a full collection (``gc.collect(2)``) is due every ``full_every_s`` seconds;
- a due collection is made only when the sender says no call is on its way to CAMS and no token
  is due for longer than that kind of collection last took (plus ``GUARD_S``); a young one is
  made instead of a full one that does not fit;
- garbage never piles up without bound: at ``force_factor`` times the young threshold, or twice
  the full interval, the collection is made whatever the sender is doing.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

YOUNG = 1
FULL = 2
YOUNG_THRESHOLD = 10_000
FULL_EVERY_S = 60.0
FORCE_FACTOR = 5
GUARD_S = 0.005
"""Kept free between the end of a collection and the next grant."""
DECAY = 0.9
"""An estimate that was too high shrinks by this factor at each collection of its kind."""
INITIAL_ESTIMATE_S = {YOUNG: 0.02, FULL: 0.3}


class GcPacer:
    def __init__(
        self,
        collector: Any = gc,
        clock: Callable[[], float] = time.monotonic,
        young_threshold: int = YOUNG_THRESHOLD,
        full_every_s: float = FULL_EVERY_S,
        force_factor: int = FORCE_FACTOR,
        on_pause: Callable[[int, float], None] | None = None,
    ) -> None:
        self._gc = collector
        self._clock = clock
        self.young_threshold = young_threshold
        self.full_every_s = full_every_s
        self.force_factor = force_factor
        self._on_pause = on_pause
        self.estimate_s = dict(INITIAL_ESTIMATE_S)
        self._last_full = clock()

    def start(self) -> None:
        """Collect once, move what start-up built out of the collector's sight, and take over."""
        self._gc.collect()
        self._gc.freeze()
        self._gc.disable()
        self._last_full = self._clock()

    def stop(self) -> None:
        self._gc.enable()

    def step(self, quiet_for: Callable[[], float]) -> int | None:
        """Collect if a collection is due and fits; ``quiet_for()`` gives the seconds free of
        calls (asked only when one is due). Returns the generation collected, or None."""
        young = self._gc.get_count()[0]
        since_full = self._clock() - self._last_full
        if since_full >= self.full_every_s:
            generation = FULL
        elif young >= self.young_threshold:
            generation = YOUNG
        else:
            return None
        forced = young >= self.young_threshold * self.force_factor or since_full >= 2 * self.full_every_s
        if not forced:
            quiet = quiet_for()
            if quiet < self.estimate_s[generation] + GUARD_S:
                if generation == FULL and young >= self.young_threshold and quiet >= self.estimate_s[YOUNG] + GUARD_S:
                    generation = YOUNG
                else:
                    return None
        started = self._clock()
        self._gc.collect(generation)
        took = self._clock() - started
        self.estimate_s[generation] = max(took, self.estimate_s[generation] * DECAY)
        if generation == FULL:
            self._last_full = started
        if self._on_pause is not None:
            self._on_pause(generation, took)
        return generation
