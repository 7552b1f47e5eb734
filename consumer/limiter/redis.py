"""Redis-backed limiter: one budget per account shared by every instance, with an in-process fallback.

Keys (all under ``key_prefix``; ``{account}`` is a Redis Cluster hash tag, so the keys of an account
live on one slot):

- ``<prefix>{<account>}:tat``  — GCRA TAT, seconds on the Redis server clock; expires once in the past.
- ``<prefix>{<account>}:recent`` — sorted set of the latest grants (member: the grant's ticket,
  score: when it counts in the window; at most the account's calls per second): the sliding
  window (a slot reserved ahead counts at its own time); expires one window after the last one.
- ``<prefix>{<account>}:rate`` — hash ``f`` (adaptive factor after the last decrease), ``t`` (when);
  expires once the factor is back to 1.0 and the hold-off is over.

Every instance runs the same Lua script (loaded once, then EVALSHA) with the time taken from the
Redis server (``TIME``): the budget runs on one clock, and one acquire is one round trip.

Reservations: ``reserve`` takes the account's next free slot up to ``ahead_s`` (at most
``RESERVE_AHEAD_S``) ahead and no sooner than the quickest recent answer takes to come back, in
the same script; the slot is in the window at its own time, so every instance's later decisions
see it. Asks in flight together (as many as the round trip needs, see gates.py) get one slot
each: against a Redis 300 ms away an account keeps its rate. The script answers with its server
time: the caller places the slot on its own clock (the answer, less its way back: clocks apart by
δ move it by up to δ, never before the ask) and an answer that came after the slot makes the call
late by as much; an ask held up on its way there (a new connection's handshake) only gets a
later slot.
"""

from __future__ import annotations

import functools
import importlib.resources
import itertools
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ..redis_watch import RedisWatch
from .adaptive import AdaptivePolicy
from .gcra import CATCH_UP_INTERVALS, window_capacity
from .memory import InProcessLimiter
from .protocol import RESERVE_AHEAD_S, AccountLimit, LimiterObserver, NoopObserver, Reservation

log = logging.getLogger("consumer.limiter")

PROBE_INTERVAL_S = 1.0
"""While in fallback, Redis is tried again at most this often."""
ANSWER_HISTORY = 32
"""Recent answers to reservations, whose quickest way back tells whether Redis's clock is behind (``_answer_late``)."""

_SCRIPT = (importlib.resources.files(__package__) / "redis_limiter.lua").read_text(encoding="utf-8")
"""The script every instance runs (loaded once, then EVALSHA); its rules are gcra.py's and adaptive.py's."""


def connect(url: str, timeout_s: float = 0.5) -> Redis:
    """A client fit for :class:`RedisLimiter`: short connect/read timeouts and no retries.

    redis-py retries 10 times with backoff by default; the limiter must fail fast instead, so that
    an outage costs the dispatcher at most ``timeout_s`` per probe and never a stall.
    """
    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def fallback_limit(limit: AccountLimit, instances: int) -> AccountLimit:
    """One instance's share of ``limit`` while Redis is down: ``floor(rate / instances)`` calls/s, burst 1.

    Rounding down to an integer keeps every 1-second window of one instance at or under its share
    (see gcra.py); an account slower than ``instances`` calls/s gets ``rate / instances``.
    """
    share = limit.rate_per_second / instances
    return AccountLimit(math.floor(share) if share >= 1 else share, burst=1)


def fallback_limits(limits: Mapping[str, AccountLimit], default: AccountLimit, instances: int) -> tuple[dict[str, AccountLimit], AccountLimit]:
    """:func:`fallback_limit` of each account's limit and of the default one."""
    return {account: fallback_limit(limit, instances) for account, limit in limits.items()}, fallback_limit(default, instances)


