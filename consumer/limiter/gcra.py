"""The Generic Cell Rate Algorithm, bounded by a sliding window, as pure functions of (stored state, now).

GCRA state is one float per key, the TAT (theoretical arrival time): the instant at which the key
is back to "one call already spent". A call at ``now`` is allowed when
``TAT - (burst - 1) * interval <= now`` and then moves the TAT one ``interval`` later, with
``interval = (1 + safety_margin) / rate``: grants are evenly spaced, never before their slot.

The window: CAMS counts calls in a sliding 1-second window, so the limiter also keeps the times of
the last ``capacity = floor(rate)`` grants (calls per second) and allows a call only once the
oldest of them is ``span = capacity * interval`` seconds old (1 s plus the margin at an integer
rate): any ``capacity + 1`` consecutive grants span at least ``1 + safety_margin`` seconds, so up
to ``safety_margin`` seconds of network jitter (10 ms with a 1 % margin) cannot put rate + 1 calls
into one CAMS window.

Catch-up: a caller that comes back after its slot (a thread woken late, the GIL busy) keeps the
GCRA schedule instead of losing that time for good: while the TAT lies less than
``CATCH_UP_INTERVALS`` intervals in the past, the next TAT is one interval after the old one, not
after ``now`` (so at most ``CATCH_UP_INTERVALS + 1`` calls go back to back after a stall). The
window decides how much of the lost time can be won back without ever putting more than
``capacity`` grants into a window. A late call then costs only its own lateness, once, on the
call ``capacity`` grants later (the one whose window it shares) instead of pushing every later
slot back: at 10 calls/s a call 50 ms late costs 5 ms of budget, not 50.

Decisions are made to the microsecond (the Redis clock's resolution): a grant due within
``RESOLUTION_S`` is given, so float rounding never denies it.

Late arrivals: the window counts a call from its grant, but CAMS counts it when it arrives. A call
held up after its grant (a new connection, a pause of the process) arrives late, and the call
``capacity`` grants later, sent on time, could then reach CAMS less than a second after it. The
sender measures how long after its slot a call went out (less a tolerance, ``lateness.py``) and
the limiter moves that call's entry in the window later by as much, so the call that shares its
window waits too.

Reservations: instead of "now or ask again later", a caller may take the next free slot ahead
of time (:func:`reserve`): the slot is the earliest instant at which :func:`decide` would grant if
nobody else asked before, and it is decided (TAT moved on, the grant entered in the window at that
instant) at once, in the one request. The caller then sleeps until its slot and sends, without a
second request. Slots are the same grid and window as grants made on the spot, so every promise
above holds whichever mix of the two the callers use; a slot further than ``ahead_s`` away is not
taken (the caller is told when to ask again), so no caller holds more than ``ahead_s`` of the
budget in advance. A grant on the spot is a reservation with ``ahead_s = 0`` (denied, it says
when the slot is: ``decide`` says when its first rule would allow it).

``consumer/limiter/redis.py`` runs the same rules in Lua; keep both in step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

RESOLUTION_S = 1e-6
CATCH_UP_INTERVALS = 2
"""How far behind its schedule (in intervals) a late caller may still catch up."""


class Verdict(NamedTuple):
    """The outcome of one request: ``wait_s == 0.0`` means granted; ``tat`` is the state to store."""

    wait_s: float
    tat: float


def emission_interval(rate_per_second: float, safety_margin: float) -> float:
    """Seconds between two grants at ``rate_per_second``, lengthened by the ``safety_margin`` fraction."""
    return (1.0 + safety_margin) / rate_per_second


def window_capacity(rate_per_second: float) -> int:
    """Grants the sliding window holds: the calls per second of ``rate_per_second``, at least one."""
    return max(1, math.floor(rate_per_second + RESOLUTION_S))


def window_wait(recent: Sequence[float], now: float, capacity: int, span: float) -> float:
    """Seconds until a grant keeps at most ``capacity`` grants in any ``span`` (0.0: now).

    ``recent`` holds the latest grant times in ascending order."""
    if len(recent) < capacity:
        return 0.0
    wait = recent[-capacity] + span - now
    return wait if wait > RESOLUTION_S else 0.0


def gcra(tat: float | None, now: float, interval: float, burst: int, catch_up: float = 0.0) -> Verdict:
    """Decide one request: grant it (TAT moves one interval on) or say how long until it would be granted.

    ``tat=None`` is a key never seen (or expired). An idle key's TAT is clamped to ``now`` (once it
    is more than ``catch_up`` seconds old), so idle time never banks more than ``burst`` grants.
    """
    current = now if tat is None or tat < now - catch_up else tat
    allowed_at = current - (burst - 1) * interval
    if allowed_at - now > RESOLUTION_S:
        return Verdict(allowed_at - now, current)
    return Verdict(0.0, current + interval)


def decide(tat: float | None, recent: Sequence[float], now: float, interval: float, burst: int, capacity: int) -> Verdict:
    """Both rules for one request: GCRA (catching up at most ``CATCH_UP_INTERVALS``), then the
    window of the ``capacity`` latest grants (``recent``, ascending; the caller adds ``now`` to it
    on a grant)."""
    verdict = gcra(tat, now, interval, burst, CATCH_UP_INTERVALS * interval)
    if verdict.wait_s == 0.0:
        wait = window_wait(recent, now, capacity, capacity * interval)
        if wait:
            return Verdict(wait, now if tat is None else tat)  # denied: the state stays as it was
    return verdict


def push_out(tat: float | None, now: float, delay_s: float, interval: float, burst: int) -> float:
    """The TAT that makes the next grant come no sooner than ``now + delay_s`` (and not as a burst)."""
    current = now if tat is None or tat < now else tat
    return max(current, now + delay_s + (burst - 1) * interval)


class Slot(NamedTuple):
    """The outcome of one reservation: ``reserved`` means the slot ``wait_s`` from now (0.0: now) is
    taken and ``tat`` is the state to store; not reserved means the next free slot lies beyond the
    horizon: ask again in ``wait_s`` (the state stays as it was)."""

    reserved: bool
    wait_s: float
    tat: float | None


def next_slot(tat: float | None, recent: Sequence[float], now: float, interval: float, burst: int, capacity: int) -> Verdict:
    """The earliest instant ``t >= now`` at which :func:`decide` grants, as ``(t - now, TAT after
    that grant)``, supposing nobody asks before ``t``.

    At most three decisions: GCRA's slot, then the window's, which GCRA never moves again (a
    TAT the window held back is then at most in the past, where GCRA grants)."""
    t = now
    for _ in range(4):
        verdict = decide(tat, recent, t, interval, burst, capacity)
        if verdict.wait_s == 0.0:
            return Verdict(0.0 if t - now <= RESOLUTION_S else t - now, verdict.tat)
        t += verdict.wait_s
    raise AssertionError(f"no slot after four decisions (tat={tat}, recent={list(recent)}, now={now})")  # pragma: no cover


def reserve(tat: float | None, recent: Sequence[float], now: float, interval: float, burst: int, capacity: int, ahead_s: float) -> Slot:
    """Take the next free slot if it is at most ``ahead_s`` away (see the module's docstring).

    A reserved slot counts in the window at ``now + wait_s``: the caller adds that time to
    ``recent`` under the reservation's ticket."""
    slot = next_slot(tat, recent, now, interval, burst, capacity)
    if slot.wait_s - max(ahead_s, 0.0) > RESOLUTION_S:
        return Slot(False, slot.wait_s - max(ahead_s, 0.0), tat)
    return Slot(True, slot.wait_s, slot.tat)
