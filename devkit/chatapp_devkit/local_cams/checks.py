"""Validators shared by the endpoint's run-time settings (faults, receipts): each takes a decoded
JSON value and answers it cleaned, or raises ValueError/TypeError saying what was expected;
``apply_changes`` applies a partial update through them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

Settings = TypeVar("Settings")


def number(low: float, high: float = float("inf")) -> Callable[[Any], float]:
    """A validator of numbers in ``low..high`` (booleans are not numbers)."""

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise ValueError(f"expected a number in {low}..{high}, got {value!r}")
        return float(value)

    return check


def count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected an integer >= 0, got {value!r}")
    return value


def regex(value: Any) -> str | None:
    """A regular expression or None (re.error when it does not compile)."""
    if value is not None:
        if not isinstance(value, str):
            raise TypeError(f"expected a regular expression string, got {value!r}")
        re.compile(value)
    return value


def apply_changes(settings: Settings, changes: Mapping[str, Any], validators: Mapping[str, Callable[[Any], Any]], what: str) -> Settings:
    """A copy of the dataclass ``settings`` with ``changes`` applied; ValueError names the first bad field."""
    unknown = sorted(set(changes) - set(validators))
    if unknown:
        raise ValueError(f"unknown {what}: {unknown}")
    clean = {}
    for name, value in changes.items():
        try:
            clean[name] = validators[name](value)
        except (TypeError, ValueError, re.error) as exc:
            raise ValueError(f"{name}: {exc}") from None
    return replace(settings, **clean)  # type: ignore[type-var]
