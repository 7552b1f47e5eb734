"""What every limiter promises: the per-account limit, the limiter protocol and its metrics hooks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class AccountLimit:
    """The CAMS call budget of one account.

    ``rate_per_second`` is the sustained rate CAMS allows; ``burst`` is how many calls may go
    back to back after an idle period. With ``burst=1`` (the default) grants are evenly spaced.
    Whatever the burst, no sliding window of ``1 + safety_margin`` seconds holds more than
    ``floor(rate_per_second)`` grants (at least one; see gcra.py).
    """

    rate_per_second: float
    burst: int = 1

    def __post_init__(self) -> None:
        if not self.rate_per_second > 0:
            raise ValueError(f"rate_per_second must be > 0, got {self.rate_per_second}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst}")


class RateLimiter(Protocol):
    """A per-account token source for the dispatcher. No method ever sleeps."""

    def acquire(self, account: str, ticket: str | None = None) -> float:
        """Take a token for ``account`` now (returns 0.0) or return the seconds to wait before asking again.

        ``ticket`` names the grant (unique across instances) so that :meth:`arrived_late` can find it."""
        ...

    def arrived_late(self, account: str, ticket: str, late_s: float) -> None:
        """The call granted under ``ticket`` may have reached CAMS up to ``late_s`` after its grant:
        count it that much later in the window, so the call that shares its window waits for it."""
        ...

    def refund(self, account: str, ticket: str) -> None:
        """CAMS did not count the call granted under ``ticket`` (it answered System.LimitControl):
        take it out of the window, so the call sharing its window need not wait for it."""
        ...

    def throttled(self, account: str, retry_after_s: float | None = None) -> None:
        """CAMS answered System.LimitControl for ``account``: slow it down (and hold it ``retry_after_s``)."""
        ...

    def effective_rate(self, account: str) -> float:
        """The calls/s currently allowed for ``account``: its configured rate times the adaptive factor."""
        ...

    def healthy(self) -> bool:
        """True while the limiter's backend is reachable (always True in process)."""
        ...

    def close(self) -> None:
        """Release the backend; the limiter is not used afterwards."""
        ...


class LimiterObserver(Protocol):
    """Metrics hooks. Called synchronously on the dispatcher thread: keep them cheap, never raise."""

    def granted(self, account: str) -> None: ...

    def denied(self, account: str, wait_s: float) -> None: ...

    def rate_changed(self, account: str, rate: float) -> None: ...

    def backend_error(self, account: str, exc: BaseException) -> None: ...

    def fallback_changed(self, active: bool) -> None: ...


class NoopObserver:
    """The default observer: records nothing."""

    def granted(self, account: str) -> None:
        pass

    def denied(self, account: str, wait_s: float) -> None:
        pass

    def rate_changed(self, account: str, rate: float) -> None:
        pass

    def backend_error(self, account: str, exc: BaseException) -> None:
        pass

    def fallback_changed(self, active: bool) -> None:
        pass
