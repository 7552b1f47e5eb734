"""Fan-in of slice outcomes: a request is finished when every slice that carries it is.

One batch carries many requests, and a request larger than a batch rides in several. Each API
call reports one ``SliceOutcome`` per slice; ``Completion.slice_done`` returns the request's
``SendResult`` once its last slice reports, combining them: SENT only if every slice was sent,
otherwise the first slice that was not decides status and code. Thread-safe (senders report
from their worker threads).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .models import SendRequest, SendResult, Slice, Status


@dataclass(frozen=True, slots=True)
class SliceOutcome:
    """What happened to one slice."""

    status: Status
    code: str | None
    message: str | None
    attempts: int = 0
    group_message_id: str | None = None
    api_request_id: str | None = None
    batch_id: str | None = None


def now_ms() -> int:
    return int(time.time() * 1000)


def result_of(request: SendRequest, outcome: SliceOutcome, completed_at_ms: int) -> SendResult:
    return SendResult(request.request_id, outcome.status, outcome.code, outcome.message, len(request.recipients), outcome.attempts,
                      outcome.group_message_id, outcome.api_request_id, outcome.batch_id, completed_at_ms)  # fmt: skip


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

    def slice_done(self, piece: Slice, outcome: SliceOutcome, completed_at_ms: int) -> SendResult | None:
        request = piece.request
        if request.parts == 1:
            return result_of(request, outcome, completed_at_ms)
        with self._lock:
            outcomes = self._partial.setdefault(id(request), [])
            outcomes.append(outcome)
            if len(outcomes) < request.parts:
                return None
            del self._partial[id(request)]
        return result_of(request, combine(outcomes), completed_at_ms)

    def forget(self, request: SendRequest) -> None:
        """Drop partial outcomes of an abandoned request."""
        with self._lock:
            self._partial.pop(id(request), None)
