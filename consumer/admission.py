"""What becomes of a valid request when it is taken in: a pure decision from what the ledger
and this process know about its id, and the requests held aside until another one finishes.

| what is known about the id                              | decision                           |
|---------------------------------------------------------|------------------------------------|
| a request with this id is on its way here, same content | FOLLOW: answered with its result   |
| ... same account, other content                         | REUSED: REJECTED ``Chatapp.RequestIdReused`` |
| ... another account's                                   | WAIT until it is finished          |
| nothing: this instance just claimed it                  | SEND (EXPIRE if ``expires_at`` passed) |
| an entry with another fingerprint (same account)        | REUSED                             |
| DONE                                                    | ANSWER with the stored result      |
| CLAIMED / IN_FLIGHT by a live instance                  | WAIT: looked at again until DONE or stale |
| CLAIMED, stale (or this instance's, given up)           | TAKE_OVER: nothing was sent; claim it and send |
| IN_FLIGHT, stale, ``inflight_policy=resend``            | TAKE_OVER and send again (RESENT)  |
| IN_FLIGHT, stale, ``inflight_policy=fail``              | FAIL: FAILED ``Chatapp.InFlightUnknown`` |

A mark is stale once ``inflight_stale_s`` passed since it was written or its owner last beat
(see ``ledger.py``).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import NamedTuple

from .fingerprint import fingerprint
from .ledger import CLAIMED, DONE, LedgerEntry
from .models import SendRequest, Source

REUSED_CODE = "Chatapp.RequestIdReused"
INFLIGHT_UNKNOWN = "Chatapp.InFlightUnknown"


class Action(enum.Enum):
    SEND = "send"
    EXPIRE = "expire"
    FOLLOW = "follow"
    ANSWER = "answer"
    REUSED = "reused"
    WAIT = "wait"
    TAKE_OVER = "take_over"
    RESEND = "resend"
    FAIL = "fail"


class Policy(NamedTuple):
    """This instance's name in the ledger and what it does with a stale IN_FLIGHT mark."""

    owner: str
    inflight_policy: str
    stale_s: float


def decide(request: SendRequest, entry: LedgerEntry | None, pending: SendRequest | None, policy: Policy, now_s: float) -> Action:
    """The decision for ``request``, given its ledger entry (None: just claimed by this
    instance), the request with the same id on its way in this process, and the wall clock."""
    if pending is not None:
        if pending.key.account != request.key.account:
            return Action.WAIT
        return Action.FOLLOW if fingerprint(pending) == fingerprint(request) else Action.REUSED
    if entry is None:
        expires = request.expires_at_ms
        return Action.EXPIRE if expires is not None and expires <= now_s * 1000 else Action.SEND
    if entry.fingerprint is not None and entry.fingerprint != fingerprint(request):
        return Action.REUSED
    if entry.state == DONE and entry.result is not None:
        return Action.ANSWER
    if entry.state != DONE and entry.owner != policy.owner and now_s - entry.since <= policy.stale_s:
        return Action.WAIT
    if entry.state in (CLAIMED, DONE):  # nothing of it was sent (a DONE without a result: never written so)
        return Action.TAKE_OVER
    return Action.RESEND if policy.inflight_policy == "resend" else Action.FAIL


class WaitingRoom:
    """Requests held aside (decision WAIT), each looked at again ``every_s`` after it came."""

    def __init__(self, every_s: float = 0.5, clock: Callable[[], float] = time.monotonic):
        self._every_s = every_s
        self._clock = clock
        self._held: list[tuple[float, SendRequest]] = []

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, request: SendRequest) -> None:
        self._held.append((self._clock() + self._every_s, request))

    def due(self) -> list[SendRequest]:
        """Take out the requests whose time to be looked at again has come."""
        if not self._held:
            return []
        now = self._clock()
        due = [r for at, r in self._held if at <= now]
        if due:
            self._held = [(at, r) for at, r in self._held if at > now]
        return due

    def drop(self, selected: Callable[[Source], bool]) -> int:
        """Forget the requests whose source is ``selected`` (their partition was taken away)."""
        before = len(self._held)
        self._held = [(at, r) for at, r in self._held if not selected(r.source)]
        return before - len(self._held)
