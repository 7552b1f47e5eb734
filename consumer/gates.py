"""The accounts' gates: the sender's batches waiting for a rate-limit slot, and what sizes them.

A batch handed to a worker takes a ticket at its account's gate. The gate decides whose turn it
is to ask the limiter (``may_ask``), how far ahead to reserve (``ahead_s``), how many of the
account's batches may wait at once (``depth``) and when the next granted call is due
(``next_due``, for the collector's pacing). It learns from each answer (``answered``): the round
trip to the limiter, the lead time from a place at the gate to the first answer, and the
account's rate. Not thread-safe: the sender calls it holding its lock.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Mapping

from .limiter import RESERVE_AHEAD_S, Reservation

GATE_DEPTH = 2
"""Batches per account prepared and waiting for their slot when the limiter answers at once:
enough that one is always ready the moment a slot comes, few enough that the rest keep filling in
the scheduler. A limiter that answers late gets more (see ``Gates.depth``)."""
LEAD_HISTORY = 8
"""Recent round trips to the limiter, and lead times (from a batch's place at the gate to the
limiter's first answer, its own turn to ask aside), per account: the longest of each sizes the gate."""
CONTENDED_S = 1.0
"""How long after the limiter made one of its calls wait an account counts as contended. With
instances sharing the budget, this one's gate is often empty while the others' calls take the
tokens: a young partial batch then keeps filling in the scheduler instead of taking a slot."""


class Gates:
    def __init__(self, concurrency: int):
        self._concurrency = concurrency
        self._tickets: defaultdict[str, deque[int]] = defaultdict(deque)  # per account: its tickets at the gate, in order
        self._denied_at: dict[str, float] = {}  # per account: when the limiter last made a call wait
        self._due_at: dict[int, float] = {}  # per ticket with its answer from the limiter: when its call goes out (or it asks again), until it is on the wire
        self._entered: dict[int, float] = {}  # per ticket at a gate: when it took its place, until the limiter first answered it
        self._holding: set[int] = set()  # tickets at a gate holding a reserved slot, until it comes
        self._round_trips: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=LEAD_HISTORY))  # per account: the latest asks
        self._leads: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=LEAD_HISTORY))  # per account: the latest lead times
        self._rates: dict[str, float] = {}  # per account: its calls/s as the limiter last said

    def enter(self, account: str, ticket: int, now: float) -> None:
        self._tickets[account].append(ticket)
        self._entered[ticket] = now

    def waiting(self, account: str) -> int:
        """The account's tickets at its gate."""
        return len(self._tickets[account])

    def contended(self, account: str, now: float) -> bool:
        """Is a batch of the account already waiting, or did the limiter make one wait lately?"""
        return bool(self._tickets[account]) or now - self._denied_at.get(account, -CONTENDED_S) < CONTENDED_S

    def answered(self, account: str, ticket: int, prepared_at: float, asked_at: float, replied_at: float, reservation: Reservation, due: float) -> None:
        """The limiter answered ``ticket``'s ask (made at ``asked_at``, its call prepared at ``prepared_at``)."""
        self._round_trips[account].append(replied_at - asked_at)
        entered = self._entered.pop(ticket, None)
        if entered is not None:  # its first answer: the lead, its wait for its turn aside
            self._leads[account].append(prepared_at - entered + replied_at - asked_at)
        self._rates[account] = reservation.rate
        if reservation.wait_s > 0:
            self._denied_at[account] = asked_at
        self._due_at[ticket] = due
        if reservation.reserved:
            self._holding.add(ticket)

    def leave(self, account: str, ticket: int) -> None:
        """``ticket``'s slot has come: the next batch may take its place while its call goes out."""
        self._tickets[account].remove(ticket)
        self._holding.discard(ticket)

    def on_the_wire(self, ticket: int) -> None:
        self._due_at.pop(ticket, None)

    def done(self, account: str, ticket: int) -> None:
        """``ticket``'s batch is done with (sent, or given up): forget it wherever it still is."""
        tickets = self._tickets[account]
        if ticket in tickets:
            tickets.remove(ticket)
        self._entered.pop(ticket, None)
        self._holding.discard(ticket)
        self._due_at.pop(ticket, None)

    def next_due(self) -> float:
        """When the next call granted or waiting for its slot is due (infinite: none)."""
        return min(self._due_at.values(), default=math.inf)

    def _calls_within(self, history: Mapping[str, deque[float]], account: str) -> int:
        """The account's calls (at the rate the limiter gives it) in the longest of its recent
        ``history`` times, rounded."""
        times = history.get(account)
        return int(max(times) * self._rates.get(account, 0.0) + 0.5) if times else 0

    def depth(self, account: str) -> int:
        """How many of ``account``'s batches may wait for a slot at once:
        ``GATE_DEPTH``, plus the calls the account makes in the time a batch takes from its place
        at the gate to the limiter's answer (the ledger's mark, building the call, the round trip
        to the limiter): Little's law, so that the gate keeps the account at its rate however
        slowly the limiter answers (six more with Redis 300 ms away at 10 calls/s, where the
        ledger's mark costs a round trip too), and none more when it answers at once."""
        return GATE_DEPTH + min(self._calls_within(self._leads, account), self._concurrency)

    def may_ask(self, account: str, ticket: int) -> bool:
        """Is it ``ticket``'s turn to ask? When fewer tickets ahead of it
        at the gate wait for their answer (or to ask again) than the account makes calls in one
        round trip to the limiter: first come, first served with a limiter that answers at once
        (the next asks once the one before holds its slot), and asks that overlap as much as a
        slow limiter needs."""
        waiting = 0
        allowed = self._calls_within(self._round_trips, account)
        for other in self._tickets[account]:
            if other == ticket:
                return True
            if other not in self._holding:
                waiting += 1
                if waiting > allowed:
                    return False
        return True

    def ahead_s(self, account: str) -> float:
        """How far ahead a slot is reserved. As far as the limiter allows
        while asks overlap: a second round trip is what they avoid. Otherwise two round trips: a
        worker sleeps until just before its slot and asks again, so a worker woken late loses
        its own time only (granted on the spot) instead of arriving late for a slot held for it."""
        if self._calls_within(self._round_trips, account):
            return RESERVE_AHEAD_S
        trips = self._round_trips.get(account)
        return min(RESERVE_AHEAD_S, 2 * max(trips)) if trips else 0.0
