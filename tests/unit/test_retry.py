"""consumer.retry.backoff_s: exponential backoff with full jitter, in seconds."""

from __future__ import annotations

import random

import pytest

from consumer.retry import backoff_s

BASE_MS = 200
CAP_MS = 10_000


def ceiling_s(failures: int) -> float:
    return min(CAP_MS, BASE_MS * 2 ** (failures - 1)) / 1000


@pytest.mark.parametrize("failures", [1, 2, 3, 4, 5, 6, 7, 8, 20, 100])
def test_delay_is_within_zero_and_the_exponential_ceiling(failures: int) -> None:
    rng = random.Random(failures)
    delays = [backoff_s(failures, BASE_MS, CAP_MS, rng) for _ in range(2000)]
    top = ceiling_s(failures)
    assert all(0.0 <= d <= top for d in delays)
    # full jitter: spread over the whole range, not bunched at one end
    assert max(delays) > 0.95 * top
    assert min(delays) < 0.05 * top
    assert 0.45 * top < sum(delays) / len(delays) < 0.55 * top


def test_ceilings_double_until_the_cap() -> None:
    assert [ceiling_s(n) for n in range(1, 9)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    rng = random.Random(3)
    for failures, top in [(1, 0.2), (2, 0.4), (6, 6.4), (7, 10.0), (50, 10.0)]:
        assert max(backoff_s(failures, BASE_MS, CAP_MS, rng) for _ in range(500)) <= top


def test_zero_failures_behaves_like_the_first_retry() -> None:
    rng = random.Random(1)
    assert all(0.0 <= backoff_s(0, BASE_MS, CAP_MS, rng) <= 0.2 for _ in range(500))


def test_same_seed_same_delays() -> None:
    a = [backoff_s(n, BASE_MS, CAP_MS, random.Random(42)) for n in range(1, 10)]
    b = [backoff_s(n, BASE_MS, CAP_MS, random.Random(42)) for n in range(1, 10)]
    assert a == b


def test_cap_below_base_caps_even_the_first_retry() -> None:
    rng = random.Random(9)
    assert all(backoff_s(1, 1000, 50, rng) <= 0.05 for _ in range(500))


def test_huge_failure_counts_do_not_overflow() -> None:
    assert 0.0 <= backoff_s(10_000, BASE_MS, CAP_MS, random.Random(0)) <= CAP_MS / 1000


def test_default_random_source_respects_the_bounds() -> None:
    assert all(0.0 <= backoff_s(3, BASE_MS, CAP_MS) <= 0.8 for _ in range(500))
