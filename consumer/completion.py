"""Fan-in of slice outcomes: a request is finished when every slice that carries it is.

One batch carries many requests, and a request larger than a batch rides in several. Each API
call reports one ``SliceOutcome`` for its slices; ``Completion.batch_done`` returns what that
finished as ``Settled`` groups: the requests the batch carried whole share the call's outcome
(one group), and a request whose last slice this was gets the outcomes of its slices combined:
SENT only if every slice was sent, otherwise the first slice that was not decides status and
code. Thread-safe (senders report from their worker threads).
"""

from __future__ import annotations

import threading
import time

from .models import SendRequest, Settled, Slice, SliceOutcome, Status


def now_ms() -> int:
    return int(time.time() * 1000)


def combine(outcomes: list[SliceOutcome]) -> SliceOutcome:
    if len(outcomes) == 1:
        return outcomes[0]
    attempts = sum(o.attempts for o in outcomes)
    failed = next((o for o in outcomes if o.status is not Status.SENT), None)
    first = failed or outcomes[0]
    group_ids = ",".join(o.group_message_id for o in outcomes if o.group_message_id)
    return SliceOutcome(
        first.status,
        first.code,
        first.message,
        attempts,
        group_ids or None,
        outcomes[-1].api_request_id,
        ",".join(o.batch_id for o in outcomes if o.batch_id) or None,
    )


class Completion:
    def __init__(self) -> None:
        self._partial: dict[int, list[SliceOutcome]] = {}
        self._lock = threading.Lock()

    def batch_done(self, slices: list[Slice], outcome: SliceOutcome, completed_at_ms: int) -> list[Settled]:
        """``slices`` came to ``outcome``: the requests this finished, in groups (see above)."""
        whole = [piece.request for piece in slices if piece.request.parts == 1]
        settled = [Settled(outcome, completed_at_ms, whole)] if whole else []
        if len(whole) < len(slices):
            for piece in slices:
                request = piece.request
                if request.parts == 1:
                    continue
                with self._lock:
                    outcomes = self._partial.setdefault(id(request), [])
                    outcomes.append(outcome)
                    if len(outcomes) < request.parts:
                        continue
                    del self._partial[id(request)]
                settled.append(Settled(combine(outcomes), completed_at_ms, [request]))
        return settled

    def forget(self, request: SendRequest) -> None:
        """Drop partial outcomes of an abandoned request."""
        with self._lock:
            self._partial.pop(id(request), None)
