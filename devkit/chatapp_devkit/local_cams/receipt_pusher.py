"""``ReceiptPusher``: the endpoint's delivery receipts pushed to the callback URL from threads of
their own, as CAMS's HTTP batch push does, with the record the admin API shows.

``submit`` (called when a call is accepted) only queues the call; the pushing threads
(``push_concurrency``, one POST each at a time) plan its reports (``receipt_plan``), POST the due
ones as JSON arrays, and repeat failed POSTs (the same array) after the configured delays. State
is guarded by one lock; planning and HTTP run outside it.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from chatapp_devkit.local_cams.receipt_plan import Batcher, Plan, Planned, Planner, retry_time
from chatapp_devkit.local_cams.receipt_settings import ReceiptSettings

IDLE_WAIT_S = 0.5


@dataclass(slots=True)
class _Push:
    """One POST's array, kept whole for its retries."""

    number: int
    reports: list[Planned]
    body: bytes
    attempts: int = 0


@dataclass(slots=True)
class _Intake:
    planner: Planner
    params: Mapping[str, str]
    to: list[str]
    accepted_at: float
    first_sequence: int


@dataclass(slots=True)
class ReceiptRecord:
    """Counters and the bounded log of settled reports (acknowledged, lost, abandoned)."""

    counts: Counter[str] = field(default_factory=Counter)
    acknowledged_by_status: Counter[str] = field(default_factory=Counter)
    log: deque[dict[str, Any]] = field(default_factory=deque)
    logged: int = 0  # index of the next log entry

    def settle(self, fate: str, report: Mapping[str, Any], copy: int, attempts: int, limit: int) -> None:
        entry = {
            "index": self.logged, "fate": fate, "copy": copy, "attempts": attempts,
            "MessageId": report["MessageId"], "TaskId": report["TaskId"], "To": report["To"],
            "Status": report["Status"], "Timestamp": report["Timestamp"], "ErrorCode": report.get("ErrorCode"),
        }  # fmt: skip
        self.logged += 1
        self.log.append(entry)
        while len(self.log) > limit:
            self.log.popleft()

    def entries(self, since: int, limit: int | None) -> list[dict[str, Any]]:
        first = self.logged - len(self.log)
        start = max(since - first, 0)
        stop = len(self.log) if limit is None else min(len(self.log), start + limit)
        return [self.log[k] for k in range(start, stop)]


