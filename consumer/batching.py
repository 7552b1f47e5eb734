"""Passive batcher: groups requests by BatchKey into batches of at most ``max_recipients``
and ``max_bytes`` (the requests' encoded size: a call's size, and the memory of preparing it,
grow with it; percent-encoding makes a parameter up to 3 times longer on the wire).

``add`` returns the batches that became full; ``due`` the ones whose linger time has passed;
``until_next`` how long until the next one is due; the caller's loop owns time (clock injected).

A request goes whole into one batch: when it does not fit in the open batch of its key (by
recipients or by bytes), that batch is closed first; a request larger than ``max_bytes`` goes
alone. Only a request larger than ``max_recipients`` (possible when the limit is
configured below the API's 1,000) is split, into the open batch's room and then full batches.

A call never holds one address twice: a request with an address (canonical: ``addresses``)
already in the open batch of its key waits, and is placed when that batch closes (in the next
one). Each open batch keeps the set of its addresses, so a request costs O(its recipients).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable

from .models import Batch, BatchKey, Recipient, SendRequest, Slice
from .validate import PHONE_CHANNELS, canonical

DEFAULT_MAX_BYTES = 1 << 20
_BATCH_IDS = itertools.count(1)
_INSTANCE = os.urandom(3).hex()


def new_batch_id() -> str:
    return f"b-{_INSTANCE}-{next(_BATCH_IDS)}"


def addresses(key: BatchKey, recipients: list[Recipient]) -> list[str]:
    """The canonical addresses of ``recipients`` sent with ``key`` (``validate.canonical``)."""
    phone = key.channel_type in PHONE_CHANNELS
    return [canonical(r["to"], phone) for r in recipients]


class Batcher:
    def __init__(self, max_recipients: int, linger_s: float, clock: Callable[[], float] = time.monotonic, max_bytes: int = DEFAULT_MAX_BYTES):
        if not 1 <= max_recipients <= 1000:
            raise ValueError("max_recipients must be 1..1000")
        self.max_recipients = max_recipients
        self.max_bytes = max_bytes
        self.linger_s = linger_s
        self._clock = clock
        self._open: dict[BatchKey, Batch] = {}  # insertion order = creation order = deadline order
        self._waiting: dict[BatchKey, list[SendRequest]] = {}
        """Requests holding an address of the open batch of their key, in arrival order."""
        self._released: list[SendRequest] = []
        """Waiting requests whose batch has closed, to place again."""
        self.buffered_recipients = 0
        """Recipients in open batches and waiting."""

    def _open_batch(self, key: BatchKey) -> Batch:
        batch = Batch(new_batch_id(), key, created_at=self._clock())
        self._open[key] = batch
        return batch

    def _close(self, key: BatchKey) -> Batch:
        """Take the open batch of ``key`` out; the requests waiting for it are released."""
        batch = self._open.pop(key)
        self.buffered_recipients -= batch.recipient_count
        waiting = self._waiting.pop(key, None)
        if waiting:
            self.buffered_recipients -= sum(len(r.recipients) for r in waiting)
            self._released += waiting
        return batch

    def _take(self, batch: Batch, request: SendRequest, recipients: list[Recipient], found: list[str]) -> None:
        batch.slices.append(Slice(request, recipients))
        batch.addresses.update(found)
        batch.recipient_count += len(recipients)
        batch.size_bytes += request.size_bytes
        self.buffered_recipients += len(recipients)

    def add(self, request: SendRequest) -> list[Batch]:
        """Buffer ``request``; return the batches it completed (full ones, oldest first)."""
        key = request.key
        recipients = request.recipients
        batch = self._open.get(key)
        if (
            batch is not None and len(recipients) == 1 and batch.recipient_count + 1 < self.max_recipients
            and batch.size_bytes + request.size_bytes <= self.max_bytes
        ):  # the usual case: one recipient, room to spare  # fmt: skip
            address = canonical(recipients[0]["to"], key.channel_type in PHONE_CHANNELS)
            taken = batch.addresses
            if address not in taken:
                taken.add(address)
                batch.slices.append(Slice(request, recipients))
                batch.recipient_count += 1
                batch.size_bytes += request.size_bytes
                self.buffered_recipients += 1
                request.parts = 1
                return []
        ready: list[Batch] = []
        self._place(request, ready)
        self._place_released(ready)
        return ready

    def _place(self, request: SendRequest, ready: list[Batch]) -> None:
        """Put ``request`` in the open batch of its key (or make it wait); closed batches go to ``ready``."""
        key = request.key
        recipients = request.recipients
        count = len(recipients)
        limit = self.max_recipients
        found = addresses(key, recipients)
        batch = self._open.get(key)
        if batch is not None and not batch.addresses.isdisjoint(found):
            self._waiting.setdefault(key, []).append(request)
            self.buffered_recipients += count
            return
        if (
            batch is not None
            and batch.slices
            and ((batch.recipient_count + count > limit and count <= limit) or batch.size_bytes + request.size_bytes > self.max_bytes)
        ):
            ready.append(self._close(key))
            batch = None
        if batch is None:
            batch = self._open_batch(key)
        start = 0
        parts = 0
        while start < count:
            end = start + limit - batch.recipient_count
            if start == 0 and end >= count:
                self._take(batch, request, recipients, found)  # whole: not copied
            else:
                self._take(batch, request, recipients[start:end], found[start:end])
            start = min(end, count)
            parts += 1
            if batch.recipient_count >= limit:
                ready.append(self._close(key))
                if start < count:
                    batch = self._open_batch(key)
        request.parts = parts

    def _place_released(self, ready: list[Batch]) -> None:
        """Place the requests whose batch closed (they may close batches, and wait, again)."""
        while self._released:
            released, self._released = self._released, []
            for request in released:
                self._place(request, ready)

    def due(self) -> list[Batch]:
        """Batches whose linger time has passed."""
        if not self._open:
            return []
        deadline = self._clock() - self.linger_s
        ready = []
        for batch in self._open.values():
            if batch.created_at > deadline:
                break
            ready.append(batch)
        for batch in ready:
            self._close(batch.key)
        self._place_released(ready)
        return ready

    def until_next(self) -> float | None:
        """Seconds until the oldest open batch is due (None when nothing is open)."""
        for batch in self._open.values():
            return max(0.0, batch.created_at + self.linger_s - self._clock())
        return None

    def flush(self) -> list[Batch]:
        """Close every open batch, and those the waiting requests make (rebalance, shutdown)."""
        ready: list[Batch] = []
        while self._open:
            for key in list(self._open):
                ready.append(self._close(key))
            self._place_released(ready)
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
        recipients = [r for s in part for r in s.recipients]
        halves.append(Batch(new_batch_id(), batch.key, list(part), len(recipients), batch.created_at, addresses=set(addresses(batch.key, recipients)),
                            size_bytes=size_of(part)))  # fmt: skip
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
    batch.size_bytes = size_of(kept)
    batch.addresses.difference_update(addresses(batch.key, [r for s in removed for r in s.recipients]))
    return batch, removed


def size_of(slices: Iterable[Slice]) -> int:
    """The encoded size of the requests the slices carry (a split request counted in each)."""
    return sum(s.request.size_bytes for s in slices)


def recipients_of(batches: Iterable[Batch]) -> int:
    return sum(b.recipient_count for b in batches)
