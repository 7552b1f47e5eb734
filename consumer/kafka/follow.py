"""Reading a topic as an operator watches it (``results``): every partition, from the beginning
or from now, outside any consumer group (nothing is committed, no member joins)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from .client import Consumed
from .clientlog import LIBRDKAFKA, logged
from .records import Record
from .tools import KafkaUnavailable


class TopicMissing(Exception):
    """The cluster answered and has no such topic."""


class TopicFollower:
    """The records of ``topic`` as they arrive. KafkaUnavailable when the cluster does not answer
    within ``timeout_s``; TopicMissing when it has no such topic."""

    def __init__(self, options: Mapping[str, Any], topic: str, from_beginning: bool, timeout_s: float = 10.0):
        self._consumer = Consumer(logged({**options, "group.id": f"chatapp-results-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}))
        try:
            found = self._consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        except KafkaException as exc:
            self._consumer.close()
            raise KafkaUnavailable(exc.args[0].str()) from exc
        if found is None or found.error is not None:
            self._consumer.close()
            raise TopicMissing(topic)
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        self._consumer.assign([TopicPartition(topic, partition, start) for partition in found.partitions])

    def poll(self, timeout_s: float) -> list[Record]:
        """The records that came within ``timeout_s`` (at most 500)."""
        out = []
        for message in cast("list[Consumed]", self._consumer.consume(500, timeout_s)):
            err = message.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    LIBRDKAFKA.warning("consume error: %s", err)
                continue
            out.append(
                Record(message.topic(), message.partition(), message.offset(), message.timestamp()[1], message.key(), message.value(), message.headers())
            )
        return out

    def close(self) -> None:
        self._consumer.close()
