"""consumer.reply.Replies against a recording stand-in for KafkaIO: an offset is finished only
once the record answering it is acknowledged, refused records are produced again, and metrics
count what was acknowledged."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

from consumer.codec import PlainAvroCodec
from consumer.metrics import Metrics
from consumer.models import SendResult, Source, Status
from consumer.reply import Replies
from tests.fixtures.observed import observed


class DeliveredMessage:
    """What confluent-kafka hands a delivery report: the record's topic, key and value, and no
    headers (it does not carry them into delivery reports)."""

    def __init__(self, record: tuple[str, bytes, Any, Any]) -> None:
        self._record = record

    def topic(self) -> str:
        return self._record[0]

    def value(self) -> bytes:
        return self._record[1]

    def key(self) -> Any:
        key = self._record[2]
        return key.encode() if isinstance(key, str) else key

    def headers(self) -> Any:
        return None


class RecordingKafka:
    """produce() keeps the delivery callbacks; ``errors`` decides what the broker answers."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes, Any, Any]] = []
        self._pending: list[Any] = []
        self.errors: dict[int, KafkaError] = {}  # index in ``produced`` -> error for its delivery report

    def produce(self, topic: str, value: bytes, key: Any, headers: Any, on_delivery: Any) -> None:
        self.produced.append((topic, value, key, headers))
        self._pending.append((len(self.produced) - 1, on_delivery))

    def serve_deliveries(self, timeout: float = 0.0) -> int:
        pending, self._pending = self._pending, []
        for index, callback in pending:
            callback(self.errors.pop(index, None), DeliveredMessage(self.produced[index]))
        return len(pending)

    flush = serve_deliveries


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CLOCK = Clock()
BROKER_DOWN = KafkaError(KafkaError._TRANSPORT, "broker down")


def _setup() -> tuple[RecordingKafka, Replies, list[Source], Metrics]:
    kafka, metrics, durable = RecordingKafka(), Metrics(), []
    replies = Replies(kafka, PlainAvroCodec(), "replies", "dlq", observed(metrics), durable.extend, clock=CLOCK)  # type: ignore[arg-type]
    return kafka, replies, durable, metrics


def _source(offset: int, timestamp_ms: int = 0) -> Source:
    return Source("requests", 0, offset, timestamp_ms, b"corr" if offset % 2 else None)


def test_offsets_finish_only_when_acknowledged_and_refused_records_are_produced_again() -> None:
    kafka, replies, durable, metrics = _setup()
    replies.result(_source(0), SendResult("r0", Status.SENT, "OK", None, 1))
    replies.result(_source(1), SendResult("r1", Status.FAILED, "X", "m", 1))
    replies.dead_letter(_source(2), b"junk", b"k2", [("trace", b"t")], "not-avro", "bad")
    assert durable == [] and replies.outstanding == 3
    kafka.errors[1] = BROKER_DOWN
    kafka.errors[2] = BROKER_DOWN
    replies.serve()
    assert [s.offset for s in durable] == [0]
    assert len(kafka.produced) == 3  # not at once: after a backoff
    CLOCK.now += 1.0
    replies.serve()
    # produced again as they were, headers included (a delivery report does not carry them)
    assert len(kafka.produced) == 5 and kafka.produced[3:] == kafka.produced[1:3]
    assert kafka.produced[1][3] == [("correlation-id", b"corr")]
    assert [name for name, _ in kafka.produced[4][3]][:2] == ["trace", "chatapp.dlq.reason"]
    assert replies.outstanding == 2
    replies.flush(1.0)
    assert [s.offset for s in durable] == [0, 1, 2]
    assert replies.outstanding == 0
    assert metrics.results.labels("SENT")._value.get() == 1
    assert metrics.results.labels("FAILED")._value.get() == 1
    assert metrics.reply_errors._value.get() == 2


def test_end_to_end_latency_counts_each_acknowledged_result_with_a_timestamp() -> None:
    import time

    kafka, replies, durable, metrics = _setup()
    now_ms = int(time.time() * 1000)
    for offset, stamp in enumerate([now_ms - 2000, now_ms - 100, 0, now_ms + 60_000]):
        replies.result(_source(offset, stamp), SendResult(f"r{offset}", Status.SENT, "OK", None, 1))
    replies.serve()
    text = metrics.render().decode()
    assert "chatapp_end_to_end_seconds_count 3.0" in text  # the one without a timestamp is not counted
    assert 'chatapp_end_to_end_seconds_bucket{le="0.005"} 1.0' in text  # a timestamp in the future counts as no wait
    assert 'chatapp_end_to_end_seconds_bucket{le="0.5"} 2.0' in text
    assert 'chatapp_end_to_end_seconds_bucket{le="2.5"} 3.0' in text
    total = float(next(line.split()[1] for line in text.splitlines() if line.startswith("chatapp_end_to_end_seconds_sum")))
    assert 2.0 < total < 3.0


