"""The five measurements. Each returns ``{"rows": [...], "details": {...}, "problems": [...]}``;
a row is one line of the table (figure, measured, target, pass)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatapp_devkit.samples import LANGUAGES, TEMPLATES, sample_records

from consumer.codec import PlainAvroCodec
from consumer.metrics import LOOP_PHASES

from . import kafkaio, measure
from .launch import Infra, Service, memory_status, process_cpu_s, service_env
from .profiling import Recorder, summarize

API_LIMIT = 10  # calls/s per account: CAMS's limit, the endpoint's and the service's default
MAX_RECIPIENTS = 1000  # per call: the API's cap
BUDGET = API_LIMIT * MAX_RECIPIENTS  # recipients/s one account can get at best
LINGER_MS = 200
REDIS_URL = "redis://127.0.0.1:6379/15"
# the service's default key prefix (for versions without CHATAPP_REDIS_KEY_PREFIX): the limiter's
# keys of the account "default", and the ledger's keys of this run's request ids
LEGACY_LIMITER_KEYS = ("chatapp:limiter:{default}:tat", "chatapp:limiter:{default}:rate")
LEGACY_LEDGER_PREFIX = "chatapp:ledger:"


@dataclass(frozen=True)
class Sizes:
    saturation: int
    saturation3: int
    pipeline: int
    pipeline_rounds: int
    latency_s: float
    latency_rate: float
    memory: int
    memory_window_s: float
    baseline: int
    latency_mixed: bool

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(30_000, 100_000, 50_000, 2, 10.0, 20.0, 100_000, 10.0, 50, False)
        return cls(200_000, 200_000, 200_000, 5, 20.0, 20.0, 500_000, 30.0, 100, True)


@dataclass
class Context:
    infra: Infra
    quick: bool
    run_id: str
    logdir: Path
    deadline: float
    prefix: str = ""
    values: list[bytes] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    say: Callable[[str], None] = print

    @property
    def sizes(self) -> Sizes:
        return Sizes.of(self.quick)

    def timeout(self, wanted: float) -> float:
        """``wanted`` seconds, cut to what is left of the run's time budget (at least 1 s)."""
        return max(1.0, min(wanted, self.deadline - time.monotonic()))

    def ids(self, count: int) -> set[str]:
        return {f"{self.prefix}-{i}" for i in range(count)}

    def encode(self, count: int) -> None:
        codec = PlainAvroCodec()
        self.values = [codec.encode_request(r) for r in sample_records(count, prefix=self.prefix)]

    def start_service(self, name: str, topics: tuple[str, str, str], **settings: Any) -> Service:
        """``name`` is also its CHATAPP_INSTANCE_ID (exactly-once mode: a restart under the same name fences its predecessor)."""
        settings.setdefault("instance_id", name)
        if self.infra.real:  # a real broker refuses the mock's 3 s session (group.min.session.timeout.ms is 6 s)
            settings.setdefault("session_timeout_ms", 6000)
        env = service_env(self.infra.bootstrap, self.infra.cams.url, topics, **settings)  # type: ignore[union-attr]
        env.update(self.extra_env)
        return Service(env, self.logdir / f"{name}.log")


def _row(figure: str, measured: float | None, display: str, target: str, ok: bool | None) -> dict[str, Any]:
    return {"figure": figure, "measured": measured, "display": display, "target": target, "ok": ok}


def _stop_all(services: list[Service], timeout: float = 60.0) -> list[int | None]:
    return [s.stop(timeout) for s in services]


def _service_notes(services: list[Service], codes: list[int | None], problems: list[str]) -> list[dict[str, Any]]:
    notes = []
    for s, code in zip(services, codes):
        logged = s.log_problems()
        notes.append({"pid": s.pid, "exit_code": code, "log": str(s.log_path), "log_problems": logged})
        if code != 0:
            problems.append(f"service {s.pid} exited with {code} (log {s.log_path})")
        if logged["counts"].get("ERROR") or logged["counts"].get("unparsed"):
            problems.append(f"service {s.pid} logged errors: {logged['first'][:2]}")
    return notes


