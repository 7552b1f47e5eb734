"""consumer.finished: the finished offsets above a committed position, as commit metadata."""

from __future__ import annotations

import random

import pytest

from consumer.finished import MAX_METADATA_CHARS, decode, encode


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