def test_a_settled_group_shares_its_encoding_and_each_record_finishes_its_own_offset() -> None:
    from consumer.models import SendRequest, Settled, SliceOutcome

    kafka, replies, durable, metrics = _setup()
    requests = [SendRequest(f"r{i}", None, [{}] * (i + 1), None, _source(i)) for i in range(3)]  # type: ignore[arg-type]
    group = Settled(SliceOutcome(Status.SENT, "OK", None, 1, "G", "R", "b-1"), 1_767_225_600_123, requests)
    replies.settled(group)
    assert [(topic, key, headers) for topic, _, key, headers in kafka.produced] == [
        ("replies", "r0", None),
        ("replies", "r1", [("correlation-id", b"corr")]),
        ("replies", "r2", None),
    ]
    codec = PlainAvroCodec()
    assert [value for _, value, _, _ in kafka.produced] == [codec.encode_result(group.result(r)) for r in requests]
    kafka.errors[1] = BROKER_DOWN
    replies.serve()
    # the others are finished at once: a refused record holds back no offset but its own
    assert [s.offset for s in durable] == [0, 2] and replies.outstanding == 0
    CLOCK.now += 1.0
    replies.serve()
    assert replies.outstanding == 1
    assert kafka.produced[3] == ("replies", kafka.produced[1][1], b"r1", [("correlation-id", b"corr")])
    replies.serve()
    assert [s.offset for s in durable] == [0, 2, 1]
    assert metrics.results.labels("SENT")._value.get() == 3


