"""De-duplication ledger: what became of each request, per account and ``request_id``.

An entry is scoped by the request's account (one account's producers can never answer, nor
block, another's) and holds the request's fingerprint (a hash of its account, batch key fields
and recipients), so the same id with other content is told apart from a copy of the request.

Life of an entry:
- CLAIMED: ``claim`` made it, atomically (one instance wins, the others are told whose it is)
  when the request was taken in; nothing of it was sent yet;
- IN_FLIGHT: its API call is about to be made (``mark_in_flight``);
- DONE: its result is stored (``mark_done``) and every later copy is answered with it;
- gone again: ``release`` drops a CLAIMED mark of a request given up unsent (its partition went
  to another instance); an IN_FLIGHT mark given up is kept, but orphaned (stale at once).

A mark is fresh while its owner lives: the owner ``beat``s (a key of its own, written every
quarter of ``stale_s``), and a mark counts as written at the owner's last beat. A mark whose owner
has not beaten for ``stale_s`` is stale: its instance died (see ``admission.py`` for what
becomes of it).

``InMemoryLedger`` serves a single instance (it protects against retries and rebalances inside
the process, not against a crash); ``RedisLedger`` is shared by every instance and survives them.
Entries expire after the retention.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple, Protocol

from .models import BatchKey, Recipient, SendRequest, SendResult, Settled
from .redis_watch import RedisWatch

log = logging.getLogger("consumer.ledger")

CLAIMED = "claimed"
IN_FLIGHT = "in_flight"
DONE = "done"
MAX_UNSAVED = 10_000
"""Marks a Redis outage kept from being written, held to be written on its first success."""


class LedgerEntry(NamedTuple):
    state: str
    owner: str | None = None
    since: float = 0.0
    """When the mark was written, or its owner's last beat if later (wall-clock seconds)."""
    result: SendResult | None = None
    fingerprint: str | None = None
    token: Any = None
    """The entry as stored: ``take_over`` replaces it only if it is still the same."""


_CONTENT = json.encoder.c_make_encoder(None, str, json.encoder.encode_basestring, None, ":", ",", True, False, True)  # type: ignore[attr-defined]
"""``json.dumps(..., sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)``'s
own C encoder, made once: ``json.dumps`` with these options builds a ``JSONEncoder`` and its C
encoder on every call, twice the time of the encoding itself (the output is the same, byte for
byte: fingerprints stored by earlier versions still match)."""


@functools.lru_cache(maxsize=1024)
def _key_content(key: BatchKey) -> str:
    """The JSON of a batch key's fields (requests of one key share it: made once)."""
    return "".join(_CONTENT(key, 0))


def _recipients_content(recipients: list[Recipient]) -> str:
    """The JSON of the recipients. A recipient as decoded with an address and at most one
    template parameter, nothing else (the usual one), is written here, in the encoder's sorted
    key order with its own string escaping; any other goes through the encoder."""
    parts: list[str] = []
    for recipient in recipients:
        get = recipient.get
        params, to = get("template_params"), get("to")
        if (len(recipient) == 6 and type(to) is str and type(params) is dict and len(params) <= 1 and get("recipient_type", _ABSENT) is None
                and get("payload") == [] and get("product_action", _ABSENT) is None and get("flow_action", _ABSENT) is None):  # fmt: skip
            if not params:
                parts.append(_USUAL_RECIPIENT + '{},"to":' + _STRING(to) + "}")
                continue
            ((name, value),) = params.items()
            if type(name) is str and type(value) is str:
                parts.append(_USUAL_RECIPIENT + "{" + _STRING(name) + ":" + _STRING(value) + '},"to":' + _STRING(to) + "}")
                continue
        parts.append("".join(_CONTENT(recipient, 0)))
    return "[" + ",".join(parts) + "]"


_STRING = json.encoder.encode_basestring  # the C function the encoder escapes strings with (ensure_ascii=False)
_ABSENT = object()
_USUAL_RECIPIENT = '{"flow_action":null,"payload":[],"product_action":null,"recipient_type":null,"template_params":'


def fingerprint(request: SendRequest) -> str:
    """A hash of what the request asks for: its account, batch key fields and recipients
    (worked out once a request: its claim, in-flight and done marks all carry it). The content
    hashed is the JSON of ``[key fields, recipients]`` with every object's keys sorted: the
    order of a map's entries (template parameters, flow data) does not count, the order of a
    list's items (recipients, payload, products) does."""
    if request.fingerprint is None:
        content = "[" + _key_content(request.key) + "," + _recipients_content(request.recipients) + "]"
        request.fingerprint = hashlib.blake2b(content.encode(), digest_size=16).hexdigest()
    return request.fingerprint


