"""consume → decode → validate: what each record read becomes. No I/O.

| the record                                           | becomes                                         |
|------------------------------------------------------|-------------------------------------------------|
| of a partition no longer ours (fetched before a revocation) | nothing: the new owner reads it          |
| finished by the partition's previous owner (its commit's metadata says so) | nothing: counted as finished |
| not a SendRequest (``codec.DecodeError``)            | a dead letter with the reason                   |
| a request naming a ``reply-to`` topic not allowed    | REJECTED ``Chatapp.ReplyToNotAllowed``          |
| a request breaking a limit (``validate.py``)         | REJECTED ``Chatapp.InvalidRequest``, every problem listed |
| a valid request                                      | a request to admit (``admission.py`` decides)   |

Every record of ours is tracked in its partition's offsets (``offsets.py``) as it is read, so
that its position is committed only once what it became is durable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from .codec import DecodeError
from .completion import now_ms
from .destinations import ReplyDestinations
from .kafka import TP, Record
from .models import SendRequest, SendResult, Source, Status
from .offsets import PartitionOffsets

REJECTED_CODE = "Chatapp.InvalidRequest"
REPLY_TO_NOT_ALLOWED = "Chatapp.ReplyToNotAllowed"


class Letter(NamedTuple):
    """A record to dead-letter, with why."""

    record: Record
    source: Source
    reason: str
    detail: str


class Read(NamedTuple):
    """What a batch of records became."""

    requests: list[SendRequest]
    rejected: list[tuple[Source, SendResult]]
    letters: list[Letter]
    skipped: int
    """Records a previous owner of their partition finished: passed over."""


def rejection(request: SendRequest, problems: list[str], refused_reply_to: str | None) -> SendResult:
    """The REJECTED result of a request that cannot be sent (it goes to the configured reply topic)."""
    code = REJECTED_CODE
    if refused_reply_to is not None:
        code = REPLY_TO_NOT_ALLOWED
        problems = [f"reply-to {refused_reply_to[:64]!r} is not an allowed topic (CHATAPP_REPLY_TO_PATTERN)", *problems]
    return SendResult(request.request_id, Status.REJECTED, code, "; ".join(problems), len(request.recipients), completed_at_ms=now_ms())


class Intake:
    def __init__(self, decode: Callable[[bytes], SendRequest], problems: Callable[[SendRequest], list[str]], destinations: ReplyDestinations,
                 partition_of: Callable[[TP], PartitionOffsets | None]):  # fmt: skip
        self._decode = decode
        self._problems = problems
        self._destinations = destinations
        self._partition_of = partition_of

    def read(self, records: list[Record]) -> Read:
        decode, problems_of, allowed, reply_topic = self._decode, self._problems, self._destinations.allowed, self._destinations.reply_topic
        requests: list[SendRequest] = []
        rejected: list[tuple[Source, SendResult]] = []
        letters: list[Letter] = []
        last_topic, last_partition, offsets = None, None, None
        skipped = 0
        for record in records:
            topic, partition, offset = record.topic, record.partition, record.offset
            if partition != last_partition or topic != last_topic:  # records come in runs of one partition
                last_topic, last_partition, offsets = topic, partition, self._partition_of((topic, partition))
            if offsets is None:  # fetched before a revocation: the new owner reads it
                continue
            if not offsets.track(offset):  # a previous owner finished it (its commit's metadata says so)
                skipped += 1
                continue
            reply_to = refused_reply_to = record.reply_to
            if reply_to is not None:
                if not allowed(reply_to):
                    reply_to = None
                else:
                    refused_reply_to = None
                    if reply_to == reply_topic:
                        reply_to = None
            source = Source(topic, partition, offset, record.timestamp_ms, record.correlation_id, reply_to)
            try:
                request = decode(record.value or b"")
            except DecodeError as exc:
                letters.append(Letter(record, source, exc.reason, exc.detail))
                continue
            problems = problems_of(request)
            if problems or refused_reply_to is not None:
                rejected.append((source, rejection(request, problems, refused_reply_to)))
                continue
            request.source = source
            requests.append(request)
        return Read(requests, rejected, letters, skipped)
