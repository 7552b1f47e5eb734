"""One budget for the worker processes of one instance (``workers`` > 1 without Redis).

The supervisor holds an :class:`InProcessLimiter` and serves it on a Unix socket (in Linux's
abstract namespace: no file to clean up) with multiprocessing's manager protocol (pickled calls,
authenticated by a random key the workers inherit); each worker's :class:`HostedLimiter` asks
it for every token (``acquire``, or ``reserve`` for a slot ahead: the host's limiter decides both).
So the workers of an instance keep to the account's rate together exactly as one process would,
and an idle worker leaves its share to the busy ones. A call is one round trip per API call of up
to 1,000 recipients. The worker runs the metrics hooks itself.

(Not TCP loopback: the protocol writes a large message's length and its body separately, and
Nagle's algorithm with delayed acknowledgements held such calls 40 ms each.)

If the supervisor stops answering (it died: the worker is stopping too), the worker logs it
once, reports ``fallback_changed(True)``, fails ``healthy()`` and finishes with
``floor(rate / workers)`` calls/s from a limiter of its own, as the Redis limiter does on an
outage, so even orphaned workers draining at once stay within the account's rate.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import tempfile
import threading
import time
from multiprocessing.managers import BaseManager, BaseProxy, Server
from typing import Any

from .memory import InProcessLimiter
from .protocol import RESERVE_AHEAD_S, LimiterObserver, NoopObserver, Reservation

log = logging.getLogger("consumer.limiter")

_TYPE_ID = "limiter"
_HOST_ERRORS = (OSError, EOFError)
_UNREACHABLE = object()


class _Grants:
    """What the host serves: the limiter's calls, each answering with the account's rate too
    (the worker reports a change of it without another round trip)."""

    def __init__(self, limiter: InProcessLimiter):
        self._limiter = limiter

    def acquire(self, account: str, ticket: str | None) -> tuple[float, float]:
        return self._limiter.acquire(account, ticket), self._limiter.effective_rate(account)

    def reserve(self, account: str, ticket: str | None, ahead_s: float) -> tuple[tuple[bool, float, float, float], float]:
        """The reservation, and when it was decided (``time.monotonic``: one clock for every
        process of the machine on Linux) so the worker can tell how long the answer took."""
        reservation = self._limiter.reserve(account, ticket, ahead_s)
        decided = reservation.answered_at if reservation.answered_at is not None else time.monotonic()
        return (reservation.reserved, reservation.wait_s, reservation.rate, reservation.late_s), decided

    def throttled(self, account: str, retry_after_s: float | None) -> float:
        self._limiter.throttled(account, retry_after_s)
        return self._limiter.effective_rate(account)

    def arrived_late(self, account: str, ticket: str, late_s: float) -> None:
        self._limiter.arrived_late(account, ticket, late_s)

    def refund(self, account: str, ticket: str) -> None:
        self._limiter.refund(account, ticket)

    def effective_rate(self, account: str) -> float:
        return self._limiter.effective_rate(account)


class LimiterHost:
    """Serves ``limiter`` on the Unix socket ``address`` from daemon threads of this process,
    for as long as the process lives."""

    def __init__(self, limiter: InProcessLimiter):
        grants = _Grants(limiter)

        class Manager(BaseManager):  # a class of its own: registering changes the class
            pass

        Manager.register(_TYPE_ID, callable=lambda: grants)
        self.authkey = secrets.token_bytes(32)
        name = f"chatapp-consumer-{os.getpid()}-{secrets.token_hex(8)}"
        self.address = "\0" + name if sys.platform == "linux" else os.path.join(tempfile.mkdtemp(), name)
        self._server: Server = Manager(address=self.address, authkey=self.authkey).get_server()
        self._thread = threading.Thread(target=self._server.serve_forever, name="limiter-host", daemon=True)

    def start(self) -> LimiterHost:
        self._thread.start()
        return self


class _Client(BaseManager):
    pass


_Client.register(_TYPE_ID)


class HostedLimiter:
    """A :class:`RateLimiter` asking the supervisor's :class:`LimiterHost` (at ``address``).

    Thread-safe: the proxy opens one connection per calling thread. ``fallback`` serves once the
    host is unreachable (see the module's docstring)."""

    def __init__(self, address: str, authkey: bytes, fallback: InProcessLimiter, observer: LimiterObserver | None = None):
        self._observer: LimiterObserver = observer or NoopObserver()
        self._fallback = fallback
        self._lock = threading.Lock()
        self._rates: dict[str, float] = {}
        client = _Client(address=address, authkey=authkey)
        client.connect()  # unreachable at start-up: the worker fails loudly
        self._host: BaseProxy | None = getattr(client, _TYPE_ID)()

    def _ask(self, method: str, *args: object) -> Any:
        """The host's answer to ``method(*args)``, or ``_UNREACHABLE`` (then the fallback answers).
        Any: a proxy's answer is whatever the host's method returned (``_Grants`` has their types)."""
        host = self._host
        if host is None:
            return _UNREACHABLE
        try:
            return getattr(host, method)(*args)
        except _HOST_ERRORS as exc:
            self._lost(exc)
            return _UNREACHABLE

    def _lost(self, exc: BaseException) -> None:
        with self._lock:
            if self._host is None:
                return
            self._host = None
        log.warning("the supervisor's limiter stopped answering (%s): sending at this worker's share of the rate", exc)
        self._observer.fallback_changed(True)

    def _note_rate(self, account: str, rate: float) -> None:
        if self._rates.get(account) != rate:
            self._rates[account] = rate
            self._observer.rate_changed(account, rate)

    def acquire(self, account: str, ticket: str | None = None) -> float:
        answer = self._ask("acquire", account, ticket)
        if answer is _UNREACHABLE:
            return self._fallback.acquire(account, ticket)
        wait: float
        rate: float
        wait, rate = answer
        self._note_rate(account, rate)
        if wait > 0.0:
            self._observer.denied(account, wait)
        else:
            self._observer.granted(account)
        return wait

    def reserve(self, account: str, ticket: str | None = None, ahead_s: float = RESERVE_AHEAD_S) -> Reservation:
        answer = self._ask("reserve", account, ticket, ahead_s)
        if answer is _UNREACHABLE:
            return self._fallback.reserve(account, ticket, ahead_s)
        fields: tuple[bool, float, float, float]
        decided: float
        fields, decided = answer
        reservation = Reservation(*fields, answered_at=decided)  # one clock on the machine: the slot from the decision itself
        self._note_rate(account, reservation.rate)
        if reservation.reserved:
            self._observer.granted(account)
        else:
            self._observer.denied(account, reservation.wait_s)
        return reservation

    def throttled(self, account: str, retry_after_s: float | None = None) -> None:
        rate = self._ask("throttled", account, retry_after_s)
        if rate is _UNREACHABLE:
            self._fallback.throttled(account, retry_after_s)
        else:
            self._note_rate(account, rate)

    def arrived_late(self, account: str, ticket: str, late_s: float) -> None:
        if self._ask("arrived_late", account, ticket, late_s) is _UNREACHABLE:
            self._fallback.arrived_late(account, ticket, late_s)

    def refund(self, account: str, ticket: str) -> None:
        if self._ask("refund", account, ticket) is _UNREACHABLE:
            self._fallback.refund(account, ticket)

    def effective_rate(self, account: str) -> float:
        rate = self._ask("effective_rate", account)
        return self._fallback.effective_rate(account) if rate is _UNREACHABLE else rate

    def healthy(self) -> bool:
        return self._host is not None

    def close(self) -> None:
        self._host = None
