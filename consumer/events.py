"""The pipeline's named events: modules say what happened, metrics and logs subscribe.

Modules of the request's path (intake, admission, reply, rebalance) emit an event with a
payload of keyword arguments; ``metrics.subscribe`` and ``logs.subscribe`` turn them into
Prometheus series and log lines. A module never counts a metric or writes an operator's log
line itself, so what is observed can change without touching the path. Events come once per
loop turn or per occurrence, never once per request on the hot path.

| event                  | payload                                             | emitted by          |
|------------------------|-----------------------------------------------------|---------------------|
| ``records.read``       | ``count``                                           | pipeline            |
| ``records.skipped``    | ``count`` (finished by the partition's previous owner) | pipeline         |
| ``requests.admitted``  | ``recipients``                                      | pipeline            |
| ``request.duplicate``  | ``kind`` (``in_process``, ``done``, ``reused``, ``inflight_failed``) | pipeline |
| ``request.resent``     | ``request_id``, ``owner`` (the instance it was in flight at) | pipeline   |
| ``request.settled``    | ``request_id``, ``owner``, ``task_id`` (in flight at ``owner``; a receipt for its call answered it SENT) | pipeline |
| ``receipts.evidence_failed`` | ``requests``, ``error`` (receipts of their calls not looked up: they wait) | pipeline |
| ``loop.state``         | ``buffered``, ``waiting``, ``ledger_healthy``       | pipeline            |
| ``partitions.paused``  | ``paused`` (True: paused; False: resumed)           | pipeline            |
| ``offsets.committed``  | ``positions``                                       | pipeline            |
| ``group.waiting``      | ``waited_s`` (no partition held this long; at doubling intervals) | pipeline |
| ``partition.lag``      | ``topic``, ``partition``, ``lag``, ``committed_lag``, ``committed_offset`` | pipeline |
| ``partitions.assigned``| ``partitions``, ``total``                           | rebalance           |
| ``partitions.revoked`` | ``partitions`` (handed over, their finished work committed) | rebalance   |
| ``partitions.lost``    | ``partitions`` (taken away, their work abandoned)   | rebalance           |
| ``partitions.released``| ``partitions``, ``total`` (no longer ours, either way) | rebalance        |
| ``requests.abandoned`` | ``count``, ``partitions``                           | rebalance           |
| ``transaction.aborted``| ``partitions`` (read again from their committed positions) | rebalance    |
| ``offsets.uncommitted``| ``partitions`` (left at shutdown with moved positions the group refused) | rebalance |
| ``record.dead_lettered``| ``source``, ``reason``, ``detail``                 | reply               |
| ``results.acknowledged``| ``counts`` (by status), ``ages_s``                 | reply               |
| ``delivery.failed``    | ``topic``, ``error``, ``then`` (what is done next)  | reply               |
| ``calls.in_flight``    | ``change`` (+1 handed to a worker, -1 done)          | sender              |
| ``slot.waited``        | ``account``, ``wait_s`` (ready to slot)             | sender              |
| ``slot.missed``        | ``account``, ``late_s`` (too late for its slot: given back, asked again) | sender |
| ``call.late``          | ``account``, ``late_s`` (slot to the wire, past the usual) | sender       |
| ``call.answered``      | ``account``, ``code``, ``latency_s``, ``bisection`` (a half's call CAMS counted) | sender |
| ``batch.sent``         | ``account``, ``recipients``                         | sender              |
| ``batch.retried``      | ``account``, ``reason`` (throttled, transient, named, split), ``batch_id``, ``code``, ``delay_s``, ``attempt`` (transient failures so far, for a failed call) | sender |
| ``bisection.deferred`` | ``account``                                         | sender              |
| ``batch.failed``       | ``account``, ``batch_id``, ``code``, ``message``    | sender              |
| ``credentials.unavailable`` | ``account``, ``error``                         | sender              |
| ``receipts.joined``   | ``recipients`` (of accepted calls, recorded for the receipts' join) | receipts.recorder |
| ``receipts.join_failed`` | ``recipients``, ``error`` (not recorded: their receipts will be unmatched) | receipts.recorder |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NAMES = frozenset({
    "records.read", "records.skipped", "requests.admitted", "request.duplicate", "request.resent", "request.settled", "receipts.evidence_failed", "loop.state", "partitions.paused",
    "offsets.committed", "group.waiting", "partition.lag", "partitions.assigned", "partitions.revoked", "partitions.lost", "partitions.released",
    "requests.abandoned", "transaction.aborted", "offsets.uncommitted", "record.dead_lettered", "results.acknowledged", "delivery.failed",
    "calls.in_flight", "slot.waited", "slot.missed", "call.late", "call.answered", "batch.sent", "batch.retried", "bisection.deferred", "batch.failed",
    "credentials.unavailable", "receipts.joined", "receipts.join_failed",
})  # fmt: skip

Handler = Callable[..., None]


class Events:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {name: [] for name in NAMES}

    def on(self, name: str, handler: Handler) -> None:
        """Call ``handler(**payload)`` on each ``name`` event (KeyError: no such event)."""
        self._handlers[name].append(handler)

    def emit(self, name: str, **payload: Any) -> None:
        for handler in self._handlers[name]:
            handler(**payload)
