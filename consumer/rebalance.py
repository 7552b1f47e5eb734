"""The group's changes and the shutdown, step by step: what becomes of the work of partitions
that come and go.

| moment                  | steps                                                                  |
|-------------------------|------------------------------------------------------------------------|
| assigned                | track their offsets, skipping those the previous owner finished (its commit's metadata, ``finished.py``); set their pause flag as back-pressure has it (librdkafka keeps a partition's flag across a revocation) |
| revoked (cooperative)   | flush the batcher; abandon their queued work (the next owner reads it again: nothing of it was sent), again each round while their calls in flight finish (one may come back as a retry), up to the drain timeout; publish, flush the replies, commit them, forget them |
| lost (session expired)  | abandon their work uncommitted, forget them                            |
| shutdown (SIGTERM)      | send what is buffered and wait until every message is answered durably (up to the drain timeout: what is still unsent is abandoned); stop the sender, abandon what it handed back unsent, publish, flush, commit (a commit the group refuses mid-rebalance is made again once the member has rejoined); leave the group, then close |
| transaction aborted     | (exactly-once mode; also after a loss) abandon all queued work, let calls in flight finish into the ledger unpublished, forget the records of the transaction, and read every partition again from its committed position: what was finished is answered again from the ledger |
| fenced                  | (exactly-once mode) abandon everything uncommitted, leave the group, close; the process exits with code 3 |

In exactly-once mode "commit" is the transaction's: every partition's position goes with it.

Abandoning hands a request to a later copy of it read from a partition still ours, when there
is one, and releases the ledger claims of the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .finished import decode
from .kafka import CLOSE_TIMEOUT_S, TP
from .models import Slice, Source
from .pipeline import Pipeline

REJOIN_POLL_S = 0.1
CONSUME_WHILE_REJOINING = 100
REJOIN_COMMIT_S = 5.0
"""How long past the drain deadline a shutdown commit refused mid-rebalance is tried again (a
round completes once every member has rejoined: about a second on a real broker, 2 s on the mock).
Past the drain deadline a stop then takes up to about 30 s: flushes of at least 1 s, this, leaving
and closing (``CLOSE_TIMEOUT_S`` each); deploy/kubernetes gives it that in its grace period. With
the broker unreachable the first commit alone waits until the session times out (librdkafka's
synchronous commit has no timeout): 47 s with the default 45 s session, seen."""


def _slices_of(partitions: list[TP]) -> Callable[[Slice], bool]:
    """Selects the slices whose request came from one of ``partitions``."""
    wanted = set(partitions)
    return lambda piece: (piece.request.source.topic, piece.request.source.partition) in wanted


def _sources_of(partitions: list[TP]) -> Callable[[Source], bool]:
    wanted = set(partitions)
    return lambda source: (source.topic, source.partition) in wanted


class Handover:
    def __init__(self, pipeline: Pipeline, drain_timeout_s: float, owner: str, log):
        self._pipeline = pipeline
        self._drain_timeout_s = drain_timeout_s
        self._owner = owner
        self._log = log
        self.stopping = False
        self.close_abandoned = False
        """The consumer's close hung: exit without finalisation (see ``kafka.CLOSE_TIMEOUT_S``)."""

    def on_assign(self, partitions: list[TP]) -> None:
        p = self._pipeline
        committed = p.kafka.committed(partitions)
        p.tracker.assign(partitions, {tp: decode(position, metadata) for tp, (position, metadata) in committed.items() if metadata})
        p.events.emit("partitions.assigned", partitions=partitions, total=len(p.tracker.partitions))
        (p.kafka.pause if p.book.paused else p.kafka.resume)(partitions)

    def on_revoke(self, partitions: list[TP]) -> None:
        """Hand the partitions over quickly (see the module's table)."""
        p = self._pipeline
        if self.stopping:  # shutdown already settled everything
            p.commit(asynchronous=False, partitions=partitions)
            self._forget(partitions)
            return
        ours = _slices_of(partitions)
        deadline = time.monotonic() + self._drain_timeout_s
        p.flush_batches()
        while True:
            self._abandon(partitions)  # again each round: a call in flight may come back as a retry
            if not p.sender.busy_with(ours) or time.monotonic() >= deadline:
                break
            p.serve_results(0.01)
        p.publish_finished()
        p.replies.flush(max(1.0, deadline - time.monotonic()))
        p.commit(asynchronous=False, partitions=partitions)
        p.events.emit("partitions.revoked", partitions=partitions)
        self._forget(partitions)

    def on_lost(self, partitions: list[TP]) -> None:
        p = self._pipeline
        p.events.emit("partitions.lost", partitions=partitions)
        self._abandon(partitions)
        self._forget(partitions)
        if p.exactly_once and not p.fenced:  # the open transaction answers sources of the lost partitions: it must not commit
            p.kafka.abort_transaction()
            self.rewind()

    def rewind(self) -> None:
        """Exactly-once mode, after an aborted transaction (see the module's table)."""
        p = self._pipeline
        partitions = p.tracker.partitions
        deadline = time.monotonic() + self._drain_timeout_s
        p.flush_batches()
        while True:
            self._abandon(partitions)
            p.publish_finished(publish=False)
            if not p.sender.busy_with(lambda piece: True) or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        p.publish_finished(publish=False)
        p.replies.discard()
        p.waiting.drop(lambda source: True)
        committed = p.kafka.committed(partitions)
        starts = p.tracker.committed_positions()  # the broker's last accepted position, or the first offset read
        p.tracker.revoke(partitions)
        p.tracker.assign(partitions, {tp: decode(position, metadata) for tp, (position, metadata) in committed.items() if metadata})
        positions = {tp: committed[tp][0] if tp in committed else starts[tp] for tp in partitions if tp in committed or tp in starts}
        p.kafka.rewind(positions)
        p.events.emit("transaction.aborted", partitions=partitions)

    def fenced(self) -> None:
        """Exactly-once mode: the producer can no longer write (see the module's table)."""
        p = self._pipeline
        p.fenced = self.stopping = True
        assigned = p.tracker.partitions
        self._abandon(assigned)
        p.sender.stop(timeout=1.0)
        p.kafka.leave_group(CLOSE_TIMEOUT_S)
        if not p.kafka.close():
            self.close_abandoned = True

    def _forget(self, partitions: list[TP]) -> None:
        tracker = self._pipeline.tracker
        tracker.revoke(partitions)
        self._pipeline.events.emit("partitions.released", partitions=partitions, total=len(tracker.partitions))

    def _abandon(self, partitions: list[TP]) -> None:
        p = self._pipeline
        p.flush_batches()
        removed = p.sender.abandon(_slices_of(partitions))
        p.waiting.drop(_sources_of(partitions))
        requests = list({id(s.request): s.request for s in removed}.values())
        kept = _sources_of(partitions)
        replacements, released = p.book.abandoned(requests, lambda source: not kept(source))
        for replacement, followers in replacements:  # a later copy on a partition we keep: sent in the abandoned one's place
            p.hold(replacement, followers)
        p.ledger.release(released, self._owner)
        if requests:
            p.events.emit("requests.abandoned", count=len(requests), partitions=partitions)

    def _settle(self, partitions: list[TP], deadline: float) -> None:
        """Send what is buffered and wait until these partitions' messages are answered durably;
        what is still unsent at the deadline is abandoned (redelivered to the next owner)."""
        p = self._pipeline
        p.flush_batches()
        while p.tracker.unfinished(partitions) > 0 and time.monotonic() < deadline:
            p.serve_results(0.01)
        if p.tracker.unfinished(partitions) > 0:
            self._abandon(partitions)
        p.replies.flush(max(1.0, deadline - time.monotonic()))

    def _commit_through_rebalance(self, deadline: float) -> None:
        """Commit every moved position; one the group refuses while it rebalances (the member's
        generation gone between the rounds of a cooperative rebalance, or not yet the next one) is
        made again as the member rejoins, up to ``deadline``. Leaving with it refused would hand the
        next owner results already published, to answer again. Records fetched meanwhile are
        dropped: nothing past them is committed."""
        p = self._pipeline
        p.commit(asynchronous=False)
        if p.exactly_once:  # the transaction's commit: an aborted one is read again (``on_abort``)
            return
        while p.tracker.to_commit() and time.monotonic() < deadline:
            p.kafka.consume(CONSUME_WHILE_REJOINING, REJOIN_POLL_S)
            p.commit(asynchronous=False)
        if due := p.tracker.to_commit():
            p.events.emit("offsets.uncommitted", partitions=list(due))

    def shutdown(self) -> int:
        """Finish, commit and leave (see the module's table); returns the partitions committed."""
        p = self._pipeline
        self.stopping = True
        deadline = time.monotonic() + self._drain_timeout_s
        assigned = p.tracker.partitions
        self._settle(assigned, deadline)
        p.sender.stop(timeout=max(1.0, deadline - time.monotonic()))
        self._abandon(assigned)  # what the stopped workers handed back unsent: its ledger marks released for the next owner
        p.publish_finished()
        p.replies.flush(max(1.0, deadline - time.monotonic()))
        self._commit_through_rebalance(max(deadline, time.monotonic() + REJOIN_COMMIT_S))
        left_at = time.monotonic()
        if p.kafka.leave_group(CLOSE_TIMEOUT_S):
            self._log.info("left the consumer group in %.2f s", time.monotonic() - left_at)
        else:
            self._log.warning("partitions still assigned %.0f s after unsubscribing: closing anyway", CLOSE_TIMEOUT_S)
        if not p.kafka.close():
            self.close_abandoned = True
            self._log.warning("leaving the consumer group did not finish within %.0f s (a rebalance was handing out partitions): "
                              "exiting without it; offsets are committed and the group drops this member after its session timeout", CLOSE_TIMEOUT_S)  # fmt: skip
        return len(assigned)
