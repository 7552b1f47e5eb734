"""Retry timing: exponential backoff with full jitter (pure; the random source is injected)."""

from __future__ import annotations

import random


def backoff_s(failures: int, base_ms: int, cap_ms: int, rng: random.Random | None = None) -> float:
    """Delay before retry number ``failures`` (1 = first retry): uniform in [0, min(cap, base·2^(n-1))]."""
    ceiling = min(cap_ms, base_ms * (2 ** max(0, failures - 1)))
    return (rng or random).uniform(0, ceiling) / 1000.0
