"""Holding back a log line that repeats: ``Repeats``, a logging filter (pure: the clock is given).

A client library that cannot reach its server says so on every retry, several times a second,
each time with other numbers in it (``after 12ms``, ``3 identical error(s) suppressed``). The
filter lets the first line of a kind through, holds back the lines of the same kind that follow
within ``every_s`` seconds and counts them; the next line of that kind let through says how many
were held back. A line's kind is its level and its text with every number and address replaced
by ``#``, cut to ``KIND_CHARS``: the same failure on another attempt, broker or address family
is the same kind. DEBUG lines are never held back (who asks for them wants them all).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

KIND_CHARS = 80
MAX_KINDS = 1000
_VARYING = re.compile(r"ipv[46]#\S+|\[[0-9a-fA-F:.]*\]|[\w.-]*\d[\w.:-]*")
"""Numbers and what holds them (addresses, host:port, client names such as ``rdkafka#consumer-1``)."""


def kind(level: int, text: str) -> tuple[int, str]:
    """What two lines share when one repeats the other."""
    return level, _VARYING.sub("#", text)[:KIND_CHARS]


class Repeats(logging.Filter):
    """Lets one line of a kind through every ``every_s`` seconds (see the module)."""

    def __init__(self, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s = every_s
        self._clock = clock
        self._seen: dict[tuple[int, str], list[float]] = {}  # kind -> [when let through, held back since]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:  # debugging output (librdkafka's ``debug``) is wanted whole
            return True
        now = self._clock()
        what = kind(record.levelno, record.getMessage())
        seen = self._seen.get(what)
        if seen is not None and now - seen[0] < self.every_s:
            seen[1] += 1
            return False
        if seen is None and len(self._seen) >= MAX_KINDS:
            self._seen.clear()
        held = int(seen[1]) if seen is not None else 0
        self._seen[what] = [now, 0]
        if held:
            record.msg = f"{record.getMessage()} (same message repeated {held} times in {now - seen[0]:.0f}s)"  # type: ignore[index]
            record.args = ()
        return True
