"""De-duplication ledger: what became of each request, per account and ``request_id``.

An entry is scoped by the request's account (one account's producers can never answer, nor
block, another's) and holds the request's fingerprint (a hash of its account, batch key fields
and recipients), so the same id with other content is told apart from a copy of the request.

Life of an entry:
- CLAIMED: ``claim`` made it, atomically (one instance wins, the others are told whose it is)
  when the request was taken in; nothing of it was sent yet;
- IN_FLIGHT: its API call is about to be made (``mark_in_flight``), with the call's TaskId when
  the service gave it one (the evidence ``inflight_policy=receipts`` looks for, ``admission.py``);
- DONE: its result is stored (``mark_done``) and every later copy is answered with it;
- gone again: ``release`` drops a CLAIMED mark of a request given up unsent (its partition went
  to another instance); an IN_FLIGHT mark given up is kept, but orphaned (stale at once).

A mark is fresh while its owner lives: the owner ``beat``s (a key of its own, written every
quarter of ``stale_s``), and a mark counts as written at the owner's last beat. A mark whose owner
has not beaten for ``stale_s`` is stale: its instance died (see ``admission.py`` for what
becomes of it).

``InMemoryLedger`` serves a single instance (it protects against retries and rebalances inside
the process, not against a crash); ``RedisLedger`` (``ledger_redis.py``) is shared by every
instance and survives them. Entries expire after the retention.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple, Protocol

from .fingerprint import fingerprint
from .models import SendRequest, SendResult, Settled

CLAIMED = "claimed"
IN_FLIGHT = "in_flight"
DONE = "done"


class LedgerEntry(NamedTuple):
    state: str
    owner: str | None = None
    since: float = 0.0
    """When the mark was written, or its owner's last beat if later (wall-clock seconds)."""
    result: SendResult | None = None
    fingerprint: str | None = None
    token: Any = None
    """The entry as stored: ``take_over`` replaces it only if it is still the same."""
    task_id: str | None = None
    """An IN_FLIGHT mark: the TaskId of the call carrying the whole request, unique to that call."""


class Ledger(Protocol):
    def claim(self, requests: Sequence[SendRequest], owner: str) -> list[LedgerEntry | None]:
        """Mark each request CLAIMED by ``owner`` unless it has an entry: None where claimed,
        else the entry found (for a request twice in ``requests``, the first one's claim)."""
        ...

    def take_over(self, request: SendRequest, entry: LedgerEntry, owner: str) -> bool:
        """Claim a request whose ``entry`` was found stale, unless it changed since (then False)."""
        ...

    def mark_in_flight(self, requests: Iterable[SendRequest], owner: str, task_id: str | None = None) -> None:
        """Their call is about to be made (``task_id``: its TaskId, kept in each mark)."""
        ...

    def mark_done(self, settled: Iterable[Settled]) -> None: ...

    def release(self, requests: Iterable[SendRequest], owner: str) -> None:
        """``owner`` gives these requests up unfinished: drop its CLAIMED marks, orphan its IN_FLIGHT ones."""
        ...

    def lookup(self, requests: Sequence[SendRequest]) -> list[LedgerEntry | None]: ...
    def beat(self, owner: str) -> None: ...
    def healthy(self) -> bool: ...
    def close(self) -> None: ...


def in_flight_at(owner: str | None) -> str:
    """Where a stale IN_FLIGHT mark was made, for results and logs (its ``owner`` is empty once
    the stopping instance released it)."""
    return f"was in flight at {owner} when it stopped" if owner else "was in flight at an instance that released it when stopping"


def released(entry: LedgerEntry | None, owner: str) -> LedgerEntry | None | Literal[False]:
    """What ``release`` leaves of ``entry``: False to keep it as is, None to drop it, or the
    orphaned mark (no owner, written at 0: stale at once). RedisLedger decides the same in its
    release script (``ledger_redis._RELEASE``); the ledger contract tests hold both to it."""
    if entry is None or entry.owner != owner or entry.state == DONE:
        return False
    if entry.state == CLAIMED:
        return None
    return entry._replace(owner="", since=0.0, token=None)


