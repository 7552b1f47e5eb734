"""The composition root and the main loop: consume → decode → validate → batch → (sender:
limit → send) → reply → commit.

Threads: the main loop owns the Kafka consumer and producer, the batcher and the offset
tracker; the sender's dispatcher and workers (``sender.py``) own the API calls and hand finished
requests back through a queue. Nothing here blocks on the network except ``consume``.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from . import gcpacing
from .backpressure import BufferBound
from .batching import Batcher
from .cams.client import CamsClient, CredentialsProvider, build_http_client
from .codec import Codec, DecodeError, build_codec
from .completion import now_ms
from .config import Config
from .credentials import build_providers
from .destinations import ReplyDestinations
from .kafka_io import CLOSE_TIMEOUT_S, DEFAULT_MESSAGE_MAX_BYTES, KafkaError, KafkaIO, Message
from .admission import INFLIGHT_UNKNOWN, REUSED_CODE, Action, Policy, WaitingRoom, decide
from .ledger import InMemoryLedger, Ledger, RedisLedger
from .limiter import AccountLimit, AdaptivePolicy, InProcessLimiter, LimiterObserver, RateLimiter, RedisLimiter, connect, fallback_limits
from .limiter.hosted import HostedLimiter
from .metrics import Health, Metrics, PhaseClock, StatusServer
from .models import SendRequest, SendResult, Settled, Slice, SliceOutcome, Source, Status
from .offsets import OffsetTracker
from .redis_watch import RedisWatch
from .reply import MAX_CORRELATION_BYTES, Replies
from .sender import Sender, SendPolicy
from .validate import Validator

if TYPE_CHECKING:
    from .workers import WorkerLink

log = logging.getLogger("consumer.app")

CONSUME_BATCH = 1000
IDLE_POLL_S = 0.1
BUSY_POLL_S = 0.01
LAG_EVERY_S = 5.0
RESUME_AT = 0.75  # of the back-pressure bounds
REJECTED_CODE = "Chatapp.InvalidRequest"
REPLY_TO_NOT_ALLOWED = "Chatapp.ReplyToNotAllowed"


def tune_interpreter() -> None:
    """Move start-up objects out of the collector's sight and leave collections to the main
    loop (see gcpacing.py).

    The pipeline allocates many short-lived objects and few cycles; with the default thresholds
    full collections of a growing heap took up to 300 ms (31 % of the CPU in the benchmark) and
    delayed calls that were waiting for their token, losing rate-limit slots.
    """
    gc.collect()
    gc.freeze()
    gcpacing.install()
    # a worker whose rate-limit slot has come must not wait long for the GIL while the main loop
    # decodes: every millisecond late is a millisecond of the account's budget lost
    sys.setswitchinterval(0.001)


def lower_thread_priority(nice: int) -> None:
    """Add ``nice`` to the calling thread's niceness (Linux schedules each thread on its own).

    The main loop calls it once the sender's threads exist (threads started later from the main
    thread inherit it; the sender's pool is started by its dispatcher). On a busy machine a
    sender thread granted a rate-limit slot then gets a CPU ahead of the decoding main loop: each
    millisecond between the grant and the call on the wire is charged to the account's budget
    (see limiter/lateness.py). Elsewhere niceness is per process, so nothing is changed."""
    if nice <= 0 or sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + nice)
    except OSError as exc:
        log.warning("could not lower the main loop's priority by %d: %s", nice, exc)


def _account_limits(config: Config) -> tuple[dict[str, AccountLimit], AccountLimit]:
    """Each configured account's limit, and the default account's."""
    limits = {name: AccountLimit(acc.rate_limit_per_second, acc.rate_limit_burst) for name, acc in config.accounts.items()}
    return limits, AccountLimit(config.rate_limit_per_second, config.rate_limit_burst)


def _adaptive_policy(config: Config) -> AdaptivePolicy:
    return AdaptivePolicy(decrease=config.rate_limit_decrease, recovery_per_s=config.rate_limit_recovery_per_s)


def in_process_limiter(config: Config, observer: LimiterObserver | None = None, share: int = 1) -> InProcessLimiter:
    """The accounts' limits in this process; with ``share`` N, each account's ``floor(rate / N)``."""
    limits, default = _account_limits(config)
    if share > 1:
        limits, default = fallback_limits(limits, default, share)
    return InProcessLimiter(limits, default, safety_margin=config.rate_limit_safety_margin, policy=_adaptive_policy(config), observer=observer)


def build_limiter(config: Config, metrics: Metrics, worker: WorkerLink | None = None, watch: RedisWatch | None = None) -> RateLimiter:
    """Redis's shared limiter; else, in a worker, its supervisor's; else this process's own."""
    if config.redis_url:
        limits, default = _account_limits(config)
        return RedisLimiter(
            connect(config.redis_url), limits, default, safety_margin=config.rate_limit_safety_margin,
            key_prefix=config.redis_key_prefix + "limiter:", fallback_instances=config.limiter_fallback_instances,
            policy=_adaptive_policy(config), observer=metrics, watch=watch,
        )
    if worker is not None and worker.limiter_address and worker.limiter_key:
        fallback = in_process_limiter(config, metrics, share=worker.count)
        return HostedLimiter(worker.limiter_address, worker.limiter_key, fallback, observer=metrics)
    return in_process_limiter(config, metrics)