class RedisLimiter:
    """A :class:`RateLimiter` whose per-account budget and adaptive factor live in Redis.

    All instances sharing ``key_prefix`` on one Redis share each account's budget: grants follow
    one GCRA grid and one sliding window across all of them (see gcra.py; late arrivals and
    refunds reported by any instance move or free that instance's grant in the shared window), and
    a ``throttled`` reported by any instance slows every instance (the factor is read by the
    script on each acquire).

    Outage: on any Redis error (unreachable, a timeout, or an error reply: READONLY during a
    failover, OOM at maxmemory, NOPERM, MISCONF, WRONGTYPE...; a NOSCRIPT after a flush is not
    one: the script is loaded again and the call made again) the limiter logs one warning, reports
    ``healthy() == False``, calls ``observer.fallback_changed(True)`` and serves from an in-process
    limiter with :func:`fallback_limit` (``floor(R / N)`` calls/s, burst 1, for configured rate R and
    ``N = fallback_instances``). It tries Redis again at most once per second (on acquire, throttled,
    effective_rate or healthy, whose probe writes a key: a read-only replica is no recovery); the
    first success logs the recovery and returns to the shared script. ``watch`` times every call.

    Fallback bound (safety_margin > 0): with M instances all cut off from Redis, each makes at most
    ``floor(R / N)`` calls in any 1-second window (see gcra.py), so the group makes at most
    ``M * floor(R / N)`` calls per window. That is within R whenever M <= N: the group can exceed the
    account limit only if more than N instances run. (For R < N each instance makes one call per
    ``N * (1 + safety_margin) / R`` s, at most one per window, so there the window bound is M, within
    R only while M <= R.) While only some instances are cut off (partial partition, or instances
    switching over at different moments, up to a second apart), each of the k in fallback adds up to
    ``floor(R / N)`` calls per window on top of the R granted through Redis.

    A probe costs one round trip; against a Redis that does not answer (rather than refusing the
    connection) it blocks the caller for up to the client's timeout (0.5 s with :func:`connect`),
    at most once per second.

    ``effective_rate`` reports the shared rate (configured rate times the shared factor); in fallback,
    this instance's share.

    Pass a client made by :func:`connect` (short timeouts, no retries); the limiter owns it and
    ``close()`` closes it. ``clock`` (monotonic seconds) paces the re-probes and the fallback limiter;
    the shared budget itself runs on the Redis server clock.
    """

    def __init__(
        self,
        redis_client: Redis,
        limits: Mapping[str, AccountLimit],
        default: AccountLimit,
        safety_margin: float = 0.02,
        key_prefix: str = "chatapp:limiter:",
        *,
        fallback_instances: int,
        clock: Callable[[], float] = time.monotonic,
        policy: AdaptivePolicy = AdaptivePolicy(),
        observer: LimiterObserver | None = None,
        watch: RedisWatch | None = None,
    ) -> None:
        if fallback_instances < 1:
            raise ValueError(f"fallback_instances must be >= 1, got {fallback_instances}")
        if safety_margin < 0:
            raise ValueError(f"safety_margin must be >= 0, got {safety_margin}")
        self._redis = redis_client
        self._script = redis_client.register_script(_SCRIPT)
        self._limits = dict(limits)
        self._default = default
        self._margin = safety_margin
        self._prefix = key_prefix
        self._clock = clock
        self._policy = policy
        self._observer: LimiterObserver = observer or NoopObserver()
        self._watch = watch or RedisWatch()
        self._new_fallback = functools.partial(
            InProcessLimiter,
            *fallback_limits(limits, default, fallback_instances),
            safety_margin,
            clock,
            policy=policy,
            observer=self._observer,
        )
        self._fallback = self._new_fallback()
        self._fallback_instances = fallback_instances
        self._lock = threading.Lock()
        self._in_fallback = False
        self._last_probe = -math.inf
        self._reported: dict[str, float] = {}
        self._answer_legs: deque[float] = deque(maxlen=ANSWER_HISTORY)  # (answered - decided) of the latest reservations
        self._instance = uuid.uuid4().hex[:12]  # names this limiter's own tickets in the shared window
        self._tickets = itertools.count()

    def acquire(self, account: str, ticket: str | None = None) -> float:
        reservation = self.reserve(account, ticket, 0.0)
        return 0.0 if reservation.reserved else reservation.wait_s

    def reserve(self, account: str, ticket: str | None = None, ahead_s: float = RESERVE_AHEAD_S) -> Reservation:
        ticket = ticket if ticket is not None else f"{self._instance}:{next(self._tickets)}"
        ahead_s = max(0.0, min(ahead_s, RESERVE_AHEAD_S))
        reply = self._shared("acquire", account, ticket=ticket, ahead_s=ahead_s)
        if reply is None:
            return self._fallback.reserve(account, ticket, ahead_s)
        granted, wait_s, factor, late_s, answered_at = reply
        if granted:
            self._observer.granted(account)
        else:
            self._observer.denied(account, wait_s)
        return Reservation(granted, wait_s, self._limits.get(account, self._default).rate_per_second * factor, late_s, answered_at)

    def arrived_late(self, account: str, ticket: str, late_s: float) -> None:
        if self._shared("late", account, ticket=ticket, late_s=late_s) is None:
            self._fallback.arrived_late(account, ticket, late_s)

    def refund(self, account: str, ticket: str) -> None:
        if self._shared("refund", account, ticket=ticket) is None:
            self._fallback.refund(account, ticket)

    def throttled(self, account: str, retry_after_s: float | None = None) -> None:
        if self._shared("throttle", account, retry_after_s or 0.0) is None:
            self._fallback.throttled(account, retry_after_s)

    def effective_rate(self, account: str) -> float:
        reply = self._shared("peek", account)
        if reply is None:
            return self._fallback.effective_rate(account)
        return self._limits.get(account, self._default).rate_per_second * reply[2]

    def healthy(self) -> bool:
        """False while in fallback; in fallback it also re-probes Redis (a write, at most once per second)."""
        if self._probe_due():
            try:
                with self._watch.timed("limiter", "probe"):
                    self._redis.set(f"{self._prefix}probe", 1, px=1000)
            except RedisError as exc:
                self._failed(exc)
            else:
                self._recovered()
        return not self._in_fallback

    def close(self) -> None:
        self._redis.close()

    def _shared(
        self, op: str, account: str, retry_after_s: float = 0.0, ticket: str = "", late_s: float = 0.0, ahead_s: float = 0.0
    ) -> tuple[bool, float, float, float, float] | None:
        """Run the script for ``account``: (granted, wait_s, factor, how late the answer came back,
        when it came back: ``time.monotonic``); None means "use the fallback" (Redis down, no probe due)."""
        if self._in_fallback and not self._probe_due():
            return None
        limit = self._limits.get(account, self._default)
        tag = f"{self._prefix}{{{account}}}"
        p = self._policy
        try:
            with self._watch.timed("limiter", op):
                asked = time.monotonic()
                granted, wait_s, factor, *decided = self._script(
                    keys=[f"{tag}:tat", f"{tag}:rate", f"{tag}:recent"],
                    args=[
                        op,
                        limit.rate_per_second,
                        limit.burst,
                        self._margin,
                        p.decrease,
                        p.floor,
                        p.recovery_per_s,
                        p.holdoff_s,
                        retry_after_s,
                        window_capacity(limit.rate_per_second),
                        CATCH_UP_INTERVALS,
                        ticket,
                        late_s,
                        ahead_s,
                        self._lead(ahead_s),
                    ],
                )
        except RedisError as exc:
            self._observer.backend_error(account, exc)
            self._failed(exc)
            return None
        answered, answered_wall = time.monotonic(), time.time()
        self._recovered()
        late_s = self._answer_late(float(decided[0]), answered_wall, answered - asked) if decided else 0.0
        reply = bool(granted), float(wait_s), float(factor), late_s, answered
        self._note_rate(account, limit.rate_per_second * reply[2])
        return reply

    def _lead(self, ahead_s: float) -> float:
        """No slot sooner than the quickest recent answer takes to come back (within ``ahead_s``):
        a caller far from Redis learns of its slot before it comes, and sends on time."""
        with self._lock:
            return max(0.0, min(min(self._answer_legs, default=0.0), ahead_s))

    def _answer_late(self, decided: float, answered: float, round_trip_s: float) -> float:
        """All the time this answer took from the script's decision (``decided``, Redis's clock) to
        this process (``answered``, the wall clock); Redis's clock ahead shows as answers quicker
        than possible: the most negative of the last ``ANSWER_HISTORY`` is taken off then. No more
        than the round trip: a clock stepped by NTP must not pass for a late answer."""
        leg = answered - decided
        with self._lock:
            self._answer_legs.append(leg)
            behind = min(min(self._answer_legs), 0.0)
        return max(0.0, min(leg - behind, round_trip_s))

    def _probe_due(self) -> bool:
        """In fallback and a second has passed since the last try: claim this probe (one thread wins)."""
        with self._lock:
            if not self._in_fallback or self._clock() - self._last_probe < PROBE_INTERVAL_S:
                return False
            self._last_probe = self._clock()
            return True

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._last_probe = self._clock()
            if self._in_fallback:
                return
            self._fallback = self._new_fallback()  # fresh state, and it reports its rates anew
            self._in_fallback = True
        log.warning(
            "rate limiter: Redis unavailable (%s: %s); in-process fallback at 1/%d of each account's rate",
            type(exc).__name__,
            exc,
            self._fallback_instances,
        )
        self._observer.fallback_changed(True)

    def _recovered(self) -> None:
        with self._lock:
            if not self._in_fallback:
                return
            self._in_fallback = False
            self._reported.clear()  # report the shared rates again
        log.info("rate limiter: Redis reachable again; shared per-account budget restored")
        self._observer.fallback_changed(False)

    def _note_rate(self, account: str, rate: float) -> None:
        with self._lock:
            if self._reported.get(account) == rate:
                return
            self._reported[account] = rate
        self._observer.rate_changed(account, rate)
