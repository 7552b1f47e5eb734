"""The record of every call the local CAMS endpoint received, and the statistics derived from it."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

WINDOW_S = 1.0


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One received call and what was answered (``http_status`` None: the connection was dropped).

    ``accepted_at`` is set only for calls answered ``OK``; ``fault`` names an injected fault
    (a FAULT_KINDS name, "permanent", "http200" or "invalid_number"). The ``To`` numbers are
    kept line-joined to keep memory low at thousands of 1,000-recipient calls.
    """

    received_at: float
    accepted_at: float | None
    access_key_id: str
    params: dict[str, str]
    to_lines: str
    recipients: int
    code: str
    http_status: int | None
    request_id: str
    group_message_id: str | None
    fault: str | None

    @property
    def to(self) -> list[str]:
        return self.to_lines.split("\n") if self.to_lines else []

    def to_json(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "received_at": self.received_at,
            "accepted_at": self.accepted_at,
            "access_key_id": self.access_key_id,
            "params": self.params,
            "to": self.to,
            "recipients": self.recipients,
            "code": self.code,
            "http_status": self.http_status,
            "request_id": self.request_id,
            "group_message_id": self.group_message_id,
            "fault": self.fault,
        }


def max_in_window(times: list[float], window_s: float = WINDOW_S) -> int:
    """The most of ``times`` that fall in any half-open window ``[t, t + window_s)``."""
    times = sorted(times)
    best = start = 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def _account_stats(records: list[CallRecord]) -> dict[str, Any]:
    accepted = [record for record in records if record.accepted_at is not None]
    numbers: Counter[str] = Counter()
    for record in accepted:
        numbers.update(record.to_lines.split("\n"))
    duplicates = {number: count for number, count in numbers.items() if count > 1}
    return {
        "calls": len(records),
        "by_code": dict(Counter(record.code for record in records)),
        "accepted_calls": len(accepted),
        "recipients_accepted": sum(record.recipients for record in accepted),
        "distinct_recipients_accepted": len(numbers),
        "duplicate_recipients_accepted": len(duplicates),
        "duplicates": duplicates,
        "max_calls_1s": max_in_window([record.received_at for record in records]),
        "max_accepted_1s": max_in_window([record.received_at for record in accepted]),  # by arrival, as the window counts
    }


class Ledger:
    """Thread-safe, append-only list of ``CallRecord`` (cleared by ``reset``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[CallRecord] = []

    def append(self, record: CallRecord) -> None:
        with self._lock:
            self._records.append(record)

    def reset(self) -> None:
        with self._lock:
            self._records = []

    def records(self, since: int = 0, limit: int | None = None) -> list[CallRecord]:
        """Records ``since`` (an index: the n-th call received) onwards, at most ``limit`` of them."""
        with self._lock:
            return self._records[since : None if limit is None else since + limit]

    def calls_json(self, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        return [record.to_json(since + offset) for offset, record in enumerate(self.records(since, limit))]

    def stats(self) -> dict[str, Any]:
        """Counts by code, accepted calls and recipients, duplicates and 1 s peaks, per AccessKeyId
        and in total (duplicates: a number accepted more than once for the same key)."""
        records = self.records()
        by_account: defaultdict[str, list[CallRecord]] = defaultdict(list)
        for record in records:
            by_account[record.access_key_id].append(record)
        accounts = {key: _account_stats(group) for key, group in sorted(by_account.items())}
        return {
            "calls": len(records),
            "by_code": dict(Counter(record.code for record in records)),
            "by_fault": dict(Counter(record.fault for record in records if record.fault)),
            "accepted_calls": sum(stats["accepted_calls"] for stats in accounts.values()),
            "recipients_accepted": sum(stats["recipients_accepted"] for stats in accounts.values()),
            "duplicate_recipients_accepted": sum(stats["duplicate_recipients_accepted"] for stats in accounts.values()),
            "max_accepted_1s": max((stats["max_accepted_1s"] for stats in accounts.values()), default=0),
            "accounts": accounts,
        }
