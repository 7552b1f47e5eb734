"""When an instance holds no partition, say so, and why it may be waiting. No I/O.

Without partitions an instance is not ready (``/readyz``) and does nothing, and the reason is
in the group coordinator, not here: a member of the previous generation that left without
leaving the group (a killed process, a restart against librdkafka's mock broker) holds its
partitions until its session times out; the request topic may be missing; the group may have
more members than the topic has partitions. ``AssignmentWait`` says when a line is due: first
after ``FIRST_AFTER_S`` without partitions, then at doubling intervals up to ``MAX_EVERY_S``
(a member that is rightly idle is not a flood), again from the start once partitions came and
went. ``waiting_line`` words it (INFO while a session timeout could explain it, WARNING after).
"""

from __future__ import annotations

import logging

FIRST_AFTER_S = 5.0
MAX_EVERY_S = 300.0
GRACE_S = 10.0
"""Past the session timeout by this much, the wait is no longer the usual one: WARNING."""


class AssignmentWait:
    def __init__(self, now: float, first_after_s: float = FIRST_AFTER_S, max_every_s: float = MAX_EVERY_S):
        self._first_after_s = first_after_s
        self._max_every_s = max_every_s
        self._since: float | None = now
        """Since when no partition has been held (None: partitions held)."""
        self._next_after_s = first_after_s

    def due(self, assigned: bool, now: float) -> float | None:
        """Seconds without partitions when a line is due now, else None."""
        if assigned:
            self._since = None
            return None
        if self._since is None:
            self._since, self._next_after_s = now, self._first_after_s
        waited = now - self._since
        if waited < self._next_after_s:
            return None
        self._next_after_s = min(self._next_after_s * 2, waited + self._max_every_s)
        return waited


def waiting_line(waited_s: float, topic: str, group: str, session_timeout_ms: int | None) -> tuple[int, str]:
    """(log level, message) for ``waited_s`` without partitions; ``session_timeout_ms`` None: the
    broker sets it (KIP-848 group protocol)."""
    session = "the broker's group.consumer.session.timeout.ms" if session_timeout_ms is None else f"session.timeout.ms={session_timeout_ms:,} ms"
    limit_s = (45_000 if session_timeout_ms is None else session_timeout_ms) / 1000 + GRACE_S
    level = logging.INFO if waited_s < limit_s else logging.WARNING
    return level, (
        f"no partitions of {topic} assigned yet after {waited_s:.0f} s: waiting for group {group} "
        f"(a member that left without leaving the group, e.g. this instance's previous process, holds its partitions until {session} passes; "
        f"past that: is the topic missing, or are there more members than partitions? `chatapp-consumer topics describe`)"
    )
