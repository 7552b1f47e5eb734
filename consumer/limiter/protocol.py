"""What every limiter promises: the per-account limit, the limiter protocol and its metrics hooks.

Two ways to take a token: :meth:`RateLimiter.acquire` grants one now or says when to ask again;
:meth:`RateLimiter.reserve` takes the account's next free slot up to ``RESERVE_AHEAD_S`` ahead in
the same request and says when it is, so a caller whose limiter is far away (a slow Redis) pays
one round trip per call and several callers' round trips can overlap. Both draw on the same
schedule and window (see gcra.py): the account's promise holds whichever mix of them is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

RESERVE_AHEAD_S = 0.5
"""The furthest ahead a slot is ever reserved: half a window. A slot that the window holds back
comes ``span`` (1 s and the margin) after the grant it shares its window with; decided no more
than this ahead, it is decided more than half a second after that grant's own slot: time for the
call to go out and for its lateness to be told (``arrived_late``, as it goes on the wire) before
the slot that must wait for it is given. A slot reserved a whole window ahead was decided before
the call it shares its window with had even gone out, and a late call's successor went early
(issue 23). It also bounds how much of the budget an instance takes in advance (the rest stays
for the others), and how much a caller that stops before its slot gives back (it refunds it)."""


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


class Reservation(NamedTuple):
    """The answer to :meth:`RateLimiter.reserve`. ``reserved``: the slot ``wait_s`` seconds after
    the limiter decided (0.0: at once) is the caller's; send then, without asking again (a slot the
    caller will not use is given back with :meth:`RateLimiter.refund`). Not reserved: the next free
    slot lies beyond the horizon; ask again in ``wait_s``. ``rate``: the account's calls/s as
    :meth:`RateLimiter.effective_rate` gives it, at no extra cost (the sender sizes its gate by it).
    ``late_s``: how long the answer took to come back after the decision (the network, a pause
    of the process), as far as the limiter can tell: a caller that goes ``wait_s`` after the
    answer goes that much later after its slot (the sender counts it in the call's lateness, see
    lateness.py). Not the way there: an ask held up before the
    decision (a new connection's handshake, a busy Redis) only gets a later slot.
    ``answered_at``: the instant (``time.monotonic``) the answer came in, taken at once (the
    decision's own for a limiter on this machine, whose answer is never late); None: when the
    caller got it. The slot is ``answered_at - late_s + wait_s`` on the caller's clock (no sooner
    than its ask plus ``wait_s``): the caller sends then, and whatever holds it up after that
    (the interpreter busy elsewhere, a thread woken late) is lateness."""

    reserved: bool
    wait_s: float
    rate: float
    late_s: float = 0.0
    answered_at: float | None = None


class RateLimiter(Protocol):
    """A per-account token source for the dispatcher. No method ever sleeps."""

    def acquire(self, account: str, ticket: str | None = None) -> float:
        """Take a token for ``account`` now (returns 0.0) or return the seconds to wait before asking again.

        ``ticket`` names the grant (unique across instances) so that :meth:`arrived_late` can find it.
        The same as :meth:`reserve` with ``ahead_s=0``."""
        ...

    def reserve(self, account: str, ticket: str | None = None, ahead_s: float = RESERVE_AHEAD_S) -> Reservation:
        """Take ``account``'s next free slot if it is at most ``ahead_s`` (capped at ``RESERVE_AHEAD_S``)
        away, in one request: counted in the window at that slot, under ``ticket`` as for :meth:`acquire`.
        ``observer.granted`` when reserved, ``observer.denied`` when not."""
        ...

    def arrived_late(self, account: str, ticket: str, late_s: float) -> None:
        """The call granted under ``ticket`` may have reached CAMS up to ``late_s`` after its grant (its slot):
        count it that much later in the window, so the call that shares its window waits for it."""
        ...

    def refund(self, account: str, ticket: str) -> None:
        """CAMS did not count the call granted under ``ticket`` (it answered System.LimitControl), or
        the call reserved under ``ticket`` will not be made: take it out of the window, so the call
        sharing its window need not wait for it."""
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
