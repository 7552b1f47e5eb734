"""The Prometheus catalogue (every metric the service exports, prefix ``chatapp_``) and the
HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``.

Labels never hold phone numbers or request ids: accounts, codes, statuses, reasons, partitions.
``Metrics`` also implements the limiter's observer hooks, so the limiter stays Prometheus-free.
"""

from __future__ import annotations

import json
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol, Self

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

STATUSES = ("SENT", "FAILED", "REJECTED", "EXPIRED")
LOOP_PHASES = ("consume", "intake", "results", "other")
DLQ_REASONS = ("not-avro", "truncated", "trailing-bytes", "not-wire-format", "unknown-schema-id", "not-avro-schema", "schema-registry-unavailable")
DUPLICATE_KINDS = ("in_process", "done", "inflight_resent", "inflight_failed", "inflight_settled", "reused")
RETRY_REASONS = ("throttled", "transient", "split", "named")
_CODE_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,79}")
_LONG_DIGITS = re.compile(r"\d{6,}")


def code_label(code: str | None) -> str:
    """An API code fit for a label: CAMS codes are fixed words; anything else (a code echoing a
    number, say) is counted as ``Chatapp.UnrecognisedCode`` so no phone number reaches a label."""
    if not code:
        return "none"
    if _CODE_LABEL.fullmatch(code) and not _LONG_DIGITS.search(code):
        return code
    return "Chatapp.UnrecognisedCode"


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
REDIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 750, 900, 990, 999, 1000)


