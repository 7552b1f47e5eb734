"""Reading back what a topic holds past given offsets, outside any consumer group: the receipts
receiver's recovery (``receipts.recover``) looks there for the statuses a dead receiver published
after the broker's acknowledgement and before it could mark them done.

``ends``: each partition's end (high watermark) now. ``values``: every record's value from
``starts`` (a partition missing there: from its beginning) up to the ends as they were when the
call began; records appended later are not waited for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from ..config import Config
from .client import Consumed, _common
from .clientlog import logged


class ScanTimeout(Exception):
    """The topic was not read to its end in time (or the cluster did not answer)."""


class TopicScan:
    def __init__(self, config: Config, topic: str):
        self._options: dict[str, Any] = logged(
            {**_common(config), "group.id": "chatapp-receipts-scan", "enable.auto.commit": False, "enable.partition.eof": False}
        )
        self._topic = topic

    def _bounds(self, consumer: Consumer, timeout_s: float) -> dict[int, tuple[int, int]]:
        try:
            found = consumer.list_topics(self._topic, timeout=timeout_s).topics.get(self._topic)
            if found is None or found.error is not None:
                raise ScanTimeout(f"topic {self._topic} not found")
            return {p: consumer.get_watermark_offsets(TopicPartition(self._topic, p), timeout=timeout_s) for p in found.partitions}
        except KafkaException as exc:
            raise ScanTimeout(str(exc)) from exc

    def ends(self, timeout_s: float = 10.0) -> dict[int, int]:
        consumer = Consumer(self._options)
        try:
            return {p: high for p, (_, high) in self._bounds(consumer, timeout_s).items()}
        finally:
            consumer.close()

    def values(self, starts: Mapping[int, int], timeout_s: float) -> Iterator[bytes]:
        deadline = time.monotonic() + timeout_s
        consumer = Consumer(self._options)
        try:
            left: dict[int, int] = {}  # partition -> its end when the scan began
            assigned = []
            for partition, (low, high) in self._bounds(consumer, timeout_s).items():
                start = max(low, starts.get(partition, low))
                if start < high:
                    left[partition] = high
                    assigned.append(TopicPartition(self._topic, partition, start))
            consumer.assign(assigned)
            while left:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ScanTimeout(f"{self._topic}: {len(left)} partitions not read to their end in {timeout_s:.0f}s")
                for message in cast("list[Consumed]", consumer.consume(1000, min(0.5, remaining))):
                    err = message.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            raise ScanTimeout(str(err))
                        continue
                    partition, offset = message.partition(), message.offset()
                    end = left.get(partition)
                    if end is None or offset >= end:
                        continue
                    value = message.value()
                    if value is not None:
                        yield value
                    if offset + 1 >= end:
                        del left[partition]
        finally:
            consumer.close()
