"""The composition root: builds the pieces of the path and runs the main loop.

The path of a request, one module each: ``kafka`` (records) → ``intake`` (decode, validate) →
``admission`` (what its id allows; the ledger) → ``inflight`` (booked) → ``batching`` →
``sender`` (``scheduler``, ``limiter``, ``cams``, ``routing``) → ``completion`` → ``reply`` →
``offsets`` (commit). ``pipeline`` runs a turn of it, ``rebalance`` hands partitions over and
shuts down, ``events`` carries what happened to ``observers`` (metrics, logs).

Threads: the main loop owns the Kafka consumer and producer, the batcher, the in-flight book and
the offset tracker; the sender's dispatcher and workers own the API calls and hand finished
requests back through a queue.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import uuid
from collections.abc import Callable

from .admission import RECEIPTS, Policy
from .backpressure import BufferBound
from .batching import Batcher
from .cams.client import CamsClient, CredentialsProvider, build_http_client
from .codec import build_codec
from .config import Config
from .credentials import build_providers
from .destinations import ReplyDestinations
from .events import Events
from .inflight import InFlightBook
from .intake import Intake
from .kafka import DEFAULT_MESSAGE_MAX_BYTES, Fenced, KafkaIO, transactional_id
from .ledger import InMemoryLedger, Ledger
from .ledger_redis import RedisLedger
from .limiter import connect
from .limiter.setup import build_limiter
from .metrics import Health, Metrics, PhaseClock, StatusServer
from .models import Settled
from .observers import subscribe_group_wait, subscribe_logs, subscribe_metrics
from .offsets import OffsetTracker
from .pipeline import Pipeline, no_evidence
from .rebalance import Handover
from .receipts.app import ReceiptsApp, build_stores, redis_join
from .receipts.join import JoinStore, MemoryJoin
from .receipts.recorder import JoinRecorder, NoJoin
from .redis_watch import RedisWatch
from .reply import Replies
from .routing import SendPolicy
from .runtime import lower_thread_priority, tune_interpreter
from .sender import Sender
from .summary import subscribe_summary
from .validate import Validator
from .worker_link import WorkerLink

log = logging.getLogger("consumer.app")
FENCED_EXIT = 3
"""Exit code of a process whose transactional producer was fenced (exactly-once mode): restart it."""


def build_ledger(config: Config, owner: str, watch: RedisWatch) -> Ledger:
    if config.redis_url:
        return RedisLedger(connect(config.redis_url), config.ledger_retention_s, key_prefix=config.redis_key_prefix + "ledger:",
                           stale_s=config.inflight_stale_s, owner=owner, watch=watch)  # fmt: skip
    return InMemoryLedger(config.ledger_retention_s, max_entries=config.ledger_memory_entries)


def build_join(config: Config, events: Events) -> tuple[NoJoin, JoinStore | None]:
    """The sender's join recorder (``CHATAPP_RECEIPTS_JOIN``) and the store it writes: in Redis,
    else in process (for a receiver hosted in this process); where ``inflight_policy=receipts``
    looks for the receipts of a dead instance's calls."""
    if config.receipts_join != "on":
        return NoJoin(), None
    store: JoinStore = redis_join(config) if config.redis_url else MemoryJoin(config.receipts_retention_s)
    return JoinRecorder(store, events), store


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
        self.events = Events()
        subscribe_metrics(self.events, self.metrics)
        subscribe_logs(self.events, log)
        subscribe_summary(self.events, log, config.summary_interval_s, {name: account.rate_limit_per_second for name, account in config.accounts.items()})
        subscribe_group_wait(self.events, log, config.request_topic, config.group_id, config.session_timeout_ms if config.group_protocol == "classic" else None)
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # a restarted process (pid 1 again) is another owner
        codec = build_codec(config.schema_registry_url, config.request_topic, config.reply_topic)
        tracker = OffsetTracker()
        destinations = ReplyDestinations(config.reply_topic, config.reply_to_pattern, (config.request_topic, config.dlq_topic))
        intake = Intake(codec.decode_request, Validator(config.accounts).problems, destinations, tracker.partition)
        redis_watch = RedisWatch(self.metrics.redis_call)
        self.limiter = build_limiter(config, self.metrics, worker, redis_watch)
        for name, account in config.accounts.items():
            self.metrics.account_configured(name, account.rate_limit_per_second)
        self.ledger = build_ledger(config, owner, redis_watch)
        connections = config.send_concurrency * 2 * max(1, len(config.accounts))  # as many threads per account (sender.py)
        self._http = build_http_client(config.http_connect_timeout_s, config.http_read_timeout_s, max_connections=connections)
        policy = SendPolicy(config.retry_max_attempts, config.retry_backoff_ms, config.retry_backoff_max_ms, config.throttle_max_retries,
                            config.rate_limit_throttle_tolerance, arrival_tolerance_s=config.rate_limit_safety_margin / 2)  # fmt: skip
        book = InFlightBook(BufferBound(config.max_buffered_recipients, config.max_buffered_seconds, config.batch_max_recipients), config.max_buffered_bytes)
        batcher = Batcher(config.batch_max_recipients, config.batch_linger_ms / 1000, max_bytes=config.batch_max_bytes)
        transactional = transactional_id(config, None if worker is None else worker.index)
        kafka = KafkaIO(config, self._on_assign, self._on_revoke, self._on_lost, self._on_committed, transactional)
        replies = Replies(kafka, codec, config.reply_topic, config.dlq_topic, self.events, tracker.finish,
                          int(config.producer_options.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES)))  # fmt: skip
        finished: queue.SimpleQueue[list[Settled]] = queue.SimpleQueue()  # the sender's finished requests, to the main loop
        self.join, join_store = build_join(config, self.events)
        # no Redis, one process: the receipts receiver runs here, on the sender's in-process join
        hosted = bool(config.receipts_token) and not config.redis_url and worker is None
        self.receipts = ReceiptsApp(config, build_stores(config, join_store), self.metrics.registry) if hosted else None
        evidence = join_store.witnessed if join_store is not None and config.inflight_policy == RECEIPTS else no_evidence
        sender = Sender(CamsClient(config.cams_endpoint, self._http), credentials, self.limiter, self.ledger, policy, self.events, finished.put,
                        config.send_concurrency, owner, config.batch_max_recipients, config.batch_max_bytes, join=self.join)  # fmt: skip
        self.pipeline = Pipeline(kafka, intake, book, batcher, sender, replies, tracker, self.ledger, Policy(owner, config.inflight_policy, config.inflight_stale_s, config.inflight_receipts_wait_s),
                                 self.events, config.commit_interval_ms / 1000, finished, beat=self.health.beat, exactly_once=transactional is not None,
                                 evidence=evidence)  # fmt: skip
        self.handover = Handover(self.pipeline, config.drain_timeout_s, owner, log)
        self.pipeline.on_abort = self.handover.rewind
        if transactional is not None:
            log.info(
                "exactly-once: results, dead letters and offsets in one transaction per %d ms, transactional.id %s", config.commit_interval_ms, transactional
            )
        self.health.checks = {
            "partitions_assigned": lambda: bool(tracker.partitions),
            "limiter_backend": self.limiter.healthy,
            "ledger": self.ledger.healthy,
        }
        self.health.degraded["redis_slow"] = redis_watch.slow

    # the Kafka port's callbacks (they run inside ``consume``)
    def _on_assign(self, partitions: list) -> None:
        self.handover.on_assign(partitions)

    def _on_revoke(self, partitions: list) -> None:
        self.handover.on_revoke(partitions)

    def _on_lost(self, partitions: list) -> None:
        self.handover.on_lost(partitions)

    def _on_committed(self, positions: dict) -> None:
        self.pipeline.committed(positions)

    @property
    def close_abandoned(self) -> bool:
        """The consumer's close hung: exit without finalisation (see ``kafka.CLOSE_TIMEOUT_S``)."""
        return self.handover.close_abandoned

    def request_stop(self, *_: object) -> None:
        if not self.handover.stopping:
            log.info("stop requested: finishing buffered work (drain timeout %.0fs)", self.config.drain_timeout_s)
        self.handover.stopping = True

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
        pipeline = self.pipeline
        tune_interpreter()
        pipeline.sender.start()
        if self.receipts is not None:
            self.receipts.start()
        lower_thread_priority(self.config.intake_nice)
        cpu = PhaseClock(self.metrics.loop_cpu)
        try:
            pipeline.kafka.subscribe()
            log.info("consuming %s as group %s", self.config.request_topic, self.config.group_id)
            return self._loop(pipeline, cpu, on_tick)
        except Fenced as exc:
            log.error("exactly-once: the producer was fenced (%s): another process has this transactional id, or the producer failed; "
                      "abandoning the partitions uncommitted and exiting with code %d (restart me)", exc, FENCED_EXIT)  # fmt: skip
            self.handover.fenced()
            self._close_clients()
            return FENCED_EXIT
        finally:
            self.metrics.up.set(0)
            if server is not None:
                server.stop()

    def _loop(self, pipeline: Pipeline, cpu: PhaseClock, on_tick: Callable[[], None] | None) -> int:
        while not self.handover.stopping:
            cpu.charge("other")
            records = pipeline.consume()
            cpu.charge("consume")
            if records:
                pipeline.take_in(records)
                cpu.charge("intake")
            pipeline.step()
            cpu.charge("results")
            if on_tick is not None:
                on_tick()
        committed = self.handover.shutdown()
        self._close_clients()
        log.info("stopped: %d partitions committed", committed)
        return 0

    def _close_clients(self) -> None:
        self.join.close()
        if self.receipts is not None:
            self.receipts.stop()
        self.limiter.close()
        self.ledger.close()
        self._http.close()
