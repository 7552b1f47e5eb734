"""What the pipeline asks of Kafka: ``client.KafkaIO`` is the real one, tests use an in-memory
fake (``tests/fixtures/fake_kafka.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from .records import TP, DeliveryCallback, Headers, Record


class KafkaPort(Protocol):
    def subscribe(self) -> None:
        """Join the group; assignments and revocations come through the callbacks the port was
        made with, from inside ``consume``."""

    def consume(self, max_messages: int, timeout: float) -> list[Record]:
        """Up to ``max_messages`` records, waiting at most ``timeout`` for the first."""

    def produce(self, topic: str, value: bytes, key: bytes | str | None, headers: Headers | None, on_delivery: DeliveryCallback) -> None:
        """Queue a record; never raises: ``on_delivery`` hears of its fate exactly once."""

    def serve_deliveries(self, timeout: float = 0.0) -> int:
        """Call the delivery callbacks of what the broker answered (waiting up to ``timeout``)."""

    def flush(self, timeout: float) -> int:
        """Wait for every record produced; returns how many are still not acknowledged."""

    def commit(self, positions: Mapping[TP, tuple[int, str | None]], asynchronous: bool) -> None:
        """Commit (position, metadata) of each partition; the port's ``on_committed`` hears of the
        positions the broker accepted."""

    def commit_transaction(self, positions: Mapping[TP, tuple[int, str | None]]) -> bool:
        """Exactly-once mode: add (position, metadata) of each partition to the open transaction,
        commit it and begin the next; ``on_committed`` hears of the positions. False when it was
        aborted instead (its records are discarded: the caller reads their sources again).
        Raises ``Fenced`` when the producer can no longer write."""

    def abort_transaction(self) -> None:
        """Exactly-once mode: discard the open transaction's records and begin the next (raises ``Fenced``)."""

    def rewind(self, positions: Mapping[TP, int]) -> None:
        """Read each partition again from its position."""

    def committed(self, partitions: Iterable[TP], timeout_s: float = ...) -> dict[TP, tuple[int, str | None]]:
        """The group's committed (position, metadata) of each partition that has one."""

    def pause(self, partitions: Iterable[TP]) -> None: ...
    def resume(self, partitions: Iterable[TP]) -> None: ...

    def positions(self, partitions: Iterable[TP]) -> dict[TP, tuple[int, int]]:
        """(fetch position, high watermark) of each partition that has both."""

    def leave_group(self, timeout_s: float) -> bool:
        """Unsubscribe and serve the revocation; False when partitions were still assigned at the deadline."""

    def close(self, timeout_s: float = ...) -> bool:
        """Close; False when that did not finish in time."""