def _wait_assigned(services: list[Service], partitions: int, timeout: float) -> float:
    """Until every instance holds partitions and together all of them, three polls in a row."""
    started = time.monotonic()
    stable = 0
    while time.monotonic() - started < timeout:
        for s in services:
            s.check_alive()
        held = [s.metrics().get("chatapp_assigned_partitions", 0.0) for s in services]
        stable = stable + 1 if all(h > 0 for h in held) and sum(held) == partitions else 0
        if stable >= 3:
            return time.monotonic() - started
        time.sleep(0.3)
    raise TimeoutError(f"group did not settle within {timeout} s")


def _check_results(ctx: Context, topic: str, partitions: int, count: int, problems: list[str], decode: bool = True) -> tuple[dict[str, Any], list[int]]:
    results = kafkaio.read_all(ctx.infra.bootstrap, topic, partitions, count, timeout=ctx.timeout(60))
    statuses = [kafkaio.decode_result(v)["status"] for _, _, v in results] if decode else None
    check = measure.check_results((k for k, _, _ in results), statuses, ctx.ids(count))
    if check["missing"] or check["answered_more_than_once"] or check["unexpected"]:
        problems.append(
            f"{topic}: {check['missing']} requests unanswered, {check['answered_more_than_once']} answered more than once, {check['unexpected']} unexpected"
        )
    if statuses is not None and check["statuses"].get("SENT", 0) != len(statuses):
        problems.append(f"{topic}: not all results SENT: {check['statuses']}")
    return check, [ts for _, ts, _ in results]


def _endpoint_checks(stats: dict[str, Any], expected_recipients: int, problems: list[str], what: str) -> dict[str, Any]:
    out = {
        "calls": stats["calls"],
        "by_code": stats["by_code"],
        "recipients_accepted": stats["recipients_accepted"],
        "duplicate_recipients_accepted": stats["duplicate_recipients_accepted"],
        "max_accepted_1s": stats["max_accepted_1s"],
    }
    if stats["duplicate_recipients_accepted"]:
        problems.append(f"{what}: the endpoint accepted {stats['duplicate_recipients_accepted']} numbers more than once")
    if stats["recipients_accepted"] != expected_recipients:
        problems.append(f"{what}: the endpoint accepted {stats['recipients_accepted']} recipients, expected {expected_recipients}")
    rejected = {code: n for code, n in stats["by_code"].items() if code != "OK"}
    if rejected:
        problems.append(f"{what}: calls not accepted by the endpoint: {rejected}")
    return out


# --------------------------------------------------------------------------- 1. saturation


