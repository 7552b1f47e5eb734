"""reply: results to the reply topic, undecodable input to the dead-letter topic.

A source offset is finished (``on_durable``, given the sources of a round) only when the broker
has acknowledged the record that answers it. Acknowledgements are collected as librdkafka
reports them and booked together by ``serve``/``flush`` (offsets finished, metrics counted once
per round instead of once per record). A record the broker failed to take is kept and produced
again on the next ``serve``, so a failure blocks the commit and loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from functools import partial
from typing import Any

from .codec import Codec
from .kafka_io import KafkaIO
from .metrics import Metrics
from .models import SendResult, Source, Status

log = logging.getLogger("consumer.reply")

Headers = list[tuple[str, bytes]]
Record = tuple[str, bytes, bytes | None, Headers | None, Source, str | None]
"""(topic, value, key, headers, source, status): one record produced, and what it answers."""
DLQ_HEADER_PREFIX = "chatapp.dlq."
_STATUS_TEXT = {status: status.value for status in Status}  # a dict lookup: Enum.value is a descriptor call


class Replies:
    def __init__(self, kafka: KafkaIO, codec: Codec, reply_topic: str, dlq_topic: str, metrics: Metrics, on_durable: Callable[[list[Source]], None]):
        self._kafka = kafka
        self._codec = codec
        self._reply_topic = reply_topic
        self._dlq_topic = dlq_topic
        self._metrics = metrics
        self._on_durable = on_durable
        self._results_by_status: dict[str, Any] = {}
        self._acked: list[Record] = []
        self._failed: list[Record] = []
        self.outstanding = 0
        """Records produced and not yet acknowledged (or failed)."""

    def _results_counter(self, status: str) -> Any:
        counter = self._results_by_status.get(status)
        if counter is None:
            counter = self._results_by_status[status] = self._metrics.results.labels(status)
        return counter

    def result(self, source: Source, result: SendResult) -> None:
        self.results([(source, result)])

    def results(self, answers: Iterable[tuple[Source, SendResult]]) -> None:
        """Publish each result to its source's reply topic, keyed by its request id."""
        encode, send, reply_topic = self._codec.encode_result, self._send, self._reply_topic
        for source, result in answers:
            headers = [("correlation-id", source.correlation_id)] if source.correlation_id is not None else None
            send((source.reply_to or reply_topic, encode(result), result.request_id.encode(), headers, source, _STATUS_TEXT[result.status]))

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
        self._send((self._dlq_topic, value or b"", key, (headers or []) + extra, source, None))

    def _send(self, record: Record) -> None:
        self.outstanding += 1
        self._kafka.produce(record[0], record[1], record[2], record[3], partial(self._delivered, record))

    def _delivered(self, record: Record, err: Any, msg: Any) -> None:
        """librdkafka's delivery report (from inside poll/flush): only noted here."""
        if err is None:
            self._acked.append(record)
            return
        self.outstanding -= 1
        log.warning("delivery to %s failed, will retry: %s", record[0], err)
        self._metrics.reply_errors.inc()
        self._failed.append(record)

    def serve(self, wait_s: float = 0.0) -> None:
        """Serve delivery reports (waiting up to ``wait_s`` for one), book the acknowledged
        records and produce again those the broker refused."""
        self._kafka.serve_deliveries(wait_s)
        self._book()
        failed, self._failed = self._failed, []
        for record in failed:
            self._send(record)

    def flush(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for every record produced to be acknowledged, and book them."""
        self._kafka.flush(timeout_s)
        self._book()

    def _book(self) -> None:
        acked, self._acked = self._acked, []
        if not acked:
            return
        self.outstanding -= len(acked)
        now = time.time()
        sources = [record[4] for record in acked]
        self._on_durable(sources)
        counts: dict[str, int] = {}
        ages: list[float] = []
        for source, record in zip(sources, acked):
            status = record[5]
            if status is not None:
                counts[status] = counts.get(status, 0) + 1
                if source.timestamp_ms > 0:  # a producer's clock ahead of ours counts as no wait
                    ages.append(max(0.0, now - source.timestamp_ms / 1000))
        for status, count in counts.items():
            self._results_counter(status).inc(count)
        self._metrics.end_to_end.observe_all(ages)
