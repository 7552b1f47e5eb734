"""One receipts push, from its body to the HTTP status CAMS is answered.

``Receiver.push``: read the reports (``parse``), claim them (``dedupe``: repeats dropped, reports
another push holds left for CAMS to push again), record their (TaskId, number) as seen and look
the new ones up in the join (``join``), publish their
statuses in the push's order and wait for the broker's acknowledgement, then mark them done. The
answer is 200 only when every report of the push is published (now or before): anything else is
503, and CAMS's retry finds what was published done and publishes the rest. A body that is no
receipts array is 400; a bad report inside a good array is counted and skipped, never the others.

A claim taken over from a push that held it past ``claim_s`` (its receiver died) is first looked
for on the topic (``recover``): found, it is marked done and not published again. A push that
could not start publishing within ``publish_within_s`` of its claims lets them go (503): its
records' fate must be known before the claims can go stale.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from ..kafka.acked import Outgoing
from .dedupe import Seen, SeenStore, Stale
from .encode import StatusEncoder
from .join import JoinStore
from .metrics import ReceiptMetrics
from .parse import Malformed, Match, Receipt, parse_push, seconds_since_send, status_record
from .recover import Recovery, log_mark

log = logging.getLogger("consumer.receipts")

OK, BAD_REQUEST, UNAVAILABLE = 200, 400, 503
TIMED = frozenset({"DELIVERED", "READ", "FAILED"})
"""Statuses whose time since the send is observed."""


class Publisher(Protocol):
    def publish(self, records: list[Outgoing]) -> list[bool | None]:
        """True: acknowledged; False: not written; None: not known in time."""

    def log_ends(self) -> dict[int, int]:
        """Per partition, an offset every record published from now on lands at or past."""


def outgoing(item: Receipt, match: Match | None, received_at_ms: int, encoder: StatusEncoder) -> Outgoing:
    """The status record of a receipt: key = its request id (none when unmatched), the request's
    correlation id echoed as the ``correlation-id`` header."""
    value = encoder.encode(status_record(item, match, received_at_ms))
    if match is None:
        return None, value, None
    headers = [("correlation-id", match.correlation_id)] if match.correlation_id is not None else None
    return match.request_id.encode(), value, headers


class Receiver:
    def __init__(self, join: JoinStore, seen: SeenStore, publisher: Publisher, encoder: StatusEncoder, metrics: ReceiptMetrics,
                 recovery: Recovery, publish_within_s: float = math.inf, clock: Callable[[], float] = time.time):  # fmt: skip
        self._join = join
        self._recovery = recovery
        self._publish_within_s = publish_within_s
        self._seen = seen
        self._publisher = publisher
        self._encoder = encoder
        self._metrics = metrics
        self._clock = clock

    def push(self, body: bytes) -> int:
        """Handle one push; the HTTP status to answer."""
        received_at_ms = int(self._clock() * 1000)
        metrics = self._metrics
        try:
            receipts, problems = parse_push(body)
        except Malformed as exc:
            metrics.malformed.labels(exc.reason).inc()
            log.warning("receipts push refused: %s", exc)
            return BAD_REQUEST
        if problems:
            metrics.malformed.labels("report").inc(len(problems))
            log.warning("receipts push: %d reports skipped (first: %s)", len(problems), problems[0])
        for status, count in Counter(item.status for item in receipts).items():
            metrics.received.labels(status).inc(count)
        if not receipts:
            return OK
        token = uuid.uuid4().hex
        keys = [item.seen_key for item in receipts]
        claimed_at = time.monotonic()
        try:
            verdicts = self._seen.claim(keys, token, log_mark(self._publisher.log_ends()))
        except Exception as exc:
            return self._failed("redis", exc)
        fresh = [i for i, verdict in enumerate(verdicts) if verdict is Seen.NEW]
        metrics.duplicates.inc(sum(verdict is Seen.SEEN for verdict in verdicts))
        busy = sum(verdict is Seen.BUSY for verdict in verdicts)
        metrics.busy.inc(busy)
        stale = {keys[i]: verdict.mark for i, verdict in enumerate(verdicts) if isinstance(verdict, Stale)}
        if stale:
            try:
                before = self._recovery.published(stale)
                self._seen.done(list(before))
            except Exception as exc:  # the stale claims stay this push's: they go stale again, and the next push looks again
                self._let_go([keys[i] for i in fresh], token)  # the new ones were never published
                return self._failed("recover", exc)
            metrics.recovered.inc(len(before))
            fresh = sorted(fresh + [i for i, verdict in enumerate(verdicts) if isinstance(verdict, Stale) and keys[i] not in before])
        if not fresh:
            return UNAVAILABLE if busy else OK
        taken = [receipts[i] for i in fresh]
        taken_keys = [keys[i] for i in fresh]
        try:
            self._join.witness((item.task_id, item.number) for item in taken)  # the evidence a call reached CAMS (inflight_policy=receipts)
            matches = self._join.lookup((item.task_id, item.number) for item in taken)
            records = [outgoing(item, match, received_at_ms, self._encoder) for item, match in zip(taken, matches)]
        except Exception as exc:
            self._let_go(taken_keys, token)
            return self._failed("redis", exc)
        if time.monotonic() - claimed_at > self._publish_within_s:  # the claims could go stale while it publishes
            self._let_go(taken_keys, token)
            return self._failed("late", TimeoutError(f"not ready to publish {self._publish_within_s:.1f}s after claiming"))
        acked = self._publisher.publish(records)
        published = [key for key, ok in zip(taken_keys, acked) if ok]
        # not written: free to be taken again at once; not known: held until the claim runs out
        self._let_go([key for key, ok in zip(taken_keys, acked) if ok is False], token)
        try:
            self._seen.done(published)
        except Exception as exc:  # published all the same: answered 200, so CAMS does not push them again
            metrics.errors.labels("mark-done").inc()
            log.warning("receipts published but not marked done: %s", exc)
        self._count(taken, matches, acked)
        if len(published) < len(taken):
            metrics.errors.labels("publish").inc()
            return UNAVAILABLE
        return UNAVAILABLE if busy else OK

    def _count(self, taken: list[Receipt], matches: list[Match | None], acked: list[bool | None]) -> None:
        metrics = self._metrics
        published: Counter[tuple[str, str]] = Counter()
        for item, match, ok in zip(taken, matches, acked):
            if not ok:
                continue
            published[item.status, "unmatched" if match is None else "matched"] += 1
            if item.status in TIMED and (seconds := seconds_since_send(item, match)) is not None:
                metrics.since_send.labels(item.status).observe(seconds)
        for labels, count in published.items():
            metrics.published.labels(*labels).inc(count)

    def _let_go(self, keys: list[str], token: str) -> None:
        try:
            self._seen.release(keys, token)
        except Exception as exc:  # the claims run out by themselves after claim_s
            log.warning("receipt claims not released: %s", exc)

    def _failed(self, kind: str, exc: Exception) -> int:
        self._metrics.errors.labels(kind).inc()
        log.warning("receipts push not taken (%s): %s", kind, exc)
        return UNAVAILABLE