def saturation(ctx: Context, instances: int) -> dict[str, Any]:
    """A backlog of single-recipient requests against the 10 calls/s endpoint."""
    name = f"saturation-{instances}"
    count = ctx.sizes.saturation if instances == 1 else ctx.sizes.saturation3
    partitions = 32
    problems: list[str] = []
    topics = ctx.infra.topics(f"{ctx.run_id}.{name}", partitions)
    cams = ctx.infra.endpoint(rate_limit=API_LIMIT)
    settings: dict[str, Any] = {"group_id": f"bench-{ctx.run_id}-{name}"}
    redis_client = None
    details: dict[str, Any] = {"requests": count, "instances": instances, "partitions": partitions}
    key_prefix = f"bench:{ctx.run_id}:"
    if instances > 1:
        import redis

        redis_client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
        redis_client.ping()
        details["redis"] = {"url": REDIS_URL, "key_prefix": key_prefix,
                            "legacy_limiter_keys_present_before": [k for k in LEGACY_LIMITER_KEYS if redis_client.exists(k)]}  # fmt: skip
        settings.update(redis_url=REDIS_URL, redis_key_prefix=key_prefix)
    wm = kafkaio.Watermarks(ctx.infra.bootstrap, topics[1], partitions)
    requests_wm = kafkaio.Watermarks(ctx.infra.bootstrap, topics[0], partitions)
    services: list[Service] = []
    codes: list[int | None] = []
    try:
        if instances == 1:
            ctx.say(f"{name}: producing a backlog of {count:,} requests")
            details["produce_s"] = kafkaio.produce_backlog(ctx.infra.bootstrap, topics[0], ctx.values[:count], partitions)
            requests_wm.check_kept(count)
            services.append(ctx.start_service(f"{name}-0", topics, **settings))
            details["ready_s"] = services[0].wait_ready(ctx.timeout(30))
        else:
            services = [ctx.start_service(f"{name}-{k}", topics, **settings) for k in range(instances)]
            details["group_settled_s"] = _wait_assigned(services, partitions, ctx.timeout(45))
            ctx.say(f"{name}: {instances} instances settled; producing a backlog of {count:,} requests")
            details["produce_s"] = kafkaio.produce_backlog(ctx.infra.bootstrap, topics[0], ctx.values[:count], partitions)
            requests_wm.check_kept(count)
        backlog_ready = time.time()  # the steady window starts once the whole backlog is on the broker
        ctx.say(f"{name}: draining (~{count / BUDGET:.0f} s at the budget)")

        def alive() -> list:
            return [s.check_alive() for s in services]

        held, waited = wm.wait_for(count, ctx.timeout(count / (0.8 * BUDGET) + 60), alive)
        details["drain_wait_s"] = waited
        details["service_cpu_s"] = [process_cpu_s(s.pid) for s in services]
        if held < count:
            problems.append(f"{name}: only {held:,} of {count:,} results after {waited:.0f} s")
        details["service_metrics"] = [_metrics_digest(s.metrics()) for s in services]
    finally:
        codes = _stop_all(services)
        wm.close()
        requests_wm.close()
        if redis_client is not None:
            found, deleted = _clean_redis(redis_client, key_prefix, ctx.prefix)
            details["redis"].update(ledger_keys_found=found, keys_deleted=deleted)
            if found < count:
                problems.append(
                    f"{name}: the Redis ledger held {found:,} of {count:,} request ids at the end: was db 15 flushed "
                    "during the run (tests/fixtures/redis.py flushes it)? The shared limiter state went with it"
                )
    details["services"] = _service_notes(services, codes, problems)
    calls = cams.calls()
    details["endpoint"] = _endpoint_checks(cams.stats(), count, problems, name)
    batch_keys = len(TEMPLATES) * len(LANGUAGES)
    window = measure.call_window(calls, MAX_RECIPIENTS, drain_tail=instances * batch_keys * MAX_RECIPIENTS, since=backlog_ready)
    details["calls"] = window
    check, _ = _check_results(ctx, topics[1], partitions, count, problems)
    details["results"] = check
    steady = window.get("steady", {})
    rate = steady.get("recipients_per_s", 0.0)
    fill = steady.get("mean_recipients_per_call", 0.0) / MAX_RECIPIENTS
    label = "1 instance" if instances == 1 else f"{instances} instances + Redis limiter"
    rows = [
        _row(f"saturation, {label} (recipients/s ÷ {BUDGET:,}/s)", rate / BUDGET, f"{rate / BUDGET:.3f} ({rate:,.0f}/s)", "≥ 0.99", rate / BUDGET >= 0.99),
        _row(f"batch fill, {label} (recipients/call ÷ 1,000)", fill, f"{fill:.3f}", "≥ 0.99", fill >= 0.99),
    ]
    return {"rows": rows, "details": details, "problems": problems, "rate": rate}


def _metrics_digest(metrics: dict[str, float]) -> dict[str, float]:
    keep = ("chatapp_requests_consumed_total", "chatapp_api_calls_total", "chatapp_api_recipients_total", "chatapp_api_retries_total",
            "chatapp_limiter_tokens_total", "chatapp_results_total", "chatapp_duplicates_total", "chatapp_backpressure_paused",
            "chatapp_buffered_recipients", "chatapp_assigned_partitions", "chatapp_limiter_fallback", "chatapp_reply_delivery_errors_total",
            "chatapp_limiter_wait_seconds_sum", "chatapp_limiter_wait_seconds_count", "chatapp_end_to_end_seconds_sum",
            "chatapp_end_to_end_seconds_count", "chatapp_limiter_late_arrival_seconds_sum", "chatapp_limiter_late_arrival_seconds_count",
            "chatapp_main_loop_cpu_seconds_total")  # fmt: skip
    return {k: v for k, v in metrics.items() if k.split("{", 1)[0] in keep}


