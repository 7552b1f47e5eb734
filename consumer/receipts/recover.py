"""Claims taken over from a receiver that died: were their statuses published before it died?

A receiver killed after the broker acknowledged a push's statuses and before Redis marked them
done leaves claims that say nothing of it. Each claim carries a *mark*: per partition of the
status topic, an offset at or before which the receiver's later records land (``log_mark`` of
``AckedProducer.log_ends``: the last offset it saw acknowledged + 1, or the end read at start).
Whoever takes a stale claim over (``dedupe.Stale``) reads the topic from the earliest mark of
the claims it took to the topic's end (``TopicScan.values``) and looks for their statuses:
found means published (mark done, do not publish again), not found means never written (the
dead receiver cannot write any more: its records' fate was settled within the publish timeout,
before the claim went stale), so publish.

Reading costs what the topic took since the mark: a few seconds' records for a receiver that
wrote to every partition, more for one that had not written to a partition for a while.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from .encode import status_identity
from .parse import seen_key


class Scan(Protocol):
    def values(self, starts: Mapping[int, int], timeout_s: float) -> Iterable[bytes]:
        """Every value from ``starts`` (a partition not named: from its beginning) to the end."""


def log_mark(ends: Mapping[int, int]) -> str:
    """``{0: 12, 1: 40}`` -> ``"0:12,1:40"`` (what a claim keeps)."""
    return ",".join(f"{partition}:{end}" for partition, end in sorted(ends.items()))


def read_mark(mark: str) -> dict[int, int]:
    """The inverse of ``log_mark``; an empty or unreadable mark names no partition (read all)."""
    out: dict[int, int] = {}
    for part in filter(None, mark.split(",")):
        partition, _, end = part.partition(":")
        if not (partition.isdigit() and end.isdigit()):
            return {}
        out[int(partition)] = int(end)
    return out


def earliest(marks: Iterable[str]) -> dict[int, int]:
    """Where to start reading to cover every mark: per partition the lowest offset, and no start
    (from the beginning) for a partition one of the marks does not name."""
    starts: dict[int, int] | None = None
    for mark in marks:
        ends = read_mark(mark)
        if starts is None:
            starts = ends
        else:
            starts = {p: min(o, ends[p]) for p, o in starts.items() if p in ends}
    return starts or {}


class Recovery:
    """``header_bytes``: what precedes the Avro binary in a value (5 with a Schema Registry)."""

    def __init__(self, scan: Scan, header_bytes: int, timeout_s: float):
        self._scan = scan
        self._skip = header_bytes
        self._timeout_s = timeout_s

    def published(self, stale: Mapping[str, str]) -> set[str]:
        """Which of the seen keys (-> their claims' marks) have a status on the topic already.
        Raises the scan's error when the topic cannot be read to its end in time."""
        wanted = set(stale)
        found: set[str] = set()
        for value in self._scan.values(earliest(stale.values()), self._timeout_s):
            try:
                message_id, to, status = status_identity(value, self._skip)
            except Exception:  # noqa: BLE001 (any value this reader cannot take is no status of ours)
                continue  # not a status this service wrote
            if message_id is not None and (key := seen_key(message_id, to, status)) in wanted:
                found.add(key)
                if len(found) == len(wanted):
                    break
        return found