class BulkHistogram:
    """A Prometheus histogram fed a batch of values at a time: the reply path observes one
    value per request, tens of thousands a second, where ``Histogram.observe`` (a lock and a
    bucket search in Python per value) would cost more than publishing the result. Exposed as
    prometheus_client exposes a Histogram (``_bucket``, ``_count``, ``_sum``)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry):
        self._name = name
        self._documentation = documentation
        self._bounds = sorted(buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one: above every bound (+Inf)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_all(self, values: Iterable[float]) -> None:
        bounds = self._bounds
        counts = [0] * len(self._counts)
        total = 0.0
        for value in values:
            counts[bisect_left(bounds, value)] += 1  # le: a value equal to a bound is in its bucket
            total += value
        with self._lock:
            self._counts = [a + b for a, b in zip(self._counts, counts)]
            self._sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, count in zip([*self._bounds, float("inf")], counts):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        yield HistogramMetricFamily(self._name, self._documentation, buckets=buckets, sum_value=total)


class PhaseClock:
    """Charges the calling thread's CPU time since the last charge to a phase of
    ``chatapp_main_loop_cpu_seconds_total`` (a few calls per loop turn: the loop's own cost)."""

    def __init__(self, counter: Counter):
        self._phases = {phase: counter.labels(phase) for phase in LOOP_PHASES}
        self._last = time.thread_time()

    def charge(self, phase: str) -> None:
        now = time.thread_time()
        self._phases[phase].inc(now - self._last)
        self._last = now


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self.requests_consumed = Counter("chatapp_requests_consumed", "Send requests consumed (decoded or not).", registry=r)
        self.recipients_consumed = Counter("chatapp_recipients_consumed", "Recipients in valid requests consumed.", registry=r)
        self.api_calls = Counter("chatapp_api_calls", "SendChatappMassMessage calls by account and result code.", ["account", "code"], registry=r)
        self.api_latency = Histogram("chatapp_api_call_seconds", "SendChatappMassMessage call latency.", ["account"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_recipients = Histogram("chatapp_batch_recipients", "Recipients per API call.", buckets=BATCH_BUCKETS, registry=r)
        self.api_recipients = Counter("chatapp_api_recipients", "Recipients carried by accepted API calls.", ["account"], registry=r)
        self.retries = Counter("chatapp_api_retries", "Batches sent again, by reason (transient, throttled, split).", ["account", "reason"], registry=r)
        self.results = Counter("chatapp_results", "Results published, by status.", ["status"], registry=r)
        self.dlq = Counter("chatapp_dlq_records", "Messages dead-lettered, by reason.", ["reason"], registry=r)
        self.duplicates = Counter("chatapp_duplicates", "Requests not sent because their id was seen before, by kind.", ["kind"], registry=r)
        self.limiter_wait = Histogram(
            "chatapp_limiter_wait_seconds", "Time a ready batch waited for a rate-limit token.", ["account"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.limiter_tokens = Counter(
            "chatapp_limiter_tokens", "Rate-limit decisions by account and outcome (granted, denied).", ["account", "outcome"], registry=r
        )
        self.late_arrivals = Histogram(
            "chatapp_limiter_late_arrival_seconds",
            "How long after its slot a call may have reached CAMS, less the tolerance (only calls past it).",
            ["account"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.missed_slots = Counter(
            "chatapp_limiter_missed_slots",
            "Slots given back unused because the worker reached them too late to send on them (a starved machine); the call asked again.",
            ["account"],
            registry=r,
        )
        self.limiter_rate = Gauge("chatapp_limiter_effective_rate", "Current calls/s allowed per account (after adaptive slow-downs).", ["account"], registry=r)
        self.limiter_errors = Counter("chatapp_limiter_redis_errors", "Errors talking to the shared limiter's Redis.", registry=r)
        self.limiter_fallback = Gauge("chatapp_limiter_fallback", "1 while the limiter runs on its local fallback (Redis unreachable).", registry=r)
        self.redis_latency = Histogram(
            "chatapp_redis_call_seconds",
            "Redis calls of the limiter and the ledger (a pipeline is one call), by component and operation.",
            ["component", "op"],
            buckets=REDIS_BUCKETS,
            registry=r,
        )
        self.waiting_requests = Gauge(
            "chatapp_waiting_requests", "Requests held aside while another instance (or request) with their id is being worked on.", registry=r
        )
        self.ledger_healthy = Gauge("chatapp_ledger_healthy", "1 while the de-duplication ledger is reachable.", registry=r)
        self.buffered_recipients = Gauge("chatapp_buffered_recipients", "Recipients consumed and not yet finished (batching, waiting, in flight).", registry=r)
        self.inflight_calls = Gauge("chatapp_inflight_calls", "API calls in flight.", registry=r)
        self.paused = Gauge("chatapp_backpressure_paused", "1 while partitions are paused by back-pressure.", registry=r)
        self.assigned_partitions = Gauge("chatapp_assigned_partitions", "Partitions assigned to this instance.", registry=r)
        self.records_skipped = Counter(
            "chatapp_records_skipped",
            "Messages a partition's previous owner had finished (its commit's metadata said so): read again and passed over.",
            registry=r,
        )
        self.lag = Gauge("chatapp_consumer_lag", "Messages behind the high watermark, per partition.", ["topic", "partition"], registry=r)
        self.committed_lag = Gauge(
            "chatapp_committed_lag",
            "Messages between the committed offset and the high watermark, per partition (read or not).",
            ["topic", "partition"],
            registry=r,
        )
        self.committed_offset = Gauge("chatapp_committed_offset", "The last offset committed, per partition.", ["topic", "partition"], registry=r)
        self.end_to_end = BulkHistogram("chatapp_end_to_end_seconds", "From the request's Kafka timestamp to its result being published.", LATENCY_BUCKETS, r)
        self.commits = Counter("chatapp_offset_commits", "Offset commits made.", registry=r)
        self.bisection_calls = Counter(
            "chatapp_bisection_calls",
            "API calls made for halves of batches CAMS refused for their content (finding the offending request).",
            ["account"],
            registry=r,
        )
        self.bisection_deferred = Counter(
            "chatapp_bisection_deferred",
            "Halves of refused batches held back 1 s: past the account's bisection share, with other batches waiting.",
            ["account"],
            registry=r,
        )
        self.reply_errors = Counter("chatapp_reply_delivery_errors", "Results or DLQ records the broker failed to take (retried).", registry=r)
        self.join_recipients = Counter(
            "chatapp_receipt_join_recipients",
            "Recipients of accepted calls recorded for the delivery receipts' join (CHATAPP_RECEIPTS_JOIN=on), or lost to a storage error.",
            ["outcome"],
            registry=r,
        )
        self.up = Gauge("chatapp_up", "1 while the service runs.", registry=r)
        self.loop_cpu = Counter("chatapp_main_loop_cpu_seconds", "CPU time of the main thread by phase (consume incl. rebalances, intake, results, other); "
                                "an instance whose total rate nears 1 has a saturated pipeline.", ["phase"], registry=r)  # fmt: skip
        # series that exist from the start, so rate() and increase() see their first events
        for status in STATUSES:
            self.results.labels(status)
        for reason in DLQ_REASONS:
            self.dlq.labels(reason)
        for kind in DUPLICATE_KINDS:
            self.duplicates.labels(kind)
        for phase in LOOP_PHASES:
            self.loop_cpu.labels(phase)
        for outcome in ("recorded", "lost"):
            self.join_recipients.labels(outcome)

    def account_configured(self, account: str, rate: float) -> None:
        """Create an account's series at start-up, its effective rate at the configured one."""
        self.api_calls.labels(account, "OK")
        for reason in RETRY_REASONS:
            self.retries.labels(account, reason)
        self.bisection_calls.labels(account)
        self.bisection_deferred.labels(account)
        for outcome in ("granted", "denied"):
            self.limiter_tokens.labels(account, outcome)
        self.limiter_rate.labels(account).set(rate)

    # limiter observer hooks -------------------------------------------------------------
    def granted(self, account: str) -> None:
        self.limiter_tokens.labels(account, "granted").inc()

    def denied(self, account: str, wait_s: float) -> None:
        self.limiter_tokens.labels(account, "denied").inc()

    def rate_changed(self, account: str, rate: float) -> None:
        self.limiter_rate.labels(account).set(rate)

    def backend_error(self, account: str, exc: BaseException) -> None:
        self.limiter_errors.inc()

    def fallback_changed(self, active: bool) -> None:
        self.limiter_fallback.set(1 if active else 0)

    def redis_call(self, component: str, op: str, seconds: float) -> None:
        self.redis_latency.labels(component, op).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Health:
    """Liveness (the main loop beats), readiness (checks that must all pass) and degradation
    (conditions listed under ``degraded`` in ``/readyz`` while they hold, without making it fail)."""

    def __init__(self, stall_after_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._last_beat = clock()
        self.checks: dict[str, Callable[[], bool]] = {}
        self.degraded: dict[str, Callable[[], bool]] = {}

    def beat(self) -> None:
        self._last_beat = self._clock()

    def live(self) -> tuple[bool, dict]:
        age = self._clock() - self._last_beat
        return age < self.stall_after_s, {"main_loop_last_beat_s": round(age, 3)}

    def ready(self) -> tuple[bool, dict]:
        results = {}
        for name, check in self.checks.items():
            try:
                results[name] = bool(check())
            except Exception:
                results[name] = False
        degraded = [name for name, check in self.degraded.items() if check()]
        return all(results.values()) and bool(results), {**results, "degraded": degraded}


class MetricsPage(Protocol):
    """What ``/metrics`` shows (``Metrics``; the supervisor's status)."""

    def render(self) -> bytes: ...


class HealthPages(Protocol):
    """What ``/healthz`` and ``/readyz`` answer (``Health``; the supervisor's status)."""

    def live(self) -> tuple[bool, dict]: ...
    def ready(self) -> tuple[bool, dict]: ...


class ServerThread:
    """A threaded HTTP server on ``(host, port)`` serving ``handler`` from a daemon thread."""

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], name: str):
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)
        self.port: int = self._server.server_address[1]

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class StatusServer(ServerThread):
    """``/metrics``, ``/healthz`` and ``/readyz`` on one port, in a daemon thread."""

    def __init__(self, host: str, port: int, metrics: MetricsPage, health: HealthPages):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.startswith("/metrics"):
                    self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
                elif self.path.startswith(("/healthz", "/readyz")):
                    ok, detail = health.live() if self.path.startswith("/healthz") else health.ready()
                    body = json.dumps({"ok": ok, **detail}).encode()
                    self._send(200 if ok else 503, body, "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # silence per-request logs
                pass

        super().__init__(host, port, Handler, "status-http")
