"""Which source offsets are safe to commit: pure bookkeeping, no Kafka client.

Every polled message is ``track``ed in offset order (``partition(tp).track(offset)``) and
``finish``ed once its result (or dead-letter record) is acknowledged by the broker, in any
order. The committable position of a partition is its lowest unfinished offset (or one past the
highest seen when nothing is unfinished): a commit never passes a message whose outcome is not
durable. The offsets finished above it go with the commit as its metadata (``finished.py``); a
partition assigned with such metadata skips them when it reads them again (``track`` says so).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from . import finished as finished_metadata

TopicPartition = tuple[str, int]


class PartitionOffsets:
    """Unfinished offsets of one partition, lowest first."""

    __slots__ = ("_unfinished", "_finished", "_next", "_committed", "_start", "_skip", "_offered", "_committed_finished")

    def __init__(self, skip: set[int] | None = None) -> None:
        self._unfinished: deque[int] = deque()
        self._finished: set[int] = set()
        self._next: int | None = None
        self._committed: int | None = None
        self._start: int | None = None
        self._skip = skip or None
        """Offsets a previous owner finished above its committed position (from the commit's metadata)."""
        self._offered: tuple[int | None, int] = (None, 0)  # (position, finished offsets above it) of the last commit made
        self._committed_finished = 0  # finished offsets above the position when it was last committed

    def track(self, offset: int) -> bool:
        """Note a message read; False when a previous owner finished it (skip it: it counts as finished)."""
        if self._next is not None and offset < self._next:
            raise ValueError(f"offset {offset} tracked after {self._next - 1}: offsets must increase")
        if self._start is None:  # the first message read: the group's committed position when it was assigned
            self._start = offset
        self._unfinished.append(offset)
        self._next = offset + 1
        if self._skip and offset in self._skip:
            self._skip.discard(offset)
            self.finish(offset)
            return False
        return True

    def finish(self, offset: int) -> None:
        unfinished = self._unfinished
        if unfinished and unfinished[0] == offset:
            unfinished.popleft()
            finished = self._finished
            while unfinished and unfinished[0] in finished:
                finished.discard(unfinished.popleft())
        else:
            self._finished.add(offset)

    @property
    def position(self) -> int | None:
        """The offset to commit: the next message to read after a restart."""
        if self._unfinished:
            return self._unfinished[0]
        return self._next

    @property
    def unfinished(self) -> int:
        return len(self._unfinished)

    def dirty(self) -> bool:
        """Has the position, or what is finished above it, changed since the last commit?"""
        position = self.position
        return position is not None and (position != self._committed or len(self._finished) != self._committed_finished)

    def metadata(self) -> str | None:
        """The finished offsets above the position, encoded for the commit (None: too many to say)."""
        position = self.position
        self._offered = (position, len(self._finished))
        return "" if position is None else finished_metadata.encode(position, self._finished)

    def committed(self, position: int) -> None:
        self._committed = position
        offered_position, offered = self._offered
        self._committed_finished = offered if offered_position == position else len(self._finished)

    @property
    def committed_position(self) -> int | None:
        """The last position the broker accepted (the first offset read, before any commit)."""
        return self._start if self._committed is None else self._committed


class OffsetTracker:
    """PartitionOffsets for every assigned partition."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, PartitionOffsets] = {}

    def assign(self, partitions: Iterable[TopicPartition], finished: dict[TopicPartition, set[int]] | None = None) -> None:
        """Track ``partitions``; ``finished``: offsets of theirs a previous owner finished (to skip)."""
        for tp in partitions:
            self._partitions.setdefault(tp, PartitionOffsets((finished or {}).get(tp)))

    def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._partitions.pop(tp, None)

    def partition(self, tp: TopicPartition) -> PartitionOffsets | None:
        """The offsets of ``tp`` (to ``track`` a run of its messages), or None when it is not ours."""
        return self._partitions.get(tp)

    def finish(self, positions: Iterable[Sequence[Any]]) -> None:
        """Mark each ``(topic, partition, offset, ...)`` done (a ``models.Source`` is one); those
        of partitions no longer ours (revoked: nothing to commit) are skipped."""
        partitions = self._partitions
        for position in positions:
            state = partitions.get((position[0], position[1]))
            if state is not None:
                state.finish(position[2])

    def to_commit(self, partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, tuple[int, str | None]]:
        """(position, metadata) of the partitions whose position or finished offsets changed since
        they were last committed (all partitions, or those given)."""
        wanted = self._partitions if partitions is None else partitions
        out: dict[TopicPartition, tuple[int, str | None]] = {}
        for tp in wanted:
            state = self._partitions.get(tp)
            if state is not None and state.dirty():
                position = state.position
                assert position is not None, "a dirty partition has a position"
                out[tp] = (position, state.metadata())
        return out

    def committed(self, positions: dict[TopicPartition, int]) -> None:
        for tp, position in positions.items():
            state = self._partitions.get(tp)
            if state is not None:
                state.committed(position)

    def committed_positions(self) -> dict[TopicPartition, int]:
        """Each partition's last committed position, where one is known."""
        return {tp: state.committed_position for tp, state in self._partitions.items() if state.committed_position is not None}

    def unfinished(self, partitions: Iterable[TopicPartition] | None = None) -> int:
        wanted = self._partitions if partitions is None else partitions
        return sum(self._partitions[tp].unfinished for tp in wanted if tp in self._partitions)

    @property
    def partitions(self) -> list[TopicPartition]:
        return list(self._partitions)
