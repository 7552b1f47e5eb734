"""Many accounts at once (issue 23): K accounts drained together, each judged at the endpoint.

Every account is an ``[accounts.NAME]`` of the service (its own AccessKey, 10 calls/s) and a key
of the local CAMS endpoint, which counts each key's calls as they arrive. A run produces the same
backlog for every account (single-recipient requests on 2 batch keys, or 100-recipient ones),
starts the instances and waits for every result. From the endpoint's call log it reports, per
account, recipients/s over its steady window (``measure.call_window``) ÷ its 10,000/s; the box's
(all accounts' recipients/s ÷ K × 10,000); and the most calls of any account in any 1 s window
from the first call to the last, throttled calls included (what CAMS's window would count).
Where a box cannot keep every account full, the CPU tells why: the services' CPU seconds per
10,000 recipients is the share of a core one account at its limit needs, so its inverse is how
many accounts a core carries (the endpoint's own CPU, on the same box here, is shown apart).
"""

from __future__ import annotations

import functools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatapp_devkit.samples import TEMPLATES, phone, request_record

from consumer.codec import PlainAvroCodec

from . import kafkaio, measure
from .launch import process_cpu_s
from .scenarios import (
    API_LIMIT,
    BUDGET,
    MAX_RECIPIENTS,
    REDIS_URL,
    Context,
    _clean_redis,
    _metrics_digest,
    _row,
    _service_notes,
    _stop_all,
    _wait_assigned,
)

PARTITIONS = 32
BATCH_KEYS = 2  # templates per account (one language)
SECRET = "bench-account-secret-local-only"


@dataclass(frozen=True)
class Plan:
    """One configuration: ``accounts`` accounts on ``instances`` instances of ``workers`` processes
    each, ``recipients`` per request, with or without the Redis limiter; ``runs`` repeats; a
    target plan's runs decide its pass/fail row."""

    accounts: int
    instances: int
    workers: int
    recipients: int
    redis: bool
    runs: int = 1
    target: bool = False

    @property
    def label(self) -> str:
        instances = "1 instance" if self.instances == 1 else f"{self.instances} instances"
        size = "1 recipient" if self.recipients == 1 else f"{self.recipients} recipients"
        return (
            f"{self.accounts} accounts, {instances} × {self.workers} worker{'s' if self.workers > 1 else ''}, {size}/request{', Redis' if self.redis else ''}"
        )


def plans(quick: bool) -> list[Plan]:
    if quick:
        return [Plan(3, 1, 2, 1, False, target=True), Plan(5, 3, 1, 100, True, target=True)]
    return [
        Plan(5, 1, 2, 1, False, runs=3, target=True),
        Plan(5, 1, 1, 1, False),
        Plan(5, 1, 2, 1, True),
        Plan(5, 1, 2, 100, False),
        Plan(20, 3, 1, 100, True, runs=3, target=True),
    ]


def per_account_recipients(quick: bool) -> int:
    """Recipients per account and run: 6 s of its budget (2 s quick)."""
    return (2 if quick else 6) * BUDGET


def _names(count: int) -> tuple[str, ...]:
    return tuple(f"acct{i:02d}" for i in range(count))


def _key_id(name: str) -> str:
    return f"LTAI_BENCH_{name.upper()}"


def _config_file(directory: Path, names: tuple[str, ...]) -> Path:
    path = directory / "accounts.toml"
    path.write_text("".join(f'[accounts.{n}]\naccess_key_id = "{_key_id(n)}"\naccess_key_secret = "{SECRET}"\n\n' for n in names))
    return path


@functools.lru_cache(maxsize=1)  # encoded once for the runs that follow each other on it
def _backlog(prefix: str, names: tuple[str, ...], recipients: int, per_account: int) -> list[bytes]:
    """``per_account`` recipients for each account, interleaved (the accounts' requests arrive
    together), on ``BATCH_KEYS`` templates each; numbers distinct within an account."""
    codec = PlainAvroCodec()
    requests = per_account // recipients
    values = []
    for i in range(requests):
        numbers = [phone(i * recipients + r) for r in range(recipients)]
        template = TEMPLATES[i % BATCH_KEYS]
        for name in names:
            values.append(codec.encode_request(request_record(f"{prefix}-{len(values)}", template, "en", numbers, account=name)))
    return values


