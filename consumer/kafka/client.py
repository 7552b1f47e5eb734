"""The Kafka client: consumer and producer behind the service's own types (``records.py``).

The consumer is a group member with cooperative-sticky assignment, no auto-commit and no
auto offset store: the service commits positions it computed itself. It hands out ``Record``s:
error events are logged here and never reach the pipeline. The producer is idempotent
(acks=all, ordered, no duplicates on its own retries) and never raises: every record's fate
comes to its delivery callback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from ..config import Config
from .clientlog import LIBRDKAFKA, logged
from .records import TP, DeliveryCallback, Headers, ReceivedHeaders, Record, Unsent, parsed_headers

log = logging.getLogger("consumer.kafka")

CLOSE_TIMEOUT_S = 10.0
"""How long each step of leaving the group (unsubscribing, then closing) may take. librdkafka's
close can abort or hang when a cooperative rebalance hands the consumer partitions while it
closes (seen here, rarely; cf. librdkafka #4527), which ``leave_group`` avoids; should close
still hang, the service exits without waiting, its offsets already committed, and the group
drops the member after ``session.timeout.ms``."""
HEARTBEAT_MAX_MS = 250
"""The longest time between a member's heartbeats in the classic protocol. A member hears of a
rebalance with its next heartbeat; a cooperative scale-out takes two rebalances, and in the
second the partitions given up wait, unread by anyone, until every member has heard: a quarter
of a second is what that costs the account's budget (one small request a member four times a
second is nothing to a broker). Kafka's default is 3 s, a fifth of the session timeout here 9 s."""
Rebalance = Callable[[list[TP]], None]
Committed = Callable[[dict[TP, int]], None]

_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's ``message.max.bytes`` default: the largest record the producer takes."""


class Consumed(Protocol):
    """A message ``Consumer.poll``/``consume`` returned, as librdkafka makes it. confluent-kafka's
    stub types every ``Message`` alike (topic, partition and offset optional, headers a list or a
    dict of str or bytes): a consumed message always has its topic, partition and offset (an
    error event's are not read), and its headers are a list of (name, bytes or None) pairs."""

    def error(self) -> KafkaError | None: ...
    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def timestamp(self) -> tuple[int, int]: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> ReceivedHeaders | None: ...


class _Producer(Protocol):
    """``Producer`` as the service uses it. confluent-kafka's stub takes headers as an invariant
    ``List[Tuple[str, str | bytes | None]]`` (librdkafka takes any list of pairs) and gives the
    delivery callback a ``Message`` whose topic is optional (a delivery report always names its
    topic): ``DeliveryCallback`` and ``Headers`` are what the library really passes and takes."""

    def produce(self, topic: str, value: bytes, key: bytes | str | None = None, partition: int = -1,
                callback: DeliveryCallback | None = None, *, on_delivery: DeliveryCallback | None = None,
                headers: Headers | None = None) -> None: ...  # fmt: skip
    def poll(self, timeout: float = -1) -> int: ...
    def flush(self, timeout: float = -1) -> int: ...


def too_large(err: object) -> bool:
    """Did the producer or the broker refuse a record for its size (sending it again cannot help)?"""
    return isinstance(err, KafkaError) and err.code() in _TOO_LARGE


def produce_waiting(producer: Producer | _Producer, topic: str, value: bytes, **fields: Any) -> None:
    """``producer.produce`` that, when the local queue is full, serves delivery reports and tries
    again instead of raising BufferError (``fields``: key, headers, on_delivery, partition...)."""
    while True:
        try:
            producer.produce(topic, value, **fields)
            return
        except BufferError:
            producer.poll(0.1)


def _common(config: Config) -> dict[str, Any]:
    return {"bootstrap.servers": config.kafka_bootstrap_servers, "client.id": "chatapp-consumer", **config.kafka_options}


