"""Passive batcher: groups requests by BatchKey into batches of at most ``max_recipients``.

``add`` returns the batches that became full; ``due`` the ones whose linger time has passed;
``until_next`` how long until the next one is due; the caller's loop owns time (clock injected).

A request goes whole into one batch: when it does not fit in the open batch of its key, that
batch is closed first. Only a request larger than ``max_recipients`` (possible when the limit is
configured below the API's 1,000) is split, into the open batch's room and then full batches.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable

from .models import Batch, BatchKey, SendRequest, Slice

_BATCH_IDS = itertools.count(1)
_INSTANCE = os.urandom(3).hex()


def new_batch_id() -> str:
    return f"b-{_INSTANCE}-{next(_BATCH_IDS)}"


class Batcher:
    def __init__(self, max_recipients: int, linger_s: float, clock: Callable[[], float] = time.monotonic):
        if not 1 <= max_recipients <= 1000:
            raise ValueError("max_recipients must be 1..1000")
        self.max_recipients = max_recipients
        self.linger_s = linger_s
        self._clock = clock
        self._open: dict[BatchKey, Batch] = {}  # insertion order = creation order = deadline order
        self.buffered_recipients = 0

    def _open_batch(self, key: BatchKey) -> Batch:
        batch = Batch(new_batch_id(), key, created_at=self._clock())
        self._open[key] = batch
        return batch

    def _close(self, key: BatchKey) -> Batch:
        batch = self._open.pop(key)
        self.buffered_recipients -= batch.recipient_count
        return batch

    def add(self, request: SendRequest) -> list[Batch]:
        """Buffer ``request``; return the batches it completed (full ones, oldest first)."""
        key = request.key
        recipients = request.recipients
        count = len(recipients)
        limit = self.max_recipients
        batch = self._open.get(key)
        request.parts = 1
        if batch is not None and batch.recipient_count + count < limit:  # the usual case: it fits, and the batch is not full yet
            batch.slices.append(Slice(request, recipients))
            batch.recipient_count += count
            self.buffered_recipients += count
            return []
        ready: list[Batch] = []
        if batch is not None and batch.recipient_count + count > limit and count <= limit:
            ready.append(self._close(key))
            batch = None
        if batch is None:
            batch = self._open_batch(key)
        start = 0
        parts = 0
        while start < count:
            room = limit - batch.recipient_count
            chunk = recipients if (start == 0 and count <= room) else recipients[start : start + room]
            batch.slices.append(Slice(request, chunk))
            batch.recipient_count += len(chunk)
            self.buffered_recipients += len(chunk)
            start += len(chunk)
            parts += 1
            if batch.recipient_count >= limit:
                ready.append(self._close(key))
                if start < count:
                    batch = self._open_batch(key)
        request.parts = parts
        return ready

    def due(self) -> list[Batch]:
        """Batches whose linger time has passed."""
        if not self._open:
            return []
        deadline = self._clock() - self.linger_s
        ready = []
        for key, batch in self._open.items():
            if batch.created_at > deadline:
                break
            ready.append(batch)
        for batch in ready:
            self._close(batch.key)
        return ready

    def until_next(self) -> float | None:
        """Seconds until the oldest open batch is due (None when nothing is open)."""
        for batch in self._open.values():
            return max(0.0, batch.created_at + self.linger_s - self._clock())
        return None

    def flush(self) -> list[Batch]:
        """Close every open batch (rebalance, shutdown)."""
        ready = list(self._open.values())
        self._open.clear()
        self.buffered_recipients = 0
        return ready

    def __len__(self) -> int:
        return len(self._open)


def split(batch: Batch) -> list[Batch]:
    """Halve a batch by slices (to find the request the API rejects); [] for a single slice."""
    if len(batch.slices) < 2:
        return []
    middle = len(batch.slices) // 2
    halves = []
    for part in (batch.slices[:middle], batch.slices[middle:]):
        halves.append(
            Batch(new_batch_id(), batch.key, list(part), sum(len(s.recipients) for s in part), batch.created_at)
        )
    return halves


def without(batch: Batch, drop: Callable[[Slice], bool]) -> tuple[Batch | None, list[Slice]]:
    """Remove the slices ``drop`` selects; returns (the rest or None when empty, the removed)."""
    kept: list[Slice] = []
    removed: list[Slice] = []
    for s in batch.slices:
        (removed if drop(s) else kept).append(s)
    if not removed:
        return batch, []
    if not kept:
        return None, removed
    batch.slices = kept
    batch.recipient_count = sum(len(s.recipients) for s in kept)
    return batch, removed


def recipients_of(batches: Iterable[Batch]) -> int:
    return sum(b.recipient_count for b in batches)