class Ledger(Protocol):
    def claim(self, requests: Sequence[SendRequest], owner: str) -> list[LedgerEntry | None]:
        """Mark each request CLAIMED by ``owner`` unless it has an entry: None where claimed,
        else the entry found (for a request twice in ``requests``, the first one's claim)."""
        ...

    def take_over(self, request: SendRequest, entry: LedgerEntry, owner: str) -> bool:
        """Claim a request whose ``entry`` was found stale, unless it changed since (then False)."""
        ...

    def mark_in_flight(self, requests: Iterable[SendRequest], owner: str) -> None: ...
    def mark_done(self, settled: Iterable[Settled]) -> None: ...

    def release(self, requests: Iterable[SendRequest], owner: str) -> None:
        """``owner`` gives these requests up unfinished: drop its CLAIMED marks, orphan its IN_FLIGHT ones."""
        ...

    def lookup(self, requests: Sequence[SendRequest]) -> list[LedgerEntry | None]: ...
    def beat(self, owner: str) -> None: ...
    def healthy(self) -> bool: ...
    def close(self) -> None: ...


def _released(entry: LedgerEntry | None, owner: str) -> LedgerEntry | None | Literal[False]:
    """What ``release`` leaves of ``entry``: False to keep it as is, None to drop it, or the
    orphaned mark (no owner, written at 0: stale at once)."""
    if entry is None or entry.owner != owner or entry.state == DONE:
        return False
    if entry.state == CLAIMED:
        return None
    return entry._replace(owner="", since=0.0, token=None)


class InMemoryLedger:
    """Thread-safe ordered dict with expiry, oldest entries first, keyed by (account, request id).

    An item is ``(expires, state, owner, since, fingerprint)`` for a mark, or ``(expires, since,
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

    def _mark(self, request: SendRequest, state: str, owner: str, now: float) -> None:
        """Set a mark, keeping the fingerprint of the request's claim (else computing it)."""
        key = (request.key.account, request.request_id)
        item = self._entries.get(key)
        known = item[4] if item is not None and len(item) == _MARK else None
        self._entries[key] = (now + self.retention_s, state, owner, now, known or fingerprint(request))

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
                    entries[key] = (expires, CLAIMED, owner, now, request.fingerprint or fingerprint(request))
                    append(None)
        return found

    def take_over(self, request: SendRequest, entry: LedgerEntry, owner: str) -> bool:
        now = self._clock()
        with self._lock:
            item = self._entries.get((request.key.account, request.request_id))
            if item is not None and item[0] > now and not (len(item) == _MARK and item is entry.token):
                return False
            self._mark(request, CLAIMED, owner, now)
            return True

    def mark_in_flight(self, requests: Iterable[SendRequest], owner: str) -> None:
        now = self._clock()
        with self._lock:
            for request in requests:
                self._mark(request, IN_FLIGHT, owner, now)

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
                    known = item[4] if item is not None and len(item) == _MARK else None
                    entries[key] = (expires, now, outcome, completed_at_ms, len(request.recipients), known or fingerprint(request))
                    move_to_end(key)

    def release(self, requests: Iterable[SendRequest], owner: str) -> None:
        now = self._clock()
        with self._lock:
            for request in requests:
                key = (request.key.account, request.request_id)
                left = _released(self._get(request, now), owner)
                if left is None:
                    del self._entries[key]
                elif left is not False:
                    self._entries[key] = (self._entries[key][0], left.state, left.owner, left.since, left.fingerprint)

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


_MARK = 5
"""The length of an ``InMemoryLedger`` item holding a mark (not a result)."""


def _entry(request_id: str, item: tuple[Any, ...]) -> LedgerEntry:
    if len(item) == _MARK:
        _, state, owner, since, fingerprint_ = item
        return LedgerEntry(state, owner, since, None, fingerprint_, item)
    _, since, outcome, completed_at_ms, recipients, fingerprint_ = item
    return LedgerEntry(DONE, None, since, outcome.result(request_id, recipients, completed_at_ms), fingerprint_)


_CLAIM = """
-- KEYS the entries of one account's requests; ARGV their CLAIMED values, then the retention seconds.
-- Each entry absent is set (claimed: false in the reply); each present is returned as it is ('' if
-- it vanished between the two calls). One call for a batch instead of a SET NX and a GET each.
local ttl = ARGV[#KEYS + 1]
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[i], 'NX', 'EX', ttl) then
    out[i] = false
  else
    out[i] = redis.call('GET', key) or ''
  end
end
return out
"""

