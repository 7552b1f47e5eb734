"""How much later than usual a call may have reached CAMS: the limiter's correction for late arrivals.

Pure: the sender feeds it each call's time from its grant to its request being on the wire (the
request handed to the socket; the time from grant to answer when that is not known). For a slot
reserved ahead, the grant is when the call was due had the limiter's answer come back as quickly
as usual: a worker woken late, or an answer held up on its way back (``Reservation.late_s``), makes
the call late; an ask held up on its way to the limiter only got a later slot. A request
goes out no sooner than the fastest recent one's (the usual work between grant and socket), so the
time beyond that fastest one is how long the call was held up on its way out (a new connection, a
thread waiting for the interpreter, a pause of the process). Up to ``tolerance_s`` of it is
ordinary jitter that the limiter's safety margin absorbs; the rest is reported as lateness. Until
``WARM_UP`` calls have been seen there is no usual time yet (the first calls also pay for opening
connections): all of a call's time counts.

What happens after the request is written (the network, CAMS's own work, the answer's way back)
is not counted: CAMS counts a call when it arrives, and the network's jitter is what the safety
margin is for. Counting it anyway (the time to the answer) would hold every late answer against
the budget: each reported second delays the call that shares the late one's window, so the
account's rate falls to ``capacity / (window + mean lateness)``.
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

    def lateness(self, held_s: float) -> float:
        """Seconds the call that took ``held_s`` from its grant to the wire may have arrived late (0.0: none)."""
        usual = min(self._recent) if len(self._recent) >= WARM_UP else 0.0
        self._recent.append(held_s)
        return max(0.0, held_s - usual - self._tolerance_s)
