"""The in-flight book: every request taken in and not yet answered, and what it holds.

The one owner of the requests being worked on (by request id), the later messages carrying the
same id (followers: answered with the same result, each on its own), the buffer they fill
(recipients and encoded bytes) and the back-pressure decision those counters feed. Pure: the
main loop tells it what happened, with the time passed in, and carries out what it answers.
Kept apart from the requests themselves so that a buffered request costs the garbage collector
little.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from .backpressure import BufferBound
from .models import SendRequest, Settled, Source

RESUME_AT = 0.75
"""Fetching resumes below this share of the bounds: it restarts about a second after resume(),
and the buffer must not run dry meanwhile."""


class InFlightBook:
    def __init__(self, bound: BufferBound, max_bytes: int):
        self._bound = bound
        self._max_bytes = max_bytes
        self._pending: dict[str, SendRequest] = {}
        self._followers: dict[str, list[Source]] = {}
        self.recipients = 0
        """Recipients taken in and not yet answered (batching, waiting for a token, in flight)."""
        self.bytes = 0
        """Their encoded size."""
        self.paused = False
        """Has back-pressure paused the partitions?"""

    def pending(self, request_id: str) -> SendRequest | None:
        """The request with this id on its way, if any."""
        return self._pending.get(request_id)

    def hold(self, request: SendRequest, followers: list[Source] | None = None) -> None:
        """Book a request (and the copies of it already read) until its result is published."""
        self._pending[request.request_id] = request
        if followers:
            self._followers[request.request_id] = followers
        self.recipients += len(request.recipients)
        self.bytes += request.size_bytes

    def follow(self, request_id: str, source: Source) -> None:
        """A later copy of a request on its way: it gets the same result."""
        self._followers.setdefault(request_id, []).append(source)

    def finished(self, group: Settled, now: float) -> list[Settled]:
        """The group's requests are answered: unbook them; returns the groups answering their
        followers (one request each)."""
        pending, followers = self._pending, self._followers
        copies: list[Settled] = []
        recipients = size = 0
        for request in group.requests:
            request_id = request.request_id
            pending.pop(request_id, None)
            if followers and request_id in followers:
                copies += [group._replace(requests=[replace(request, source=follower)]) for follower in followers.pop(request_id)]
            recipients += len(request.recipients)
            size += request.size_bytes
        self.recipients -= recipients
        self.bytes -= size
        self._bound.finished(recipients, group.requests[0].key, now)  # a group is never empty
        return copies

    def abandoned(self, requests: Iterable[SendRequest], kept: Callable[[Source], bool]) -> tuple[list[tuple[SendRequest, list[Source]]], list[SendRequest]]:
        """Unbook requests given up unsent (their partitions were taken away). Returns (the
        requests to hold in their place, each with its followers: a follower on a partition still
        ``kept`` takes over, the rest of them behind it; the requests nobody here answers)."""
        replacements: list[tuple[SendRequest, list[Source]]] = []
        released: list[SendRequest] = []
        for request in requests:
            self._pending.pop(request.request_id, None)
            followers = self._followers.pop(request.request_id, [])
            self.recipients -= len(request.recipients)
            self.bytes -= request.size_bytes
            survivors = [f for f in followers if kept(f)]
            if survivors:
                replacements.append((replace(request, source=survivors[0]), survivors[1:]))
            else:
                released.append(request)
        return replacements, released

    def pressure(self, now: float, extra_bytes: int) -> bool | None:
        """True when the partitions should pause now, False when they should resume, None to
        leave them as they are; ``extra_bytes``: other bytes producers made this process hold
        (records answered at intake, not yet acknowledged)."""
        bound = self._bound.limit(now)
        held = self.bytes + extra_bytes
        if not self.paused and (self.recipients >= bound or held >= self._max_bytes):
            self.paused = True
            return True
        if self.paused and self.recipients < bound * RESUME_AT and held < self._max_bytes * RESUME_AT:
            self.paused = False
            return False
        return None
