"""reply: results to the reply topic, undecodable input to the dead-letter topic.

A source offset is finished (``on_durable``, given the sources answered) only when the broker
has acknowledged the record that answers it. Records are produced in groups (the requests of a
``Settled`` group share one encoding of what they share, and one ``_Answers`` hears their
delivery reports); a group is booked once all of its records are acknowledged, by
``serve``/``flush`` (offsets finished, metrics counted once per round instead of once per
record). A record the broker failed to take is produced again on the next ``serve``, so a
failure blocks the commit and loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .codec import Codec
from .kafka_io import KafkaIO
from .metrics import Metrics
from .models import SendResult, Settled, Source, Status

log = logging.getLogger("consumer.reply")

Headers = list[tuple[str, bytes]]
DLQ_HEADER_PREFIX = "chatapp.dlq."
_STATUS_TEXT = {status: status.value for status in Status}  # a dict lookup: Enum.value is a descriptor call


class _Answers:
    """The records answering ``sources`` (one each), acknowledged together: librdkafka calls it
    with the delivery report of each of them."""

    __slots__ = ("_replies", "sources", "status", "waiting")

    def __init__(self, replies: Replies, sources: list[Source], status: str | None):
        self._replies = replies
        self.sources = sources
        self.status = status
        """The results' status (None for dead letters)."""
        self.waiting = len(sources)

    def __call__(self, err: Any, msg: Any) -> None:
        """A delivery report (from inside poll/flush): only noted here."""
        replies = self._replies
        replies.outstanding -= 1
        if err is None:
            self.waiting -= 1
            if self.waiting == 0:
                replies._acked.append(self)
            return
        log.warning("delivery to %s failed, will retry: %s", msg.topic(), err)
        replies._metrics.reply_errors.inc()
        replies._failed.append((msg.topic(), msg.value(), msg.key(), msg.headers(), self))


class Replies:
    def __init__(self, kafka: KafkaIO, codec: Codec, reply_topic: str, dlq_topic: str, metrics: Metrics, on_durable: Callable[[list[Source]], None]):
        self._kafka = kafka
        self._codec = codec
        self._reply_topic = reply_topic
        self._dlq_topic = dlq_topic
        self._metrics = metrics
        self._on_durable = on_durable
        self._results_by_status: dict[str, Any] = {}
        self._acked: list[_Answers] = []
        self._failed: list[tuple[str, bytes, Any, Headers | None, _Answers]] = []
        self.outstanding = 0
        """Records produced and not yet acknowledged (or failed)."""

    def _results_counter(self, status: str) -> Any:
        counter = self._results_by_status.get(status)
        if counter is None:
            counter = self._results_by_status[status] = self._metrics.results.labels(status)
        return counter

    def settled(self, group: Settled) -> None:
        """Publish the result of each of the group's requests to its source's reply topic, keyed
        by its request id."""
        requests = group.requests
        answers = _Answers(self, [request.source for request in requests], _STATUS_TEXT[group.outcome.status])
        produce, reply_topic = self._kafka.produce, self._reply_topic
        self.outstanding += len(requests)
        for request, value in zip(requests, self._codec.encode_settled(group)):
            source = request.source
            headers = None if source.correlation_id is None else [("correlation-id", source.correlation_id)]
            produce(source.reply_to or reply_topic, value, request.request_id, headers, answers)

    def result(self, source: Source, result: SendResult) -> None:
        """Publish one result (of a request answered on its own: rejected, expired, a duplicate)."""
        headers = None if source.correlation_id is None else [("correlation-id", source.correlation_id)]
        self._produce(source.reply_to or self._reply_topic, self._codec.encode_result(result), result.request_id, headers,
                      _Answers(self, [source], _STATUS_TEXT[result.status]))  # fmt: skip

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
        self._produce(self._dlq_topic, value or b"", key, (headers or []) + extra, _Answers(self, [source], None))

    def _produce(self, topic: str, value: bytes, key: Any, headers: Headers | None, answers: _Answers) -> None:
        self.outstanding += 1
        self._kafka.produce(topic, value, key, headers, answers)

    def serve(self, wait_s: float = 0.0) -> None:
        """Serve delivery reports (waiting up to ``wait_s`` for one), book the acknowledged
        groups and produce again the records the broker refused."""
        self._kafka.serve_deliveries(wait_s)
        self._book()
        failed, self._failed = self._failed, []
        for record in failed:
            self._produce(*record)

    def flush(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for every record produced to be acknowledged, and book them."""
        self._kafka.flush(timeout_s)
        self._book()

    def _book(self) -> None:
        acked, self._acked = self._acked, []
        if not acked:
            return
        now = time.time()
        counts: dict[str, int] = {}
        ages: list[float] = []
        for answers in acked:
            sources = answers.sources
            self._on_durable(sources)
            status = answers.status
            if status is not None:
                counts[status] = counts.get(status, 0) + len(sources)
                # a producer's clock ahead of ours counts as no wait
                ages += [max(0.0, now - source.timestamp_ms / 1000) for source in sources if source.timestamp_ms > 0]
        for status, count in counts.items():
            self._results_counter(status).inc(count)
        self._metrics.end_to_end.observe_all(ages)
