"""The de-duplication ledger in Redis, shared by every instance (see ``ledger.py`` for an entry's life)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from .fingerprint import fingerprint
from .ledger import CLAIMED, DONE, IN_FLIGHT, LedgerEntry
from .models import SendRequest, SendResult, Settled
from .redis_watch import RedisWatch

log = logging.getLogger("consumer.ledger")

MAX_UNSAVED = 10_000
"""Marks a Redis outage kept from being written, held to be written on its first success."""


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


_RELEASE = """
-- KEYS the entries of one account's requests; ARGV the owner giving them up, the CLAIMED, IN_FLIGHT
-- and DONE states, the retention seconds. ``ledger.released`` in one call: the owner's CLAIMED
-- marks are dropped, its IN_FLIGHT ones orphaned (no owner, since 0: stale at once), the rest kept.
-- One call for a revocation's thousands instead of a GET and a compare-and-swap call each.
local owner, claimed, in_flight, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local changed = 0
for _, key in ipairs(KEYS) do
  local raw = redis.call('GET', key)
  if raw then
    local mark = cjson.decode(raw)
    if mark.o == owner and mark.s ~= ARGV[4] then
      if mark.s == claimed then
        redis.call('DEL', key)
      else
        redis.call('SET', key, cjson.encode({s = in_flight, o = '', t = 0, f = mark.f, k = mark.k}), 'EX', ttl)
      end
      changed = changed + 1
    end
  end
end
return changed
"""
RELEASE_CHUNK = 1000
"""Entries one release call looks at: Redis runs nothing else meanwhile (a millisecond or two)."""


class RedisLedger:
    """One Redis string per request: ``<prefix>{<account>}:<request id>`` holding
    ``{"s": state, "o": owner, "t": since, "f": fingerprint, "r": result}`` (an IN_FLIGHT mark
    also ``"k": TaskId`` when its call has one), and one per owner,
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
        self._release = redis_client.register_script(_RELEASE)
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
        return LedgerEntry(data["s"], data.get("o"), data.get("t", 0.0), result, data.get("f"), raw, data.get("k"))

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
    def _marks(requests: Iterable[SendRequest], state: str, owner: str, task_id: str | None = None) -> list[str]:
        """``_value`` of each request's mark (no result), byte for byte, written at one time (with
        ``"k": task_id`` after it when given): the JSON around the fingerprint is made once."""
        head = '{"s": ' + json.dumps(state) + ', "o": ' + json.dumps(owner) + ', "t": ' + json.dumps(time.time()) + ', "f": "'
        tail = '", "r": null}' if task_id is None else '", "r": null, "k": ' + json.dumps(task_id) + "}"
        return [head + fingerprint(request) + tail for request in requests]  # a fingerprint is hex: nothing to escape

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

    def mark_in_flight(self, requests: Iterable[SendRequest], owner: str, task_id: str | None = None) -> None:
        requests = list(requests)
        self._set_all("mark_in_flight", requests, self._marks(requests, IN_FLIGHT, owner, task_id))

    def mark_done(self, settled: Iterable[Settled]) -> None:
        pairs = [(r, group.result(r)) for group in settled for r in group.requests]
        self._set_all("mark_done", [r for r, _ in pairs], [self._value(r, DONE, None, result.to_record()) for r, result in pairs])

    def release(self, requests: Iterable[SendRequest], owner: str) -> None:
        """One script call per account and ``RELEASE_CHUNK`` requests: a revocation gives up
        thousands at once, and the hand-over waits for it."""
        by_account: dict[str, list[str]] = {}  # its keys share a hash slot
        for request in requests:
            by_account.setdefault(request.key.account, []).append(self._key(request))
        if not by_account:
            return

        def commands(pipe) -> None:
            for keys in by_account.values():
                for start in range(0, len(keys), RELEASE_CHUNK):
                    self._release(keys=keys[start : start + RELEASE_CHUNK], args=[owner, CLAIMED, IN_FLIGHT, DONE, self.retention_s], client=pipe)

        self._run("release", commands)

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
