"""The many-accounts scenario's rows: per account, the box, the most calls in 1 s, the CPU."""

from __future__ import annotations

from typing import Any

from bench.accounts import Plan, _rows


def _run(figures: list[float], peak: int, service_cpu_s: float, endpoint_cpu_s: float) -> dict[str, Any]:
    return {
        "accounts": {f"acct{i:02d}": {"figure": f} for i, f in enumerate(figures)},
        "box": {"figure": sum(figures) / len(figures)},
        "max_calls_1s": peak,
        "recipients_per_account": 60_000,
        "cpu_s": {"services": service_cpu_s, "endpoint": endpoint_cpu_s},
    }


def test_a_target_plan_fails_on_its_weakest_account_and_its_busiest_second() -> None:
    rows = _rows(Plan(5, 1, 2, 1, False, runs=2, target=True), [_run([0.995, 0.991], 10, 6.0, 3.0), _run([0.999, 0.989], 11, 6.0, 3.0)])
    each, box, peak, cpu = rows
    assert (each["measured"], each["ok"]) == (0.989, False)
    assert box["display"] == "0.993 / 0.994"
    assert (peak["measured"], peak["ok"]) == (11, False)


def test_the_cpu_row_says_how_many_accounts_a_core_carries() -> None:
    # 2 accounts × 60,000 recipients took the services 24 s of CPU: 0.2 s per 1,000 recipients,
    # 2 cores for one account's 10,000 recipients/s, so a core carries half an account
    cpu = _rows(Plan(2, 1, 1, 1, False), [_run([0.5, 0.5], 10, 24.0, 6.0)])[3]
    assert cpu["measured"] == 2.0
    assert cpu["display"] == "2.000 (0.500); 0.5"
    assert cpu["ok"] is None
