"""reply: results to the reply topic, undecodable input to the dead-letter topic.

A source offset is finished (``on_durable``, given the sources answered) only when the broker
has acknowledged the record that answers it. Acknowledgements are collected as librdkafka
reports them and booked together by ``serve``/``flush`` (offsets finished, one
``results.acknowledged`` event per round instead of one per record). The records of a ``Settled`` group share one encoding of
what their results share and one ``_Answers`` object as their delivery callback, which tells
its records apart by their keys.

Every record is bounded by construction: echoed ids, messages, correlation ids and headers are
capped, and a dead letter's copy of the original value is cut to what the producer's
``message.max.bytes`` leaves room for (header ``chatapp.dlq.truncated`` gives the original
size; the original stays at the source position the ``chatapp.dlq.topic/partition/offset``
headers name). A record that still fails never blocks its offset for good:

| failure                                   | what is produced instead                                  |
|-------------------------------------------|-----------------------------------------------------------|
| refused for its size (producer or broker) | a result: the same status to the configured reply topic, code ``Chatapp.ResultTooLarge``; a dead letter: the headers alone, ``chatapp.dlq.dropped`` |
| a request's ``reply-to`` topic failed ``REPLY_TO_ATTEMPTS`` times | the same status to the configured reply topic, code ``Chatapp.ReplyToFailed`` |
| anything else (broker down, the configured topic missing) | the same record again, after a backoff of up to ``RETRY_MAX_S`` |

Only the last one holds the commit back, and only while the configured topics cannot be written:
an outage, shown by ``chatapp_committed_lag`` and its alert.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .codec import Codec
from .events import Events
from .kafka import DEFAULT_MESSAGE_MAX_BYTES, DeliveredRecord, Headers, KafkaPort, ReceivedHeaders, too_large
from .kafka.records import DLQ_HEADER_PREFIX
from .models import SendResult, Settled, Source, Status

_STATUS_TEXT = {status: status.value for status in Status}  # a dict lookup: Enum.value is a descriptor call

MAX_ECHOED_ID_CHARS = 256
"""A result echoes at most this much of an (invalid, over-long) request id, in its key and value."""
MAX_MESSAGE_CHARS = 2000
"""A result's ``message`` is cut to this."""
MAX_ECHOED_HEADER_BYTES = 16 * 1024
"""A dead letter echoes the original's headers up to this many bytes (names and values)."""
MAX_LETTER_KEY_BYTES = 4096
RECORD_OVERHEAD_BYTES = 8 * 1024
"""Room kept under ``message.max.bytes`` for the record's framing and the service's own headers."""
REPLY_TO_ATTEMPTS = 2
"""Failed deliveries to a request's own ``reply-to`` topic before its result goes to the configured one."""
RETRY_MAX_S = 5.0
RESULT_TOO_LARGE = "Chatapp.ResultTooLarge"
REPLY_TO_FAILED = "Chatapp.ReplyToFailed"


def _reply_headers(source: Source) -> Headers | None:
    return None if source.correlation_id is None else [("correlation-id", source.correlation_id)]


def _size(headers: Headers) -> int:
    return sum(len(name) + len(value) for name, value in headers)


def _echoable(headers: ReceivedHeaders | None) -> tuple[Headers, int]:
    """The original's headers a dead letter may echo (none under the service's own prefix, at
    most ``MAX_ECHOED_HEADER_BYTES``), and how many were left out."""
    kept: Headers = []
    room, dropped = MAX_ECHOED_HEADER_BYTES, 0
    for name, value in headers or ():
        value = value or b""
        if name.startswith(DLQ_HEADER_PREFIX) or len(name) + len(value) > room:
            dropped += 1
            continue
        kept.append((name, value))
        room -= len(name) + len(value)
    return kept, dropped


def bounded(result: SendResult) -> SendResult:
    """``result`` with its request id and message cut to what a result may echo."""
    if len(result.request_id) <= MAX_ECHOED_ID_CHARS and (result.message is None or len(result.message) <= MAX_MESSAGE_CHARS):
        return result
    message = result.message if result.message is None else result.message[:MAX_MESSAGE_CHARS]
    return result._replace(request_id=result.request_id[:MAX_ECHOED_ID_CHARS], message=message)


