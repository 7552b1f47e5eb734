"""The main loop's work: consume → intake → admit → batch → (sender: limit → send) → reply → commit.

One ``turn`` reads what Kafka has, turns records into requests, rejections and dead letters
(``intake.py``), decides for each request what its id allows (``admission.py``), books it
(``inflight.py``) and batches it; ``step`` hands due batches to the sender, publishes what the
sender finished, serves delivery reports, commits, and pauses or resumes the partitions.
Nothing here blocks on the network except ``consume``.
"""

from __future__ import annotations

import gc
import itertools
import queue
import time
from collections.abc import Callable

from . import gcpacing
from .admission import INFLIGHT_UNKNOWN, RECEIPTS, REUSED_CODE, Action, Policy, WaitingRoom, decide, wants_evidence
from .batching import Batcher, addresses
from .completion import now_ms
from .events import Events
from .group_wait import AssignmentWait
from .inflight import InFlightBook
from .intake import Intake
from .kafka import TP, KafkaPort, Record
from .ledger import Ledger, LedgerEntry, in_flight_at
from .models import SendRequest, SendResult, Settled, SliceOutcome, Source, Status
from .offsets import OffsetTracker
from .reply import Replies
from .sender import Sender

CONSUME_BATCH = 1000
IDLE_POLL_S = 0.1
BUSY_POLL_S = 0.01
LAG_EVERY_S = 5.0
TRANSACTION_FLUSH_S = 10.0
"""Exactly-once mode: how long a commit waits for the interval's records to be acknowledged."""
SETTLED_CODE = "OK"
"""The code of a request answered SENT from its call's receipts (``inflight_policy=receipts``): CAMS's for an accepted call."""
Evidence = Callable[[list[tuple[str, list[str]]]], list[bool]]
"""For each (TaskId, canonical numbers): did a receipt come for one of them under it (``JoinStore.witnessed``)?"""


def no_evidence(calls: list[tuple[str, list[str]]]) -> list[bool]:
    return [False] * len(calls)


