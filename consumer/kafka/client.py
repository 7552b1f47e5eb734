"""The Kafka client: consumer and producer behind the service's own types (``records.py``).

The consumer is a group member with cooperative-sticky assignment, no auto-commit and no
auto offset store: the service commits positions it computed itself. It hands out ``Record``s:
error events are logged here and never reach the pipeline. The producer is idempotent
(acks=all, ordered, no duplicates on its own retries) and never raises: every record's fate
comes to its delivery callback. In exactly-once mode it is transactional as well: a transaction
is always open, and ``commit_transaction`` adds the source offsets to it, commits it and begins
the next (``Fenced`` when the producer can no longer write).
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
from .records import TP, DeliveryCallback, Fenced, Headers, ReceivedHeaders, Record, Unsent, parsed_headers

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
TRANSACTION_CALL_S = 30.0
"""How long one transactional call (init, send offsets, commit, abort) may take."""
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
    def init_transactions(self, timeout: float = -1) -> None: ...
    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(self, positions: list[TopicPartition], group_metadata: Any, timeout: float = -1) -> None: ...
    def commit_transaction(self, timeout: float = -1) -> None: ...
    def abort_transaction(self, timeout: float = -1) -> None: ...


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
        "isolation.level": "read_committed",  # requests of aborted transactions are never read
        **_group_protocol(config),
        "max.poll.interval.ms": max(300_000, int(config.drain_timeout_s * 2000) + 60_000),
        # the service buffers what it sends itself (back-pressure bounds); librdkafka's prefetch
        # only has to keep it fed: 16 MB instead of the default 64 MB keeps memory flat
        "queued.max.messages.kbytes": 16384,
        **_common(config),
        **config.consumer_options,
    }


def transactional_id(config: Config, worker_index: int | None = None) -> str | None:
    """Exactly-once mode: ``<group id>.<instance id>``, ``.w<n>`` for worker n (None otherwise).
    The same after a restart, so a restarted process fences its predecessor's open transaction."""
    if config.processing_guarantee != "exactly-once":
        return None
    base = f"{config.group_id}.{config.instance_id}"
    return base if worker_index is None else f"{base}.w{worker_index}"


def producer_config(config: Config, transactional: str | None = None) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if transactional is not None:
        extra = {"transactional.id": transactional, "transaction.timeout.ms": config.transaction_timeout_ms}
    return {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        **_common(config),
        **config.producer_options,
        **extra,
    }


class KafkaIO:
    def __init__(self, config: Config, on_assign: Rebalance, on_revoke: Rebalance, on_lost: Rebalance, on_committed: Committed,
                 transactional: str | None = None):  # fmt: skip
        self._on_committed = on_committed
        self._consumer = Consumer(logged({**consumer_config(config), "on_commit": self._commit_done}))
        # the stub's Producer with the types the library really passes and takes (see _Producer)
        self._fatal: KafkaError | None = None
        """A fatal producer error (error_cb): the producer can write nothing more."""
        self._producer = cast(_Producer, Producer(logged({**producer_config(config, transactional), "error_cb": self._producer_error})))
        self.transactional = transactional is not None
        self._topic = config.request_topic
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost

    def subscribe(self) -> None:
        """Join the group (exactly-once mode: first fence any predecessor with this transactional
        id, aborting its open transaction, and begin one); the rebalance callbacks run inside ``consume``."""
        if self.transactional:
            self._transactional(self._producer.init_transactions, TRANSACTION_CALL_S)
            self._transactional(self._producer.begin_transaction)
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
            _raise_fatal(err)
            on_delivery(err, Unsent(topic, value, key.encode() if isinstance(key, str) else key))

    def serve_deliveries(self, timeout: float = 0.0) -> int:
        return self._served(self._producer.poll, timeout)

    def flush(self, timeout: float) -> int:
        """Wait for outstanding deliveries; returns how many are still not acknowledged."""
        return self._served(self._producer.flush, timeout)

    def _served(self, call: Callable[[float], int], timeout: float) -> int:
        """poll or flush; ``Fenced`` once the producer had a fatal error (a fenced transactional
        producer: confluent-kafka was seen to fail such a flush with a bare SystemError)."""
        try:
            served = call(timeout)
        except (KafkaException, SystemError) as exc:
            # a fatal error is raised from poll/flush before error_cb hears of it, or, when a
            # delivery callback runs while it is pending, as a SystemError caused by it
            cause: BaseException | None = exc
            while cause is not None:
                if isinstance(cause, KafkaException):
                    _raise_fatal(cause.args[0])
                cause = cause.__cause__ or cause.__context__
            if self._fatal is None:
                raise
            served = 0
        if self._fatal is not None:
            raise Fenced(str(self._fatal))
        return served

    def _producer_error(self, err: KafkaError) -> None:
        """librdkafka's error events of the producer (from poll/flush): a fatal one is kept for
        ``_served``; the others are transient (librdkafka retries) and only logged."""
        if err.fatal():
            self._fatal = err
        else:
            LIBRDKAFKA.warning("producer: %s", err)  # repeats held back, as the consumer's

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

    def commit_transaction(self, positions: Mapping[TP, tuple[int, str | None]]) -> bool:
        """Add the positions (with their metadata) to the open transaction, commit it, begin the
        next; False when it had to be aborted (its records are discarded). A commit that times out
        is tried again while the transaction may still commit (librdkafka's rule)."""
        try:
            if positions:
                offsets = [TopicPartition(t, p, o, metadata=metadata) if metadata else TopicPartition(t, p, o) for (t, p), (o, metadata) in positions.items()]
                self._producer.send_offsets_to_transaction(offsets, self._consumer.consumer_group_metadata(), TRANSACTION_CALL_S)
            for attempt in range(3):
                try:
                    self._producer.commit_transaction(TRANSACTION_CALL_S)
                    break
                except KafkaException as exc:
                    if attempt == 2 or not exc.args[0].retriable() or exc.args[0].txn_requires_abort():
                        raise
        except KafkaException as exc:
            err = exc.args[0]
            _raise_fatal(err)
            log.warning("transaction aborted (%s): its sources are read again", err)
            self.abort_transaction()
            return False
        self._transactional(self._producer.begin_transaction)
        if positions:
            self._on_committed({tp: position for tp, (position, _) in positions.items()})
        return True

    def abort_transaction(self) -> None:
        self._transactional(self._producer.abort_transaction, TRANSACTION_CALL_S)
        self._transactional(self._producer.begin_transaction)

    def _transactional(self, call: Callable[..., None], *args: float) -> None:
        """A transactional call; a fatal error (another process took the transactional id over,
        or the producer broke) or any error of init/begin/abort becomes ``Fenced``."""
        try:
            call(*args)
        except KafkaException as exc:
            raise Fenced(str(exc.args[0])) from exc

    def rewind(self, positions: Mapping[TP, int]) -> None:
        """Read each partition again from its position (messages fetched past it are dropped)."""
        for (topic, partition), offset in positions.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                log.warning("could not rewind %s[%d] to %d (%s)", topic, partition, offset, exc.args[0])

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


def _raise_fatal(err: object) -> None:
    """``Fenced`` for a fatal producer error: the producer can write nothing more (in exactly-once
    mode, another process took its transactional id over)."""
    if isinstance(err, KafkaError) and err.fatal():
        raise Fenced(str(err))


def _tps(partitions: Iterable[TopicPartition]) -> list[TP]:
    return [(p.topic, p.partition) for p in partitions]
