"""reply: results to the reply topic, undecodable input to the dead-letter topic.

A source offset is finished (``on_durable``) only when the broker has acknowledged the record
that answers it. A record the broker failed to take is kept and produced again by
``retry_failed`` (the main loop calls it), so a failure blocks the commit and loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from datetime import datetime, timezone

from .codec import Codec
from .kafka_io import KafkaIO
from .metrics import Metrics
from .models import SendResult, Source

log = logging.getLogger("consumer.reply")

Headers = list[tuple[str, bytes]]
DLQ_HEADER_PREFIX = "chatapp.dlq."


class Replies:
    def __init__(self, kafka: KafkaIO, codec: Codec, reply_topic: str, dlq_topic: str, metrics: Metrics, on_durable: Callable[[Source], None]):
        self._kafka = kafka
        self._codec = codec
        self._reply_topic = reply_topic
        self._dlq_topic = dlq_topic
        self._metrics = metrics
        self._on_durable = on_durable
        self._results_by_status: dict[str, Any] = {}
        self._failed: list[tuple[str, bytes, bytes | None, Headers | None, Source, str | None]] = []
        self.outstanding = 0

    def _results_counter(self, status: str) -> Any:
        counter = self._results_by_status.get(status)
        if counter is None:
            counter = self._results_by_status[status] = self._metrics.results.labels(status)
        return counter

    def result(self, source: Source, result: SendResult) -> None:
        headers = [("correlation-id", source.correlation_id)] if source.correlation_id is not None else None
        value = self._codec.encode_result(result)
        self._send(source.reply_to or self._reply_topic, value, result.request_id.encode(), headers, source, result.status.value)

    def dead_letter(self, source: Source, value: bytes | None, key: bytes | None, headers: Headers | None, reason: str, detail: str) -> None:
        extra = [
            (DLQ_HEADER_PREFIX + "reason", reason.encode()),
            (DLQ_HEADER_PREFIX + "error", detail.encode("utf-8", "replace")[:1000]),
            (DLQ_HEADER_PREFIX + "topic", source.topic.encode()),
            (DLQ_HEADER_PREFIX + "partition", str(source.partition).encode()),
            (DLQ_HEADER_PREFIX + "offset", str(source.offset).encode()),
            (DLQ_HEADER_PREFIX + "timestamp", datetime.now(timezone.utc).isoformat(timespec="milliseconds").encode()),
        ]
        log.warning("dead-lettered %s[%d]@%d: %s: %s", source.topic, source.partition, source.offset, reason, detail[:200])
        self._metrics.dlq.labels(reason).inc()
        self._send(self._dlq_topic, value or b"", key, (headers or []) + extra, source, None)

    def _send(self, topic: str, value: bytes, key: bytes | None, headers: Headers | None, source: Source, status: str | None) -> None:
        def delivered(err, msg) -> None:
            self.outstanding -= 1
            if err is not None:
                log.warning("delivery to %s failed, will retry: %s", topic, err)
                self._metrics.reply_errors.inc()
                self._failed.append((topic, value, key, headers, source, status))
                return
            if status is not None:
                self._results_counter(status).inc()
                if source.timestamp_ms > 0:
                    self._metrics.end_to_end.observe(max(0.0, time.time() - source.timestamp_ms / 1000))
            self._on_durable(source)

        self.outstanding += 1
        self._kafka.produce(topic, value, key, headers, delivered)

    def retry_failed(self) -> None:
        failed, self._failed = self._failed, []
        for topic, value, key, headers, source, status in failed:
            self._send(topic, value, key, headers, source, status)
