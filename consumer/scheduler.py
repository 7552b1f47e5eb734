"""Which batch gets the next API call of an account: fair between batch keys, urgent first.

Pure and single-threaded (the dispatcher guards it with its lock; the clock is passed in).

Order of service within one account:
1. a batch holding a request whose ``expires_at`` falls within ``urgent_window_s`` (earliest
   first), so nearly expired requests are not starved by a backlog;
2. otherwise round-robin over the batch keys that have batches waiting: a campaign with
   thousands of batches on one template gets one call in K when K keys wait, so every waiting key
   is served within K calls (K / rate seconds). A key whose next batch is not full yet and has
   waited less than ``partial_wait_s`` lets the keys after it with full batches go first, and
   while the account's budget is contended it is not taken at all (its batch keeps filling
   meanwhile): a waiting key is served within ``partial_wait_s`` + K / rate.
Batches waiting for a retry (``not_before`` in the future) are held aside until then, and then
go to the front of their key's queue.

Waiting batches keep filling: a new batch whose key already has a waiting batch with room tops
that one up first (whole requests only), so when the budget, not the traffic, is the bottleneck,
every call leaves full however short the linger is.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from .batching import DEFAULT_MAX_BYTES, addresses, without
from .models import Batch, BatchKey, Slice


class _AccountQueue:
    __slots__ = ("keys", "delayed", "expiring", "queued")

    def __init__(self) -> None:
        self.keys: OrderedDict[BatchKey, deque[Batch]] = OrderedDict()
        self.delayed: list[tuple[float, int, Batch]] = []
        self.expiring: list[tuple[int, int, Batch]] = []  # (earliest expires_at ms, seq, batch); stale entries skipped
        self.queued: set[int] = set()  # ids of the batches in ``keys``


class FairScheduler:
    def __init__(
        self,
        max_recipients: int = 1000,
        max_bytes: int = DEFAULT_MAX_BYTES,
        urgent_window_s: float = 2.0,
        partial_wait_s: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.max_recipients = max_recipients
        self.max_bytes = max_bytes
        self.partial_wait_s = partial_wait_s
        self.urgent_window_s = urgent_window_s
        self._wall_clock = wall_clock  # expires_at is wall-clock time; ``now`` arguments are monotonic
        self._accounts: dict[str, _AccountQueue] = {}
        self._seq = itertools.count()
        self.buffered_recipients = 0
        self.batches = 0

    def push(self, batch: Batch, not_before: float = 0.0) -> None:
        queue = self._accounts.setdefault(batch.key.account, _AccountQueue())
        self.buffered_recipients += batch.recipient_count
        if not_before > 0.0:
            heapq.heappush(queue.delayed, (not_before, next(self._seq), batch))
        else:
            waiting = queue.keys.setdefault(batch.key, deque())
            if waiting and batch.attempts == 0 and waiting[-1].attempts == 0:
                self._top_up(waiting[-1], batch)
                self._note_expiry(queue, waiting[-1])
                if not batch.slices:
                    return
            self._enqueue(queue, batch, front=False)
        self.batches += 1

    def _enqueue(self, queue: _AccountQueue, batch: Batch, front: bool) -> None:
        waiting = queue.keys.setdefault(batch.key, deque())
        if front:
            waiting.appendleft(batch)
            queue.keys.move_to_end(batch.key, last=False)
        else:
            waiting.append(batch)
        queue.queued.add(id(batch))
        self._note_expiry(queue, batch)

    def _note_expiry(self, queue: _AccountQueue, batch: Batch) -> None:
        expiry = batch.earliest_expiry_ms
        if expiry is not None:
            heapq.heappush(queue.expiring, (expiry, next(self._seq), batch))

    def _top_up(self, tail: Batch, batch: Batch) -> None:
        """Move whole slices of ``batch`` into ``tail`` while they fit (recipients and bytes) and
        hold no address of it."""
        room = self.max_recipients - tail.recipient_count
        room_bytes = self.max_bytes - tail.size_bytes
        moved = 0
        for piece in batch.slices:
            size = len(piece.recipients)
            if size > room or piece.request.size_bytes > room_bytes:
                break
            found = addresses(batch.key, piece.recipients)
            if not tail.addresses.isdisjoint(found):
                break
            tail.addresses.update(found)
            batch.addresses.difference_update(found)
            tail.slices.append(piece)
            room -= size
            room_bytes -= piece.request.size_bytes
            tail.size_bytes += piece.request.size_bytes
            batch.size_bytes -= piece.request.size_bytes
            moved += 1
        if moved:
            taken = batch.slices[:moved]
            del batch.slices[:moved]
            count = sum(len(p.recipients) for p in taken)
            tail.recipient_count += count
            batch.recipient_count -= count

    def _release(self, queue: _AccountQueue, now: float) -> None:
        delayed = queue.delayed
        while delayed and delayed[0][0] <= now:
            _, _, batch = heapq.heappop(delayed)
            self._enqueue(queue, batch, front=True)

    def has_waiting(self, account: str) -> bool:
        """Does ``account`` have batches queued (not counting those delayed)?"""
        queue = self._accounts.get(account)
        return queue is not None and bool(queue.keys)

    def ready_accounts(self, now: float) -> list[str]:
        ready = []
        for account, queue in self._accounts.items():
            self._release(queue, now)
            if queue.keys:
                ready.append(account)
        return ready

    def until_next_retry(self, now: float) -> float | None:
        times = [q.delayed[0][0] for q in self._accounts.values() if q.delayed]
        return max(0.0, min(times) - now) if times else None

    def pop(self, account: str, now: float, contended: bool = False) -> Batch | None:
        """The account's next batch. ``contended``: a call of this account is already waiting for
        the budget, or had to lately (other instances share it), so a young partial batch stays
        here to keep filling (None when only such batches wait); otherwise it goes at once (the
        budget is idle: latency first)."""
        queue = self._accounts.get(account)
        if queue is None:
            return None
        self._release(queue, now)
        if not queue.keys:
            return None
        batch = self._urgent(queue)
        if batch is not None:
            batches = queue.keys[batch.key]
            batches.remove(batch)
            if not batches:
                del queue.keys[batch.key]
        else:
            key = self._next_key(queue, now)
            if key is None:
                if contended:
                    return None
                key = next(iter(queue.keys))
            batches = queue.keys[key]
            batch = batches.popleft()
            if batches:
                queue.keys.move_to_end(key)  # round-robin: this key goes to the back
            else:
                del queue.keys[key]
        queue.queued.discard(id(batch))
        self.buffered_recipients -= batch.recipient_count
        self.batches -= 1
        return batch

    def _next_key(self, queue: _AccountQueue, now: float) -> BatchKey | None:
        """Round-robin over the keys whose next batch is full or has waited ``partial_wait_s``: a
        young partial batch lets a full one of the next keys go first. None: only young partials."""
        for key, batches in queue.keys.items():
            head = batches[0]
            if head.recipient_count >= self.max_recipients or now - head.ready_at >= self.partial_wait_s:
                return key
        return None

    def _urgent(self, queue: _AccountQueue) -> Batch | None:
        """The queued batch expiring first, if that is within the urgent window."""
        horizon_ms = (self._wall_clock() + self.urgent_window_s) * 1000
        expiring = queue.expiring
        while expiring:
            expiry, _, batch = expiring[0]
            if id(batch) not in queue.queued or batch.earliest_expiry_ms != expiry:
                heapq.heappop(expiring)  # stale: sent, removed, or its slices changed
                continue
            return batch if expiry <= horizon_ms else None
        return None

    def remove(self, drop: Callable[[Slice], bool]) -> list[Slice]:
        """Take out the slices ``drop`` selects (revoked partitions); return them."""
        removed: list[Slice] = []
        for queue in self._accounts.values():
            for key in list(queue.keys):
                kept: deque[Batch] = deque()
                for batch in queue.keys[key]:
                    rest, gone = self._without(batch, drop)
                    removed.extend(gone)
                    if rest is not None:
                        kept.append(rest)
                        if gone:
                            self._note_expiry(queue, rest)
                    else:
                        queue.queued.discard(id(batch))
                if kept:
                    queue.keys[key] = kept
                else:
                    del queue.keys[key]
            delayed = []
            for entry in queue.delayed:
                rest, gone = self._without(entry[2], drop)
                removed.extend(gone)
                if rest is not None:
                    delayed.append((entry[0], entry[1], rest))
            heapq.heapify(delayed)
            queue.delayed = delayed
        return removed

    def _without(self, batch: Batch, drop: Callable[[Slice], bool]) -> tuple[Batch | None, list[Slice]]:
        before = batch.recipient_count
        rest, gone = without(batch, drop)
        if gone:
            self.buffered_recipients -= before - (rest.recipient_count if rest else 0)
            if rest is None:
                self.batches -= 1
        return rest, gone

    def __len__(self) -> int:
        return self.batches
