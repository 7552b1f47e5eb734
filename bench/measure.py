"""Pure arithmetic on what was recorded: call-record windows, percentiles, result checks, memory."""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .launch import memory_status

DRAIN_SHARE = 0.25


def call_window(calls: Sequence[dict[str, Any]], full: int, drain_tail: int = 0, since: float = 0.0) -> dict[str, Any]:
    """Recipients/s and fill from the endpoint's records of accepted calls, timed by their arrival
    (``received_at``: what the endpoint's rate window counts).

    Steady window: from the first call carrying ``full`` recipients to the last full one sent
    while more than ``drain_tail`` recipients were still to come. The partial calls of the first
    linger and of the end of the backlog are left out: at the end each instance empties what it
    holds per batch key, so ``drain_tail`` is instances × batch keys × ``full``, the most that can
    be left over as partial calls once the backlog is gone. With several instances the drain
    starts earlier, when the first of them runs out of its partitions' share of the backlog (the
    shares differ by a partition or more): the window also ends before the first partial call of
    the last ``DRAIN_SHARE`` of the recipients. It starts no sooner than ``since`` (wall-clock
    seconds: when the whole backlog was on the broker; instances already running read it while it
    is produced, and their first calls leave partial).

    Rate is the least-squares slope of recipients sent against time over calls ``i .. j`` (the
    recipients of the calls before each one), so evenly spaced calls give their exact rate and the
    jitter of the two calls at the window's ends does not tip it (calls that catch up after a late
    one come in pairs, and one 200 ms gap at an end of a 19 s window would move the first-to-last
    rate by half a percent); that first-to-last rate is reported beside it as
    ``span_recipients_per_s``. Fill is the mean recipients per call ``i .. j`` over ``full``.
    The whole run (first to last accepted call, every call) is reported beside it.
    """
    ok = sorted((c for c in calls if c["code"] == "OK"), key=lambda c: c["received_at"])
    out: dict[str, Any] = {"accepted_calls": len(ok), "recipients": sum(c["recipients"] for c in ok)}
    if calls:
        t0 = min(c["received_at"] for c in calls)
        # every call: ms since the first was received, recipients, code (throttles show where they
        # hit), ms the endpoint took to parse and verify it
        out["timeline"] = [(round((c["received_at"] - t0) * 1000), c["recipients"], c["code"], round(((c["accepted_at"] or c["received_at"]) - c["received_at"]) * 1000))
                           for c in sorted(calls, key=lambda c: c["received_at"])]  # fmt: skip
    if len(ok) < 2:
        return out
    times = [c["received_at"] for c in ok]
    sizes = [c["recipients"] for c in ok]
    out["whole_run"] = {
        "seconds": times[-1] - times[0],
        "recipients_per_s": sum(sizes[:-1]) / (times[-1] - times[0]) if times[-1] > times[0] else 0.0,
        "calls_per_s": (len(ok) - 1) / (times[-1] - times[0]) if times[-1] > times[0] else 0.0,
        "mean_recipients_per_call": sum(sizes) / len(sizes),
        "partial_calls": sum(1 for s in sizes if s < full),
    }
    total = sum(sizes)
    sent_before = [0]
    for size in sizes:
        sent_before.append(sent_before[-1] + size)
    drain = next((k for k, s in enumerate(sizes) if s < full and total - sent_before[k] <= DRAIN_SHARE * total), len(sizes))
    fulls = [k for k, s in enumerate(sizes[:drain]) if s >= full and total - sent_before[k] > drain_tail and times[k] >= since]
    i, j = (fulls[0], fulls[-1]) if len(fulls) >= 2 else (0, len(ok) - 1)
    span = times[j] - times[i]
    out["steady"] = {
        "first_call": i,
        "last_call": j,
        "calls": j - i + 1,
        "seconds": span,
        "recipients_per_s": _slope(times[i : j + 1], sent_before[i : j + 1]),
        "span_recipients_per_s": sum(sizes[i:j]) / span if span > 0 else 0.0,
        "calls_per_s": (j - i) / span if span > 0 else 0.0,
        "mean_recipients_per_call": sum(sizes[i : j + 1]) / (j - i + 1),
        "partial_calls": sum(1 for s in sizes[i : j + 1] if s < full),
    }
    gaps = [b - a for a, b in zip(times[i:j], times[i + 1 : j + 1])]
    if gaps:
        gaps.sort()
        out["steady"]["gap_ms"] = {"min": gaps[0] * 1000, "p50": percentile(gaps, 50) * 1000, "max": gaps[-1] * 1000}
    # the endpoint's own time from a call's arrival to its decision (parse, verify, check the
    # window): it no longer moves the call in the window, but shows how busy the endpoint was
    held = sorted((c["accepted_at"] - c["received_at"]) * 1000 for c in ok[i : j + 1])
    out["steady"]["endpoint_parse_ms"] = {"p50": percentile(held, 50), "p99": percentile(held, 99), "max": held[-1]}
    return out


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` against ``xs`` (0.0 with fewer than two distinct xs)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var > 0 else 0.0


def bracketed_ratios(rates: Sequence[float], bare_rates: Sequence[float]) -> list[float]:
    """``rates[i]`` over the mean of the bare rates measured just before and just after it
    (``bare_rates[i]`` and ``bare_rates[i + 1]``: one more bare rate than rates). The machine's
    speed drifts by 10-30 % within seconds (other tenants of the host): a reference measured
    on both sides of a run cancels a drift across it, where the better of several would add
    the noise of each to the ratio's denominator."""
    if len(bare_rates) != len(rates) + 1:
        raise ValueError(f"{len(rates)} runs need {len(rates) + 1} bare rates around them, got {len(bare_rates)}")
    return [rate / ((before + after) / 2) if before + after > 0 else 0.0 for rate, before, after in zip(rates, bare_rates, bare_rates[1:])]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of sorted or unsorted ``values``."""
    data = sorted(values)
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def check_results(keys: Iterable[bytes | None], statuses: Iterable[str] | None, expected_ids: set[str]) -> dict[str, Any]:
    """One result per request id, all of them, and the status mix."""
    counts = collections.Counter(k.decode() if k is not None else "" for k in keys)
    ids = set(counts)
    out: dict[str, Any] = {
        "results": sum(counts.values()),
        "distinct_requests_answered": len(ids & expected_ids),
        "missing": len(expected_ids - ids),
        "unexpected": len(ids - expected_ids),
        "answered_more_than_once": sum(1 for n in counts.values() if n > 1),
    }
    if statuses is not None:
        out["statuses"] = dict(collections.Counter(statuses))
    return out


class MemorySampler:
    """A thread that reads VmRSS/VmHWM of a process every ``every`` s."""

    def __init__(self, pid: int, every: float = 0.2):
        self.pid = pid
        self.every = every
        self.samples: list[tuple[float, int, int]] = []  # (seconds since start, rss KiB, hwm KiB)
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="bench-memory", daemon=True)

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            status = memory_status(self.pid)
            if status:
                self.samples.append((time.monotonic() - self._started, status.get("VmRSS", 0), status.get("VmHWM", 0)))
            self._stop.wait(self.every)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(5.0)
        if not self.samples:
            return {"samples": 0}
        hwm = max(s[2] for s in self.samples)
        rss = max(s[1] for s in self.samples)
        step = max(1, len(self.samples) // 30)
        return {
            "samples": len(self.samples),
            "seconds": self.samples[-1][0],
            "peak_hwm_mib": hwm / 1024,
            "max_rss_mib": rss / 1024,
            "last_rss_mib": self.samples[-1][1] / 1024,
            "timeline_s_rss_mib": [(round(t, 1), round(r / 1024, 1)) for t, r, _ in self.samples[::step]],
        }
