"""bench.hotpath: the in-process measurement runs every request through to its result."""

from __future__ import annotations

from bench.hotpath import measure
from consumer.ledger import InMemoryLedger


def test_every_request_gets_its_result_and_each_phase_is_timed() -> None:
    figures = measure(300, 2, InMemoryLedger(3600))  # measure asserts every request was answered and nothing is left booked
    assert set(figures) == {"intake", "results", "sender: ledger marks", "main thread (intake + results)"}
    assert all(us > 0 for us in figures.values())
    assert figures["main thread (intake + results)"] == figures["intake"] + figures["results"]