class _Answers:
    """The records answering some sources, one each, told apart by the record's key (a
    request id: unique within a group): librdkafka calls it with each record's delivery report.
    A report carries the record's topic, key and value but not its headers: a refused result
    gets them again from its source, a refused dead letter from ``letter_headers``; a result
    replacing a refused one is made from ``answer`` (the group, or the one result)."""

    __slots__ = ("_replies", "sources", "status", "letter_headers", "answer", "failures", "replacement", "size", "generation")

    def __init__(self, replies: Replies, sources: dict[bytes | None, Source], status: str | None, answer: Settled | SendResult | None = None,
                 letter_headers: Headers | None = None, replacement: bool = False):  # fmt: skip
        self._replies = replies
        self.sources = sources
        self.status = status
        """The results' status (None for a dead letter)."""
        self.answer = answer
        self.letter_headers = letter_headers
        self.failures: dict[bytes | None, int] | None = None
        """Failed deliveries so far, by key (made at the first failure)."""
        self.replacement = replacement
        """These records already replace refused ones: they are only ever produced again as they are."""
        self.size = 0
        """Bytes of the one record of a request answered at intake (counted in ``Replies.intake_bytes`` until it is done)."""
        self.generation = replies.generation

    def __call__(self, err: object | None, msg: DeliveredRecord) -> None:
        """A delivery report (from inside poll/flush, or from ``produce`` itself): only noted here."""
        replies = self._replies
        if self.generation != replies.generation:  # a record of an aborted transaction: forgotten
            return
        replies.outstanding -= 1
        key = msg.key()
        if err is None:
            replies._acked.append((self.sources.pop(key), self.status))
            replies.intake_bytes -= self.size
            return
        failures = self.failures = self.failures or {}
        failures[key] = failures.get(key, 0) + 1
        replies._refused(self, msg.topic(), msg.value() or b"", key, err, failures[key])  # a report may give an empty value as None

    def result(self, key: bytes | None) -> SendResult:
        """The result the record of ``key`` carries."""
        answer = self.answer
        if isinstance(answer, SendResult):
            return answer
        assert answer is not None, "a dead letter carries no result"
        return next(answer.result(request) for request in answer.requests if request.request_id.encode() == key)


