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


def test_phase_clock_charges_the_threads_cpu_time_to_the_phase_that_spent_it() -> None:
    import time

    from consumer.metrics import LOOP_PHASES, Metrics, PhaseClock

    metrics = Metrics()
    clock = PhaseClock(metrics.loop_cpu)
    started = time.thread_time()
    while time.thread_time() - started < 0.05:  # 50 ms of CPU in "intake"
        pass
    clock.charge("intake")
    time.sleep(0.05)  # waiting is not CPU
    clock.charge("other")
    spent = {phase: metrics.loop_cpu.labels(phase)._value.get() for phase in LOOP_PHASES}
    assert 0.05 <= spent["intake"] < 0.5
    assert spent["other"] < 0.01
    assert spent["consume"] == spent["results"] == 0.0