def over_limit(calls: list[dict[str, Any]], first: float) -> list[tuple[float, float]]:
    """Each call received less than 1 s after the call ``API_LIMIT`` before it (throttled calls
    included): (seconds since ``first``, that gap)."""
    times = sorted(c["received_at"] for c in calls)
    return [(round(t - first, 3), round(t - times[k - API_LIMIT], 4)) for k, t in enumerate(times) if k >= API_LIMIT and t - times[k - API_LIMIT] < 1.0]


def _window_figures(calls: list[dict[str, Any]], drain_tail: int, since: float) -> dict[str, Any]:
    return measure.call_window(calls, MAX_RECIPIENTS, drain_tail=drain_tail, since=since)


def run_once(ctx: Context, plan: Plan, index: int) -> tuple[dict[str, Any], list[str]]:
    """One run of ``plan``: its details (per account, the box, windows) and the problems seen."""
    backlog = f"accounts-{plan.accounts}a{plan.recipients}r"  # the runs of one plan, and plans of one backlog, share it
    name = f"accounts-{plan.accounts}a{plan.instances}i{plan.workers}w{plan.recipients}r{'-redis' if plan.redis else ''}-{index}"
    names = _names(plan.accounts)
    per_account = per_account_recipients(ctx.quick)
    problems: list[str] = []
    prefix = f"{ctx.prefix}{backlog}"
    values = _backlog(prefix, names, plan.recipients, per_account)
    count = len(values)
    topics = ctx.infra.topics(f"{ctx.run_id}.{name}", PARTITIONS)
    cams = ctx.infra.endpoint(rate_limit=API_LIMIT)
    for n in names:
        cams.add_account(_key_id(n), SECRET)
    directory = Path(tempfile.mkdtemp(prefix="bench-accounts-", dir=ctx.logdir))
    settings: dict[str, Any] = {"group_id": f"bench-{ctx.run_id}-{name}", "config": _config_file(directory, names), "workers": plan.workers}
    key_prefix = f"bench:{ctx.run_id}:{name}:"
    redis_client = None
    if plan.redis:
        import redis

        redis_client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
        redis_client.ping()
        settings.update(redis_url=REDIS_URL, redis_key_prefix=key_prefix)
    details: dict[str, Any] = {"plan": plan.label, "requests": count, "recipients_per_account": per_account}
    wm = kafkaio.Watermarks(ctx.infra.bootstrap, topics[1], PARTITIONS)
    services = []
    codes: list[int | None] = []
    ctx.infra.gather_new_groups(plan.workers > 1 or plan.instances > 1)  # every process in the group's first generation
    try:
        services = [ctx.start_service(f"{name}-{k}", topics, **settings) for k in range(plan.instances)]
        details["group_settled_s"] = _wait_assigned(services, PARTITIONS, ctx.timeout(60))
        ctx.say(f"{name}: producing {count:,} requests ({per_account:,} recipients for each of {plan.accounts} accounts)")
        details["produce_s"] = kafkaio.produce_backlog(ctx.infra.bootstrap, topics[0], values, PARTITIONS)
        backlog_ready = time.time()
        cpu_before = [process_cpu_s(s.pid) for s in services], process_cpu_s(cams.process.pid)
        held, waited = wm.wait_for(count, ctx.timeout(per_account / (0.5 * BUDGET) + 60), lambda: [s.check_alive() for s in services])
        details["drain_wait_s"] = waited
        details["cpu_s"] = {
            "services": sum(process_cpu_s(s.pid) for s in services) - sum(cpu_before[0]),
            "endpoint": process_cpu_s(cams.process.pid) - cpu_before[1],
        }
        details["service_metrics"] = [_metrics_digest(s.metrics()) for s in services]
        if held < count:
            problems.append(f"{name}: only {held:,} of {count:,} results after {waited:.0f} s")
    finally:
        ctx.infra.gather_new_groups(False)
        codes = _stop_all(services)
        wm.close()
        if redis_client is not None:
            _clean_redis(redis_client, key_prefix, prefix)
    details["services"] = _service_notes(services, codes, problems)
    calls = cams.calls()
    stats = cams.stats()
    drain_tail = plan.instances * plan.workers * BATCH_KEYS * MAX_RECIPIENTS
    accounts: dict[str, Any] = {}
    first = min((c["received_at"] for c in calls), default=0.0)
    for n in names:
        own = [c for c in calls if c["access_key_id"] == _key_id(n)]
        window = _window_figures(own, drain_tail, backlog_ready)
        account_stats = stats["accounts"].get(_key_id(n), {})
        accounts[n] = {
            "figure": window.get("steady", {}).get("recipients_per_s", 0.0) / BUDGET,
            "max_calls_1s": account_stats.get("max_calls_1s", 0),
            "by_code": account_stats.get("by_code", {}),
            "over_limit": over_limit(own, first),
            "arrivals": [(c["received_at"], c["code"]) for c in sorted(own, key=lambda c: c["received_at"])],
            "recipients_accepted": account_stats.get("recipients_accepted", 0),
            "window": window,
        }
        if account_stats.get("recipients_accepted", 0) != per_account:
            problems.append(f"{name}: {n}: the endpoint accepted {account_stats.get('recipients_accepted', 0):,} recipients, expected {per_account:,}")
    box = _window_figures(calls, plan.accounts * drain_tail, backlog_ready)
    box.pop("timeline", None)  # each account's is in its own window
    details["accounts"] = accounts
    details["box"] = {"figure": box.get("steady", {}).get("recipients_per_s", 0.0) / (plan.accounts * BUDGET), "window": box}
    details["max_calls_1s"] = max((a["max_calls_1s"] for a in accounts.values()), default=0)
    results = kafkaio.read_all(ctx.infra.bootstrap, topics[1], PARTITIONS, count, timeout=ctx.timeout(60))
    details["results"] = check = measure.check_results((k for k, _, _ in results), None, {f"{prefix}-{i}" for i in range(count)})
    if check["missing"] or check["answered_more_than_once"] or check["unexpected"]:
        problems.append(f"{name}: {check['missing']} requests unanswered, {check['answered_more_than_once']} answered more than once")
    return details, problems


