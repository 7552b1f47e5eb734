"""limit → send: the dispatcher thread and the sender workers.

The dispatcher takes batches from the fair scheduler in its order and hands them to workers. A
worker builds and signs the call first, then takes a place at the account's gate and, in its
turn, reserves the account's next free slot from the rate limiter in one request
(``RateLimiter.reserve``), sleeps until that slot and sends at once: no CPU work lies between a
slot and the call reaching CAMS. The gate's tickets ask one after the other, or as many at once
as a slow limiter's round trip needs (``gates.py``). Each account has ``concurrency`` workers of
its own and waits on a condition of its own: another account's backlog, retries or slow calls
never hold its threads or wake them. The worker then carries out the batch's route
(``routing.py``: sent, throttled, retried, offenders named, halved, failed) and emits what
happened as events (``events.py``).

Requests whose ``expires_at`` has passed are taken out just before the call (EXPIRED). Finished
requests are marked in the ledger and handed to ``on_results`` (the main loop publishes them).
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from .batching import DEFAULT_MAX_BYTES, split, without
from .bisection import DEFER_S, BisectionBudget, named_offenders
from .cams.client import CallResult, CamsClient, CredentialsProvider
from .cams.errors import Outcome
from .completion import Completion, now_ms
from .credentials import CredentialsError
from .events import Events
from .gates import Gates
from .ledger import Ledger
from .limiter import RateLimiter
from .limiter.lateness import MISSED_SLOT_S, lateness
from .models import Batch, SendRequest, Settled, Slice, SliceOutcome, Status
from .receipts.recorder import NoJoin
from .retry import backoff_s
from .routing import Budget, Route, SendPolicy, route
from .scheduler import FairScheduler
from .throttles import ThrottleCount

log = logging.getLogger("consumer.sender")

EXPIRED_CODE = "Chatapp.Expired"
CREDENTIALS_UNAVAILABLE = "Chatapp.CredentialsUnavailable"
INTERNAL_ERROR = "Chatapp.InternalError"
ResultsSink = Callable[[list[Settled]], None]


class Sender:
    def __init__(
        self,
        cams: CamsClient,
        credentials: Mapping[str, CredentialsProvider],
        limiter: RateLimiter,
        ledger: Ledger,
        policy: SendPolicy,
        events: Events,
        on_results: ResultsSink,
        concurrency: int,
        owner: str,
        max_recipients: int = 1000,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
        join: NoJoin | None = None,
    ):
        self._cams = cams
        self._join = join or NoJoin()  # records who each accepted call carried, for the receipts
        self._credentials = credentials
        self._limiter = limiter
        self._ledger = ledger
        self._policy = policy
        self._events = events
        self._budget = Budget(policy.throttle_max_retries, policy.max_attempts)
        self._on_results = on_results
        self._concurrency = concurrency
        self._owner = owner
        self._clock = clock
        self._rng = random.Random()
        self._scheduler = FairScheduler(max_recipients, max_bytes)
        self._completion = Completion()
        lock = threading.RLock()  # guards all the state below
        self._cond = threading.Condition(lock)  # the dispatcher's waits
        self._turns: defaultdict[str, threading.Condition] = defaultdict(lambda: threading.Condition(lock))  # per account: its workers' waits
        self._inflight: Counter[str] = Counter()  # per account: batches handed to workers and not done
        self._running: dict[int, Batch] = {}
        self._tickets = itertools.count()
        self._gates = Gates(concurrency)
        self._order = itertools.count()  # turns the accounts' order of service at each pass of the dispatcher
        self._throttles = ThrottleCount(policy.throttle_tolerance)
        self.calls = 0
        """Batches through ``_run``: calls made, and batches that made none (expired before the
        call, no credentials, sent back to the queue on stop). The collector's pacing counts them."""
        self._bisection = BisectionBudget(clock=clock)
        self._stopped = False
        # ``concurrency`` threads per account: one account's backlog or slow calls never hold another's
        self._pool = ThreadPoolExecutor(concurrency * max(1, len(credentials)), thread_name_prefix="sender")
        self._thread = threading.Thread(target=self._dispatch_loop, name="dispatcher", daemon=True)

    # -- called from the main loop ---------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, batch: Batch, not_before: float = 0.0) -> None:
        with self._cond:
            batch.ready_at = batch.ready_at or self._clock()
            self._scheduler.push(batch, not_before)
            self._cond.notify_all()

    def abandon(self, drop: Callable[[Slice], bool]) -> list[Slice]:
        """Take queued (not in flight) slices out, e.g. those of revoked partitions."""
        with self._cond:
            removed = self._scheduler.remove(drop)
        for piece in removed:
            self._completion.forget(piece.request)
        return removed

    def busy_with(self, selected: Callable[[Slice], bool]) -> bool:
        """Is a call in flight for a batch holding a ``selected`` slice?"""
        with self._cond:
            return any(selected(s) for batch in self._running.values() for s in batch.slices)

    def quiet_for(self, now: float) -> float:
        """Seconds before a call needs the interpreter to go out on time: at once for one
        granted and not yet on the wire, at its slot for one waiting for the limiter; infinite
        when none is waiting (see gcpacing.py)."""
        with self._cond:
            due = self._gates.next_due()
        return due - now

    def stop(self, timeout: float = 30.0) -> None:
        """Stop dispatching; wait for calls in flight (their results are still reported)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            for turn in self._turns.values():
                turn.notify_all()
        self._thread.join(timeout)
        self._pool.shutdown(wait=True)

    # -- dispatcher thread -----------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        """Hand batches to workers in the scheduler's order, keeping at most the gate's depth per
        account waiting for a slot (the rest stay in the scheduler, where they keep filling) and at
        most ``concurrency`` of an account's batches in the workers' hands: each account has its
        share of the threads, and the accounts take turns at being served first."""
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = self._clock()
                handed: list[tuple[Batch, int]] = []
                ready = self._scheduler.ready_accounts(now)
                first = next(self._order) % len(ready) if ready else 0
                for account in ready[first:] + ready[:first]:
                    gates = self._gates
                    depth = gates.depth(account)
                    while self._inflight[account] < self._concurrency and gates.waiting(account) < depth:
                        batch = self._scheduler.pop(account, now, contended=gates.contended(account, now))
                        if batch is None:
                            break
                        ticket = next(self._tickets)
                        gates.enter(account, ticket, now)
                        self._inflight[account] += 1
                        self._running[id(batch)] = batch
                        handed.append((batch, ticket))
                if not handed:
                    retry = self._scheduler.until_next_retry(now)
                    self._cond.wait(0.5 if retry is None else min(0.5, retry))
                    continue
            for batch, ticket in handed:
                self._events.emit("calls.in_flight", change=1)
                self._pool.submit(self._run, batch, ticket)

    # -- worker threads --------------------------------------------------------------------
    def _take_token(self, account: str, ticket: int, grant: str) -> float | None:
        """Reserve the account's next free slot for this worker's call, under the name ``grant``,
        and wait for it. The tickets at the account's gate ask in turn, overlapping as much as the
        limiter's round trip needs (``Gates.may_ask``), and the limiter answers with the slot it
        took (``Gates.ahead_s``; past that, when to ask again). The worker goes at the slot, on this
        process's clock (``Reservation.answered_at``, less the answer's way back), or at once when
        the answer came after it. Returns the slot: the reference from which its lateness counts
        (an answer held up on its way back, a worker woken late; not an ask held up on its way
        there, which only got a later slot).
        None when the sender is stopping (a slot already taken is refunded: no call will use it)."""
        gates = self._gates
        prepared_at = self._clock()
        while True:
            with self._cond:
                turn = self._turns[account]
                while not self._stopped and not gates.may_ask(account, ticket):
                    turn.wait(0.5)
                if self._stopped:
                    return None
                depth = gates.depth(account)
                ahead_s = gates.ahead_s(account)
            asked_at = self._clock()
            reservation = self._limiter.reserve(account, grant, ahead_s)
            replied_at = self._clock()
            answered_at = reservation.answered_at if reservation.answered_at is not None else replied_at
            # the slot on this clock: the decision (the answer, less its way back) and the wait;
            # never before the ask and the wait (the decision came after the ask)
            due = max(answered_at - reservation.late_s, asked_at) + reservation.wait_s
            with self._cond:
                gates.answered(account, ticket, prepared_at, asked_at, replied_at, reservation, due)
                if reservation.reserved:
                    turn.notify_all()  # the next ticket's turn to ask
                elif gates.depth(account) > depth:
                    self._cond.notify_all()  # the dispatcher may let more of the account's batches ask
                while not self._stopped and (left := due - self._clock()) > 0:
                    turn.wait(left)
                stopped = self._stopped
                if reservation.reserved and not stopped:
                    gates.leave(account, ticket)  # the next batch may take its place while this call is on the wire
                    turn.notify_all()
                    self._cond.notify_all()
                    return due
            if stopped:
                if reservation.reserved:
                    self._limiter.refund(account, grant)
                return None

    def _run(self, batch: Batch, ticket: int) -> None:
        try:
            finished = self._send(batch, ticket)
        except Exception:  # a bug must not lose the batch: retried like a transient failure, then FAILED and recorded
            log.exception("sender crashed on batch %s", batch.batch_id, extra={"batch_id": batch.batch_id, "account": batch.key.account})
            finished = self._after_crash(batch)
        finally:
            account = batch.key.account
            with self._cond:
                self._gates.done(account, ticket)
                self._inflight[account] -= 1
                self.calls += 1
                self._running.pop(id(batch), None)
                self._cond.notify_all()
                self._turns[account].notify_all()
            self._events.emit("calls.in_flight", change=-1)
        if finished:
            self._on_results(finished)

    def _after_crash(self, batch: Batch) -> list[Settled]:
        """Queue a batch whose sending raised again after a backoff, or, out of attempts, end it
        FAILED ``Chatapp.InternalError`` with its result recorded in the ledger."""
        batch.failures += 1
        if batch.failures < self._policy.max_attempts:
            delay = backoff_s(batch.failures, self._policy.backoff_ms, self._policy.backoff_max_ms, self._rng)
            self._events.emit("batch.retried", account=batch.key.account, reason="transient", batch_id=batch.batch_id, code=INTERNAL_ERROR, delay_s=delay)
            self.submit(batch, self._clock() + delay)
            return []
        finished = self._finish(
            batch, batch.slices, SliceOutcome(Status.FAILED, INTERNAL_ERROR, "internal error while sending", batch.attempts, batch_id=batch.batch_id)
        )
        self._record(finished)
        return finished

    def _finish(self, batch: Batch, slices: list[Slice], outcome: SliceOutcome) -> list[Settled]:
        return self._completion.batch_done(slices, outcome, now_ms())

    def _send(self, batch: Batch, ticket: int) -> list[Settled]:
        finished: list[Settled] = []
        now_ms = time.time() * 1000
        earliest = batch.earliest_expiry_ms
        if earliest is not None and earliest <= now_ms:
            rest, expired = without(batch, lambda s: s.request.expires_at_ms is not None and s.request.expires_at_ms <= now_ms)
            gone = self._finish(
                batch, expired, SliceOutcome(Status.EXPIRED, EXPIRED_CODE, "expires_at passed before the call", batch.attempts, batch_id=batch.batch_id)
            )
            self._record(gone)
            if rest is None:
                return gone
            self._on_results(gone)  # at once: they are out of the batch, and a crash below fails only what is left
        key = self._join.key_for(batch)  # the call's TaskId first: the in-flight marks keep it
        if batch.attempts == 0:
            self._mark_in_flight(batch)
        account = batch.key.account
        grant = f"{self._owner}/{ticket}"  # names this call's grant in the limiter's window (unique across instances)
        recipients = batch.slices[0].recipients if len(batch.slices) == 1 else [r for s in batch.slices for r in s.recipients]
        try:
            prepared = self._cams.prepare(self._credentials[account].get(), key, recipients)
        except CredentialsError as exc:  # STS or the metadata service down: retried like a timeout
            self._events.emit("credentials.unavailable", account=account, error=str(exc))
            call = CallResult(Outcome.TRANSIENT, CREDENTIALS_UNAVAILABLE, str(exc), None, None, None, None, 0.0)
        else:
            granted_at = self._take_token(account, ticket, grant)
            while granted_at is not None and (missed_s := self._clock() - granted_at) > MISSED_SLOT_S:
                self._limiter.refund(account, grant)  # not sent on it: the slot sharing its window may be decided already
                self._events.emit("slot.missed", account=account, late_s=missed_s)
                with self._cond:
                    self._gates.enter(account, ticket, self._clock())  # at the back of the account's gate
                granted_at = self._take_token(account, ticket, grant)
            if granted_at is None:  # stopping: back to the queue, unsent
                self.submit(batch)
                return finished
            self._events.emit("slot.waited", account=account, wait_s=granted_at - batch.ready_at)
            told: list[bool] = []

            def on_the_wire() -> None:  # as the request is written: its lateness is told before CAMS answers
                told.append(True)
                try:
                    self._on_the_wire(ticket)
                    self._tell_lateness(account, grant, self._clock() - granted_at)
                except Exception:  # noqa: BLE001 (the request is out: a failure here must not fail the call and send it again)
                    log.exception("could not tell the limiter how late call %s went out", grant, extra={"account": account})

            call = self._cams.execute(prepared, on_the_wire)
            if not told:  # never known to be written: grant -> answer, the most it can be
                self._tell_lateness(account, grant, self._clock() - granted_at)
        batch.attempts += 1
        outcome = call.outcome
        self._events.emit(
            "call.answered", account=account, code=call.code, latency_s=call.latency_s, bisection=batch.bisected and outcome is not Outcome.THROTTLED
        )
        if outcome is Outcome.THROTTLED:  # not counted by CAMS: not in the window either
            self._limiter.refund(account, grant)
        else:
            with self._cond:
                self._bisection.called(account, batch.bisected)
        named = named_offenders(batch, call.message) if outcome is Outcome.INVALID_REQUEST else []
        way = route(outcome, batch.throttles, batch.failures, len(batch.slices), bool(named), self._budget)
        finished += self._follow(way, batch, call, named)
        self._record(finished)
        return finished

    def _mark_in_flight(self, batch: Batch) -> None:
        """Mark the batch's requests IN_FLIGHT, each carried whole with the TaskId the service gave
        the call (unique to it: its receipts prove this call); a request split over several calls,
        or under its producer's own TaskId, without one (no one call's receipts settle it)."""
        task_id = batch.task_id if batch.key.task_id is None else None
        if task_id is None:  # no TaskId of the service's own (receipts join off, or the producer's): one mark for all
            self._ledger.mark_in_flight([s.request for s in batch.slices], self._owner)
            return
        whole: list[SendRequest] = []
        split: list[SendRequest] = []
        for s in batch.slices:
            (whole if len(s.recipients) == len(s.request.recipients) else split).append(s.request)
        if whole:
            self._ledger.mark_in_flight(whole, self._owner, task_id)
        if split:
            self._ledger.mark_in_flight(split, self._owner)

    def _follow(self, way: Route, batch: Batch, call: CallResult, named: list[Slice]) -> list[Settled]:
        """Carry out the batch's route (``routing.py``); returns the requests it finished."""
        account = batch.key.account
        emit = self._events.emit
        if way is Route.SENT:
            emit("batch.sent", account=account, recipients=batch.recipient_count)
            self._join.accepted(batch, call.group_message_id)
            return self._finish(batch, batch.slices, self._outcome(Status.SENT, batch, call))
        if way is Route.THROTTLED:
            batch.throttles += 1
            with self._cond:
                persistent = self._throttles.persistent(account, self._clock())
            if persistent:
                self._limiter.throttled(account, call.retry_after_s)
            emit("batch.retried", account=account, reason="throttled", batch_id=batch.batch_id, code=call.code, delay_s=call.retry_after_s or 0.0)
            self.submit(batch, self._clock() + (call.retry_after_s or 0.0))
        elif way is Route.RETRY:
            batch.failures += 1
            delay = backoff_s(batch.failures, self._policy.backoff_ms, self._policy.backoff_max_ms, self._rng)
            emit("batch.retried", account=account, reason="transient", batch_id=batch.batch_id, code=call.code, delay_s=delay, attempt=batch.failures)
            self.submit(batch, self._clock() + delay)
        elif way is Route.NAMED:
            emit("batch.retried", account=account, reason="named", batch_id=batch.batch_id, code=call.code, delay_s=0.0)
            offending = {id(piece) for piece in named}
            rest, offenders = without(batch, lambda piece: id(piece) in offending)
            assert rest is not None, "named_offenders never names every slice"
            self.submit(rest)
            return self._finish(batch, offenders, self._outcome(Status.FAILED, batch, call))
        elif way is Route.SPLIT:
            emit("batch.retried", account=account, reason="split", batch_id=batch.batch_id, code=call.code, delay_s=0.0)
            not_before = 0.0 if self._may_bisect_now(account) else self._clock() + DEFER_S
            if not_before:
                emit("bisection.deferred", account=account)
            for half in split(batch):
                half.attempts = batch.attempts
                half.bisected = True
                half.task_id = batch.task_id
                self.submit(half, not_before)
        else:
            emit("batch.failed", account=account, batch_id=batch.batch_id, code=call.code, message=call.message)
            return self._finish(batch, batch.slices, self._outcome(Status.FAILED, batch, call))
        return []

    @staticmethod
    def _outcome(status: Status, batch: Batch, call: CallResult) -> SliceOutcome:
        return SliceOutcome(status, call.code, call.message, batch.attempts, call.group_message_id, call.api_request_id, batch.batch_id)

    def _may_bisect_now(self, account: str) -> bool:
        """Within the account's bisection share, or nothing else of the account waiting."""
        with self._cond:
            return self._bisection.within_share(account) or not self._scheduler.has_waiting(account)

    def _tell_lateness(self, account: str, grant: str, held_s: float) -> None:
        """A call took ``held_s`` from its slot to the wire: tell the limiter how late it may have
        arrived (``limiter/lateness.py``). Told as the request is written, not after the answer:
        the slot sharing its window is decided half a second after this one's at the soonest
        (``RESERVE_AHEAD_S``), and must see it."""
        late_s = lateness(held_s, self._policy.arrival_tolerance_s)
        if late_s > 0.0:
            self._events.emit("call.late", account=account, late_s=late_s)
            self._limiter.arrived_late(account, grant, late_s)

    def _on_the_wire(self, ticket: int) -> None:
        with self._cond:
            self._gates.on_the_wire(ticket)

    def _record(self, finished: list[Settled]) -> None:
        if finished:
            self._ledger.mark_done(finished)
