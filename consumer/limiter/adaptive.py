"""Adaptive rate factor, as pure functions of (stored state, now).

The factor (1.0 = the configured rate) halves when CAMS answers System.LimitControl, never below
``floor``, and then climbs back linearly by ``recovery_per_s`` per second. Further throttles within
``holdoff_s`` of a decrease are echoes of the same overload (calls already in flight) and do not
decrease it again.

``consumer/limiter/redis.py`` runs the same rules in Lua; keep both in step.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AdaptivePolicy:
    """How hard to back off and how fast to come back (fractions of the configured rate)."""

    decrease: float = 0.5
    floor: float = 0.1
    recovery_per_s: float = 0.05
    holdoff_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.decrease < 1.0:
            raise ValueError(f"decrease must be in (0, 1), got {self.decrease}")
        if not 0.0 < self.floor <= 1.0:
            raise ValueError(f"floor must be in (0, 1], got {self.floor}")
        if not self.recovery_per_s > 0.0:
            raise ValueError(f"recovery_per_s must be > 0, got {self.recovery_per_s}")
        if self.holdoff_s < 0.0:
            raise ValueError(f"holdoff_s must be >= 0, got {self.holdoff_s}")


@dataclass(frozen=True, slots=True)
class RateFactor:
    """The factor set by the last decrease (``base``) and when that happened (``since``; None = never)."""

    base: float = 1.0
    since: float | None = None

    def at(self, now: float, policy: AdaptivePolicy) -> float:
        """The factor in force at ``now``: ``base`` plus the linear recovery since, capped at 1.0."""
        if self.since is None:
            return self.base
        return min(1.0, self.base + policy.recovery_per_s * (now - self.since))

    def throttled(self, now: float, policy: AdaptivePolicy) -> RateFactor:
        """The state after a System.LimitControl answer at ``now``."""
        if self.since is not None and now - self.since < policy.holdoff_s:
            return self
        return RateFactor(max(policy.floor, self.at(now, policy) * policy.decrease), now)
