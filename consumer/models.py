"""The data shapes that travel the pipeline: plain values, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class BatchKey(NamedTuple):
    """Every request-level API field: requests batch together only when all of them are equal."""

    account: str
    channel_type: str
    template_code: str | None
    template_name: str | None
    language: str
    from_number: str
    fallback_id: str | None
    fallback_content: str | None
    fallback_rule: str | None
    fallback_duration_s: int | None
    task_id: str | None
    cust_space_id: str | None
    label: str | None
    tag: str | None
    ttl_s: int | None

    @property
    def template(self) -> str:
        """The template as operators know it (code, else name): safe for logs and metric labels."""
        return self.template_code or self.template_name or ""


class Status(str, enum.Enum):
    SENT = "SENT"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class Source(NamedTuple):
    """Where a request came from: its commit position and what its reply needs."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    correlation_id: bytes | None = None
    reply_to: str | None = None


NO_SOURCE: Source = None  # type: ignore[assignment]  # see below
"""A decoded request's source until the intake sets it (``SendRequest.source``): None at run
time, typed a ``Source`` so that the code after the intake reads ``request.source`` unchecked
(the intake sets it before a request goes anywhere), and the decoder passes it positionally (a
keyword argument for ``size_bytes`` would slow the decoder's hot path)."""

Recipient = dict[str, Any]
"""A decoded Avro ``Recipient`` record (keys as in schemas/send_request.avsc)."""


@dataclass(slots=True)
class SendRequest:
    """A request as decoded (``request_reader``), then worked on until its result is published."""

    request_id: str
    key: BatchKey
    recipients: list[Recipient]
    expires_at_ms: int | None
    source: Source = NO_SOURCE
    """Where it came from: set by the intake once the request is decoded."""
    size_bytes: int = 0
    parts: int = 1
    """How many slices (batches) carry it: 1 unless it is larger than a batch."""
    fingerprint: str | None = None
    """The hash of its content the ledger keeps (``ledger.fingerprint``), once worked out."""


class SendResult(NamedTuple):
    """The answer to one request (a NamedTuple: one is made per request, and a frozen dataclass
    costs four times as much to build)."""

    request_id: str
    status: Status
    code: str | None
    message: str | None
    recipients: int
    attempts: int = 0
    group_message_id: str | None = None
    api_request_id: str | None = None
    batch_id: str | None = None
    completed_at_ms: int = 0

    def to_record(self) -> dict[str, Any]:
        """The Avro ``SendResult`` record."""
        return {
            "request_id": self.request_id,
            "status": self.status.value,
            "code": self.code,
            "message": self.message,
            "group_message_id": self.group_message_id,
            "api_request_id": self.api_request_id,
            "recipients": self.recipients,
            "attempts": self.attempts,
            "batch_id": self.batch_id,
            "completed_at": self.completed_at_ms,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SendResult:
        return cls(
            request_id=record["request_id"],
            status=Status(record["status"]),
            code=record["code"],
            message=record["message"],
            recipients=record["recipients"],
            attempts=record["attempts"],
            group_message_id=record["group_message_id"],
            api_request_id=record["api_request_id"],
            batch_id=record["batch_id"],
            completed_at_ms=record["completed_at"],
        )


class SliceOutcome(NamedTuple):
    """What one API call (or the service, for a call not made) came to for a slice: a result
    without the request's id and recipients."""

    status: Status
    code: str | None
    message: str | None
    attempts: int = 0
    group_message_id: str | None = None
    api_request_id: str | None = None
    batch_id: str | None = None

    def result(self, request_id: str, recipients: int, completed_at_ms: int) -> SendResult:
        return SendResult(request_id, self.status, self.code, self.message, recipients, self.attempts,
                          self.group_message_id, self.api_request_id, self.batch_id, completed_at_ms)  # fmt: skip


class Settled(NamedTuple):
    """Requests finished together with one outcome (a batch's whole requests, or one request
    whose slices have all come back): their results differ only by request id and recipients,
    so they travel, are encoded and are acknowledged as a group."""

    outcome: SliceOutcome
    completed_at_ms: int
    requests: list[SendRequest]

    def result(self, request: SendRequest) -> SendResult:
        """The result of one of the group's requests."""
        return self.outcome.result(request.request_id, len(request.recipients), self.completed_at_ms)


@dataclass(slots=True)
class Slice:
    """The part of one request that rides in one batch (the whole request unless it had to be split)."""

    request: SendRequest
    recipients: list[Recipient]


@dataclass(slots=True)
class Batch:
    """Requests with one BatchKey that go out as one API call."""

    batch_id: str
    key: BatchKey
    slices: list[Slice] = field(default_factory=list)
    recipient_count: int = 0
    created_at: float = 0.0
    attempts: int = 0
    """API calls made for this batch (and the batch it was split from)."""
    failures: int = 0
    """Transient failures so far (throttling does not count)."""
    throttles: int = 0
    ready_at: float = 0.0
    """When it was handed to the scheduler (for the limiter-wait metric)."""
    addresses: set[str] = field(default_factory=set)
    """The canonical addresses of its recipients (``batching.addresses``): a call holds each once."""
    size_bytes: int = 0
    """The encoded size of the requests it carries (a split request's whole size in each part):
    what bounds the call's size (``batch_max_bytes``)."""
    bisected: bool = False
    """A half of a batch CAMS refused for its content (its calls count against ``bisection.BisectionBudget``)."""
    task_id: str | None = None
    """The TaskId the service gave its calls when its key has none (``receipts.recorder``)."""

    @property
    def earliest_expiry_ms(self) -> int | None:
        expiries = [s.request.expires_at_ms for s in self.slices if s.request.expires_at_ms is not None]
        return min(expiries) if expiries else None
