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
| IN_FLIGHT, stale, ``receipts``, a receipt for its call  | SETTLE: SENT, not sent again       |
| ... no receipt yet, within ``inflight_receipts_wait_s`` | WAIT: looked at again              |
| ... none after the wait, or the mark has no TaskId      | TAKE_OVER and send again (RESENT)  |

A mark is stale once ``inflight_stale_s`` passed since it was written or its owner last beat
(see ``ledger.py``); the receipts wait counts from then. A receipt for the call is one the
receipts receiver got for one of the request's numbers under the TaskId kept in the mark (the
service's own, unique to that call): CAMS took the call. The caller looks that evidence up
(``wants_evidence`` says for which entries) and passes it in.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import NamedTuple

from .fingerprint import fingerprint
from .ledger import CLAIMED, DONE, IN_FLIGHT, LedgerEntry
from .models import SendRequest, Source

REUSED_CODE = "Chatapp.RequestIdReused"
INFLIGHT_UNKNOWN = "Chatapp.InFlightUnknown"
RECEIPTS = "receipts"


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
    SETTLE = "settle"


class Policy(NamedTuple):
    """This instance's name in the ledger and what it does with a stale IN_FLIGHT mark."""

    owner: str
    inflight_policy: str
    stale_s: float
    receipts_wait_s: float = 30.0


def _stale(entry: LedgerEntry, policy: Policy, now_s: float) -> bool:
    return entry.owner == policy.owner or now_s - entry.since > policy.stale_s


def wants_evidence(entry: LedgerEntry | None, policy: Policy, now_s: float) -> bool:
    """Would ``decide`` use a receipt for this entry's call (a stale IN_FLIGHT mark with a TaskId,
    ``inflight_policy=receipts``)?"""
    return policy.inflight_policy == RECEIPTS and entry is not None and entry.state == IN_FLIGHT and entry.task_id is not None and _stale(entry, policy, now_s)


def decide(request: SendRequest, entry: LedgerEntry | None, pending: SendRequest | None, policy: Policy, now_s: float, receipted: bool = False) -> Action:
    """The decision for ``request``, given its ledger entry (None: just claimed by this
    instance), the request with the same id on its way in this process, the wall clock, and
    whether a receipt came for the call of its IN_FLIGHT mark (``wants_evidence``)."""
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
    if entry.state != DONE and not _stale(entry, policy, now_s):
        return Action.WAIT
    if entry.state in (CLAIMED, DONE):  # nothing of it was sent (a DONE without a result: never written so)
        return Action.TAKE_OVER
    if policy.inflight_policy == RECEIPTS and entry.task_id is not None:
        if receipted:
            return Action.SETTLE
        if now_s - entry.since <= policy.stale_s + policy.receipts_wait_s:
            return Action.WAIT
    return Action.FAIL if policy.inflight_policy == "fail" else Action.RESEND


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
