"""The benchmark's own Kafka clients: fast backlog producer, paced producer, watermarks, readers,
and the bare consume + decode reference."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from fastavro import schemaless_reader

from consumer.codec import REQUEST_SCHEMA, RESULT_SCHEMA

FAST_FETCH = {"fetch.wait.max.ms": 10}  # the mock broker holds every Fetch this long


class RealCluster:
    """A cluster given by its bootstrap servers (``--bootstrap-servers``): topics are created with
    AdminClient (replication factor min(3, brokers)); nothing is started or stopped."""

    def __init__(self, bootstrap: str, timeout: float = 30.0):
        self.bootstrap_servers = bootstrap
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._replication = min(3, len(self._admin.list_topics(timeout=timeout).brokers))

    def create_topic(self, name: str, partitions: int, timeout: float = 60.0) -> None:
        for future in self._admin.create_topics([NewTopic(name, partitions, self._replication)], operation_timeout=timeout).values():
            future.result(timeout)
        deadline = time.monotonic() + timeout  # until every partition has a leader
        while time.monotonic() < deadline:
            topic = self._admin.list_topics(name, timeout=5).topics.get(name)
            if topic is not None and topic.error is None and len(topic.partitions) == partitions and all(p.leader >= 0 for p in topic.partitions.values()):
                return
            time.sleep(0.2)
        raise TimeoutError(f"topic {name} has no leader for every partition after {timeout} s")

    def set_initial_rebalance_delay(self, delay_ms: int) -> None:
        """A real broker's ``group.initial.rebalance.delay.ms`` is its own setting: left as it is."""

    def stop(self, timeout: float = 0.0) -> None:
        """Not ours to stop."""


def produce_backlog(bootstrap: str, topic: str, values: Sequence[bytes], partitions: int, timeout: float = 120.0) -> float:
    """Produce ``values`` as fast as librdkafka takes them (big batches, linger), round-robin over
    ``partitions`` (the sticky partitioner puts a fast burst on one partition, and the mock
    broker's retention cap then drops most of it); returns seconds."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.num.messages": 10_000,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "log_level": 0,
        }
    )
    started = time.monotonic()
    deadline = started + timeout
    produce = producer.produce
    for i, value in enumerate(values):
        partition = i % partitions
        while True:
            try:
                produce(topic, value, partition=partition)
                break
            except BufferError:
                producer.poll(0.05)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"producing to {topic} took over {timeout} s") from None
    left = producer.flush(max(1.0, deadline - time.monotonic()))
    if left:
        raise TimeoutError(f"{left} messages to {topic} not delivered within {timeout} s")
    return time.monotonic() - started


class Watermarks:
    """Low/high watermarks of a topic's partitions (one client reused for every query)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-wm-{uuid.uuid4().hex}", "log_level": 0})
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]

    def offsets(self, timeout: float = 5.0) -> list[tuple[int, int]]:
        return [self._consumer.get_watermark_offsets(tp, timeout=timeout, cached=False) for tp in self._tps]

    def count(self) -> int:
        """Messages held (high - low, summed)."""
        return sum(high - low for low, high in self.offsets())

    def check_kept(self, expected: int) -> None:
        """Raise unless the topic holds exactly ``expected`` messages from offset 0 (the mock
        broker's retention cap silently drops old data)."""
        offsets = self.offsets()
        dropped = sum(low for low, _ in offsets)
        held = sum(high - low for low, high in offsets)
        if dropped or held != expected:
            raise RuntimeError(f"topic holds {held} messages ({dropped} dropped by retention), expected {expected}: use more partitions")

    def wait_for(self, expected: int, timeout: float, alive: Callable[[], None] | None = None, every: float = 0.25) -> tuple[int, float]:
        """Poll until ``expected`` messages are held or ``timeout`` s; returns (held, seconds waited)."""
        started = time.monotonic()
        held = 0
        while True:
            held = self.count()
            waited = time.monotonic() - started
            if held >= expected or waited >= timeout:
                return held, waited
            if alive is not None:
                alive()
            time.sleep(every)

    def close(self) -> None:
        self._consumer.close()


def read_all(bootstrap: str, topic: str, partitions: int, expected: int, timeout: float = 60.0) -> list[tuple[bytes | None, int, bytes]]:
    """Every message of ``topic`` from the start as (key, timestamp ms, value): until ``expected``
    were read, or ``timeout`` s."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-read-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "log_level": 0, **FAST_FETCH})  # fmt: skip
    out: list[tuple[bytes | None, int, bytes]] = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            for m in consumer.consume(10_000, 0.2):
                if m.error() is None:
                    out.append((m.key(), m.timestamp()[1], m.value()))
    finally:
        consumer.close()
    return out


def decode_result(value: bytes) -> dict[str, Any]:
    return schemaless_reader(io.BytesIO(value), RESULT_SCHEMA, None)


def bare_consume(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> dict[str, Any]:
    """The reference: a plain group consumer that decodes every value with fastavro's
    ``schemaless_reader`` and the request schema, and does nothing else. The rate is counted from
    the first message received to the last (the group join is left out, as for the service)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-bare-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, "log_level": 0,
                         **FAST_FETCH})  # fmt: skip
    count = 0
    first = last = None
    recipients = 0
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while count < expected and time.monotonic() < deadline:
            messages = consumer.consume(1000, 0.2)
            if not messages:
                continue
            if first is None:
                first = time.perf_counter()
            for m in messages:
                if m.error() is not None:
                    continue
                record = schemaless_reader(io.BytesIO(m.value()), REQUEST_SCHEMA, None)
                recipients += len(record["recipients"])
                count += 1
            last = time.perf_counter()
    finally:
        consumer.close()
    seconds = (last - first) if first is not None and last is not None else 0.0
    return {"messages": count, "recipients": recipients, "seconds": seconds, "rate": count / seconds if seconds else 0.0}


class LiveReader:
    """A thread that polls a topic from the start and stamps each message with its arrival time."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-live-{uuid.uuid4().hex}",
                                   "enable.auto.commit": False, "log_level": 0, **FAST_FETCH})  # fmt: skip
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self.arrivals: list[tuple[float, bytes | None, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-live-reader", daemon=True)

    def start(self) -> LiveReader:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            m = self._consumer.poll(0.05)
            if m is not None and m.error() is None:
                self.arrivals.append((time.time(), m.key(), m.value()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._consumer.close()


def produce_paced(bootstrap: str, topic: str, values: Sequence[bytes], rate: float) -> list[int]:
    """Produce ``values`` at ``rate`` per second, one at a time (no linger), each stamped with its
    Kafka timestamp (ms, wall clock); returns those timestamps."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "log_level": 0})
    stamps: list[int] = []
    started = time.monotonic()
    for i, value in enumerate(values):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stamp = int(time.time() * 1000)
        producer.produce(topic, value, timestamp=stamp)
        producer.poll(0)
        stamps.append(stamp)
    if producer.flush(10.0):
        raise TimeoutError("paced messages not delivered within 10 s")
    return stamps
