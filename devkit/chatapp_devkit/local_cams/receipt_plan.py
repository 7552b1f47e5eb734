"""Pure logic of the receipt push: which reports an accepted call produces and when (``Planner``),
and which of the reports due go into the next POST (``Batcher``). No I/O, no threads, no clock:
times are passed in.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chatapp_devkit.local_cams.receipt_settings import ReceiptSettings

STATUS_DESCRIPTIONS = {
    "Sent": "The message was sent.",
    "Delivered": "The message was delivered to the recipient's device.",
    "Read": "The message was read by the recipient.",
    "Failed": "The message failed to be delivered.",
}


@dataclass(frozen=True, slots=True)
class Planned:
    """One report to push at or after ``due`` (s since the epoch); ``copy`` 2 is a duplicate."""

    due: float
    copy: int
    report: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Plan:
    """What a call produces: the reports to push and those lost (never pushed)."""

    planned: list[Planned]
    lost: list[dict[str, Any]]


def message_id(accepted_at: float, sequence: int) -> str:
    """24 digits like CAMS's MessageIds: acceptance in ms then the recipient's sequence number
    in this endpoint (unique per recipient message while the process lives)."""
    return f"{int(accepted_at * 1000):013d}{sequence % 10**11:011d}"


class Planner:
    """Draws from ``Random(settings.seed)``; one per settings version; not thread-safe."""

    def __init__(self, settings: ReceiptSettings) -> None:
        self.settings = settings
        self._rng = random.Random(settings.seed)

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    def plan(self, params: Mapping[str, str], to: list[str], accepted_at: float, first_sequence: int) -> Plan:
        """The reports of a call accepted at ``accepted_at`` with these parameters and recipients;
        recipient ``k`` gets the MessageId of sequence number ``first_sequence + k``."""
        plan = Plan([], [])
        for offset, number in enumerate(to):
            self._plan_recipient(plan, params, number, accepted_at, message_id(accepted_at, first_sequence + offset))
        return plan

    def _plan_recipient(self, plan: Plan, params: Mapping[str, str], to: str, accepted_at: float, msg_id: str) -> None:
        settings = self.settings
        rule = settings.failure_for(to)
        statuses = ["Failed"] if rule else ["Sent", "Delivered"] + (["Read"] if self._chance(settings.read_rate) else [])
        occurred: list[float] = []
        for status in statuses:
            jitter = self._rng.uniform(0, settings.jitter_ms) if settings.jitter_ms else 0.0
            moment = accepted_at + (settings.delays_ms[status] + jitter) / 1000
            occurred.append(max([moment, *occurred[-1:]]))  # a later status never happens earlier
        dues = occurred[::-1] if self._chance(settings.reorder_rate) else occurred
        conversation_id = f"{self._rng.getrandbits(64):016x}"
        for status, moment, due in zip(statuses, occurred, dues):
            report = _report(params, to, msg_id, status, moment)
            if rule is not None:
                report["ErrorCode"], report["ErrorDescription"] = rule.code, f"{rule.code}:{rule.description}"
            else:
                report["ConversationId"], report["ConversationType"] = conversation_id, settings.conversation_type
            if self._chance(settings.loss_rate):
                plan.lost.append(report)
                continue
            plan.planned.append(Planned(due, 1, report))
            if self._chance(settings.duplicate_rate):
                plan.planned.append(Planned(due + settings.duplicate_after_ms / 1000, 2, report))


def _report(params: Mapping[str, str], to: str, msg_id: str, status: str, occurred: float) -> dict[str, Any]:
    """The fields CAMS pushes for a template message (Alibaba's ChatAppStatus HTTP example);
    TaskId is the call's, or the MessageId when the call gave none."""
    sender = params.get("From", "")
    report: dict[str, Any] = {
        "Status": status,
        "StatusDescription": STATUS_DESCRIPTIONS[status],
        "MsgFrameType": "template",
        "Type": "TEMPLATE",
        "TaskId": params.get("TaskId") or msg_id,
        "From": sender,
        "To": to,
        "Timestamp": int(occurred * 1000),
        "OriginPhoneNumber": sender,
        "Language": params.get("Language", ""),
        "MessageId": msg_id,
    }
    for name in ("TemplateCode", "TemplateName"):
        if params.get(name):
            report[name] = params[name]
    return report


class Batcher:
    """Reports waiting for their time, then for a POST: a POST takes ``max_per_post`` reports due,
    or every report due once the oldest has waited ``flush_s``. In due order (ties: added order)."""

    def __init__(self) -> None:
        self._waiting: list[tuple[float, int, Planned]] = []  # heap by due
        self._ready: deque[Planned] = deque()  # due, in due order
        self._added = 0

    def __len__(self) -> int:
        return len(self._waiting) + len(self._ready)

    def add(self, planned: Planned) -> None:
        heapq.heappush(self._waiting, (planned.due, self._added, planned))
        self._added += 1

    def _advance(self, now: float) -> None:
        while self._waiting and self._waiting[0][0] <= now:
            self._ready.append(heapq.heappop(self._waiting)[2])

    def take(self, now: float, max_per_post: int, flush_s: float) -> list[Planned]:
        """The next POST's reports, or [] when none should go yet."""
        self._advance(now)
        if len(self._ready) >= max_per_post or (self._ready and now >= self._ready[0].due + flush_s):
            return [self._ready.popleft() for _ in range(min(max_per_post, len(self._ready)))]
        return []

    def next_time(self, flush_s: float) -> float | None:
        """When ``take`` may next answer reports (None when empty)."""
        times = [self._waiting[0][0]] if self._waiting else []
        if self._ready:
            times.append(self._ready[0].due + flush_s)
        return min(times, default=None)

    def clear(self) -> None:
        self._waiting.clear()
        self._ready.clear()


def retry_time(attempts: int, failed_at: float, retry_delays_s: list[float]) -> float | None:
    """When a push that has failed ``attempts`` times is tried again; None once retries are used up."""
    return failed_at + retry_delays_s[attempts - 1] if attempts <= len(retry_delays_s) else None
