"""What the pipeline's events (``events.py``) become: Prometheus series and operators' log lines."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from .events import Events
from .group_wait import waiting_line
from .kafka import TP
from .ledger import in_flight_at
from .metrics import Metrics, code_label
from .models import Source

LOG_EVERY_S = 10.0
"""A failing delivery is logged once per topic and error in this long (an outage fails every record)."""


def names(partitions: Iterable[TP]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(partitions)) or "nothing"


def subscribe_metrics(events: Events, metrics: Metrics) -> None:
    results: dict[str, Any] = {}  # status -> its counter child (labels() costs a lookup each time)

    def acknowledged(counts: dict[str, int], ages_s: list[float]) -> None:
        for status, count in counts.items():
            counter = results.get(status)
            if counter is None:
                counter = results[status] = metrics.results.labels(status)
            counter.inc(count)
        metrics.end_to_end.observe_all(ages_s)

    def state(buffered: int, waiting: int, ledger_healthy: bool) -> None:
        metrics.buffered_recipients.set(buffered)
        metrics.waiting_requests.set(waiting)
        metrics.ledger_healthy.set(1 if ledger_healthy else 0)

    def lag(topic: str, partition: int, lag: int, committed_lag: int | None, committed_offset: int | None) -> None:
        labels = (topic, str(partition))
        metrics.lag.labels(*labels).set(lag)
        if committed_offset is not None and committed_lag is not None:  # None together: nothing committed yet
            metrics.committed_lag.labels(*labels).set(committed_lag)
            metrics.committed_offset.labels(*labels).set(committed_offset)

    def released(partitions: list[TP], total: int) -> None:
        metrics.assigned_partitions.set(total)
        for topic, partition in partitions:
            for gauge in (metrics.lag, metrics.committed_lag, metrics.committed_offset):
                try:
                    gauge.remove(topic, str(partition))
                except KeyError:
                    pass

    events.on("records.read", lambda count: metrics.requests_consumed.inc(count))
    events.on("records.skipped", lambda count: metrics.records_skipped.inc(count))
    events.on("requests.admitted", lambda recipients: metrics.recipients_consumed.inc(recipients))
    events.on("request.duplicate", lambda kind: metrics.duplicates.labels(kind).inc())
    events.on("request.resent", lambda request_id, owner: metrics.duplicates.labels("inflight_resent").inc())
    events.on("request.settled", lambda request_id, owner, task_id: metrics.duplicates.labels("inflight_settled").inc())
    events.on("loop.state", state)
    events.on("partitions.paused", lambda paused: metrics.paused.set(1 if paused else 0))
    events.on("offsets.committed", lambda positions: metrics.commits.inc())
    events.on("partition.lag", lag)
    events.on("partitions.assigned", lambda partitions, total: metrics.assigned_partitions.set(total))
    events.on("partitions.released", released)
    events.on("record.dead_lettered", lambda source, reason, detail: metrics.dlq.labels(reason).inc())
    events.on("results.acknowledged", acknowledged)
    events.on("delivery.failed", lambda topic, error, then: metrics.reply_errors.inc())

    def answered(account: str, code: str, latency_s: float, bisection: bool) -> None:
        metrics.api_calls.labels(account, code_label(code)).inc()
        metrics.api_latency.labels(account).observe(latency_s)
        if bisection:
            metrics.bisection_calls.labels(account).inc()

    def sent(account: str, recipients: int) -> None:
        metrics.batch_recipients.observe(recipients)
        metrics.api_recipients.labels(account).inc(recipients)

    events.on("calls.in_flight", lambda change: metrics.inflight_calls.inc(change))
    events.on("slot.waited", lambda account, wait_s: metrics.limiter_wait.labels(account).observe(wait_s))
    events.on("call.late", lambda account, late_s: metrics.late_arrivals.labels(account).observe(late_s))
    events.on("slot.missed", lambda account, late_s: metrics.missed_slots.labels(account).inc())
    events.on("call.answered", answered)
    events.on("batch.sent", sent)
    events.on("batch.retried", lambda account, reason, **_: metrics.retries.labels(account, reason).inc())
    events.on("bisection.deferred", lambda account: metrics.bisection_deferred.labels(account).inc())
    events.on("receipts.joined", lambda recipients: metrics.join_recipients.labels("recorded").inc(recipients))
    events.on("receipts.join_failed", lambda recipients, error: metrics.join_recipients.labels("lost").inc(recipients))


def subscribe_logs(events: Events, log: logging.Logger, clock=time.monotonic) -> None:
    failures_logged: dict[tuple[str, str], float] = {}

    def resent(request_id: str, owner: str) -> None:
        log.info("request %s %s: resending it", request_id, in_flight_at(owner), extra={"request_id": request_id})

    def settled(request_id: str, owner: str, task_id: str) -> None:
        log.info("request %s %s; a receipt for its call (TaskId %s) shows CAMS took it: answered SENT, not resent", request_id, in_flight_at(owner),
                 task_id, extra={"request_id": request_id})  # fmt: skip

    def dead_lettered(source: Source, reason: str, detail: str) -> None:
        log.warning("dead-lettered %s[%d]@%d: %s: %s", source.topic, source.partition, source.offset, reason, detail[:200])

    def delivery_failed(topic: str, error: object, then: str) -> None:
        now = clock()
        what = (topic[:249], str(error))
        if now - failures_logged.get(what, -LOG_EVERY_S) >= LOG_EVERY_S:
            if len(failures_logged) > 1000:
                failures_logged.clear()
            failures_logged[what] = now
            log.warning("delivery to %s failed: %s: %s", what[0], what[1], then)

    def abandoned(count: int, partitions: list[TP]) -> None:
        log.warning("abandoned %d unsent requests of %s: the next owner gets them again", count, names(partitions))

    events.on("request.resent", resent)
    events.on("request.settled", settled)
    events.on("receipts.evidence_failed", lambda requests, error: log.warning("receipts of %d requests' calls not looked up: %s", requests, error))
    events.on("record.dead_lettered", dead_lettered)
    events.on("delivery.failed", delivery_failed)
    events.on("partitions.assigned", lambda partitions, total: log.info("assigned %s", names(partitions)))
    events.on("partitions.revoked", lambda partitions: log.info("revoked %s", names(partitions)))
    events.on("partitions.lost", lambda partitions: log.warning("lost %s: abandoning their work uncommitted", names(partitions)))
    events.on("offsets.uncommitted", lambda partitions: log.warning("offsets of %s not committed before leaving: the next owner answers their "
                                                                    "finished requests again from the ledger", names(partitions)))  # fmt: skip
    events.on("requests.abandoned", abandoned)
    events.on("transaction.aborted", lambda partitions: log.warning("transaction aborted: reading %s again from their committed positions", names(partitions)))

    def retried(account: str, reason: str, batch_id: str, code: str, delay_s: float, attempt: int | None = None) -> None:
        if attempt is not None:
            log.info("batch %s: %s, retry %d in %.2fs", batch_id, code, attempt, delay_s, extra={"batch_id": batch_id, "account": account})

    def failed(account: str, batch_id: str, code: str, message: str | None) -> None:
        log.warning("batch %s failed: %s %s", batch_id, code, message, extra={"batch_id": batch_id, "account": account})

    events.on("batch.retried", retried)
    events.on("batch.failed", failed)
    events.on("credentials.unavailable", lambda account, error: log.warning("no credentials for account %s: %s", account, error))


def subscribe_group_wait(events: Events, log: logging.Logger, topic: str, group: str, session_timeout_ms: int | None) -> None:
    """Why an instance holds no partition (``group_wait.py``), at the intervals the pipeline emits."""
    events.on("group.waiting", lambda waited_s: log.log(*waiting_line(waited_s, topic, group, session_timeout_ms)))
    events.on("receipts.join_failed", lambda recipients, error: log.warning("receipts join not recorded for %d recipients: %s", recipients, error))