def build_ledger(config: Config, owner: str, watch: RedisWatch) -> Ledger:
    if config.redis_url:
        return RedisLedger(connect(config.redis_url), config.ledger_retention_s, key_prefix=config.redis_key_prefix + "ledger:",
                           stale_s=config.inflight_stale_s, owner=owner, watch=watch)
    return InMemoryLedger(config.ledger_retention_s, max_entries=config.ledger_memory_entries)


def build_credentials(config: Config) -> dict[str, CredentialsProvider]:
    """One provider per account; each is asked once now, so an account without usable credentials
    stops the start-up with a CredentialsError naming it (static keys: no I/O)."""
    providers = build_providers(config.accounts)
    for provider in providers.values():
        provider.get()
    return providers


class Service:
    def __init__(self, config: Config, metrics: Metrics | None = None, worker: WorkerLink | None = None):
        self.config = config
        credentials = build_credentials(config)  # first: a missing credential stops start-up before any connection
        self.metrics = metrics or Metrics()
        self.health = Health()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # a restarted process (pid 1 again) is another owner
        self.codec: Codec = build_codec(config.schema_registry_url, config.request_topic, config.reply_topic)
        self.validator = Validator(config.accounts)
        self.tracker = OffsetTracker()
        self.batcher = Batcher(config.batch_max_recipients, config.batch_linger_ms / 1000, max_bytes=config.batch_max_bytes)
        self.kafka = KafkaIO(config, self._on_assign, self._on_revoke, self._on_lost, self._committed)
        self.replies = Replies(self.kafka, self.codec, config.reply_topic, config.dlq_topic, self.metrics, self.tracker.finish,
                               int(config.producer_options.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES)))
        self.destinations = ReplyDestinations(config.reply_topic, config.reply_to_pattern, (config.request_topic, config.dlq_topic))
        self.redis_watch = RedisWatch(self.metrics.redis_call)
        self.limiter = build_limiter(config, self.metrics, worker, self.redis_watch)
        for name, account in config.accounts.items():
            self.metrics.account_configured(name, account.rate_limit_per_second)
        self.ledger = build_ledger(config, self.owner, self.redis_watch)
        self._admission = Policy(self.owner, config.inflight_policy, config.inflight_stale_s)
        self._waiting = WaitingRoom()  # requests another instance (or request) is working on
        self._finished: queue.SimpleQueue[list[Settled]] = queue.SimpleQueue()
        self._http = build_http_client(config.http_connect_timeout_s, config.http_read_timeout_s, max_connections=config.send_concurrency * 2)
        self.sender = Sender(
            CamsClient(config.cams_endpoint, self._http),
            credentials,
            self.limiter,
            self.ledger,
            SendPolicy(config.retry_max_attempts, config.retry_backoff_ms, config.retry_backoff_max_ms, config.throttle_max_retries,
                       config.rate_limit_throttle_tolerance, arrival_tolerance_s=config.rate_limit_safety_margin / 2),
            self.metrics,
            self._finished.put,
            config.send_concurrency,
            self.owner,
            config.batch_max_recipients,
            config.batch_max_bytes,
        )
        # requests being worked on, and the later messages carrying the same request id; kept
        # apart so that a buffered request costs the garbage collector little
        self._pending: dict[str, SendRequest] = {}
        self._followers: dict[str, list[Source]] = {}
        self._buffered_recipients = 0
        self._buffered_bytes = 0
        self._gc_pacer = gcpacing.Pacer()
        self._buffer_bound = BufferBound(config.max_buffered_recipients, config.max_buffered_seconds, config.batch_max_recipients)
        self._paused = False
        self._stopping = False
        self.close_abandoned = False  # the consumer's close hung: exit without finalisation (see kafka_io.CLOSE_TIMEOUT_S)
        self._assigned: set[tuple[str, int]] = set()
        self.health.checks = {
            "partitions_assigned": lambda: bool(self._assigned),
            "limiter_backend": self.limiter.healthy,
            "ledger": self.ledger.healthy,
        }
        self.health.degraded["redis_slow"] = self.redis_watch.slow

    # -- lifecycle ---------------------------------------------------------------------------
    def request_stop(self, *_: object) -> None:
        if not self._stopping:
            log.info("stop requested: finishing buffered work (drain timeout %.0fs)", self.config.drain_timeout_s)
        self._stopping = True

    def run(self, install_signals: bool = True, on_tick: Callable[[], None] | None = None) -> int:
        if install_signals:
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        server = None
        if self.config.metrics_port >= 0:
            server = StatusServer(self.config.metrics_host, self.config.metrics_port, self.metrics, self.health).start()
            self.status_port = server.port
            log.info("metrics and health on http://%s:%d/metrics", self.config.metrics_host, server.port)
        self.metrics.up.set(1)
        tune_interpreter()
        self.sender.start()
        lower_thread_priority(self.config.intake_nice)
        self.kafka.subscribe()
        log.info("consuming %s as group %s", self.config.request_topic, self.config.group_id)
        last_commit = last_lag = time.monotonic()
        cpu = PhaseClock(self.metrics.loop_cpu)
        try:
            while not self._stopping:
                busy = self._buffered_recipients > 0 or self.replies.outstanding > 0
                timeout = BUSY_POLL_S if busy else IDLE_POLL_S
                until = self.batcher.until_next()
                if until is not None:
                    timeout = min(timeout, until)
                cpu.charge("other")
                messages = self.kafka.consume(CONSUME_BATCH, timeout)
                cpu.charge("consume")
                if messages:
                    self._intake(messages)
                    cpu.charge("intake")
                self._step()
                cpu.charge("results")
                now = time.monotonic()
                if now - last_commit >= self.config.commit_interval_ms / 1000:
                    self._commit(asynchronous=True)
                    last_commit = now
                if now - last_lag >= LAG_EVERY_S:
                    self._report_lag()
                    last_lag = now
                if on_tick is not None:
                    on_tick()
            self._shutdown()
        finally:
            self.metrics.up.set(0)
            if server is not None:
                server.stop()
        return 0

    def _step(self) -> None:
        """Everything the loop does besides consuming: batches due, results, deliveries, pressure."""
        for batch in self.batcher.due():
            self.sender.submit(batch)
        self._serve_results(0)
        self._apply_backpressure()
        self._collect_garbage()
        self.metrics.buffered_recipients.set(self._buffered_recipients)
        self.metrics.ledger_healthy.set(1 if self.ledger.healthy() else 0)

    def _collect_garbage(self) -> None:
        generation = self._gc_pacer.due(self.sender.calls, gc.get_count(), self.sender.quiet_for(time.monotonic()))
        if generation is not None:
            gc.collect(generation)

    def _serve_results(self, wait_s: float) -> None:
        """Publish finished requests, serve delivery reports (waiting up to ``wait_s`` for one),
        produce again what the broker refused; the loop is alive while this runs."""
        self._publish_finished()
        waited = self._waiting.due()
        if waited:
            self._admit(waited)
        self.replies.serve(wait_s)
        self.health.beat()

    # -- consume → decode → validate → batch ---------------------------------------------------
    def _intake(self, messages: list[Message]) -> None:
        candidates: list[SendRequest] = []
        decode = self.codec.decode_request
        problems_of = self.validator.problems
        partition_of = self.tracker.partition
        last_topic, last_partition, offsets = None, None, None
        consumed = 0
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", err)
                continue
            consumed += 1
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if partition != last_partition or topic != last_topic:  # messages come in runs of one partition
                last_topic, last_partition, offsets = topic, partition, partition_of((topic, partition))
            if offsets is None:  # fetched before a revocation: the new owner reads it
                continue
            offsets.track(offset)
            headers = msg.headers()
            correlation = reply_to = refused_reply_to = None
            if headers:
                for name, value in headers:
                    if name == "correlation-id" and value is not None:
                        correlation = value[:MAX_CORRELATION_BYTES]
                    elif name == "reply-to" and value:
                        reply_to = value[:250].decode("utf-8", "replace")
                        if not self.destinations.allowed(reply_to):
                            reply_to, refused_reply_to = None, reply_to
                        elif reply_to == self.destinations.reply_topic:
                            reply_to = None
            source = Source(topic, partition, offset, msg.timestamp()[1], correlation, reply_to)
            value = msg.value()
            try:
                request = decode(value or b"")
            except DecodeError as exc:
                self.replies.dead_letter(source, value, msg.key(), headers, exc.reason, exc.detail)
                continue
            problems = problems_of(request)
            if problems or refused_reply_to is not None:
                self.replies.result(source, self._rejection(request, problems, refused_reply_to))
                continue
            request.source = source
            candidates.append(request)
        self.metrics.requests_consumed.inc(consumed)
        self._gc_pacer.took(len(messages))
        if candidates:
            self._admit(candidates)

    @staticmethod
    def _rejection(request: SendRequest, problems: list[str], refused_reply_to: str | None) -> SendResult:
        """The REJECTED result of a request that cannot be sent (it goes to the configured reply topic)."""
        code = REJECTED_CODE
        if refused_reply_to is not None:
            code = REPLY_TO_NOT_ALLOWED
            problems = [f"reply-to {refused_reply_to[:64]!r} is not an allowed topic (CHATAPP_REPLY_TO_PATTERN)", *problems]
        return SendResult(request.request_id, Status.REJECTED, code, "; ".join(problems), len(request.recipients), completed_at_ms=now_ms())

    def _admit(self, requests: list[SendRequest]) -> None:
        """Claim the requests in the ledger and carry out ``admission.decide`` for each."""
        entries = self.ledger.claim(requests, self.owner)
        now = time.time()
        recipients = 0
        for request, entry in zip(requests, entries):
            request_id = request.request_id
            action = decide(request, entry, self._pending.get(request_id), self._admission, now)
            if action in (Action.TAKE_OVER, Action.RESEND):
                if not self.ledger.take_over(request, entry, self.owner):  # another instance took it over first
                    action = Action.WAIT
                elif action is Action.RESEND:
                    self.metrics.duplicates.labels("inflight_resent").inc()
                    log.info("request %s was in flight at %s when it stopped: resending (inflight_policy=resend)", request_id, entry.owner, extra={"request_id": request_id})
                action = decide(request, None, None, self._admission, now) if action is not Action.WAIT else action
            if action is Action.SEND:
                self._hold(request)
                recipients += len(request.recipients)
            elif action is Action.FOLLOW:  # the same request is already on its way: answer both with one send
                self._followers.setdefault(request_id, []).append(request.source)
                self.metrics.duplicates.labels("in_process").inc()
            elif action is Action.WAIT:
                self._waiting.hold(request)
            elif action is Action.ANSWER:
                self.metrics.duplicates.labels("done").inc()
                self.replies.result(request.source, entry.result)
            elif action is Action.REUSED:
                self.metrics.duplicates.labels("reused").inc()
                self.replies.result(request.source, SendResult(request_id, Status.REJECTED, REUSED_CODE, "request_id already used for a request with other content", len(request.recipients), completed_at_ms=now_ms()))
            elif action is Action.EXPIRE:
                self._end(request, SliceOutcome(Status.EXPIRED, "Chatapp.Expired", "expires_at passed before it was consumed"))
            else:  # Action.FAIL
                self.metrics.duplicates.labels("inflight_failed").inc()
                self._end(request, SliceOutcome(Status.FAILED, INFLIGHT_UNKNOWN, f"was in flight at {entry.owner} when it stopped; not resent (inflight_policy=fail)"))
        self.metrics.recipients_consumed.inc(recipients)
        self.metrics.waiting_requests.set(len(self._waiting))

    def _end(self, request: SendRequest, outcome: SliceOutcome) -> None:
        """Answer a request claimed and not sent, and record its result in the ledger."""
        group = Settled(outcome, now_ms(), [request])
        self.ledger.mark_done([group])
        self.replies.result(request.source, group.result(request))

    # -- reply → commit ------------------------------------------------------------------------
    def _publish_finished(self) -> None:
        pending, followers = self._pending, self._followers
        while True:
            try:
                finished = self._finished.get_nowait()
            except queue.Empty:
                return
            now = time.monotonic()
            for group in finished:
                self.replies.settled(group)
                recipients = size = 0
                for request in group.requests:
                    request_id = request.request_id
                    pending.pop(request_id, None)
                    if followers and request_id in followers:  # later copies of it get the same answer, each on its own
                        for follower in followers.pop(request_id):
                            self.replies.settled(group._replace(requests=[replace(request, source=follower)]))
                    recipients += len(request.recipients)
                    size += request.size_bytes
                self._buffered_recipients -= recipients
                self._buffered_bytes -= size
                self._buffer_bound.finished(recipients, group.requests[0].key, now)  # a group is never empty

    def _commit(self, asynchronous: bool, partitions: list[tuple[str, int]] | None = None) -> None:
        self.kafka.commit(self.tracker.to_commit(partitions), asynchronous)

    def _committed(self, positions: dict[tuple[str, int], int]) -> None:
        self.tracker.committed(positions)
        self.metrics.commits.inc()

    def _apply_backpressure(self) -> None:
        bound = self._buffer_bound.limit(time.monotonic())
        held_bytes = self._buffered_bytes + self.replies.intake_bytes  # what producers can make this process hold
        over = self._buffered_recipients >= bound or held_bytes >= self.config.max_buffered_bytes
        # resume early: fetching restarts about a second after resume(), and the buffer must not run dry meanwhile
        under = self._buffered_recipients < bound * RESUME_AT and held_bytes < self.config.max_buffered_bytes * RESUME_AT
        if over and not self._paused:
            self.kafka.pause(self._assigned)
            self._paused = True
            self.metrics.paused.set(1)
        elif under and self._paused:
            self.kafka.resume(self._assigned)
            self._paused = False
            self.metrics.paused.set(0)

    def _report_lag(self) -> None:
        """Messages behind the high watermark: not yet read, and not yet committed (a commit held
        back by one message shows here while the read position moves on)."""
        committed = self.tracker.committed_positions()
        for (topic, partition), (position, high) in self.kafka.positions(self._assigned).items():
            labels = (topic, str(partition))
            self.metrics.lag.labels(*labels).set(max(0, high - position))
            done = committed.get((topic, partition))
            if done is not None:
                self.metrics.committed_lag.labels(*labels).set(max(0, high - done))
                self.metrics.committed_offset.labels(*labels).set(done)

    # -- rebalance and shutdown ------------------------------------------------------------------
    def _on_assign(self, partitions: list[tuple[str, int]]) -> None:
        log.info("assigned %s", _names(partitions))
        self.tracker.assign(partitions)
        self._assigned.update(partitions)
        self.metrics.assigned_partitions.set(len(self._assigned))
        # librdkafka keeps a partition's pause flag across a revocation: one taken away while
        # back-pressure held it would come back paused for good, so set the flag either way
        if self._paused:
            self.kafka.pause(partitions)
        else:
            self.kafka.resume(partitions)

    def _on_revoke(self, partitions: list[tuple[str, int]]) -> None:
        """Hand the partitions over quickly: their queued work is abandoned (the next owner reads
        it again; nothing of it was sent), their calls in flight are finished and answered, and
        what is finished is committed before the partitions go."""
        if self._stopping:  # shutdown already settled everything
            self._commit(asynchronous=False, partitions=partitions)
            self._forget(partitions)
            return
        ours = _slices_of(partitions)
        deadline = time.monotonic() + self.config.drain_timeout_s
        for batch in self.batcher.flush():
            self.sender.submit(batch)
        while True:
            self._abandon(partitions)  # again each round: a call in flight may come back as a retry
            if not self.sender.busy_with(ours) or time.monotonic() >= deadline:
                break
            self._serve_results(0.01)
        self._publish_finished()
        self.replies.flush(max(1.0, deadline - time.monotonic()))
        self._commit(asynchronous=False, partitions=partitions)
        log.info("revoked %s", _names(partitions))
        self._forget(partitions)

    def _on_lost(self, partitions: list[tuple[str, int]]) -> None:
        log.warning("lost %s: abandoning their work uncommitted", _names(partitions))
        self._abandon(partitions)
        self._forget(partitions)

    def _forget(self, partitions: list[tuple[str, int]]) -> None:
        self.tracker.revoke(partitions)
        self._assigned.difference_update(partitions)
        self.metrics.assigned_partitions.set(len(self._assigned))
        for topic, partition in partitions:
            for gauge in (self.metrics.lag, self.metrics.committed_lag, self.metrics.committed_offset):
                try:
                    gauge.remove(topic, str(partition))
                except KeyError:
                    pass

    def _settle(self, partitions: list[tuple[str, int]], deadline: float) -> None:
        """Send what is buffered and wait until these partitions' messages are answered durably;
        what is still unsent at the deadline is abandoned (redelivered to the next owner)."""
        for batch in self.batcher.flush():
            self.sender.submit(batch)
        while self.tracker.unfinished(partitions) > 0 and time.monotonic() < deadline:
            self._serve_results(0.01)
        if self.tracker.unfinished(partitions) > 0:
            self._abandon(partitions)
        self.replies.flush(max(1.0, deadline - time.monotonic()))

    def _abandon(self, partitions: list[tuple[str, int]]) -> None:
        wanted = set(partitions)
        for batch in self.batcher.flush():
            self.sender.submit(batch)
        removed = self.sender.abandon(_slices_of(partitions))
        self._waiting.drop(lambda source: (source.topic, source.partition) in wanted)
        requests = {id(s.request): s.request for s in removed}
        released = []
        for request in requests.values():
            self._pending.pop(request.request_id, None)
            followers = self._followers.pop(request.request_id, [])
            self._buffered_recipients -= len(request.recipients)
            self._buffered_bytes -= request.size_bytes
            survivors = [f for f in followers if (f.topic, f.partition) not in wanted]
            if survivors:  # a later copy on a partition we keep: send it in the abandoned one's place
                self._hold(replace(request, source=survivors[0]), survivors[1:])
            else:
                released.append(request)
        self.ledger.release(released, self.owner)
        if requests:
            log.warning("abandoned %d unsent requests of %s: the next owner gets them again", len(requests), _names(partitions))

    def _hold(self, request: SendRequest, followers: list[Source] | None = None) -> None:
        """Take a request into the buffer (and the batcher) until its result is published."""
        self._pending[request.request_id] = request
        if followers:
            self._followers[request.request_id] = followers
        self._buffered_recipients += len(request.recipients)
        self._buffered_bytes += request.size_bytes
        for batch in self.batcher.add(request):
            self.sender.submit(batch)

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.config.drain_timeout_s
        assigned = list(self._assigned)
        self._settle(assigned, deadline)
        self.sender.stop(timeout=max(1.0, deadline - time.monotonic()))
        self._publish_finished()
        self.replies.flush(max(1.0, deadline - time.monotonic()))
        self._commit(asynchronous=False)
        left_at = time.monotonic()
        if self.kafka.leave_group(CLOSE_TIMEOUT_S):
            log.info("left the consumer group in %.2f s", time.monotonic() - left_at)
        else:
            log.warning("partitions still assigned %.0f s after unsubscribing: closing anyway", CLOSE_TIMEOUT_S)
        if not self.kafka.close():
            self.close_abandoned = True
            log.warning("leaving the consumer group did not finish within %.0f s (a rebalance was handing out partitions): "
                        "exiting without it; offsets are committed and the group drops this member after its session timeout", CLOSE_TIMEOUT_S)
        self.limiter.close()
        self.ledger.close()
        self._http.close()
        log.info("stopped: %d partitions committed", len(assigned))


def _slices_of(partitions: list[tuple[str, int]]) -> Callable[[Slice], bool]:
    """Selects the slices whose request came from one of ``partitions``."""
    wanted = set(partitions)
    return lambda piece: (piece.request.source.topic, piece.request.source.partition) in wanted


def _names(partitions: list[tuple[str, int]]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(partitions)) or "nothing"
