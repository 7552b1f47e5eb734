"""consumer.finished: the finished offsets above a committed position, as commit metadata."""

from __future__ import annotations

import base64
import random
import zlib

import pytest

from consumer.finished import MAX_FINISHED, MAX_METADATA_CHARS, VERSION, decode, encode


@pytest.mark.parametrize("seed", range(200))
def test_round_trip_of_random_finished_sets(seed: int) -> None:
    rng = random.Random(seed)
    position = rng.randrange(0, 10**12)
    span = rng.choice([5, 100, 5000])
    finished = {position + 1 + rng.randrange(span) for _ in range(rng.randrange(0, span))}
    metadata = encode(position, finished | {position - 3, position})  # at or below the position: not part of it
    if metadata is None:
        assert len(finished) > 100  # only a large, scattered set can outgrow the bound
        return
    assert len(metadata) <= MAX_METADATA_CHARS
    assert decode(position, metadata) == finished


def test_runs_compress_and_a_scattered_set_past_the_bound_falls_back_to_none() -> None:
    position = 1_000
    assert encode(position, []) == "" and decode(position, "") == set()
    dense = encode(position, range(1_001, 101_001))
    assert dense is not None and len(dense) < 40  # one run of 100,000
    scattered = set(random.Random(7).sample(range(1_001, 10_000_000), 5_000))
    assert encode(position, scattered) is None  # past the bound: commit the position alone


@pytest.mark.parametrize("metadata", [None, "", "something else", "v1:", "v1:!!!", "v1:" + "A" * 8, "v2:eJwDAAAAAAE="])
def test_metadata_that_is_not_ours_names_nothing(metadata: str | None) -> None:
    assert decode(5, metadata) == set()


def test_metadata_naming_more_than_a_million_offsets_is_not_believed() -> None:
    assert decode(0, encode(0, range(1, 2_000_000))) == set()


def test_the_metadata_is_the_documented_format_with_canonical_varints() -> None:
    """What is committed is read by other instances (other versions): runs (gap, length) as
    unsigned LEB128 varints, zlib, base64, behind ``v1:``; 127 fits one byte, 128 takes two."""
    metadata = encode(0, {128, 129, 300})  # runs from offset 1: gap 127 length 2, gap 170 length 1
    assert metadata is not None and metadata.startswith(VERSION)
    raw = zlib.decompress(base64.b64decode(metadata[len(VERSION) :]))
    assert raw == bytes([0x7F, 0x02, 0xAA, 0x01, 0x01])
    assert decode(0, metadata) == {128, 129, 300}


def test_metadata_with_characters_outside_base64_is_not_ours() -> None:
    metadata = encode(10, {12, 13, 20})
    assert metadata is not None and decode(10, metadata) == {12, 13, 20}
    corrupted = metadata[:5] + "!" + metadata[5:]  # not base64: another tool's, or damaged
    assert decode(10, corrupted) == set()


def test_metadata_naming_exactly_the_most_finished_offsets_believed_is_believed() -> None:
    assert decode(0, encode(0, range(1, MAX_FINISHED + 1))) == set(range(1, MAX_FINISHED + 1))
    assert decode(0, encode(0, range(1, MAX_FINISHED + 2))) == set()