def accounts(ctx: Context) -> dict[str, Any]:
    """Every plan of :func:`plans`, its runs one after the other; one row per plan."""
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    problems: list[str] = []
    for plan in plans(ctx.quick):
        runs = []
        for index in range(plan.runs):
            if time.monotonic() > ctx.deadline - 30:
                problems.append(f"accounts: {plan.label}: run {index + 1} skipped (time budget)")
                break
            run, seen = run_once(ctx, plan, index)
            runs.append(run)
            problems += seen
        details[plan.label] = runs
        if runs:
            rows += _rows(plan, runs)
    return {"rows": rows, "details": details, "problems": problems}


def _rows(plan: Plan, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per account (min-max over accounts and runs), the box's, and the most calls in 1 s."""
    figures = [a["figure"] for run in runs for a in run["accounts"].values()]
    boxes = [run["box"]["figure"] for run in runs]
    peaks = [run["max_calls_1s"] for run in runs]
    recipients = [run["recipients_per_account"] * len(run["accounts"]) for run in runs]
    service_cores = [run["cpu_s"]["services"] * BUDGET / n for run, n in zip(runs, recipients, strict=True)]
    endpoint_cores = [run["cpu_s"]["endpoint"] * BUDGET / n for run, n in zip(runs, recipients, strict=True)]
    low, high = min(figures), max(figures)
    of = f" over {len(runs)} runs" if len(runs) > 1 else ""
    full_ok = low >= 0.99 if plan.target else None
    peak_ok = max(peaks) <= API_LIMIT if plan.target else None
    return [
        _row(f"accounts: {plan.label}: each account (recipients/s ÷ {BUDGET:,}/s)", low, f"{low:.3f} – {high:.3f}{of}",
             "≥ 0.99 each" if plan.target else "info", full_ok),
        _row("  the box (all accounts' recipients/s ÷ accounts × 10,000/s)", min(boxes), " / ".join(f"{b:.3f}" for b in boxes), "info", None),
        _row("  most calls of one account in any 1 s at the endpoint (throttled included)", max(peaks),
             " / ".join(f"{p} ({p / API_LIMIT:.1f}×)" for p in peaks), f"≤ {API_LIMIT} (1.0×)" if plan.target else "info", peak_ok),
        _row("  cores one account at its limit takes: services (endpoint); accounts a core carries", max(service_cores),
             " / ".join(f"{c:.3f} ({e:.3f}); {1 / c:.1f}" for c, e in zip(service_cores, endpoint_cores, strict=True)), "info", None),
    ]  # fmt: skip