_SET = """
-- KEYS entries of one account's requests; ARGV their values, then the retention seconds. One call
-- for a batch's marks: redis-py packs a pipeline of SETs at five times the CPU of one script call.
local ttl = ARGV[#KEYS + 1]
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i], 'EX', ttl)
end
return #KEYS
"""

_SWAP = """
-- KEYS[1] an entry; ARGV expected value, new value ('' = delete), retention seconds
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
return 1
"""


class RedisLedger:
    """One Redis string per request: ``<prefix>{<account>}:<request id>`` holding
    ``{"s": state, "o": owner, "t": since, "f": fingerprint, "r": result}``, and one per owner,
    ``<prefix>owner:<owner>``, holding its last beat (it expires ``stale_s`` after it).

    Never raises for Redis trouble (unreachable, timeouts, error replies such as READONLY, OOM,
    NOPERM, MISCONF): a failed claim claims nothing and finds nothing, so the request is sent
    without de-duplication; marks that failed are kept (up to ``MAX_UNSAVED``) and written with
    the next call that succeeds. The ledger reports unhealthy and logs once per outage; the next
    successful call recovers it. With ``owner``, a daemon thread beats for it.
    """

    def __init__(
        self,
        redis_client,
        retention_s: int,
        key_prefix: str = "chatapp:ledger:",
        *,
        stale_s: float = 60.0,
        owner: str | None = None,
        watch: RedisWatch | None = None,
    ):
        self._redis = redis_client
        self.retention_s = int(retention_s)
        self._prefix = key_prefix
        self._stale_s = stale_s
        self._watch = watch or RedisWatch()
        self._swap = redis_client.register_script(_SWAP)
        self._claim = redis_client.register_script(_CLAIM)
        self._set = redis_client.register_script(_SET)
        self._healthy = True
        self._lock = threading.Lock()
        self._unsaved: OrderedDict[str, str] = OrderedDict()
        self._closed = threading.Event()
        if owner is not None:
            threading.Thread(target=self._beat_forever, args=(owner,), name="ledger-heartbeat", daemon=True).start()

    def _key(self, request: SendRequest) -> str:
        return f"{self._prefix}{{{request.key.account}}}:{request.request_id}"

    def _outcome(self, error: Exception | None) -> None:
        if error is not None and self._healthy:
            log.warning("de-duplication ledger unavailable, sending without it: %s: %s", type(error).__name__, error)
        elif error is None and not self._healthy:
            log.info("de-duplication ledger reachable again")
        self._healthy = error is None

    def _run(self, op: str, commands) -> list | None:
        """Fill a pipeline (with the marks still unsaved first) and execute it; None on any error."""
        with self._lock:
            unsaved, self._unsaved = self._unsaved, OrderedDict()
        pipe = self._redis.pipeline(transaction=False)
        for key, value in unsaved.items():
            pipe.set(key, value, ex=self.retention_s)
        commands(pipe)
        try:
            with self._watch.timed("ledger", op):
                replies = pipe.execute()
        except Exception as exc:  # redis-py raises ConnectionError, TimeoutError, ResponseError...
            self._keep(unsaved.items())
            self._outcome(exc)
            return None
        self._outcome(None)
        return replies[len(unsaved) :]

    def _keep(self, marks: Iterable[tuple[str, str]]) -> None:
        with self._lock:
            for key, value in marks:
                self._unsaved[key] = value
                self._unsaved.move_to_end(key)
            while len(self._unsaved) > MAX_UNSAVED:
                self._unsaved.popitem(last=False)

    def _parse(self, raw: bytes | None) -> LedgerEntry | None:
        if raw is None:
            return None
        data = json.loads(raw)
        result = SendResult.from_record(data["r"]) if data.get("r") else None
        return LedgerEntry(data["s"], data.get("o"), data.get("t", 0.0), result, data.get("f"), raw)

    def _with_beats(self, entries: list[LedgerEntry | None]) -> list[LedgerEntry | None]:
        """The marks of ``entries`` dated by their owners' last beats, where later."""
        owners = sorted({e.owner for e in entries if e is not None and e.state != DONE and e.owner})
        if not owners:
            return entries
        beats = self._run("beats", lambda pipe: pipe.mget([self._prefix + "owner:" + o for o in owners]))
        last = {o: float(b) for o, b in zip(owners, beats[0]) if b is not None} if beats else {}
        return [e._replace(since=max(e.since, last.get(e.owner, 0.0))) if e is not None and e.owner in last else e for e in entries]

    @staticmethod
    def _value(request: SendRequest, state: str, owner: str | None, result: dict | None = None) -> str:
        return json.dumps({"s": state, "o": owner, "t": time.time(), "f": fingerprint(request), "r": result})

    @staticmethod
    def _marks(requests: Iterable[SendRequest], state: str, owner: str) -> list[str]:
        """``_value`` of each request's mark (no result), byte for byte, written at one time: the
        JSON around the fingerprint is made once."""
        head = '{"s": ' + json.dumps(state) + ', "o": ' + json.dumps(owner) + ', "t": ' + json.dumps(time.time()) + ', "f": "'
        return [head + fingerprint(request) + '", "r": null}' for request in requests]  # a fingerprint is hex: nothing to escape

    def claim(self, requests: Sequence[SendRequest], owner: str) -> list[LedgerEntry | None]:
        if not requests:
            return []
        by_account: dict[str, list[int]] = {}  # one script call per account: its keys share a hash slot
        for index, request in enumerate(requests):
            by_account.setdefault(request.key.account, []).append(index)
        groups = list(by_account.values())

        def commands(pipe) -> None:
            for indexes in groups:
                group = [requests[i] for i in indexes]
                self._claim(keys=[self._key(r) for r in group], args=[*self._marks(group, CLAIMED, owner), self.retention_s], client=pipe)

        replies = self._run("claim", commands)
        if replies is None:
            return [None] * len(requests)
        found: list[LedgerEntry | None] = [None] * len(requests)
        for indexes, reply in zip(groups, replies):
            for i, raw in zip(indexes, reply):
                # a mark gone between the SET and the GET (it expired) is someone's fresh claim: looked at again later
                found[i] = None if raw is None else self._parse(raw or None) or LedgerEntry(CLAIMED, "", time.time())
        return self._with_beats(found)

    def take_over(self, request: SendRequest, entry: LedgerEntry, owner: str) -> bool:
        value = self._value(request, CLAIMED, owner)
        replies = self._run("take_over", lambda pipe: self._swap(keys=[self._key(request)], args=[entry.token, value, self.retention_s], client=pipe))
        return replies is None or bool(replies[0])  # unreachable: sent without de-duplication

    def _set_all(self, op: str, requests: list[SendRequest], values: list[str]) -> None:
        """Write each request's mark: one script call per account (its keys share a hash slot)."""
        if not requests:
            return
        marks = [(self._key(r), value) for r, value in zip(requests, values)]
        by_account: dict[str, list[tuple[str, str]]] = {}
        for request, mark in zip(requests, marks):
            by_account.setdefault(request.key.account, []).append(mark)

        def commands(pipe) -> None:
            for group in by_account.values():
                self._set(keys=[key for key, _ in group], args=[*(value for _, value in group), self.retention_s], client=pipe)

        if self._run(op, commands) is None:
            self._keep(marks)

    def mark_in_flight(self, requests: Iterable[SendRequest], owner: str) -> None:
        requests = list(requests)
        self._set_all("mark_in_flight", requests, self._marks(requests, IN_FLIGHT, owner))

    def mark_done(self, settled: Iterable[Settled]) -> None:
        pairs = [(r, group.result(r)) for group in settled for r in group.requests]
        self._set_all("mark_done", [r for r, _ in pairs], [self._value(r, DONE, None, result.to_record()) for r, result in pairs])

    def release(self, requests: Iterable[SendRequest], owner: str) -> None:
        requests = list(requests)
        if not requests:
            return
        replies = self._run("release", lambda pipe: [pipe.get(self._key(r)) for r in requests])
        changes = []
        for request, raw in zip(requests, replies or []):
            left = _released(self._parse(raw), owner)
            if left is not False:
                value = "" if left is None else json.dumps({"s": left.state, "o": "", "t": 0.0, "f": left.fingerprint, "r": None})
                changes.append((self._key(request), raw, value))
        if changes:
            self._run("release", lambda pipe: [self._swap(keys=[key], args=[raw, value, self.retention_s], client=pipe) for key, raw, value in changes])

    def lookup(self, requests: Sequence[SendRequest]) -> list[LedgerEntry | None]:
        if not requests:
            return []
        replies = self._run("lookup", lambda pipe: pipe.mget([self._key(r) for r in requests]))
        return self._with_beats([self._parse(raw) for raw in replies[0]]) if replies else [None] * len(requests)

    def beat(self, owner: str) -> None:
        self._run("beat", lambda pipe: pipe.set(self._prefix + "owner:" + owner, repr(time.time()), ex=max(1, round(self._stale_s))))

    def _beat_forever(self, owner: str) -> None:
        while not self._closed.is_set():
            self.beat(owner)
            self._closed.wait(self._stale_s / 4)

    def close(self) -> None:
        """Stop beating (the owner's marks go stale ``stale_s`` later)."""
        self._closed.set()

    def healthy(self) -> bool:
        return self._healthy