class ReceiptPusher:
    """Thread-safe; ``start``/``stop`` run the pushing threads, ``submit`` queues an accepted call."""

    def __init__(self, settings: ReceiptSettings) -> None:
        self._initial = settings
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._planner = Planner(settings)
        self._intake: deque[_Intake] = deque()
        self._intake_recipients = 0
        self._batcher = Batcher()
        self._retries: list[tuple[float, int, _Push]] = []  # heap by due
        self._record = ReceiptRecord()
        self._sequence = 0  # recipient messages planned: the MessageId's counter
        self._pushes = 0
        self._in_flight = 0  # reports of the POSTs under way
        self._generation = 0  # bumped by reset: results of pushes begun before it are ignored
        self._planning = threading.Lock()  # one planning thread at a time
        self._running = False
        self._threads: list[threading.Thread] = []

    @property
    def settings(self) -> ReceiptSettings:
        return self._planner.settings

    def _pending(self) -> int:
        retrying = sum(len(push.reports) for _, _, push in self._retries)
        return self._intake_recipients + len(self._batcher) + retrying + self._in_flight

    # --- controls ------------------------------------------------------------------------------

    def set(self, **changes: Any) -> ReceiptSettings:
        """Apply a partial update (ValueError when invalid): what reports say and when (rates,
        delays, failures) for calls accepted from now on, the draws restarting from the seed; how
        they are pushed (URL, batching, retries, timeout, concurrency) at once."""
        with self._lock:
            self._planner = Planner(self._planner.settings.updated(changes))
            self._spawn()
            self._wake.notify_all()
            return self._planner.settings

    def reset(self) -> None:
        """Forget pending reports, counts and log; restore the starting settings."""
        with self._lock:
            self._planner = Planner(self._initial)
            self._intake.clear()
            self._intake_recipients = 0
            self._batcher.clear()
            self._retries.clear()
            self._record = ReceiptRecord()
            self._generation += 1

    def submit(self, params: Mapping[str, str], to: list[str], accepted_at: float) -> None:
        """Queue an accepted call's recipients (nothing without a callback URL)."""
        with self._lock:
            settings = self._planner.settings
            if settings.callback_url is None:
                return
            if self._pending() + len(to) > settings.max_pending:
                self._record.counts["overflow_recipients"] += len(to)
                return
            self._intake.append(_Intake(self._planner, params, to, accepted_at, self._sequence))
            self._sequence += len(to)
            self._intake_recipients += len(to)
            self._wake.notify()

    def snapshot(self, since: int = 0, limit: int | None = None) -> dict[str, Any]:
        """Settings, counts and the log entries from index ``since`` (at most ``limit``)."""
        with self._lock:
            record = self._record
            counts = {name: record.counts[name] for name in _COUNTS}
            return {
                "settings": self.settings.to_json(),
                "stats": {**counts, "pending": self._pending(), "acknowledged_by_status": dict(record.acknowledged_by_status), "logged": record.logged},
                "log": record.entries(since, limit),
            }

    # --- the thread ----------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._running = True
            self._spawn()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop pushing (pending reports are dropped with the process); idempotent."""
        with self._lock:
            threads, self._threads = self._threads, []
            self._running = False
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))

    def _spawn(self) -> None:
        """Pushing threads up to ``push_concurrency`` (lock held); above a lowered figure they idle."""
        while self._running and len(self._threads) < self.settings.push_concurrency:
            index = len(self._threads)
            thread = threading.Thread(target=self._run, args=(index,), name=f"local-cams-receipts-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, index: int) -> None:
        with httpx.Client(headers={"Content-Type": "application/json;charset=utf-8"}) as client:
            while self._plan_intake():
                with self._lock:
                    if not self._running:
                        return
                    if index >= self.settings.push_concurrency:  # lowered at run time: idle
                        self._wake.wait(IDLE_WAIT_S)
                        continue
                    job, url, timeout = self._next_push(time.time())
                    if job is None:
                        if not self._intake:
                            self._wake.wait(self._idle_wait(time.time()))
                        continue
                    job.attempts += 1
                    self._in_flight += len(job.reports)
                    self._record.counts["posts"] += 1
                    self._record.counts["reports_pushed"] += len(job.reports)
                    self._record.counts["retried"] += job.attempts > 1
                    generation = self._generation
                ok = _post(client, url, job.body, timeout)
                with self._lock:
                    self._in_flight -= len(job.reports)
                    if generation == self._generation:
                        self._settle(job, ok, time.time())

    def _plan_intake(self) -> bool:
        """Plan the calls queued so far (one thread at a time, so the draws follow the calls'
        order); False once stopped."""
        with self._planning:
            with self._lock:
                if not self._running:
                    return False
                intake = list(self._intake)
                self._intake.clear()
                generation = self._generation
            if intake:
                plans = [(item, item.planner.plan(item.params, item.to, item.accepted_at, item.first_sequence)) for item in intake]
                with self._lock:
                    if generation == self._generation:
                        self._queue(plans)
                    self._wake.notify_all()
        return True

    def _queue(self, plans: list[tuple[_Intake, Plan]]) -> None:
        settings, record = self.settings, self._record
        for item, plan in plans:
            self._intake_recipients -= len(item.to)
            for planned in plan.planned:
                self._batcher.add(planned)
                record.counts["duplicates"] += planned.copy == 2
            for report in plan.lost:
                record.counts["dropped_by_loss"] += 1
                record.settle("lost", report, 1, 0, settings.log_limit)
            record.counts["planned"] += len(plan.planned) + len(plan.lost)

    def _next_push(self, now: float) -> tuple[_Push | None, str, float]:
        """A retry due, else a new array from the batcher; (None, ...) when nothing is due or no URL."""
        settings = self.settings
        if settings.callback_url is None:
            return None, "", 0.0
        if self._retries and self._retries[0][0] <= now:
            return heapq.heappop(self._retries)[2], settings.callback_url, settings.push_timeout_s
        reports = self._batcher.take(now, settings.max_per_post, settings.flush_interval_ms / 1000)
        if not reports:
            return None, "", 0.0
        self._pushes += 1
        body = orjson.dumps([planned.report for planned in reports])
        self._record.counts["max_reports_per_post"] = max(self._record.counts["max_reports_per_post"], len(reports))
        return _Push(self._pushes, reports, body), settings.callback_url, settings.push_timeout_s

    def _idle_wait(self, now: float) -> float:
        if self.settings.callback_url is None:
            return IDLE_WAIT_S
        times = [self._batcher.next_time(self.settings.flush_interval_ms / 1000)]
        times.append(self._retries[0][0] if self._retries else None)
        soonest = min((moment for moment in times if moment is not None), default=now + IDLE_WAIT_S)
        return min(max(soonest - now, 0.001), IDLE_WAIT_S)

    def _settle(self, job: _Push, ok: bool, now: float) -> None:
        settings, record = self.settings, self._record
        if ok:
            record.counts["posts_acknowledged"] += 1
            record.counts["reports_acknowledged"] += len(job.reports)
            for planned in job.reports:
                record.acknowledged_by_status[planned.report["Status"]] += 1
                record.settle("acknowledged", planned.report, planned.copy, job.attempts, settings.log_limit)
            return
        record.counts["posts_failed"] += 1
        again = retry_time(job.attempts, now, settings.retry_delays_s)
        if again is not None:
            heapq.heappush(self._retries, (again, job.number, job))
            return
        record.counts["abandoned"] += len(job.reports)
        for planned in job.reports:
            record.settle("abandoned", planned.report, planned.copy, job.attempts, settings.log_limit)


_COUNTS = (
    "planned", "posts", "posts_acknowledged", "posts_failed", "retried", "reports_pushed", "reports_acknowledged",
    "duplicates", "dropped_by_loss", "abandoned", "overflow_recipients", "max_reports_per_post",
)  # fmt: skip


def _post(client: httpx.Client, url: str, body: bytes, timeout: float) -> bool:
    """Whether the receiver answered 2xx within ``timeout`` (refused, reset or slow: False)."""
    try:
        response = client.post(url, content=body, timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.is_success