class InMemoryLedger:
    """Thread-safe ordered dict with expiry, oldest entries first, keyed by (account, request id).

    An item is ``(expires, state, owner, since, fingerprint, task id)`` for a mark, or ``(expires, since,
    outcome, completed_at_ms, recipients, fingerprint)`` for a request marked DONE: its entry (and
    result) is made when it is looked up (a copy of the request), not for every request claimed
    or sent (and it keeps no reference to the request). A DONE mark moves the id to the newest end; other marks of an id already held keep
    its place. Expired items are dropped from the oldest end as far as they go, and a lookup
    finds none."""

    def __init__(self, retention_s: float, clock=time.time, max_entries: int = 100_000):
        self.retention_s = retention_s
        self._clock = clock
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[Any, ...]] = OrderedDict()  # a plain dict would walk its deleted oldest slots
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        """Drop the oldest items beyond ``max_entries``, then the expired ones at the oldest end."""
        entries = self._entries
        for _ in range(len(entries) - self._max):
            entries.popitem(last=False)
        while entries:
            oldest = next(iter(entries))
            if entries[oldest][0] > now:
                break
            del entries[oldest]

    def _get(self, request: SendRequest, now: float) -> LedgerEntry | None:
        item = self._entries.get((request.key.account, request.request_id))
        return _entry(request.request_id, item) if item is not None and item[0] > now else None

    def _mark(self, request: SendRequest, state: str, owner: str, now: float, task_id: str | None = None) -> None:
        """Set a mark, keeping the fingerprint of the request's claim (else computing it)."""
        key = (request.key.account, request.request_id)
        item = self._entries.get(key)
        known = item[4] if item is not None and _is_mark(item) else None
        self._entries[key] = (now + self.retention_s, state, owner, now, known or fingerprint(request), task_id)

    def claim(self, requests: Sequence[SendRequest], owner: str) -> list[LedgerEntry | None]:
        now = self._clock()
        expires = now + self.retention_s
        found: list[LedgerEntry | None] = []
        append = found.append
        with self._lock:
            self._expire(now)
            entries = self._entries
            get = entries.get
            for request in requests:
                request_id = request.request_id
                key = (request.key.account, request_id)
                item = get(key)
                if item is not None and item[0] > now:
                    append(_entry(request_id, item))
                else:  # the usual case: a new id, claimed with its fingerprint
                    entries[key] = (expires, CLAIMED, owner, now, request.fingerprint or fingerprint(request), None)
                    append(None)
        return found

    def take_over(self, request: SendRequest, entry: LedgerEntry, owner: str) -> bool:
        now = self._clock()
        with self._lock:
            item = self._entries.get((request.key.account, request.request_id))
            if item is not None and item[0] > now and not (_is_mark(item) and item is entry.token):
                return False
            self._mark(request, CLAIMED, owner, now)
            return True

    def mark_in_flight(self, requests: Iterable[SendRequest], owner: str, task_id: str | None = None) -> None:
        now = self._clock()
        with self._lock:
            for request in requests:
                self._mark(request, IN_FLIGHT, owner, now, task_id)

    def mark_done(self, settled: Iterable[Settled]) -> None:
        now = self._clock()
        expires = now + self.retention_s
        with self._lock:
            entries = self._entries
            move_to_end = entries.move_to_end
            for group in settled:
                outcome, completed_at_ms = group.outcome, group.completed_at_ms
                for request in group.requests:
                    key = (request.key.account, request.request_id)
                    item = entries.get(key)
                    known = item[4] if item is not None and _is_mark(item) else None
                    entries[key] = (expires, now, outcome, completed_at_ms, len(request.recipients), known or fingerprint(request))
                    move_to_end(key)

    def release(self, requests: Iterable[SendRequest], owner: str) -> None:
        now = self._clock()
        with self._lock:
            for request in requests:
                key = (request.key.account, request.request_id)
                left = released(self._get(request, now), owner)
                if left is None:
                    del self._entries[key]
                elif left is not False:
                    self._entries[key] = (self._entries[key][0], left.state, left.owner, left.since, left.fingerprint, left.task_id)

    def lookup(self, requests: Sequence[SendRequest]) -> list[LedgerEntry | None]:
        now = self._clock()
        with self._lock:
            self._expire(now)
            return [self._get(request, now) for request in requests]

    def beat(self, owner: str) -> None:
        pass  # one instance: every mark is its own

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        pass


def _is_mark(item: tuple[Any, ...]) -> bool:
    """Does an ``InMemoryLedger`` item hold a mark (its second field a state), not a result (a time)?"""
    return item[1].__class__ is str


def _entry(request_id: str, item: tuple[Any, ...]) -> LedgerEntry:
    if _is_mark(item):
        _, state, owner, since, fingerprint_, task_id = item
        return LedgerEntry(state, owner, since, None, fingerprint_, item, task_id)
    _, since, outcome, completed_at_ms, recipients, fingerprint_ = item
    return LedgerEntry(DONE, None, since, outcome.result(request_id, recipients, completed_at_ms), fingerprint_)
