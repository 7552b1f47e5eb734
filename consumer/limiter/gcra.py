"""The Generic Cell Rate Algorithm as pure functions of (stored state, now): no clock, no I/O.

State is one float per key, the TAT (theoretical arrival time): the instant at which the key is
back to "one call already spent". A call at ``now`` is allowed when
``TAT - (burst - 1) * interval <= now`` and then moves the TAT one ``interval`` later.

Guarantee: any window of length L (closed at both ends) holds at most ``burst + floor(L / interval)``
grants. With ``interval = (1 + safety_margin) / rate``, ``burst = 1`` and an integer ``rate``,
a 1-second window holds at most ``1 + floor(rate / (1 + safety_margin)) <= rate`` grants: rate + 1
consecutive grants span ``1 + safety_margin`` seconds, so up to ``safety_margin`` seconds of
network jitter (10 ms with a 1 % margin) cannot put rate + 1 calls into one CAMS window.

Catch-up: a caller that comes back a little after its slot (a thread woken late, the GIL busy)
keeps the schedule instead of losing that time for good: while the TAT lies less than
``catch_up_s`` in the past, the next TAT is one interval after the old one, not after ``now``.
Grants still never come before their slot, so rate + 1 consecutive grants span at least
``1 + safety_margin - catch_up_s`` seconds: with ``catch_up_s = CATCH_UP_SHARE * safety_margin``
the 1-second guarantee holds and ``safety_margin - catch_up_s`` seconds (7 ms at the default
1 %) are left for network jitter.

Decisions are made to the microsecond (the Redis clock's resolution): a grant due within
``RESOLUTION_S`` is given, so float rounding never denies it.

``consumer/limiter/redis.py`` runs the same rules in Lua; keep both in step.
"""

from __future__ import annotations

from typing import NamedTuple

RESOLUTION_S = 1e-6
CATCH_UP_SHARE = 0.3
"""Share of the safety margin (in seconds) a late caller may win back."""


def catch_up_s(safety_margin: float) -> float:
    return CATCH_UP_SHARE * safety_margin


class Verdict(NamedTuple):
    """The outcome of one request: ``wait_s == 0.0`` means granted; ``tat`` is the state to store."""

    wait_s: float
    tat: float


def emission_interval(rate_per_second: float, safety_margin: float) -> float:
    """Seconds between two grants at ``rate_per_second``, lengthened by the ``safety_margin`` fraction."""
    return (1.0 + safety_margin) / rate_per_second


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


def push_out(tat: float | None, now: float, delay_s: float, interval: float, burst: int) -> float:
    """The TAT that makes the next grant come no sooner than ``now + delay_s`` (and not as a burst)."""
    current = now if tat is None or tat < now else tat
    return max(current, now + delay_s + (burst - 1) * interval)
