"""What the supervisor shares with its workers (``workers`` > 1 without Redis): the rate
limiter and the de-duplication ledger of the instance.

The supervisor holds an :class:`InProcessLimiter` and an :class:`InMemoryLedger` and serves them
on a Unix socket (in Linux's abstract namespace: no file to clean up) with multiprocessing's
manager protocol (pickled calls, authenticated by a random key the workers inherit); each worker's
:class:`HostedLimiter` and :class:`HostedLedger` ask them. (Not TCP: the protocol writes a large
message's length and body separately, and Nagle's algorithm with delayed acknowledgements held
every lookup of a consumed batch 40 ms on loopback.) So the workers of an instance keep to the account's rate
together exactly as one process would (an idle worker leaves its share to the busy ones), and a
request a killed worker sent is found DONE by the worker that reads it again. A call is one
round trip (about 0.1 ms for 1,000 request ids): one per API call of up to 1,000 recipients for the limiter, one per
consumed batch and two per API call for the ledger. The worker runs the limiter's metrics hooks.

If the supervisor stops answering (it died: the worker is stopping too), the worker logs it
once, fails ``healthy()`` and finishes on its own: ``floor(rate / workers)`` calls/s from a
limiter of its own (as the Redis limiter does on an outage, so orphaned workers draining at once
stay within the account's rate; ``fallback_changed(True)`` is reported) and a ledger of its own.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.managers import BaseManager, BaseProxy, Server

from .ledger import InMemoryLedger, LedgerEntry, done_rows
from .limiter import InProcessLimiter, LimiterObserver, NoopObserver
from .models import Settled

log = logging.getLogger("consumer.hosted")

_LIMITER, _LEDGER = "limiter", "ledger"
_HOST_ERRORS = (OSError, EOFError)
_UNREACHABLE = object()


class _Grants:
    """What the host serves: the limiter's calls, each answering with the account's rate too
    (the worker reports a change of it without another round trip)."""

    def __init__(self, limiter: InProcessLimiter):
        self._limiter = limiter

    def acquire(self, account: str, ticket: str | None) -> tuple[float, float]:
        return self._limiter.acquire(account, ticket), self._limiter.effective_rate(account)

    def throttled(self, account: str, retry_after_s: float | None) -> float:
        self._limiter.throttled(account, retry_after_s)
        return self._limiter.effective_rate(account)

    def arrived_late(self, account: str, ticket: str, late_s: float) -> None:
        self._limiter.arrived_late(account, ticket, late_s)

    def refund(self, account: str, ticket: str) -> None:
        self._limiter.refund(account, ticket)

    def effective_rate(self, account: str) -> float:
        return self._limiter.effective_rate(account)


class StateHost:
    """Serves ``limiter`` and ``ledger`` on the Unix socket ``address`` from daemon threads of
    this process, for as long as the process lives."""

    def __init__(self, limiter: InProcessLimiter, ledger: InMemoryLedger):
        grants = _Grants(limiter)

        class Manager(BaseManager):  # a class of its own: registering changes the class
            pass

        Manager.register(_LIMITER, callable=lambda: grants)
        Manager.register(_LEDGER, callable=lambda: ledger, exposed=("lookup", "mark_in_flight", "mark_done_rows"))
        self.authkey = secrets.token_bytes(32)
        name = f"chatapp-consumer-{os.getpid()}-{secrets.token_hex(8)}"
        self.address = "\0" + name if sys.platform == "linux" else os.path.join(tempfile.mkdtemp(), name)
        self._server: Server = Manager(address=self.address, authkey=self.authkey).get_server()
        self._thread = threading.Thread(target=self._server.serve_forever, name="state-host", daemon=True)

    def start(self) -> StateHost:
        self._thread.start()
        return self

class _Client(BaseManager):
    pass


_Client.register(_LIMITER)
_Client.register(_LEDGER)


def _connect(address: str, authkey: bytes, typeid: str) -> BaseProxy:
    client = _Client(address=address, authkey=authkey)
    client.connect()
    return getattr(client, typeid)()


class _Remote:
    """A connection to one of the host's objects that gives up for good at the first failure:
    ``ask`` answers ``_UNREACHABLE`` from then on (the caller's fallback serves)."""

    def __init__(self, address: str, authkey: bytes, typeid: str, on_lost: Callable[[], None] | None = None):
        self._lock = threading.Lock()
        self._proxy: BaseProxy | None = _connect(address, authkey, typeid)  # unreachable at start-up: the worker fails loudly
        self._typeid = typeid
        self._on_lost = on_lost

    def ask(self, method: str, *args: object) -> object:
        proxy = self._proxy
        if proxy is None:
            return _UNREACHABLE
        try:
            return getattr(proxy, method)(*args)
        except _HOST_ERRORS as exc:
            self.lost(exc)
            return _UNREACHABLE

    def lost(self, exc: BaseException | None = None) -> None:
        """Stop asking the host (``exc``: because it failed; logged and reported once)."""
        with self._lock:
            if self._proxy is None:
                return
            self._proxy = None
        if exc is not None:
            log.warning("the supervisor's %s stopped answering (%s): this worker goes on with its own", self._typeid, exc)
            if self._on_lost is not None:
                self._on_lost()

    def reachable(self) -> bool:
        return self._proxy is not None


class HostedLimiter:
    """A :class:`RateLimiter` asking the supervisor's host (at the socket path ``address``).

    Thread-safe: the proxy opens one connection per calling thread. ``fallback`` serves once the
    host is unreachable (see the module's docstring)."""

    def __init__(self, address: str, authkey: bytes, fallback: InProcessLimiter, observer: LimiterObserver | None = None):
        self._observer: LimiterObserver = observer or NoopObserver()
        self._fallback = fallback
        self._rates: dict[str, float] = {}
        self._host = _Remote(address, authkey, _LIMITER, on_lost=lambda: self._observer.fallback_changed(True))
        self._ask = self._host.ask

    def _note_rate(self, account: str, rate: float) -> None:
        if self._rates.get(account) != rate:
            self._rates[account] = rate
            self._observer.rate_changed(account, rate)

    def acquire(self, account: str, ticket: str | None = None) -> float:
        answer = self._ask("acquire", account, ticket)
        if answer is _UNREACHABLE:
            return self._fallback.acquire(account, ticket)
        wait, rate = answer  # type: ignore[misc]
        self._note_rate(account, rate)
        if wait > 0.0:
            self._observer.denied(account, wait)
        else:
            self._observer.granted(account)
        return wait

    def throttled(self, account: str, retry_after_s: float | None = None) -> None:
        rate = self._ask("throttled", account, retry_after_s)
        if rate is _UNREACHABLE:
            self._fallback.throttled(account, retry_after_s)
        else:
            self._note_rate(account, rate)  # type: ignore[arg-type]

    def arrived_late(self, account: str, ticket: str, late_s: float) -> None:
        if self._ask("arrived_late", account, ticket, late_s) is _UNREACHABLE:
            self._fallback.arrived_late(account, ticket, late_s)

    def refund(self, account: str, ticket: str) -> None:
        if self._ask("refund", account, ticket) is _UNREACHABLE:
            self._fallback.refund(account, ticket)

    def effective_rate(self, account: str) -> float:
        rate = self._ask("effective_rate", account)
        return self._fallback.effective_rate(account) if rate is _UNREACHABLE else rate  # type: ignore[return-value]

    def healthy(self) -> bool:
        return self._host.reachable()

    def close(self) -> None:
        self._host.lost()


class HostedLedger:
    """A :class:`Ledger` asking the supervisor's host; ``fallback`` serves once it is unreachable."""

    def __init__(self, address: str, authkey: bytes, fallback: InMemoryLedger):
        self._fallback = fallback
        self._host = _Remote(address, authkey, _LEDGER)

    def lookup(self, request_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        found = self._host.ask("lookup", list(request_ids))
        return self._fallback.lookup(request_ids) if found is _UNREACHABLE else found  # type: ignore[return-value]

    def mark_in_flight(self, request_ids: Iterable[str], owner: str) -> None:
        request_ids = list(request_ids)
        if self._host.ask("mark_in_flight", request_ids, owner) is _UNREACHABLE:
            self._fallback.mark_in_flight(request_ids, owner)

    def mark_done(self, settled: Iterable[Settled]) -> None:
        rows = done_rows(settled)
        if self._host.ask("mark_done_rows", rows) is _UNREACHABLE:
            self._fallback.mark_done_rows(rows)

    def healthy(self) -> bool:
        return self._host.reachable()
