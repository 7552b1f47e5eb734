"""reply: results to the reply topic, undecodable input to the dead-letter topic.

A source offset is finished (``on_durable``, given the sources answered) only when the broker
has acknowledged the record that answers it. Acknowledgements are collected as librdkafka
reports them and booked together by ``serve``/``flush`` (offsets finished, metrics counted once
per round instead of once per record). The records of a ``Settled`` group share one encoding of
what their results share and one ``_Answers`` object as their delivery callback, which tells
its records apart by their keys. A record the broker failed to take is produced again on the
next ``serve``, so a failure blocks the commit of its own offset and loses nothing.
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


def _reply_headers(source: Source) -> Headers | None:
    return None if source.correlation_id is None else [("correlation-id", source.correlation_id)]


class _Answers:
    """The records answering some sources, one each, told apart by the record's key (a
    request id: unique within a group): librdkafka calls it with each record's delivery report.
    A report carries the record's topic, key and value but not its headers: a refused result
    gets them again from its source, a refused dead letter from ``letter_headers``."""

    __slots__ = ("_replies", "_sources", "status", "letter_headers")

    def __init__(self, replies: Replies, sources: dict[bytes | None, Source], status: str | None, letter_headers: Headers | None = None):
        self._replies = replies
        self._sources = sources
        self.status = status
        """The results' status (None for a dead letter)."""
        self.letter_headers = letter_headers

    def __call__(self, err: Any, msg: Any) -> None:
        """A delivery report (from inside poll/flush): only noted here."""
        replies = self._replies
        replies.outstanding -= 1
        key = msg.key()
        if err is None:
            replies._acked.append((self._sources.pop(key), self.status))
            return
        log.warning("delivery to %s failed, will retry: %s", msg.topic(), err)
        replies._metrics.reply_errors.inc()
        headers = self.letter_headers if self.status is None else _reply_headers(self._sources[key])
        replies._failed.append((msg.topic(), msg.value(), key, headers, self))


class Replies:
    def __init__(self, kafka: KafkaIO, codec: Codec, reply_topic: str, dlq_topic: str, metrics: Metrics, on_durable: Callable[[list[Source]], None]):
        self._kafka = kafka
        self._codec = codec
        self._reply_topic = reply_topic
        self._dlq_topic = dlq_topic
        self._metrics = metrics
        self._on_durable = on_durable
        self._results_by_status: dict[str, Any] = {}
        self._acked: list[tuple[Source, str | None]] = []
        """Sources whose answer the broker acknowledged, with the answer's status (None: a dead letter)."""
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
        sources: dict[bytes | None, Source] = {}
        answers = _Answers(self, sources, _STATUS_TEXT[group.outcome.status])
        produce, reply_topic = self._kafka.produce, self._reply_topic
        self.outstanding += len(requests)
        for request, value in zip(requests, self._codec.encode_settled(group)):
            source = sources[request.request_id.encode()] = request.source  # a delivery report gives the key as bytes
            produce(source.reply_to or reply_topic, value, request.request_id, _reply_headers(source), answers)

    def result(self, source: Source, result: SendResult) -> None:
        """Publish one result (of a request answered on its own: rejected, expired, a duplicate)."""
        key = result.request_id.encode()
        self._produce(source.reply_to or self._reply_topic, self._codec.encode_result(result), key, _reply_headers(source),
                      _Answers(self, {key: source}, _STATUS_TEXT[result.status]))  # fmt: skip

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
        headers = (headers or []) + extra
        self._produce(self._dlq_topic, value or b"", key, headers, _Answers(self, {key: source}, None, headers))

    def _produce(self, topic: str, value: bytes, key: Any, headers: Headers | None, answers: _Answers) -> None:
        self.outstanding += 1
        self._kafka.produce(topic, value, key, headers, answers)

    def serve(self, wait_s: float = 0.0) -> None:
        """Serve delivery reports (waiting up to ``wait_s`` for one), book the acknowledged
        records and produce again those the broker refused."""
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
        self._on_durable([source for source, _ in acked])
        now = time.time()
        counts: dict[str, int] = {}
        ages: list[float] = []
        for source, status in acked:
            if status is not None:
                counts[status] = counts.get(status, 0) + 1
                if source.timestamp_ms > 0:  # a producer's clock ahead of ours counts as no wait
                    ages.append(max(0.0, now - source.timestamp_ms / 1000))
        for status, count in counts.items():
            self._results_counter(status).inc(count)
        self._metrics.end_to_end.observe_all(ages)
