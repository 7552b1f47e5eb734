"""De-duplication ledger: what became of each ``request_id``.

A request is marked IN_FLIGHT (with the instance that sends it) just before its API call and
DONE with its result right after. On intake, the service looks every request id up:
- DONE: the request was sent (or failed for good) before: its stored result is published again
  and nothing is sent;
- IN_FLIGHT: an instance died or lost its partitions mid-call: the configured
  ``inflight_policy`` decides (``resend``, or ``fail`` with code ``Chatapp.InFlightUnknown``);
- absent: a new request.

``InMemoryLedger`` serves a single instance (it protects against retries and rebalances inside
the process, not against a crash); ``RedisLedger`` is shared by every instance and survives them.
Entries expire after the retention. If Redis cannot be reached the service keeps sending without
de-duplication (``healthy()`` is False, a metric and a log line say so): a redelivery during such
an outage may be sent twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol

from .models import SendResult, Settled

log = logging.getLogger("consumer.ledger")

IN_FLIGHT = "in_flight"
DONE = "done"


class LedgerEntry(NamedTuple):
    state: str
    owner: str | None = None
    since: float = 0.0
    result: SendResult | None = None


class Ledger(Protocol):
    def lookup(self, request_ids: Sequence[str]) -> dict[str, LedgerEntry]: ...
    def mark_in_flight(self, request_ids: Iterable[str], owner: str) -> None: ...
    def mark_done(self, settled: Iterable[Settled]) -> None: ...
    def healthy(self) -> bool: ...


class InMemoryLedger:
    """Thread-safe ordered dict with expiry, oldest entries first.

    An item is ``(expires, entry)``, or ``(expires, since, outcome, completed_at_ms, recipients)``
    for a request marked DONE: its entry and result are made when it is looked up (a
    redelivery), not for every request sent (and it keeps no reference to the request). A DONE
    mark moves the id to the newest end; an IN_FLIGHT mark of an id already held (rare: a
    resend) keeps its place. Expired items are dropped from the oldest end as far as they go,
    and a lookup finds none."""

    def __init__(self, retention_s: float, clock=time.time, max_entries: int = 100_000):
        self.retention_s = retention_s
        self._clock = clock
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[Any, ...]] = OrderedDict()  # a plain dict would walk its deleted oldest slots
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

    def lookup(self, request_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        now = self._clock()
        with self._lock:
            self._expire(now)
            found = {}
            for request_id in request_ids:
                item = self._entries.get(request_id)
                if item is not None and item[0] > now:
                    found[request_id] = _entry(request_id, item)
            return found

    def mark_in_flight(self, request_ids: Iterable[str], owner: str) -> None:
        now = self._clock()
        item = (now + self.retention_s, LedgerEntry(IN_FLIGHT, owner, now))
        with self._lock:
            self._entries.update(dict.fromkeys(request_ids, item))

    def mark_done(self, settled: Iterable[Settled]) -> None:
        now = self._clock()
        expires = now + self.retention_s
        with self._lock:
            entries = self._entries
            move_to_end = entries.move_to_end
            for group in settled:
                outcome, completed_at_ms = group.outcome, group.completed_at_ms
                for request in group.requests:
                    request_id = request.request_id
                    entries[request_id] = (expires, now, outcome, completed_at_ms, len(request.recipients))
                    move_to_end(request_id)

    def healthy(self) -> bool:
        return True


def _entry(request_id: str, item: tuple[Any, ...]) -> LedgerEntry:
    if len(item) == 2:
        return item[1]
    _, since, outcome, completed_at_ms, recipients = item
    return LedgerEntry(DONE, None, since, outcome.result(request_id, recipients, completed_at_ms))


class RedisLedger:
    """One Redis string per request id: ``{"s": state, "o": owner, "t": since, "r": result}``.

    Never raises for Redis trouble: a failed lookup finds nothing and a failed mark is lost, the
    ledger reports unhealthy and logs once per outage, and the next successful call recovers it.
    """

    def __init__(self, redis_client, retention_s: int, key_prefix: str = "chatapp:ledger:"):
        self._redis = redis_client
        self.retention_s = int(retention_s)
        self._prefix = key_prefix
        self._healthy = True

    def _key(self, request_id: str) -> str:
        return self._prefix + request_id

    def _outcome(self, error: Exception | None) -> None:
        if error is not None and self._healthy:
            log.warning("de-duplication ledger unreachable, sending without it: %s", error)
        elif error is None and not self._healthy:
            log.info("de-duplication ledger reachable again")
        self._healthy = error is None

    def lookup(self, request_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        if not request_ids:
            return {}
        try:
            values = self._redis.mget([self._key(r) for r in request_ids])
        except Exception as exc:  # redis-py raises ConnectionError, TimeoutError, ResponseError...
            self._outcome(exc)
            return {}
        self._outcome(None)
        found = {}
        for request_id, raw in zip(request_ids, values):
            if raw is not None:
                data = json.loads(raw)
                result = SendResult.from_record(data["r"]) if data.get("r") else None
                found[request_id] = LedgerEntry(data["s"], data.get("o"), data.get("t", 0.0), result)
        return found

    def _set_all(self, items: Iterable[tuple[str, str]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for request_id, value in items:
            pipe.set(self._key(request_id), value, ex=self.retention_s)
        try:
            pipe.execute()
        except Exception as exc:
            self._outcome(exc)
            return
        self._outcome(None)

    def mark_in_flight(self, request_ids: Iterable[str], owner: str) -> None:
        value = json.dumps({"s": IN_FLIGHT, "o": owner, "t": time.time()})
        self._set_all((request_id, value) for request_id in request_ids)

    def mark_done(self, settled: Iterable[Settled]) -> None:
        now = time.time()
        self._set_all(
            (request.request_id, json.dumps({"s": DONE, "t": now, "r": group.result(request).to_record()}))
            for group in settled
            for request in group.requests
        )

    def healthy(self) -> bool:
        return self._healthy
