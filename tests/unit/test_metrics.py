"""consumer.metrics.BulkHistogram exposes what prometheus_client's Histogram would."""

from __future__ import annotations

import random

import pytest

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from consumer.metrics import LATENCY_BUCKETS, BulkHistogram


def _exposition(registry: CollectorRegistry) -> tuple[list[str], float]:
    """The lines but the sum (added up in another order: the last digit may differ), and the sum."""
    lines = [line for line in generate_latest(registry).decode().splitlines() if "h_created" not in line]
    return [line for line in lines if not line.startswith("h_sum")], float(next(line for line in lines if line.startswith("h_sum")).split()[1])


def test_bulk_histogram_exposes_what_observing_one_by_one_exposes() -> None:
    rng = random.Random(4)
    ours, reference = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("h", "doc", LATENCY_BUCKETS, ours)
    single = Histogram("h", "doc", buckets=LATENCY_BUCKETS, registry=reference)
    for _ in range(20):
        values = [rng.choice([0.0, *LATENCY_BUCKETS, 1e6]) if rng.random() < 0.3 else rng.expovariate(2.0) for _ in range(rng.randrange(0, 50))]
        bulk.observe_all(values)
        for value in values:
            single.observe(value)
        (lines, total), (expected_lines, expected_total) = _exposition(ours), _exposition(reference)
        assert lines == expected_lines
        assert total == pytest.approx(expected_total, rel=1e-12)
    assert any(line.startswith('h_bucket{le="+Inf"}') for line in lines)
