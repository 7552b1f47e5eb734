"""The receipts receiver's composition: ``chatapp-consumer receipts`` (its own process, stores in
Redis), or hosted by ``run`` beside the sender when there is no Redis (one process, stores in
memory, the join shared with the sender in process).

``ReceiptsApp`` builds the receiver on a ``Stores`` pair and a producer of its own, serves the
callback URL on ``CHATAPP_RECEIPTS_PORT``; ``run`` also serves ``/metrics``, ``/healthz`` and
``/readyz`` on ``CHATAPP_METRICS_PORT`` and waits for SIGTERM/SIGINT. Stopping closes the port
first (no push is taken), then flushes the producer.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import NamedTuple

from prometheus_client import CollectorRegistry

from ..config import Config
from ..kafka.acked import GRACE_S, AckedProducer
from ..kafka.scan import ScanTimeout, TopicScan
from ..limiter import connect
from ..metrics import Health, StatusServer
from .dedupe import MemorySeen, RedisSeen, SeenStore
from .encode import StatusEncoder
from .join import JoinStore, MemoryJoin, RedisJoin
from .metrics import ReceiptMetrics
from .receiver import Receiver
from .recover import Recovery
from .server import ReceiptsServer

log = logging.getLogger("consumer.receipts")

REDIS_TIMEOUT_S = 2.0


class Stores(NamedTuple):
    join: JoinStore
    seen: SeenStore


def redis_join(config: Config) -> RedisJoin:
    assert config.redis_url is not None
    return RedisJoin(connect(config.redis_url, REDIS_TIMEOUT_S), config.receipts_retention_s, config.redis_key_prefix)


def build_stores(config: Config, join: JoinStore | None = None) -> Stores:
    """Redis stores when Redis is configured; else memory ones (``join``: the sender's, in process)."""
    if config.redis_url:
        seen = RedisSeen(connect(config.redis_url, REDIS_TIMEOUT_S), config.receipts_retention_s, config.receipts_claim_s, config.redis_key_prefix)
        return Stores(join or redis_join(config), seen)
    return Stores(join or MemoryJoin(config.receipts_retention_s), MemorySeen(config.receipts_retention_s, config.receipts_claim_s))


def build_encoder(config: Config) -> StatusEncoder:
    subject = f"{config.status_topic}-value"
    if not config.schema_registry_url:
        return StatusEncoder(subject)
    from ..kafka.registry import registry_functions  # only when a registry is configured

    return StatusEncoder(subject, registry_functions(config.schema_registry_url)[1])


class ReceiptsApp:
    def __init__(self, config: Config, stores: Stores, registry: CollectorRegistry | None = None):
        assert config.receipts_token, "checked by the command"
        self.config = config
        self.stores = stores
        self.metrics = ReceiptMetrics(registry)
        self.health = Health()
        self.health.checks = {"seen_store": stores.seen.healthy}
        self._producer = AckedProducer(config, config.status_topic, config.receipts_publish_timeout_s)
        self._scan = TopicScan(config, config.status_topic)
        encoder = build_encoder(config)
        recovery = Recovery(self._scan, encoder.header_bytes, config.receipts_claim_s / 2)
        # a record's fate is known publish timeout + grace after it is produced: before the claim can go stale
        within_s = config.receipts_claim_s - config.receipts_publish_timeout_s - GRACE_S
        receiver = Receiver(stores.join, stores.seen, self._producer, encoder, self.metrics, recovery, within_s)
        self.server = ReceiptsServer(config.receipts_host, config.receipts_port, config.receipts_token, receiver, self.metrics, config.receipts_max_body_bytes)
        self._stop = threading.Event()

    def start(self) -> ReceiptsApp:
        # where the status topic ends now: every claim's mark is at or before where its statuses land
        try:
            self._producer.seed_ends(self._scan.ends(self.config.receipts_publish_timeout_s))
        except ScanTimeout as exc:  # safe all the same: a partition no mark names is read from its beginning
            log.warning("status topic's ends not read (%s): a dead receiver's claims will be looked for from the topic's beginning", exc)
        self.server.start()
        self.metrics.up.set(1)
        log.info("receipts receiver on port %d (POST /chatapp/status/<token>), statuses to %s", self.server.port, self.config.status_topic)
        return self

    def stop(self) -> None:
        self.server.stop()
        left = self._producer.close()
        if left:
            log.warning("%d status records not acknowledged at shutdown", left)
        self.stores.seen.close()
        self.stores.join.close()
        self.metrics.up.set(0)

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> int:
        """The ``receipts`` command: serve until SIGTERM/SIGINT."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        status = StatusServer(self.config.metrics_host, self.config.metrics_port, self.metrics, self.health).start()
        self.start()
        try:
            while not self._stop.wait(1.0):
                self.health.beat()
        finally:
            self.stop()
            status.stop()
        return 0