def _clean_redis(client: Any, key_prefix: str, id_prefix: str) -> tuple[int, int]:
    """Delete this run's keys: those under ``key_prefix`` or, for a service that does not know
    CHATAPP_REDIS_KEY_PREFIX, the default-prefix limiter keys and this run's ledger keys.
    Returns (ledger keys found, keys deleted)."""
    found = deleted = 0
    own = 0
    for pattern in (f"{key_prefix}*", f"{LEGACY_LEDGER_PREFIX}{id_prefix}-*"):
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=10_000):
            batch.append(key)
            found += b":ledger:" in key
            own += key.startswith(key_prefix.encode())
            if len(batch) >= 10_000:
                deleted += int(client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(client.unlink(*batch))
    if not own:
        deleted += int(client.delete(*LEGACY_LIMITER_KEYS))
    return found, deleted


# --------------------------------------------------------------------------- 2. pipeline capacity


def _produce_backlog(ctx: Context, name: str, topic: str, count: int, partitions: int) -> float:
    """Produce ``count`` pre-encoded requests round-robin and check the broker kept them all;
    returns the seconds it took."""
    ctx.say(f"{name}: producing a backlog of {count:,} requests")
    seconds = kafkaio.produce_backlog(ctx.infra.bootstrap, topic, ctx.values[:count], partitions)
    watermarks = kafkaio.Watermarks(ctx.infra.bootstrap, topic, partitions)
    try:
        watermarks.check_kept(count)
    finally:
        watermarks.close()
    return seconds


PIPELINE_WORKERS = os.cpu_count() or 1
"""Worker processes of the service in the pipeline's target run: one per core."""


def _drain(ctx: Context, name: str, count: int, partitions: int, workers: int, profile: bool) -> tuple[dict[str, Any], list[str]]:
    """One service instance of ``workers`` processes drains a backlog of ``count`` requests
    produced before it starts, as the bare consumer finds its backlog (no producer competing
    for the CPU); requests/s from its first result to its last. The mock broker's 3 s initial
    rebalance delay gathers the workers into the group's first generation: a drain in which a
    message was consumed twice (partitions moved mid-drain) is reported as a problem. Returns
    the details and the problems seen."""
    problems: list[str] = []
    topics = ctx.infra.topics(f"{ctx.run_id}.{name}", partitions)
    cams = ctx.infra.endpoint(rate_limit=0)
    details: dict[str, Any] = {"requests": count, "partitions": partitions, "workers": workers, "profiled": profile, "request_topic": topics[0]}
    details["produce_s"] = _produce_backlog(ctx, name, topics[0], count, partitions)
    wm = kafkaio.Watermarks(ctx.infra.bootstrap, topics[1], partitions)
    ctx.infra.gather_new_groups(workers > 1)
    service = ctx.start_service(name, topics, group_id=f"bench-{ctx.run_id}-{name}", rate_limit_per_second=1000, workers=workers)
    recorder = None
    codes: list[int | None] = []
    try:
        service.wait_ready(ctx.timeout(60))
        if profile:
            recorder = Recorder(service.pid, ctx.logdir / f"{name}.pyspy.txt", gil=True)
            profile_started = time.monotonic()
        ctx.say(f"{name}: service ({workers} process{'es' if workers > 1 else ''}) draining {count:,} requests")
        held, waited = wm.wait_for(count, ctx.timeout(180), service.check_alive)
        details["service_cpu_s"] = process_cpu_s(service.pid)
        if held < count:
            problems.append(f"{name}: only {held:,} of {count:,} results after {waited:.0f} s")
        details["service_metrics"] = _metrics_digest(service.metrics())
        consumed = details["service_metrics"].get("chatapp_requests_consumed_total", 0)
        if consumed != count:
            problems.append(f"{name}: {consumed:,.0f} messages consumed for {count:,} (partitions moved during the drain): its rate is disturbed")
    finally:
        ctx.infra.gather_new_groups(False)
        if recorder is not None:
            seconds = time.monotonic() - profile_started
            out = recorder.stop()
            if out is not None:
                details["profile_file"] = str(out)
                details["profile"] = summarize(out)
                # --gil: a sample is taken only while some thread holds the GIL
                details["profile"]["seconds"] = seconds
                details["profile"]["gil_held_share"] = details["profile"]["samples"] / (seconds * recorder.rate) if seconds else 0.0
        wm.close()
        codes = _stop_all([service])
    details["services"] = _service_notes([service], codes, problems)
    stats = cams.stats()
    details["endpoint"] = _endpoint_checks(stats, count, problems, name)
    details["calls_mean_recipients"] = stats["recipients_accepted"] / stats["accepted_calls"] if stats["accepted_calls"] else 0.0
    check, stamps = _check_results(ctx, topics[1], partitions, count, problems)
    details["results"] = check
    span = (max(stamps) - min(stamps)) / 1000 if len(stamps) > 1 else 0.0
    details["end_to_end"] = {"results": len(stamps), "seconds": span, "requests_per_s": (len(stamps) - 1) / span if span > 0 else 0.0,
                             "service_cpu_ms_per_1k_requests": details["service_cpu_s"] * 1e6 / count,
                             "main_thread_cpu_us_per_request": {  # summed over the workers' main threads
                                 phase: details["service_metrics"].get(f"chatapp_main_loop_cpu_seconds_total{{phase={phase}}}", 0.0) * 1e6 / count
                                 for phase in LOOP_PHASES}}  # fmt: skip
    return details, problems


def pipeline(ctx: Context, profile: bool = False) -> dict[str, Any]:
    """Unlimited endpoint, service limit 1,000 calls/s: requests/s end to end vs a bare consumer.

    The service runs as one process (info), then ``pipeline_rounds`` times with one worker
    process per core (the target), each run on a backlog of its own. After each run the bare
    consumer reads that run's backlog, so every worker run has a bare rate measured just before
    it and one just after: its ratio is over their mean (see ``measure.bracketed_ratios``), and
    the target row is the median round (of two, the lower). The one-process run is compared
    with the bare rate after it."""
    name = "pipeline-profiled" if profile else "pipeline"
    count = ctx.sizes.pipeline
    partitions = 32
    if profile:  # py-spy follows one process: the single-process service
        run, problems = _drain(ctx, name, count, partitions, 1, profile=True)
        return {"rows": [], "details": run, "problems": problems}
    details: dict[str, Any] = {"requests": count, "partitions": partitions, "runs": {}, "bare_runs": []}
    problems: list[str] = []
    plan = [("1", name, 1)] + [
        (f"{PIPELINE_WORKERS}w-{k}", f"{name}-w{PIPELINE_WORKERS}-{k}", PIPELINE_WORKERS) for k in range(1, ctx.sizes.pipeline_rounds + 1)
    ]
    for label, run_name, workers in plan:
        run, seen = _drain(ctx, run_name, count, partitions, workers, profile=False)
        problems += seen
        details["runs"][label] = run
        ctx.say(f"{name}: bare confluent-kafka consumer + fastavro decode of the same backlog")
        details["bare_runs"].append(kafkaio.bare_consume(ctx.infra.bootstrap, run["request_topic"], count, timeout=ctx.timeout(60)))
    bare_rates = [b["rate"] for b in details["bare_runs"]]
    single = details["runs"]["1"]["end_to_end"]
    single["bare_rate"] = bare_rates[0]
    single["ratio"] = single["requests_per_s"] / bare_rates[0] if bare_rates[0] else 0.0
    rounds = [details["runs"][label]["end_to_end"] for label, _, _ in plan[1:]]  # the worker runs (on one core, of one process too)
    for e2e, ratio, before, after in zip(rounds, measure.bracketed_ratios([e["requests_per_s"] for e in rounds], bare_rates),
                                         bare_rates, bare_rates[1:]):  # fmt: skip
        e2e["ratio"], e2e["bare_rate"] = ratio, (before + after) / 2
    median = sorted(rounds, key=lambda e: e["ratio"])[(len(rounds) - 1) // 2]  # of two, the lower
    details["worker_ratio"] = {"median": median["ratio"], "rounds": [e["ratio"] for e in rounds]}
    low, high = min(details["worker_ratio"]["rounds"]), max(details["worker_ratio"]["rounds"])
    rows = _pipeline_rows(1, single, "info", None, "")
    rows += _pipeline_rows(PIPELINE_WORKERS, median, "≥ 0.6", median["ratio"] >= 0.6,
                           f"median of {len(rounds)} runs ({low:.3f}-{high:.3f}): " if len(rounds) > 1 else "")  # fmt: skip
    return {"rows": rows, "details": details, "problems": problems}


def _pipeline_rows(workers: int, e2e: dict[str, Any], target: str, ok: bool | None, note: str) -> list[dict[str, Any]]:
    """The ratio row of one pipeline run of ``workers`` processes and its two CPU rows."""
    processes = "1 process" if workers == 1 else f"{workers} worker processes"
    phases = e2e["main_thread_cpu_us_per_request"]
    bare_per_1k = 1e6 / e2e["bare_rate"] if e2e["bare_rate"] else 0.0
    return [
        _row(f"pipeline, {processes}: end-to-end req/s ÷ bare consume+decode", e2e["ratio"],
             f"{note}{e2e['ratio']:.3f} ({e2e['requests_per_s']:,.0f} vs {e2e['bare_rate']:,.0f}/s)", target, ok),
        _row("  service CPU per 1,000 requests (bare consumer: wall time)", e2e["service_cpu_ms_per_1k_requests"],
             f"{e2e['service_cpu_ms_per_1k_requests']:.0f} ms ({bare_per_1k:.0f} ms)", "info", None),
        _row("  main thread CPU per request: consume / intake / results / other", sum(phases.values()),
             " / ".join(f"{us:.1f}" for us in phases.values()) + " µs" + (" (all workers)" if workers > 1 else ""), "info", None),
    ]  # fmt: skip


# --------------------------------------------------------------------------- 3. latency


def latency(ctx: Context, mixed: bool = False) -> dict[str, Any]:
    """~20 requests/s at the 10 calls/s endpoint; result arrival - request timestamp."""
    name = "latency-mixed" if mixed else "latency"
    rate, seconds = ctx.sizes.latency_rate, ctx.sizes.latency_s
    count = int(rate * seconds)
    partitions = 8
    problems: list[str] = []
    topics = ctx.infra.topics(f"{ctx.run_id}.{name}", partitions)
    ctx.infra.endpoint(rate_limit=API_LIMIT)
    prefix = f"{ctx.prefix}{'m' if mixed else 'l'}"
    # one template and language (one batch key) unless mixed: then the samples' 10 keys
    keys = {} if mixed else {"templates": ("otp_login",), "languages": ("en",)}
    codec = PlainAvroCodec()
    values = [codec.encode_request(r) for r in sample_records(count, prefix=prefix, **keys)]
    details: dict[str, Any] = {"requests": count, "rate_per_s": rate, "batch_keys": 10 if mixed else 1, "linger_ms": LINGER_MS}
    service = ctx.start_service(name, topics, group_id=f"bench-{ctx.run_id}-{name}", batch_linger_ms=LINGER_MS)
    reader = None
    codes: list[int | None] = []
    try:
        service.wait_ready(ctx.timeout(30))
        reader = kafkaio.LiveReader(ctx.infra.bootstrap, topics[1], partitions).start()
        time.sleep(1.0)  # the reader has its assignment, the service is in its idle loop
        ctx.say(f"{name}: {rate:.0f} requests/s for {seconds:.0f} s ({details['batch_keys']} batch key(s))")
        stamps = kafkaio.produce_paced(ctx.infra.bootstrap, topics[0], values, rate)
        wait_until = time.monotonic() + ctx.timeout(15)
        while len(reader.arrivals) < count and time.monotonic() < wait_until:
            service.check_alive()
            time.sleep(0.1)
    finally:
        if reader is not None:
            reader.stop()
        codes = _stop_all([service])
    details["services"] = _service_notes([service], codes, problems)
    arrived: dict[str, float] = {}
    duplicates = 0
    for at, key, _ in reader.arrivals:
        rid = key.decode() if key else ""
        if rid in arrived:
            duplicates += 1
        else:
            arrived[rid] = at
    latencies = [arrived[f"{prefix}-{i}"] * 1000 - stamp for i, stamp in enumerate(stamps) if f"{prefix}-{i}" in arrived]
    details["batches"] = _batch_latency(reader.arrivals, {f"{prefix}-{i}": stamp for i, stamp in enumerate(stamps)})
    missing = count - len(latencies)
    if missing or duplicates:
        problems.append(f"{name}: {missing} results missing, {duplicates} duplicated")
    p50, p99 = measure.percentile(latencies, 50), measure.percentile(latencies, 99)
    details["latency_ms"] = {"p50": p50, "p90": measure.percentile(latencies, 90), "p99": p99, "max": max(latencies, default=0.0),
                             "min": min(latencies, default=0.0), "p50_minus_linger": p50 - LINGER_MS, "p99_minus_linger": p99 - LINGER_MS,
                             "results": len(latencies), "missing": missing, "duplicates": duplicates}  # fmt: skip
    label = f"{rate:.0f} req/s, {'10 batch keys' if mixed else '1 batch key'}"
    first = details["batches"]["first_request_latency_ms"]
    rows = [
        _row(f"latency p99 − linger ({label}; linger {LINGER_MS} ms)", p99 - LINGER_MS, f"{p99 - LINGER_MS:+.0f} ms (p50 {p50:.0f}, p99 {p99:.0f} ms)",
             "≤ +50 ms" if not mixed else "info (budget-bound)", p99 - LINGER_MS <= 50 if not mixed else None),
        _row("  first request of each call, p50 / p99 − linger", first["p99"] - LINGER_MS,
             f"{first['p50'] - LINGER_MS:+.0f} / {first['p99'] - LINGER_MS:+.0f} ms", "info", None),
    ]  # fmt: skip
    return {"rows": rows, "details": details, "problems": problems}


def _batch_latency(arrivals: list[tuple[float, bytes | None, bytes]], stamps: dict[str, int]) -> dict[str, Any]:
    """Per API call (batch_id of the results): requests it carried, and the latency of its first
    request, which waited the whole linger (what is above the linger there is the pipeline's)."""
    batches: dict[str, list[float]] = {}
    for at, key, value in arrivals:
        rid = key.decode() if key else ""
        if rid not in stamps:
            continue
        batch = kafkaio.decode_result(value).get("batch_id") or "?"
        batches.setdefault(batch, []).append(at * 1000 - stamps[rid])
    firsts = [max(lat) for lat in batches.values()]
    return {
        "calls": len(batches),
        "mean_requests_per_call": sum(len(v) for v in batches.values()) / len(batches) if batches else 0.0,
        "first_request_latency_ms": {"p50": measure.percentile(firsts, 50), "p99": measure.percentile(firsts, 99), "max": max(firsts, default=0.0)},
    }


# --------------------------------------------------------------------------- 4. memory


def memory(ctx: Context) -> dict[str, Any]:
    """Peak RSS of the service with a big backlog and a slow endpoint (500 ms, 10 calls/s)."""
    name = "memory"
    count = ctx.sizes.memory
    window = ctx.sizes.memory_window_s
    partitions = 32
    problems: list[str] = []
    topics = ctx.infra.topics(f"{ctx.run_id}.{name}", partitions)
    ctx.infra.endpoint(rate_limit=API_LIMIT, latency_ms=500)
    details: dict[str, Any] = {"requests": count, "window_s": window, "endpoint_latency_ms": 500}
    details["produce_s"] = _produce_backlog(ctx, name, topics[0], count, partitions)
    service = ctx.start_service(name, topics, group_id=f"bench-{ctx.run_id}-{name}", drain_timeout_s=5)
    sampler = measure.MemorySampler(service.pid).start()
    codes: list[int | None] = []
    mem: dict[str, Any] = {}
    try:
        ctx.say(f"{name}: sampling /proc/{service.pid}/status for {window:.0f} s")
        start = time.monotonic()
        end = start + ctx.timeout(window)
        trace = []  # once a second: what the service holds and has done, beside its RSS
        while time.monotonic() < end:
            service.check_alive()
            time.sleep(1.0)
            m = service.metrics()
            trace.append({"t": round(time.monotonic() - start, 1), "rss_mib": memory_status(service.pid).get("VmRSS", 0) / 1024,
                          "consumed": m.get("chatapp_requests_consumed_total", 0), "results": m.get("chatapp_results_total{status=SENT}", 0),
                          "buffered": m.get("chatapp_buffered_recipients", 0), "paused": m.get("chatapp_backpressure_paused", 0)})  # fmt: skip
        details["trace"] = trace
        details["service_metrics"] = _metrics_digest(service.metrics())
        moving = [p for p in trace if p["results"] > 0]
        if len(moving) >= 2 and moving[-1]["results"] > moving[0]["results"]:
            details["rss_growth_mib_per_100k_results"] = (
                (moving[-1]["rss_mib"] - moving[0]["rss_mib"]) / (moving[-1]["results"] - moving[0]["results"]) * 100_000
            )
    finally:
        mem = sampler.stop()
        codes = _stop_all([service], timeout=30)
    details["memory"] = mem
    details["services"] = _service_notes([service], codes, problems)
    peak_mb = mem.get("peak_hwm_mib", 0.0) * 1.048576
    rows = [_row(f"peak RSS (VmHWM), backlog {count:,}, slow endpoint, {window:.0f} s", peak_mb,
                 f"{peak_mb:.0f} MB ({mem.get('peak_hwm_mib', 0.0):.0f} MiB)", "≤ 300 MB", 0 < peak_mb <= 300)]  # fmt: skip
    growth = details.get("rss_growth_mib_per_100k_results")
    if growth is not None:
        results = details["trace"][-1]["results"] if details.get("trace") else 0
        rows.append(
            _row("  RSS growth per 100,000 results published", growth, f"{growth * 1.048576:+.0f} MB ({results:,.0f} results in the window)", "info", None)
        )
    return {"rows": rows, "details": details, "problems": problems}


# --------------------------------------------------------------------------- 5. baseline


def baseline(ctx: Context, service_rate: float | None) -> dict[str, Any]:
    """One API call per request (CHATAPP_BATCH_MAX_RECIPIENTS=1) under the same 10 calls/s."""
    name = "baseline"
    count = ctx.sizes.baseline
    partitions = 4
    problems: list[str] = []
    topics = ctx.infra.topics(f"{ctx.run_id}.{name}", partitions)
    cams = ctx.infra.endpoint(rate_limit=API_LIMIT)
    details: dict[str, Any] = {"requests": count, "computed_recipients_per_s": float(API_LIMIT)}
    kafkaio.produce_backlog(ctx.infra.bootstrap, topics[0], ctx.values[:count], partitions)
    wm = kafkaio.Watermarks(ctx.infra.bootstrap, topics[1], partitions)
    service = ctx.start_service(name, topics, group_id=f"bench-{ctx.run_id}-{name}", batch_max_recipients=1)
    codes: list[int | None] = []
    try:
        service.wait_ready(ctx.timeout(30))
        ctx.say(f"{name}: {count} requests, one call each (~{count / API_LIMIT:.0f} s)")
        held, waited = wm.wait_for(count, ctx.timeout(count / API_LIMIT * 2 + 30), service.check_alive)
        if held < count:
            problems.append(f"{name}: only {held} of {count} results after {waited:.0f} s")
    finally:
        wm.close()
        codes = _stop_all([service])
    details["services"] = _service_notes([service], codes, problems)
    details["endpoint"] = _endpoint_checks(cams.stats(), count, problems, name)
    window = measure.call_window(cams.calls(), 1)
    details["calls"] = window
    measured = window.get("steady", {}).get("recipients_per_s", 0.0)
    rows = [_row("baseline: 1 recipient/call, recipients/s (computed 10/s)", measured, f"{measured:.2f}/s (computed {API_LIMIT}/s)", "info", None)]
    if service_rate:
        rows.append(_row("service ÷ baseline (1-instance saturation rate)", service_rate / measured if measured else None,
                         f"{service_rate / measured:,.0f}× measured, {service_rate / API_LIMIT:,.0f}× computed" if measured else "n/a",
                         "info", None))  # fmt: skip
    return {"rows": rows, "details": details, "problems": problems}