class Pipeline:
    def __init__(self, kafka: KafkaPort, intake: Intake, book: InFlightBook, batcher: Batcher, sender: Sender, replies: Replies,
                 tracker: OffsetTracker, ledger: Ledger, policy: Policy, events: Events, commit_interval_s: float,
                 finished: queue.SimpleQueue[list[Settled]], beat: Callable[[], None] = lambda: None, exactly_once: bool = False,
                 evidence: Evidence = no_evidence):  # fmt: skip
        self.kafka = kafka
        self.intake = intake
        self.book = book
        self.batcher = batcher
        self.sender = sender
        self.replies = replies
        self.tracker = tracker
        self.ledger = ledger
        self.waiting = WaitingRoom()
        """Requests another instance (or another request here) is working on."""
        self.finished = finished
        """What the sender finished, for the main loop to publish (the sender's ``on_results`` puts it there)."""
        self._policy = policy
        self._evidence = evidence
        """Receipts seen for the calls of stale IN_FLIGHT marks (``inflight_policy=receipts``)."""
        self.events = events
        self._commit_every_s = commit_interval_s
        self._beat = beat
        self._gc_pacer = gcpacing.Pacer()
        self._last_commit = self._last_lag = time.monotonic()
        self._assignment_wait = AssignmentWait(self._last_commit)
        self.exactly_once = exactly_once
        """Results, dead letters and offsets go in one transaction per commit interval."""
        self.on_abort: Callable[[], None] = lambda: None
        """Exactly-once mode: what to do when a transaction was aborted (``Handover.rewind``)."""
        self.fenced = False
        """Exactly-once mode: the producer was fenced; nothing more is committed."""

    # -- a turn of the loop: consume, take_in, step -------------------------------------------
    def consume(self) -> list[Record]:
        """What Kafka has, waiting no longer than the next batch is due (or briefly while busy)."""
        busy = self.book.recipients > 0 or self.replies.outstanding > 0
        timeout = BUSY_POLL_S if busy else IDLE_POLL_S
        until = self.batcher.until_next()
        if until is not None:
            timeout = min(timeout, until)
        return self.kafka.consume(CONSUME_BATCH, timeout)

    def take_in(self, records: list[Record]) -> None:
        read = self.intake.read(records)
        for letter in read.letters:
            record = letter.record
            self.replies.dead_letter(letter.source, record.value, record.key, record.headers, letter.reason, letter.detail)
        for source, result in read.rejected:
            self.replies.result(source, result)
        self.events.emit("records.read", count=len(records) - read.skipped)
        if read.skipped:
            self.events.emit("records.skipped", count=read.skipped)
        self._gc_pacer.took(len(records))
        if read.requests:
            self.admit(read.requests)

    def step(self) -> None:
        """Everything the loop does besides consuming: batches due, results, deliveries, pressure, commits."""
        for batch in self.batcher.due():
            self.sender.submit(batch)
        self.serve_results(0)
        self.apply_backpressure()
        self._collect_garbage()
        self.events.emit("loop.state", buffered=self.book.recipients, waiting=len(self.waiting), ledger_healthy=self.ledger.healthy())
        now = time.monotonic()
        if now - self._last_commit >= self._commit_every_s:
            self.commit(asynchronous=True)
            self._last_commit = now
        if now - self._last_lag >= LAG_EVERY_S:
            self.report_lag()
            self._last_lag = now
        waited = self._assignment_wait.due(bool(self.tracker.partitions), now)
        if waited is not None:
            self.events.emit("group.waiting", waited_s=waited)

    def _collect_garbage(self) -> None:
        generation = self._gc_pacer.due(self.sender.calls, gc.get_count(), self.sender.quiet_for(time.monotonic()))
        if generation is not None:
            gc.collect(generation)

    def serve_results(self, wait_s: float) -> None:
        """Publish finished requests, look again at the waiting ones, serve delivery reports
        (waiting up to ``wait_s`` for one), produce again what the broker refused; the loop is
        alive while this runs."""
        self.publish_finished()
        waited = self.waiting.due()
        if waited:
            self.admit(waited)
        self.replies.serve(wait_s)
        self._beat()

    # -- admit → batch -----------------------------------------------------------------------
    def admit(self, requests: list[SendRequest]) -> None:
        """Claim the requests in the ledger and carry out ``admission.decide`` for each."""
        entries = self.ledger.claim(requests, self._policy.owner)
        now = time.time()
        receipted = self._receipted(requests, entries, now) if self._policy.inflight_policy == RECEIPTS else itertools.repeat(False)
        recipients = 0
        emit, book = self.events.emit, self.book
        for request, entry, proven in zip(requests, entries, receipted):
            request_id = request.request_id
            action = decide(request, entry, book.pending(request_id), self._policy, now, proven)
            if action in (Action.TAKE_OVER, Action.RESEND, Action.SETTLE):
                assert entry is not None, "decide takes over, resends or settles only a request with an entry"
                if not self.ledger.take_over(request, entry, self._policy.owner):  # another instance took it over first
                    action = Action.WAIT
                elif action is not Action.SETTLE:
                    if action is Action.RESEND:
                        emit("request.resent", request_id=request_id, owner=entry.owner)
                    action = decide(request, None, None, self._policy, now)
            if action is Action.SEND:
                self.hold(request)
                recipients += len(request.recipients)
            elif action is Action.FOLLOW:  # the same request is already on its way: answer both with one send
                book.follow(request_id, request.source)
                emit("request.duplicate", kind="in_process")
            elif action is Action.WAIT:
                self.waiting.hold(request)
            elif action is Action.ANSWER:
                emit("request.duplicate", kind="done")
                assert entry is not None and entry.result is not None, "decide answers only from an entry with a result"
                self.replies.result(request.source, entry.result)
            elif action is Action.REUSED:
                emit("request.duplicate", kind="reused")
                self.replies.result(request.source, SendResult(request_id, Status.REJECTED, REUSED_CODE, "request_id already used for a request with other content",
                                                               len(request.recipients), completed_at_ms=now_ms()))  # fmt: skip
            elif action is Action.SETTLE:  # its call reached CAMS: answered SENT, not sent again
                assert entry is not None, "decide settles only a request with an entry"
                emit("request.settled", request_id=request_id, owner=entry.owner, task_id=entry.task_id)
                self._end(request, SliceOutcome(Status.SENT, SETTLED_CODE, f"{in_flight_at(entry.owner)}; a receipt for its call "
                                                f"(TaskId {entry.task_id}) shows CAMS took it: not resent (inflight_policy=receipts)"))  # fmt: skip
            elif action is Action.EXPIRE:
                self._end(request, SliceOutcome(Status.EXPIRED, "Chatapp.Expired", "expires_at passed before it was consumed"))
            else:  # Action.FAIL
                emit("request.duplicate", kind="inflight_failed")
                assert entry is not None, "decide fails only a request with an entry (in flight elsewhere)"
                self._end(request, SliceOutcome(Status.FAILED, INFLIGHT_UNKNOWN, f"{in_flight_at(entry.owner)}; not resent (inflight_policy=fail)"))
        emit("requests.admitted", recipients=recipients)

    def _receipted(self, requests: list[SendRequest], entries: list[LedgerEntry | None], now: float) -> list[bool]:
        """Whether a receipt came for the call of each request's stale IN_FLIGHT mark, looked up
        only where ``decide`` would use it (none found where the lookup fails: they wait, then are resent)."""
        wanted = [(i, entry.task_id) for i, entry in enumerate(entries) if entry is not None and entry.task_id and wants_evidence(entry, self._policy, now)]
        found = [False] * len(requests)
        if not wanted:
            return found
        calls = [(task_id, addresses(requests[i].key, requests[i].recipients)) for i, task_id in wanted]
        try:
            answers = self._evidence(calls)
        except Exception as exc:  # Redis unreachable: no evidence now; looked for again while they wait
            self.events.emit("receipts.evidence_failed", requests=len(calls), error=str(exc))
            return found
        for (i, _), answer in zip(wanted, answers):
            found[i] = answer
        return found

    def flush_batches(self) -> None:
        """Hand every batch still filling to the sender (rebalance, shutdown)."""
        for batch in self.batcher.flush():
            self.sender.submit(batch)

    def hold(self, request: SendRequest, followers: list[Source] | None = None) -> None:
        """Book a request (and the batches it completes go to the sender) until its result is published."""
        self.book.hold(request, followers)
        for batch in self.batcher.add(request):
            self.sender.submit(batch)

    def _end(self, request: SendRequest, outcome: SliceOutcome) -> None:
        """Answer a request claimed and not sent, and record its result in the ledger."""
        group = Settled(outcome, now_ms(), [request])
        self.ledger.mark_done([group])
        self.replies.result(request.source, group.result(request))

    # -- reply → commit ------------------------------------------------------------------------
    def publish_finished(self, publish: bool = True) -> None:
        """Publish what the sender finished (``publish`` False, after an aborted transaction: only
        take it off the book; the ledger has it, and its request read again is answered from there)."""
        settled, finished = self.replies.settled, self.book.finished
        while True:
            try:
                groups = self.finished.get_nowait()
            except queue.Empty:
                return
            now = time.monotonic()
            for group in groups:
                copies = finished(group, now)
                if publish:
                    settled(group)
                    for copy in copies:  # later copies of it get the same answer, each on its own
                        settled(copy)

    def commit(self, asynchronous: bool, partitions: list[TP] | None = None) -> None:
        """Commit each moved position, with the offsets finished above it (``finished.py``).
        Exactly-once mode: the open transaction, with every partition's position, once each of
        its records is acknowledged (their sources are then finished: their offsets go with them);
        an aborted one is read again (``on_abort``)."""
        if not self.exactly_once:
            self.kafka.commit(self.tracker.to_commit(partitions), asynchronous)
            return
        if self.fenced:
            return
        self.replies.flush(TRANSACTION_FLUSH_S)
        if self.replies.outstanding:  # not all acknowledged: at the next interval (or the broker aborts it at its timeout)
            return
        if not self.kafka.commit_transaction(self.tracker.to_commit()):
            self.on_abort()

    def committed(self, positions: dict[TP, int]) -> None:
        """The broker accepted these positions (the Kafka port's ``on_committed``)."""
        self.tracker.committed(positions)
        self.events.emit("offsets.committed", positions=positions)

    def apply_backpressure(self) -> None:
        pause = self.book.pressure(time.monotonic(), self.replies.intake_bytes)
        if pause is not None:
            partitions = self.tracker.partitions
            (self.kafka.pause if pause else self.kafka.resume)(partitions)
            self.events.emit("partitions.paused", paused=pause)

    def report_lag(self) -> None:
        """Messages behind the high watermark: not yet read, and not yet committed (a commit held
        back by one message shows there while the read position moves on)."""
        committed = self.tracker.committed_positions()
        for (topic, partition), (position, high) in self.kafka.positions(self.tracker.partitions).items():
            done = committed.get((topic, partition))
            self.events.emit("partition.lag", topic=topic, partition=partition, lag=max(0, high - position),
                              committed_lag=None if done is None else max(0, high - done), committed_offset=done)  # fmt: skip
