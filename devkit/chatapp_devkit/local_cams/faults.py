"""Fault injection for the local CAMS endpoint: the settings, their validation, and a seeded decider."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from chatapp_devkit.local_cams.checks import apply_changes, count, number, regex
from chatapp_devkit.local_cams.errors import ApiError


@dataclass(frozen=True, slots=True)
class FaultKind:
    """How an injected fault answers: ``(HTTP status, Code)``, or None to close the connection
    without an answer; ``sleeps`` waits ``timeout_sleep_s`` (on top of the latency) first."""

    answer: tuple[int, str] | None
    sleeps: bool = False


FAULT_KINDS: dict[str, FaultKind] = {
    "http500": FaultKind((500, "InternalError")),
    "timeout": FaultKind((504, "GatewayTimeout"), sleeps=True),
    "drop": FaultKind(None),
    "limit": FaultKind((400, "System.LimitControl")),
}


@dataclass(frozen=True, slots=True)
class Faults:
    """Run-time settings; every field can be changed with a partial update (``Faults.updated``).

    ``error_rate`` of the calls that pass the rate limit get a fault drawn from ``error_mix``
    (kind -> weight, kinds of ``FAULT_KINDS``). ``permanent_codes`` / ``http200_codes`` map a
    TemplateCode or TemplateName to a Code answered with HTTP 400 / HTTP 200. A ``To`` in
    ``invalid_numbers`` or fully matching ``invalid_number_regex`` fails the whole call with
    InvalidParameter. ``rate_limit`` (0 = unlimited) applies per AccessKeyId unless
    ``rate_limits`` names the key. ``seed`` seeds the RNG that draws faults and jitter.
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    error_mix: dict[str, float] = field(default_factory=lambda: {"http500": 1.0})
    timeout_sleep_s: float = 15.0
    permanent_codes: dict[str, str] = field(default_factory=dict)
    http200_codes: dict[str, str] = field(default_factory=dict)
    invalid_numbers: list[str] = field(default_factory=list)
    invalid_number_regex: str | None = None
    rate_limit: int = 10
    rate_limits: dict[str, int] = field(default_factory=dict)
    seed: int = 0

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with ``changes`` applied; ValueError names the first bad field."""
        return apply_changes(self, changes, _VALIDATORS, "fault settings")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("expected an object of strings")
    return dict(value)


def _error_mix(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value or not set(value) <= set(FAULT_KINDS):
        raise ValueError(f"expected an object with keys from {sorted(FAULT_KINDS)}")
    mix = {kind: number(0)(weight) for kind, weight in value.items()}
    if sum(mix.values()) <= 0:
        raise ValueError("weights sum to 0")
    return mix


def _numbers(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise ValueError("expected a list of strings")
    return list(value)


def _rate_limits(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise TypeError("expected an object of AccessKeyId -> calls per second")
    return {str(key): count(limit) for key, limit in value.items()}


_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "latency_ms": number(0),
    "jitter_ms": number(0),
    "error_rate": number(0, 1),
    "error_mix": _error_mix,
    "timeout_sleep_s": number(0),
    "permanent_codes": _str_map,
    "http200_codes": _str_map,
    "invalid_numbers": _numbers,
    "invalid_number_regex": regex,
    "rate_limit": count,
    "rate_limits": _rate_limits,
    "seed": count,
}


class FaultDecider:
    """Draws faults and jitter from ``Random(faults.seed)``; not thread-safe (callers hold a lock).

    A new decider (so a fresh RNG sequence) is built whenever the settings change.
    """

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._kinds = list(faults.error_mix)
        self._weights = list(faults.error_mix.values())
        self._invalid = frozenset(faults.invalid_numbers)
        self._invalid_regex = re.compile(faults.invalid_number_regex) if faults.invalid_number_regex else None

    def rate_limit(self, access_key_id: str) -> int:
        return self.faults.rate_limits.get(access_key_id, self.faults.rate_limit)

    def latency_s(self) -> float:
        jitter = self._rng.uniform(0, self.faults.jitter_ms) if self.faults.jitter_ms else 0.0
        return (self.faults.latency_ms + jitter) / 1000

    def injected(self) -> str | None:
        """The FAULT_KINDS name this call gets, or None."""
        if self.faults.error_rate and self._rng.random() < self.faults.error_rate:
            return self._rng.choices(self._kinds, self._weights)[0]
        return None

    def content_error(self, template: str, to: list[str]) -> tuple[str, ApiError] | None:
        """(fault name, answer) when the template or a number is configured to fail; HTTP 200 answers
        carry a business Code."""
        if template in self.faults.permanent_codes:
            return "permanent", ApiError(400, self.faults.permanent_codes[template])
        if template in self.faults.http200_codes:
            return "http200", ApiError(200, self.faults.http200_codes[template])
        pattern = self._invalid_regex
        if not self._invalid.isdisjoint(to) or (pattern is not None and any(pattern.fullmatch(n) for n in to)):
            return "invalid_number", ApiError(400, "InvalidParameter", "Specified parameter SenderList is not valid.")
        return None
