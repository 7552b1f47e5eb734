"""The join: what a receipt will carry (the call's TaskId and the recipient's number) -> the
request that sent it, written by the sender when a call is accepted, read by the receiver.

``RedisJoin`` keeps one hash per TaskId (``<prefix>receipts:task:<TaskId>``): a field per
canonical number whose value is the request id and its correlation id (``encode_entry``), plus
``@t`` (when the call was accepted, ms) and ``@g`` (its GroupMessageId); the hash expires
``retention_s`` after its last call. A call is one HSET and one PEXPIRE in a pipeline, and the
writer puts every call it has waiting in one pipeline; a push's lookups are one pipeline of HMGETs.
``MemoryJoin`` is the same in process, bounded by ``MEMORY_RECIPIENTS`` (oldest calls forgotten
first), for one process that sends and receives (no Redis).

The receiver also records which (TaskId, number) pairs it got a receipt for (``witness``): the
evidence that CAMS took a call, for ``inflight_policy=receipts`` (``witnessed``; the join itself is
written only once the sender saw the call accepted, never for a call its instance died in). In
Redis a SET of numbers per TaskId, ``<prefix>receipts:task-seen:<TaskId>``, with the retention.

Where producers set ``task_id`` themselves, several calls can share a TaskId: a number sent
under the same TaskId twice then maps to the latest request that sent it (an HSET overwrites),
and ``@t``/``@g`` are the latest call's (docs/decisions/0030-receipts-join.md).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple, Protocol

from redis import Redis

from .parse import Match

SENT_AT, GROUP = "@t", "@g"
MEMORY_RECIPIENTS = 1_000_000
"""Recipients the in-process join remembers (about 150 MB at most)."""


class CallJoin(NamedTuple):
    """The recipients of one accepted call: canonical number -> ``encode_entry`` value."""

    task_id: str
    sent_at_ms: int
    group_message_id: str | None
    entries: dict[str, bytes]


def encode_entry(request_id: str, correlation_id: bytes | None) -> bytes:
    """A request id (which holds no control character: ``validate``) and its correlation id."""
    head = request_id.encode()
    return head if correlation_id is None else head + b"\x00" + correlation_id


def decode_entry(value: bytes, sent_at: bytes | None, group: bytes | None) -> Match:
    request_id, sep, correlation = value.partition(b"\x00")
    return Match(request_id.decode(), correlation if sep else None, int(sent_at) if sent_at else None, group.decode() if group else None)


class JoinStore(Protocol):
    def record(self, calls: list[CallJoin]) -> None:
        """Keep every call's recipients (raises on a storage error: the caller counts and retries)."""

    def lookup(self, pairs: Iterable[tuple[str | None, str]]) -> list[Match | None]:
        """The match of each (TaskId, canonical number), None where the join knows none."""

    def witness(self, pairs: Iterable[tuple[str | None, str]]) -> None:
        """Keep that a receipt came for each (TaskId, canonical number) (raises on a storage error)."""

    def witnessed(self, calls: list[tuple[str, list[str]]]) -> list[bool]:
        """For each (TaskId, canonical numbers): did a receipt come for one of those numbers under it?"""

    def close(self) -> None: ...


def by_task(pairs: Iterable[tuple[str | None, str]]) -> dict[str, list[str]]:
    """The numbers of ``pairs`` per TaskId (pairs without one left out)."""
    out: dict[str, list[str]] = {}
    for task_id, number in pairs:
        if task_id:
            out.setdefault(task_id, []).append(number)
    return out