class RealProducerRecording:
    """A real confluent-kafka producer with no broker to reach, so every record times out and
    comes back in a real delivery report; ``produce`` calls are recorded."""

    def __init__(self) -> None:
        from confluent_kafka import Producer

        self.producer = Producer({"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 200, "log_level": 0, "socket.connection.setup.timeout.ms": 1000})
        self.produced: list[tuple[str, bytes, Any, Any]] = []

    def produce(self, topic: str, value: bytes, key: Any, headers: Any, on_delivery: Any) -> None:
        self.produced.append((topic, value, key.encode() if isinstance(key, str) else key, headers))
        self.producer.produce(topic, value, key, on_delivery=on_delivery, headers=headers)

    def serve_deliveries(self, timeout: float = 0.0) -> int:
        return self.producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        return self.producer.flush(timeout)


def test_records_refused_by_a_real_producer_come_back_whole() -> None:
    """confluent-kafka's delivery reports carry topic, key and value but no headers: a refused
    result is produced again with its correlation-id, a refused dead letter with its headers."""
    import time

    from consumer.models import SendRequest, Settled, SliceOutcome

    kafka, durable = RealProducerRecording(), []
    replies = Replies(kafka, PlainAvroCodec(), "replies", "dlq", observed(Metrics()), durable.extend)  # type: ignore[arg-type]
    requests = [SendRequest(f"r{i}", None, [{}], None, _source(i)) for i in range(2)]  # type: ignore[arg-type]
    replies.settled(Settled(SliceOutcome(Status.SENT, "OK", None, 1), 1_767_225_600_123, requests))
    replies.dead_letter(_source(5), b"junk", b"k5", [("trace", b"t")], "not-avro", "bad")
    first = list(kafka.produced)
    deadline = time.monotonic() + 10
    while len(kafka.produced) < 2 * len(first) and time.monotonic() < deadline:
        replies.serve(0.1)
    assert sorted(kafka.produced[len(first) :]) == sorted(first)  # every record again, headers included
    assert durable == [] and replies.outstanding == len(first)
    kafka.flush(0)


TOO_LARGE = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Message size too large")


def test_a_result_refused_for_its_size_is_replaced_by_a_bounded_one_on_the_reply_topic() -> None:
    from consumer.reply import MAX_ECHOED_ID_CHARS, RESULT_TOO_LARGE

    kafka, replies, durable, _ = _setup()
    replies.result(_source(1)._replace(reply_to="team.results"), SendResult("r1", Status.SENT, "OK", "x" * 5000, 1, group_message_id="G"))
    kafka.errors[0] = TOO_LARGE
    replies.serve()
    assert durable == [] and len(kafka.produced) == 2
    topic, value, key, headers = kafka.produced[1]
    result = _decode(value)
    assert (topic, key, headers) == ("replies", b"r1", [("correlation-id", b"corr")])
    assert (result["status"], result["code"], result["group_message_id"]) == ("SENT", RESULT_TOO_LARGE, "G")
    assert "its code was OK" in result["message"] and len(result["message"]) <= 2000
    replies.serve()
    assert [s.offset for s in durable] == [1]
    # an over-long id is cut before it is ever produced
    replies.result(_source(2), SendResult("i" * 600_000, Status.REJECTED, "Chatapp.InvalidRequest", "m", 1))
    assert len(kafka.produced[2][2]) == MAX_ECHOED_ID_CHARS


def test_a_failing_reply_to_topic_falls_back_to_the_reply_topic_after_bounded_attempts() -> None:
    from consumer.models import SendRequest, Settled, SliceOutcome
    from consumer.reply import REPLY_TO_ATTEMPTS, REPLY_TO_FAILED

    kafka, replies, durable, _ = _setup()
    sources = [_source(0)._replace(reply_to="team.results"), _source(1)]
    requests = [SendRequest(f"r{i}", None, [{}], None, sources[i]) for i in range(2)]  # type: ignore[arg-type]
    replies.settled(Settled(SliceOutcome(Status.SENT, "OK", None, 1, "G"), 1_767_225_600_123, requests))
    denied = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied")
    for attempt in range(REPLY_TO_ATTEMPTS):
        kafka.errors[len(kafka.produced) - (2 if attempt == 0 else 1)] = denied
        replies.serve()
        assert [s.offset for s in durable] == [1]  # the commit waits for the reply-to's record, boundedly
        CLOCK.now += 10
        replies.serve()
    topic, value, key, _ = kafka.produced[-1]
    assert (topic, key) == ("replies", b"r0") and _decode(value)["code"] == REPLY_TO_FAILED
    assert [t for t, *_ in kafka.produced] == ["team.results", "replies"] + ["team.results"] * (REPLY_TO_ATTEMPTS - 1) + ["replies"]
    assert [s.offset for s in durable] == [1, 0]


def test_dead_letters_are_bounded_and_a_refused_one_keeps_its_reference() -> None:
    from consumer.reply import MAX_ECHOED_HEADER_BYTES

    kafka, replies, durable, _ = _setup()
    headers = [("big", b"h" * (MAX_ECHOED_HEADER_BYTES + 1)), ("chatapp.dlq.topic", b"__consumer_offsets"), ("trace", b"t")]
    replies.dead_letter(_source(4), b"v" * 999_950, b"k", headers, "not-avro", "bad")
    topic, value, key, sent_headers = kafka.produced[0]
    names = dict(sent_headers)
    assert topic == "dlq" and len(value) + sum(len(n) + len(v) for n, v in sent_headers) < 1_000_000 - 8 * 1024
    assert names["chatapp.dlq.truncated"] == b"999950" and names["chatapp.dlq.headers-dropped"] == b"2"
    assert names["chatapp.dlq.topic"] == b"requests" and "big" not in names and names["trace"] == b"t"
    kafka.errors[0] = TOO_LARGE
    replies.serve()
    topic, value, key, sent_headers = kafka.produced[1]
    names = dict(sent_headers)
    assert (topic, value, key) == ("dlq", b"", b"k") and names["chatapp.dlq.offset"] == b"4" and b"refused" in names["chatapp.dlq.dropped"]
    replies.serve()
    assert [s.offset for s in durable] == [4]


def test_a_record_the_producer_refuses_at_once_never_raises() -> None:
    """A real producer refuses a record above message.max.bytes inside produce(): KafkaIO reports
    it as a delivery failure instead of raising out of the main loop."""
    from consumer.config import load
    from consumer.kafka import KafkaIO

    config = load({"CHATAPP_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "CHATAPP_KAFKA_PRODUCER_OPT_MESSAGE_MAX_BYTES": "2000"}, path=None)
    io_ = KafkaIO(config, print, print, print, print)
    reports: list[tuple[Any, Any]] = []
    io_.produce("replies", b"x" * 5000, "k", None, lambda err, msg: reports.append((err, msg)))
    assert len(reports) == 1
    assert reports[0][0].code() == KafkaError.MSG_SIZE_TOO_LARGE and reports[0][1].key() == b"k" and reports[0][1].topic() == "replies"
    io_.close(1.0)


def _decode(value: bytes) -> dict[str, Any]:
    import io

    from fastavro import schemaless_reader

    from consumer.codec import RESULT_SCHEMA

    return schemaless_reader(io.BytesIO(value), RESULT_SCHEMA, None)  # type: ignore[return-value]


def test_records_answering_at_intake_count_their_bytes_until_acknowledged() -> None:
    kafka, replies, durable, _ = _setup()
    replies.result(_source(1), SendResult("r1", Status.REJECTED, "Chatapp.InvalidRequest", "m" * 1500, 1))
    replies.dead_letter(_source(2), b"v" * 10_000, b"k", None, "not-avro", "bad")
    held = replies.intake_bytes
    assert 11_500 < held < 13_000
    kafka.errors[1] = TOO_LARGE  # the letter is replaced by its headers alone
    replies.serve()
    assert 0 < replies.intake_bytes < 1000  # the replacement, until acknowledged
    replies.serve()
    assert replies.intake_bytes == 0 and [s.offset for s in durable] == [1, 2]
