"""How late a call may have reached CAMS after its slot: the limiter's correction for late arrivals.

Pure: the sender gives each call's time from its slot to its request being on the wire (the
request handed to the socket; from the slot to the answer when that is not known). For a slot
reserved ahead, the slot is when the call was due had the limiter's answer come back at once: a
worker woken late, or an answer held up on its way back (``Reservation.late_s``), makes the call
late; an ask held up on its way to the limiter only got a later slot. All of that time counts,
less ``tolerance_s`` (half the limiter's safety margin, which absorbs it): the call's entry in the
window moves that much later, so the call that shares its window waits for it.

Nothing is taken off for what is usual. A call's entry is then never more than ``tolerance_s``
before the call reached CAMS, and no call reaches CAMS before its own slot, whichever process
sent either of them: two calls ``capacity`` grants apart arrive at least ``span - tolerance_s``
apart. Taking off each process's fastest recent time instead (the work between a slot and the
socket, the same for every call of a process) left the entries of a busy process's calls up to
that time early, and a quicker process's call sharing their window reached CAMS less than a
second after them (issue 23: 0.98–0.999 s, in the first second of a drain, with several
accounts, workers or instances on a busy machine). What every call spends between its slot and
the wire now costs the account's rate as much: 2 ms a call is 0.2 %.

What happens after the request is written (the network, CAMS's own work, the answer's way back)
is not counted: CAMS counts a call when it arrives, and the network's jitter is what the safety
margin is for.
"""

from __future__ import annotations

from .protocol import RESERVE_AHEAD_S

MISSED_SLOT_S = RESERVE_AHEAD_S / 2
"""A worker that finds itself this late for its slot before its request is written (woken late
on a starved machine, an answer held up on its way back) gives the slot back and asks again
instead of sending on it. Lateness is told as the request is written, and the slot that shares
its window may be decided as early as ``RESERVE_AHEAD_S`` after this one: a call later than
that is told too late for it (issue 23: 11 and 12 calls of one account in a second, 0.64-0.8 s
apart, with 20 accounts on a machine loaded 9 deep). Half the horizon leaves the other half for
writing the request and telling the limiter."""


def lateness(held_s: float, tolerance_s: float) -> float:
    """Seconds the call that took ``held_s`` from its slot to the wire may have arrived late (0.0: none)."""
    return max(0.0, held_s - tolerance_s)