class RedisJoin:
    def __init__(self, client: Redis, retention_s: int, key_prefix: str = "chatapp:"):
        self._redis = client
        self._retention_ms = retention_s * 1000
        self._prefix = key_prefix + "receipts:task:"
        self._seen_prefix = key_prefix + "receipts:task-seen:"

    def record(self, calls: list[CallJoin]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for call in calls:
            key = self._prefix + call.task_id
            fields: dict[str, bytes | str | int] = {**call.entries, SENT_AT: call.sent_at_ms}
            if call.group_message_id:
                fields[GROUP] = call.group_message_id
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]  # redis-py's Mapping is invariant in its key type
            pipe.pexpire(key, self._retention_ms)
        pipe.execute()

    def lookup(self, pairs: Iterable[tuple[str | None, str]]) -> list[Match | None]:
        pairs = list(pairs)
        by_task: dict[str, list[int]] = {}
        for index, (task_id, _) in enumerate(pairs):
            if task_id:
                by_task.setdefault(task_id, []).append(index)
        out: list[Match | None] = [None] * len(pairs)
        if not by_task:
            return out
        pipe = self._redis.pipeline(transaction=False)
        for task_id, indexes in by_task.items():
            pipe.hmget(self._prefix + task_id, [pairs[i][1] for i in indexes] + [SENT_AT, GROUP])
        for indexes, values in zip(by_task.values(), pipe.execute()):
            sent_at, group = values[-2], values[-1]
            for i, value in zip(indexes, values):
                if value is not None:
                    out[i] = decode_entry(value, sent_at, group)
        return out

    def witness(self, pairs: Iterable[tuple[str | None, str]]) -> None:
        numbers = by_task(pairs)
        if not numbers:
            return
        pipe = self._redis.pipeline(transaction=False)
        for task_id, seen in numbers.items():
            key = self._seen_prefix + task_id
            pipe.sadd(key, *seen)
            pipe.pexpire(key, self._retention_ms)
        pipe.execute()

    def witnessed(self, calls: list[tuple[str, list[str]]]) -> list[bool]:
        asked = [(task_id, numbers) for task_id, numbers in calls if numbers]
        if not asked:
            return [False] * len(calls)
        pipe = self._redis.pipeline(transaction=False)
        for task_id, numbers in asked:
            pipe.smismember(self._seen_prefix + task_id, numbers)
        answers = iter(pipe.execute())
        return [bool(numbers) and any(next(answers)) for _, numbers in calls]

    def close(self) -> None:
        self._redis.close()


class MemoryJoin:
    def __init__(self, retention_s: int, max_recipients: int = MEMORY_RECIPIENTS, clock=time.time):
        self._retention_s = retention_s
        self._max = max_recipients
        self._clock = clock
        self._calls: OrderedDict[str, tuple[float, bytes, bytes | None, dict[str, bytes]]] = OrderedDict()
        self._count = 0
        self._seen: OrderedDict[str, tuple[float, set[str]]] = OrderedDict()
        self._seen_count = 0
        self._lock = threading.Lock()

    def record(self, calls: list[CallJoin]) -> None:
        now = self._clock()
        with self._lock:
            for call in calls:
                old = self._calls.pop(call.task_id, None)
                entries = dict(old[3]) if old else {}
                self._count -= len(entries)
                entries.update(call.entries)
                group = call.group_message_id.encode() if call.group_message_id else None
                self._calls[call.task_id] = (now, str(call.sent_at_ms).encode(), group, entries)
                self._count += len(entries)
            while self._count > self._max and self._calls:
                _, (_, _, _, forgotten) = self._calls.popitem(last=False)
                self._count -= len(forgotten)

    def lookup(self, pairs: Iterable[tuple[str | None, str]]) -> list[Match | None]:
        oldest = self._clock() - self._retention_s
        out: list[Match | None] = []
        with self._lock:
            for task_id, number in pairs:
                call = self._calls.get(task_id) if task_id else None
                value = call[3].get(number) if call and call[0] >= oldest else None
                out.append(None if value is None or call is None else decode_entry(value, call[1], call[2]))
        return out

    def witness(self, pairs: Iterable[tuple[str | None, str]]) -> None:
        now = self._clock()
        with self._lock:
            for task_id, numbers in by_task(pairs).items():
                _, seen = self._seen.pop(task_id, (now, set()))
                self._seen_count -= len(seen)
                seen.update(numbers)
                self._seen[task_id] = (now, seen)
                self._seen_count += len(seen)
            while self._seen_count > self._max and self._seen:
                self._seen_count -= len(self._seen.popitem(last=False)[1][1])

    def witnessed(self, calls: list[tuple[str, list[str]]]) -> list[bool]:
        oldest = self._clock() - self._retention_s
        with self._lock:
            found = [self._seen.get(task_id) for task_id, _ in calls]
            return [entry is not None and entry[0] >= oldest and not entry[1].isdisjoint(numbers) for entry, (_, numbers) in zip(found, calls)]

    def close(self) -> None:
        pass
