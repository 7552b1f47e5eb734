"""In-process limiter: GCRA plus adaptive factor per account, guarded by one lock.

``acquire`` grants now or says when to ask again; ``reserve`` takes the next free slot up to
``RESERVE_AHEAD_S`` ahead (see gcra.py): both on one schedule and one window per account.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .adaptive import AdaptivePolicy, RateFactor
from .gcra import emission_interval, push_out, reserve, window_capacity
from .protocol import RESERVE_AHEAD_S, AccountLimit, LimiterObserver, NoopObserver, Reservation


@dataclass(slots=True)
class _AccountState:
    """What the limiter remembers per account seen: GCRA TAT, the window's latest grants (by
    ticket), adaptive factor, last rate reported."""

    tat: float | None = None
    recent: dict[str, float] = field(default_factory=dict)  # ticket -> when it counts in the window
    factor: RateFactor = field(default_factory=RateFactor)
    reported_rate: float | None = None


class InProcessLimiter:
    """A :class:`RateLimiter` for one process: exact within the process, blind to other processes.

    Thread-safe: every decision happens under one lock, so whichever thread asks (or reserves), an
    account's grants keep to its schedule (``(1 + safety_margin) / effective_rate`` apart, see gcra.py) and
    no ``1 + safety_margin`` seconds hold more than its calls per second.
    Accounts missing from ``limits`` get ``default``. State is kept per account seen (accounts are
    a small, fixed set). ``clock`` is a monotonic float-seconds clock, injectable for tests.
    """

    def __init__(
        self,
        limits: Mapping[str, AccountLimit],
        default: AccountLimit,
        safety_margin: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
        *,
        policy: AdaptivePolicy = AdaptivePolicy(),
        observer: LimiterObserver | None = None,
    ) -> None:
        if safety_margin < 0:
            raise ValueError(f"safety_margin must be >= 0, got {safety_margin}")
        self._limits = dict(limits)
        self._default = default
        self._margin = safety_margin
        self._clock = clock
        self._policy = policy
        self._observer: LimiterObserver = observer or NoopObserver()
        self._lock = threading.Lock()
        self._states: dict[str, _AccountState] = {}
        self._tickets = itertools.count()

    def acquire(self, account: str, ticket: str | None = None) -> float:
        reservation = self.reserve(account, ticket, 0.0)
        return 0.0 if reservation.reserved else reservation.wait_s

    def reserve(self, account: str, ticket: str | None = None, ahead_s: float = RESERVE_AHEAD_S) -> Reservation:
        limit = self._limits.get(account, self._default)
        with self._lock:
            now = self._clock()
            state = self._states.setdefault(account, _AccountState())
            rate = limit.rate_per_second * state.factor.at(now, self._policy)
            capacity = window_capacity(limit.rate_per_second)
            slot = reserve(
                state.tat, sorted(state.recent.values()), now, emission_interval(rate, self._margin), limit.burst, capacity, min(ahead_s, RESERVE_AHEAD_S)
            )
            if slot.reserved:
                state.tat = slot.tat
                state.recent[ticket if ticket is not None else f"~{next(self._tickets)}"] = now + slot.wait_s
                if len(state.recent) > capacity:
                    del state.recent[min(state.recent, key=state.recent.__getitem__)]
            changed = self._note_rate(state, rate)
        self._report(account, changed)
        if slot.reserved:
            self._observer.granted(account)
        else:
            self._observer.denied(account, slot.wait_s)
        return Reservation(slot.reserved, slot.wait_s, rate, 0.0, now)  # from the decision: nothing after it is early

    def throttled(self, account: str, retry_after_s: float | None = None) -> None:
        limit = self._limits.get(account, self._default)
        with self._lock:
            now = self._clock()
            state = self._states.setdefault(account, _AccountState())
            state.factor = state.factor.throttled(now, self._policy)
            rate = limit.rate_per_second * state.factor.at(now, self._policy)
            if retry_after_s and retry_after_s > 0:
                interval = emission_interval(rate, self._margin)
                state.tat = push_out(state.tat, now, retry_after_s, interval, limit.burst)
            changed = self._note_rate(state, rate)
        self._report(account, changed)

    def arrived_late(self, account: str, ticket: str, late_s: float) -> None:
        with self._lock:
            state = self._states.get(account)
            if state is not None and ticket in state.recent:  # else ``capacity`` grants came since: too late to matter
                state.recent[ticket] += late_s

    def refund(self, account: str, ticket: str) -> None:
        with self._lock:
            state = self._states.get(account)
            if state is not None:
                state.recent.pop(ticket, None)

    def effective_rate(self, account: str) -> float:
        limit = self._limits.get(account, self._default)
        with self._lock:
            state = self._states.get(account)
            factor = state.factor.at(self._clock(), self._policy) if state else 1.0
        return limit.rate_per_second * factor

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        pass

    @staticmethod
    def _note_rate(state: _AccountState, rate: float) -> float | None:
        """Remember ``rate`` as reported; return it if it differs from the last report (caller holds the lock)."""
        if rate == state.reported_rate:
            return None
        state.reported_rate = rate
        return rate

    def _report(self, account: str, changed: float | None) -> None:
        if changed is not None:
            self._observer.rate_changed(account, changed)
