"""The join: what a receipt will carry (the call's TaskId and the recipient's number) -> the
request that sent it, written by the sender when a call is accepted, read by the receiver.

``RedisJoin`` keeps one hash per TaskId (``<prefix>receipts:task:<TaskId>``): a field per
canonical number whose value is the request id and its correlation id (``encode_entry``), plus
``@t`` (when the call was accepted, ms) and ``@g`` (its GroupMessageId); the hash expires
``retention_s`` after its last call. A call is one HSET and one PEXPIRE in a pipeline, and the
writer puts every call it has waiting in one pipeline; a push's lookups are one pipeline of HMGETs.
``MemoryJoin`` is the same in process, bounded by ``MEMORY_RECIPIENTS`` (oldest calls forgotten
first), for one process that sends and receives (no Redis).

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

    def close(self) -> None: ...


class RedisJoin:
    def __init__(self, client: Redis, retention_s: int, key_prefix: str = "chatapp:"):
        self._redis = client
        self._retention_ms = retention_s * 1000
        self._prefix = key_prefix + "receipts:task:"

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

    def close(self) -> None:
        self._redis.close()


class MemoryJoin:
    def __init__(self, retention_s: int, max_recipients: int = MEMORY_RECIPIENTS, clock=time.time):
        self._retention_s = retention_s
        self._max = max_recipients
        self._clock = clock
        self._calls: OrderedDict[str, tuple[float, bytes, bytes | None, dict[str, bytes]]] = OrderedDict()
        self._count = 0
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

    def close(self) -> None:
        pass
