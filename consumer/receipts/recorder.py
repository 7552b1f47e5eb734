"""The sender's side of the join: a TaskId for each call, and its recipients recorded once CAMS
accepted it, off the sender's path.

``JoinRecorder.key_for`` gives a batch whose requests set no ``task_id`` a TaskId of its own (24
decimal digits, like the TaskIds CAMS shows; random, so unique across instances and restarts),
kept by the batch through its retries and halves: a call that went through unseen (a timeout)
and its retry carry the same TaskId, and each number is in a batch once, so (TaskId, number)
names one request. ``accepted`` hands the batch to the recorder's thread and returns at once; the
thread writes every call waiting in one go (``JoinStore.record``), tries a failed write
``ATTEMPTS`` times, then counts its recipients lost (event ``receipts.join_failed``: a metric and a log line).
``NoJoin`` is the same interface doing nothing (``CHATAPP_RECEIPTS_JOIN`` off).
"""

from __future__ import annotations

import queue
import secrets
import threading
import time

from ..batching import addresses
from ..events import Events
from ..models import Batch, BatchKey
from .join import CallJoin, JoinStore, encode_entry

ATTEMPTS = 3
BACKOFF_S = 0.2
MAX_CALLS_PER_WRITE = 64
Accepted = tuple[Batch, str, str | None, int]
"""(batch, its TaskId, the call's GroupMessageId, when it was accepted in ms): what a worker hands over."""


def new_task_id() -> str:
    return f"{secrets.randbelow(10**24):024d}"


def task_key(batch: Batch) -> BatchKey:
    """The batch's key with the TaskId its call carries (the producers' own, else the batch's)."""
    if batch.key.task_id is not None:
        return batch.key
    if batch.task_id is None:
        batch.task_id = new_task_id()
    return batch.key._replace(task_id=batch.task_id)


def call_join(batch: Batch, task_id: str, group_message_id: str | None, sent_at_ms: int) -> CallJoin:
    """The recipients of an accepted batch as the join keeps them."""
    entries: dict[str, bytes] = {}
    for piece in batch.slices:
        request = piece.request
        value = encode_entry(request.request_id, request.source.correlation_id if request.source else None)
        for number in addresses(batch.key, piece.recipients):
            entries[number] = value
    return CallJoin(task_id, sent_at_ms, group_message_id, entries)


class NoJoin:
    def key_for(self, batch: Batch) -> BatchKey:
        return batch.key

    def accepted(self, batch: Batch, group_message_id: str | None) -> None:
        pass

    def close(self, timeout_s: float = 10.0) -> None:
        pass


class JoinRecorder(NoJoin):
    def __init__(self, store: JoinStore, events: Events):
        self._store = store
        self._events = events
        self._queue: queue.SimpleQueue[Accepted | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="receipts-join", daemon=True)
        self._thread.start()

    def key_for(self, batch: Batch) -> BatchKey:
        return task_key(batch)

    def accepted(self, batch: Batch, group_message_id: str | None) -> None:
        task_id = batch.key.task_id or batch.task_id
        if task_id is not None:  # a key_for batch always has one
            self._queue.put((batch, task_id, group_message_id, int(time.time() * 1000)))  # made a CallJoin by the thread

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is waiting (up to ``timeout_s``), then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            calls = [] if first is None else [first]
            stopping = first is None
            while len(calls) < MAX_CALLS_PER_WRITE:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                calls.append(more)
            if calls:
                self._write([call_join(*accepted) for accepted in calls])

    def _write(self, calls: list[CallJoin]) -> None:
        recipients = sum(len(call.entries) for call in calls)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._store.record(calls)
            except Exception as exc:
                if attempt == ATTEMPTS:
                    self._events.emit("receipts.join_failed", recipients=recipients, error=str(exc))
                    return
                time.sleep(BACKOFF_S * attempt)
            else:
                self._events.emit("receipts.joined", recipients=recipients)
                return