def _group_protocol(config: Config) -> dict[str, Any]:
    """The group settings of the protocol chosen: KIP-848's broker decides the assignment, the
    session timeout and the heartbeat itself (librdkafka refuses them there)."""
    if config.group_protocol == "consumer":
        return {"group.protocol": "consumer"}
    return {
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": config.session_timeout_ms,
        # each step of a rebalance waits for the members' next heartbeats (see HEARTBEAT_MAX_MS)
        "heartbeat.interval.ms": max(100, min(HEARTBEAT_MAX_MS, config.session_timeout_ms // 5)),
    }


def consumer_config(config: Config) -> dict[str, Any]:
    return {
        "group.id": config.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        **_group_protocol(config),
        "max.poll.interval.ms": max(300_000, int(config.drain_timeout_s * 2000) + 60_000),
        # the service buffers what it sends itself (back-pressure bounds); librdkafka's prefetch
        # only has to keep it fed: 16 MB instead of the default 64 MB keeps memory flat
        "queued.max.messages.kbytes": 16384,
        **_common(config),
        **config.consumer_options,
    }


def producer_config(config: Config) -> dict[str, Any]:
    return {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        **_common(config),
        **config.producer_options,
    }


class KafkaIO:
    def __init__(self, config: Config, on_assign: Rebalance, on_revoke: Rebalance, on_lost: Rebalance, on_committed: Committed):
        self._on_committed = on_committed
        self._consumer = Consumer(logged({**consumer_config(config), "on_commit": self._commit_done}))
        # the stub's Producer with the types the library really passes and takes (see _Producer)
        self._producer = cast(_Producer, Producer(logged(producer_config(config))))
        self._topic = config.request_topic
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost

    def subscribe(self) -> None:
        """Join the group; the rebalance callbacks run inside ``consume``."""
        self._consumer.subscribe(
            [self._topic],
            on_assign=lambda c, ps: self._on_assign(_tps(ps)),
            on_revoke=lambda c, ps: self._on_revoke(_tps(ps)),
            on_lost=lambda c, ps: self._on_lost(_tps(ps)),
        )

    def consume(self, max_messages: int, timeout: float) -> list[Record]:
        """Up to ``max_messages`` records, waiting at most ``timeout`` for the first one only."""
        first = self._consumer.poll(timeout)
        if first is None:
            return []
        records: list[Record] = []
        append = records.append
        # one cast a batch, none a record: the stub types a consumed message loosely (see Consumed)
        for msg in cast("tuple[Consumed, ...]", (first, *self._consumer.consume(max_messages - 1, 0))):
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    LIBRDKAFKA.warning("consume error: %s", err)  # repeats held back: an outage is one a few seconds
                continue
            headers = msg.headers()
            correlation, reply_to = parsed_headers(headers) if headers else (None, None)
            append(Record(msg.topic(), msg.partition(), msg.offset(), msg.timestamp()[1], msg.key(), msg.value(), headers, correlation, reply_to))
        return records

    def produce(self, topic: str, value: bytes, key: bytes | str | None, headers: Headers | None, on_delivery: DeliveryCallback) -> None:
        """Queue a record; ``on_delivery(err, message)`` hears of its fate exactly once. Never
        raises: a record librdkafka refuses at once (too large, an illegal topic name...) is
        reported to ``on_delivery`` with the error and an ``Unsent`` message before this returns."""
        try:
            try:
                if headers is None:  # the usual result: positional (topic, value, key, partition, on_delivery) takes 0.5 µs, keywords 1.0
                    self._producer.produce(topic, value, key, -1, on_delivery)
                else:
                    self._producer.produce(topic, value, key, on_delivery=on_delivery, headers=headers)
            except BufferError:  # the local queue is full: serve deliveries until it takes it
                produce_waiting(self._producer, topic, value, key=key, headers=headers, on_delivery=on_delivery)
        except (KafkaException, TypeError, ValueError) as exc:
            err = exc.args[0] if isinstance(exc, KafkaException) else KafkaError(KafkaError._INVALID_ARG, str(exc))
            on_delivery(err, Unsent(topic, value, key.encode() if isinstance(key, str) else key))

    def serve_deliveries(self, timeout: float = 0.0) -> int:
        return self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        """Wait for outstanding deliveries; returns how many are still not acknowledged."""
        return self._producer.flush(timeout)

    def commit(self, positions: Mapping[TP, tuple[int, str | None]], asynchronous: bool) -> None:
        """Commit (position, metadata) of each partition; ``on_committed`` hears of the positions
        the broker accepted (a failed commit is simply made again later: the positions stay due)."""
        if not positions:
            return
        offsets = [TopicPartition(t, p, o, metadata=metadata) if metadata else TopicPartition(t, p, o) for (t, p), (o, metadata) in positions.items()]
        try:
            if asynchronous:  # the stub's overloads tell the two apart by a literal
                self._consumer.commit(offsets=offsets, asynchronous=True)
                return
            done = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.info("offset commit not made (%s): will retry", exc.args[0])
            return
        if done:
            self._commit_done(None, done)

    def _commit_done(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:
            log.info("offset commit not made (%s): will retry", err)
            return
        accepted = {(p.topic, p.partition): p.offset for p in partitions if p.error is None and p.offset >= 0}
        if accepted:
            self._on_committed(accepted)

    def committed(self, partitions: Iterable[TP], timeout_s: float = 10.0) -> dict[TP, tuple[int, str | None]]:
        """The group's committed (position, metadata) of each partition that has one ({} when the
        coordinator does not answer: what a previous owner finished is then read again)."""
        try:
            found = self._consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=timeout_s)
        except KafkaException as exc:
            log.warning("committed offsets not read (%s): what the previous owner finished past them is read again", exc.args[0])
            return {}
        return {(tp.topic, tp.partition): (tp.offset, tp.metadata) for tp in found if tp.offset >= 0}

    def pause(self, partitions: Iterable[TP]) -> None:
        self._consumer.pause([TopicPartition(t, p) for t, p in partitions])

    def resume(self, partitions: Iterable[TP]) -> None:
        self._consumer.resume([TopicPartition(t, p) for t, p in partitions])

    def positions(self, partitions: Iterable[TP]) -> dict[TP, tuple[int, int]]:
        """The consumer's fetch position and the (cached) high watermark of each partition that
        has both."""
        out: dict[TP, tuple[int, int]] = {}
        tps = [TopicPartition(t, p) for t, p in partitions]
        if not tps:
            return out
        try:
            positions = self._consumer.position(tps)
        except KafkaException:
            return out
        for tp in positions:
            try:
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0 and tp.offset >= 0:
                out[(tp.topic, tp.partition)] = (tp.offset, high)
        return out

    def assignment(self) -> list[TP]:
        return _tps(self._consumer.assignment())

    def leave_group(self, timeout_s: float) -> bool:
        """Unsubscribe and serve the revocation that follows (``on_revoke``) until nothing is
        assigned or ``timeout_s`` has passed. Once unsubscribed the member is given no partitions,
        so ``close`` never meets an assignment half made: librdkafka aborts or hangs when a
        cooperative rebalance hands a closing consumer partitions (seen here when instances stop
        one after another). Messages still fetched are dropped: nothing past them is committed.
        False when partitions were still assigned at the deadline."""
        self._consumer.unsubscribe()
        deadline = time.monotonic() + timeout_s
        while self._consumer.assignment():
            if time.monotonic() >= deadline:
                return False
            self._consumer.poll(0.05)
        return True

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Leave the group and close the consumer; False when that did not finish within
        ``timeout_s`` (the close goes on in a daemon thread: the caller should exit without the
        interpreter's finalisation, which would wait for it again)."""
        closing = threading.Thread(target=self._consumer.close, name="consumer-close", daemon=True)
        closing.start()
        closing.join(timeout_s)
        return not closing.is_alive()


def _tps(partitions: Iterable[TopicPartition]) -> list[TP]:
    return [(p.topic, p.partition) for p in partitions]
