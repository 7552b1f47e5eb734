"""Which offsets above a committed position are already finished, as commit metadata.

A partition's committed position is its lowest unfinished offset; batches finish out of order,
so offsets above it may be finished too. Committed alone, the position makes the next owner
read them again and answer them again (from the ledger). Committed with the position, this
encoding lets the next owner skip them (Confluent Parallel Consumer's design).

The encoding: the finished offsets as runs ``(gap, length)`` from the position (a run starts
``gap`` offsets after the end of the previous one and covers ``length`` offsets), each number an
unsigned varint, the bytes compressed with zlib and base64-encoded, behind the version tag
``v1:``. It is bounded: past ``MAX_METADATA_CHARS`` (under a broker's default
``offset.metadata.max.bytes`` of 4,096) no metadata is committed, and the next owner reads
everything above the position again (the guarantee without it: at least once).
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterable

VERSION = "v1:"
MAX_METADATA_CHARS = 4000
MAX_FINISHED = 1_000_000
"""More finished offsets than this in metadata is not believed (it would take memory, not save work)."""


def _varint(n: int, out: bytearray) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _varints(data: bytes) -> list[int]:
    numbers: list[int] = []
    value = shift = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")
        else:
            numbers.append(value)
            value = shift = 0
    if shift:
        raise ValueError("truncated varint")
    return numbers


def encode(position: int, finished: Iterable[int]) -> str | None:
    """The metadata of the ``finished`` offsets above ``position`` ("" when there are none; None
    when it would be longer than ``MAX_METADATA_CHARS``)."""
    offsets = sorted(o for o in finished if o > position)
    if not offsets:
        return ""
    runs: list[list[int]] = []  # [start, stop) of each run of consecutive offsets
    for offset in offsets:
        if runs and offset == runs[-1][1]:
            runs[-1][1] = offset + 1
        else:
            runs.append([offset, offset + 1])
    raw = bytearray()
    end = position + 1  # where the previous run ended: the first offset a run may start at
    for start, stop in runs:
        _varint(start - end, raw)
        _varint(stop - start, raw)
        end = stop
    text = VERSION + base64.b64encode(zlib.compress(bytes(raw), 9)).decode("ascii")
    return text if len(text) <= MAX_METADATA_CHARS else None


def decode(position: int, metadata: str | None) -> set[int]:
    """The finished offsets above ``position`` the metadata names (empty when there is none, or
    when it is not ours: a commit by another tool, a version this code does not know)."""
    if not metadata or not metadata.startswith(VERSION):
        return set()
    try:
        numbers = _varints(zlib.decompress(base64.b64decode(metadata[len(VERSION) :], validate=True)))
    except (ValueError, binascii.Error, zlib.error):
        return set()
    if len(numbers) % 2:
        return set()
    lengths = numbers[1::2]
    if sum(lengths) > MAX_FINISHED:
        return set()
    finished: set[int] = set()
    end = position + 1
    for gap, length in zip(numbers[::2], lengths):
        start = end + gap
        finished.update(range(start, start + length))
        end = start + length
    return finished
