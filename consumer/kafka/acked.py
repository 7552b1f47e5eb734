"""``AckedProducer``: records produced and waited for until the broker acknowledged them, for a
caller that answers someone only once what it wrote is durable (the receipts receiver).

Idempotent and ordered like the service's producer (``client.producer_config``). Safe to call
from several threads at once: each call waits for its own records' delivery reports, whichever
thread serves them. ``log_ends`` tells, per partition, an offset every record produced from now
on will be at or past (the last acknowledged offset + 1, or the end ``seed_ends`` was given).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Protocol, cast

from confluent_kafka import KafkaException, Producer

from ..config import Config
from .client import _Producer, produce_waiting, producer_config
from .records import DeliveredRecord, Headers

log = logging.getLogger("consumer.kafka")

Outgoing = tuple[bytes | None, bytes, Headers | None]
"""(key, value, headers) of a record to write."""


class _Placed(Protocol):
    """A delivery report's record where it landed."""

    def partition(self) -> int: ...
    def offset(self) -> int: ...


GRACE_S = 1.0
"""How long past librdkafka's own message timeout a call waits for the last delivery reports."""


class AckedProducer:
    """``timeout_s``: librdkafka's ``message.timeout.ms``, so that every record's fate is known
    (acknowledged or failed) soon after it: a record given up by the caller and delivered later
    would be published while its receipt is pushed and published again."""

    def __init__(self, config: Config, topic: str, timeout_s: float):
        options = {**producer_config(config), "message.timeout.ms": max(1, int(timeout_s * 1000))}
        self._producer = cast(_Producer, Producer(options, logger=logging.getLogger("consumer.librdkafka")))
        self._topic = topic
        self._timeout_s = timeout_s
        self._ends: dict[int, int] = {}
        self._ends_lock = threading.Lock()

    def seed_ends(self, ends: Mapping[int, int]) -> None:
        """The partitions' ends as read from the cluster (before anything is produced)."""
        with self._ends_lock:
            for partition, end in ends.items():
                self._ends[partition] = max(end, self._ends.get(partition, 0))

    def log_ends(self) -> dict[int, int]:
        with self._ends_lock:
            return dict(self._ends)

    def _advance(self, record: _Placed) -> None:
        partition, end = record.partition(), record.offset() + 1
        with self._ends_lock:
            if end > self._ends.get(partition, 0):
                self._ends[partition] = end

    def publish(self, records: list[Outgoing]) -> list[bool | None]:
        """Write ``records`` in their order and wait for their delivery reports: True for each
        the broker acknowledged, False for one it refused or librdkafka gave up on, None for one
        whose report did not come in ``timeout_s`` and ``GRACE_S`` (its fate unknown)."""
        acked: list[bool | None] = [None] * len(records)
        left = len(records)
        finished = threading.Event()
        lock = threading.Lock()

        def report(index: int):
            def delivered(err: object | None, record: DeliveredRecord) -> None:
                nonlocal left
                if err is None:
                    self._advance(cast(_Placed, record))
                with lock:
                    acked[index] = err is None
                    left -= 1
                    if left == 0:
                        finished.set()
                if err is not None:
                    log.warning("status record not written: %s", err)

            return delivered

        if not records:
            return acked
        for index, (key, value, headers) in enumerate(records):
            try:
                produce_waiting(self._producer, self._topic, value, key=key, headers=headers, on_delivery=report(index))
            except (KafkaException, TypeError, ValueError) as exc:
                log.warning("status record refused: %s", exc)
                report(index)(exc, None)
        deadline = time.monotonic() + self._timeout_s + GRACE_S
        while not finished.is_set() and (remaining := deadline - time.monotonic()) > 0:
            self._producer.poll(min(0.05, remaining))
        return acked

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush what is still queued; returns how many records were not acknowledged."""
        return self._producer.flush(timeout_s)