class Replies:
    def __init__(self, kafka: KafkaPort, codec: Codec, reply_topic: str, dlq_topic: str, events: Events, on_durable: Callable[[list[Source]], None],
                 max_record_bytes: int = DEFAULT_MESSAGE_MAX_BYTES, clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self._kafka = kafka
        self._clock = clock
        self._codec = codec
        self._reply_topic = reply_topic
        self._dlq_topic = dlq_topic
        self._events = events
        self._on_durable = on_durable
        self._record_room = max_record_bytes - RECORD_OVERHEAD_BYTES
        self._acked: list[tuple[Source, str | None]] = []
        """Sources whose answer the broker acknowledged, with the answer's status (None: a dead letter)."""
        self._failed: list[tuple[float, tuple[str, bytes, Any, Headers | None, _Answers]]] = []
        """Records to produce again as they are, each with the time it may go again."""
        self.outstanding = 0
        """Records produced and not yet acknowledged (or failed)."""
        self.generation = 0
        """Records produced before the last ``discard`` (another generation) are forgotten."""
        self.intake_bytes = 0
        """Bytes of the records answering requests at intake (rejected, expired, duplicates, dead
        letters) until the broker acknowledges them: they hold no buffer space, and back-pressure
        counts them so that producers cannot fill the memory with them."""

    def settled(self, group: Settled) -> None:
        """Publish the result of each of the group's requests to its source's reply topic, keyed
        by its request id."""
        requests = group.requests
        sources: dict[bytes | None, Source] = {}
        answers = _Answers(self, sources, _STATUS_TEXT[group.outcome.status], group)
        produce, reply_topic = self._kafka.produce, self._reply_topic
        self.outstanding += len(requests)
        for request, value in zip(requests, self._codec.encode_settled(group)):
            source = sources[request.request_id.encode()] = request.source  # a delivery report gives the key as bytes
            produce(source.reply_to or reply_topic, value, request.request_id, _reply_headers(source), answers)

    def result(self, source: Source, result: SendResult, topic: str | None = None) -> None:
        """Publish one result (of a request answered on its own: rejected, expired, a duplicate),
        to ``topic`` (default: the source's reply topic)."""
        result = bounded(result)
        key = result.request_id.encode()
        self._produce_counted(topic or source.reply_to or self._reply_topic, self._codec.encode_result(result), key, _reply_headers(source),
                              _Answers(self, {key: source}, _STATUS_TEXT[result.status], result, replacement=topic is not None))  # fmt: skip

    def dead_letter(self, source: Source, value: bytes | None, key: bytes | None, headers: ReceivedHeaders | None, reason: str, detail: str) -> None:
        extra = [
            (DLQ_HEADER_PREFIX + "reason", reason.encode()),
            (DLQ_HEADER_PREFIX + "error", detail.encode("utf-8", "replace")[:1000]),
            (DLQ_HEADER_PREFIX + "topic", source.topic.encode()),
            (DLQ_HEADER_PREFIX + "partition", str(source.partition).encode()),
            (DLQ_HEADER_PREFIX + "offset", str(source.offset).encode()),
            (DLQ_HEADER_PREFIX + "timestamp", datetime.now(UTC).isoformat(timespec="milliseconds").encode()),
        ]
        self._events.emit("record.dead_lettered", source=source, reason=reason, detail=detail)
        echoed, dropped = _echoable(headers)
        if dropped:
            extra.append((DLQ_HEADER_PREFIX + "headers-dropped", str(dropped).encode()))
        key = key if key is None else key[:MAX_LETTER_KEY_BYTES]
        value = value or b""
        room = self._record_room - len(key or b"") - _size(echoed) - _size(extra) - 64
        if len(value) > room:
            extra.append((DLQ_HEADER_PREFIX + "truncated", str(len(value)).encode()))
            value = value[: max(0, room)]
        letter = echoed + extra
        self._produce_counted(self._dlq_topic, value, key, letter, _Answers(self, {key: source}, None, letter_headers=letter))

    def _produce(self, topic: str, value: bytes, key: Any, headers: Headers | None, answers: _Answers) -> None:
        self.outstanding += 1
        self._kafka.produce(topic, value, key, headers, answers)

    def _produce_counted(self, topic: str, value: bytes, key: bytes | None, headers: Headers | None, answers: _Answers) -> None:
        """``_produce`` a record answering a request at intake, its bytes counted in ``intake_bytes``."""
        answers.size = len(value) + len(key or b"") + _size(headers or [])
        self.intake_bytes += answers.size
        self._produce(topic, value, key, headers, answers)

    def _refused(self, answers: _Answers, topic: str, value: bytes, key: bytes | None, err: Any, failures: int) -> None:
        """A record the producer or the broker did not take: replaced, or produced again later (see the module's table)."""
        source = answers.sources[key]
        size = too_large(err)
        headers: Headers | None
        if answers.status is None:  # a dead letter
            if size and not answers.replacement:
                answers.sources.pop(key)
                self.intake_bytes -= answers.size
                self._warn(topic, err, "the dead letter's headers go alone")
                headers = [h for h in answers.letter_headers or () if h[0].startswith(DLQ_HEADER_PREFIX)]
                headers.append((DLQ_HEADER_PREFIX + "dropped", f"{len(value)} bytes refused: {err}".encode()[:500]))
                self._produce_counted(self._dlq_topic, b"", key, headers, _Answers(self, {key: source}, None, letter_headers=headers, replacement=True))
                return
            headers = answers.letter_headers
        else:
            reply_to_failed = topic != self._reply_topic and failures >= REPLY_TO_ATTEMPTS
            if (size or reply_to_failed) and not answers.replacement:
                answers.sources.pop(key)
                self.intake_bytes -= answers.size
                result = answers.result(key)
                code, why = (RESULT_TOO_LARGE, "the result was too large") if size else (REPLY_TO_FAILED, f"reply-to topic {topic[:249]!r} failed")
                self._warn(topic, err, f"results go to {self._reply_topic} with code {code}")
                message = f"{why} ({err}); its code was {result.code}: {result.message}"
                self.result(source, result._replace(code=code, message=message), self._reply_topic)
                return
            headers = _reply_headers(source)
        self._warn(topic, err, "will retry")
        self._failed.append((self._clock() + min(RETRY_MAX_S, 0.1 * 2 ** min(failures, 10)), (topic, value, key, headers, answers)))

    def _warn(self, topic: str, err: object, then: str) -> None:
        self._events.emit("delivery.failed", topic=topic, error=err, then=then)

    def serve(self, wait_s: float = 0.0) -> None:
        """Serve delivery reports (waiting up to ``wait_s`` for one), book the acknowledged
        records and produce again those the broker refused."""
        self._kafka.serve_deliveries(wait_s)
        self._book()
        if self._failed:
            now = self._clock()
            due = [record for at, record in self._failed if at <= now]
            if due:
                self._failed = [(at, record) for at, record in self._failed if at > now]
                for record in due:
                    self._produce(*record)

    def flush(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for every record produced to be acknowledged, and book them."""
        self._kafka.flush(timeout_s)
        self._book()

    def discard(self) -> None:
        """Exactly-once mode, after an aborted transaction: forget its records (their delivery
        reports, now or later, are ignored; none is produced again; their sources are read again)."""
        self.generation += 1
        self.outstanding = self.intake_bytes = 0
        self._acked.clear()
        self._failed.clear()

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
        self._events.emit("results.acknowledged", counts=counts, ages_s=ages)
