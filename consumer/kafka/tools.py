"""What the operators' commands need of Kafka: a writer and a look at the cluster."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from .client import produce_waiting
from .clientlog import logged
from .records import Headers


class KafkaUnavailable(Exception):
    """The cluster did not answer (the message says what librdkafka saw)."""


class Writer:
    """A producer for a command: ``write`` waits for room in the local queue, ``failed`` keeps
    the errors of the records the broker did not take."""

    def __init__(self, options: Mapping[str, Any]):
        self._producer = Producer(logged(options))
        self.failed: list[str] = []

    def _delivered(self, err: KafkaError | None, _record: object) -> None:
        if err is not None:
            self.failed.append(err.str())

    def write(self, topic: str, value: bytes, key: bytes | None, headers: Headers | None = None) -> None:
        produce_waiting(self._producer, topic, value, key=key, headers=headers, on_delivery=self._delivered)

    def serve(self) -> None:
        """Serve the delivery reports that came in."""
        self._producer.poll(0)

    def flush(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for every record; returns how many are still unacknowledged."""
        return self._producer.flush(timeout_s)


def cluster_summary(options: Mapping[str, Any], topic: str, timeout_s: float = 5.0) -> tuple[int, int | None]:
    """(brokers, partitions of ``topic`` or None when it is missing); KafkaUnavailable when the
    cluster does not answer within ``timeout_s``."""
    try:
        metadata = Producer(logged(options)).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaUnavailable(exc.args[0].str()) from exc
    found = metadata.topics.get(topic)
    return len(metadata.brokers), (len(found.partitions) if found is not None else None)
