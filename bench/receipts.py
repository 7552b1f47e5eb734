"""Receiver throughput: delivery receipts per second through one ``chatapp-consumer receipts``
process, over HTTP as CAMS pushes them (JSON arrays of 100 reports, a few POSTs at once), with
Redis (claims, the join: every report matches a request) and the mock broker (each push's
statuses acknowledged before it is answered).

The figure is a ratio of 30,000 receipts/s: what one account can cause at its ceiling (10 calls/s
× 1,000 recipients × 3 statuses: Sent, Delivered, Read). Below it, it is noted as information:
receivers scale out behind one address (docs/receipts.md). The receiver's own CPU time gives the
rate per core. Checked by counting the status topic's records.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
from redis import Redis

from consumer.receipts.join import CallJoin, RedisJoin, encode_entry

from . import kafkaio
from .launch import Service, free_port, process_cpu_s, service_env
from .scenarios import REDIS_URL, Context, _row

ACCOUNT_RECEIPTS_S = 3 * 10 * 1000
"""Receipts per second one account can cause: 10 calls/s × 1,000 recipients × 3 statuses."""
PER_POST = 100
SENDERS = 16
"""POSTs under way at once (CAMS pushes in parallel)."""
PARTITIONS = 8
TOKEN = "bench-receipts-token-local-only"


def _reports(run: str, recipients: int, now_ms: int) -> tuple[list[CallJoin], list[bytes]]:
    """The join of calls of 1,000 recipients, and their Sent, Delivered and Read reports as POST
    bodies (each status of a recipient in a different push, as they come over time)."""
    calls, statuses = [], []
    for first in range(0, recipients, 1000):
        task = f"{run}-task-{first // 1000}"
        numbers = [f"8613{first + i:09d}" for i in range(min(1000, recipients - first))]
        calls.append(CallJoin(task, now_ms, f"gm-{task}", {n: encode_entry(f"{run}-req-{n}", b"corr") for n in numbers}))
        for status in ("Sent", "Delivered", "Read"):
            for n in numbers:
                statuses.append({"MessageId": f"{run}-{n}", "TaskId": task, "To": n, "Status": status, "Timestamp": now_ms,
                                 "ConversationType": "marketing", "From": "8613800000000"})  # fmt: skip
    bodies = [orjson.dumps(statuses[i : i + PER_POST]) for i in range(0, len(statuses), PER_POST)]
    return calls, bodies


def receipts(ctx: Context) -> dict[str, Any]:
    recipients = 10_000 if ctx.quick else 30_000
    infra = ctx.infra
    assert infra.cluster is not None
    topic = f"bench.receipts.{ctx.prefix}.status"
    infra.cluster.create_topic(topic, PARTITIONS)
    prefix = f"bench:{ctx.prefix}:"
    calls, bodies = _reports(ctx.prefix, recipients, int(time.time() * 1000))
    client = Redis.from_url(REDIS_URL)
    RedisJoin(client, 3600, prefix).record(calls)
    port = free_port()
    assert infra.cams is not None
    names = (f"{topic}.requests", f"{topic}.results", f"{topic}.dlq")  # the receiver reads none of them
    env = service_env(infra.bootstrap, infra.cams.url, names, redis_url=REDIS_URL, redis_key_prefix=prefix, receipts_token=TOKEN,
                      receipts_host="127.0.0.1", receipts_port=port, status_topic=topic)  # fmt: skip
    env.update(ctx.extra_env)
    receiver = Service(env, ctx.logdir / "receipts.log", command="receipts")
    problems: list[str] = []
    try:
        receiver.wait_ready(ctx.timeout(30))
        url = f"http://127.0.0.1:{port}/chatapp/status/{TOKEN}"
        answers: list[int] = []
        with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=SENDERS)) as http, ThreadPoolExecutor(SENDERS) as pool:
            cpu_before = process_cpu_s(receiver.pid)
            started = time.monotonic()
            answers = list(pool.map(lambda body: http.post(url, content=body).status_code, bodies))
            elapsed = time.monotonic() - started
            cpu_s = process_cpu_s(receiver.pid) - cpu_before
        reports = 3 * recipients
        if answers.count(200) != len(bodies):
            problems.append(f"receipts: {len(bodies) - answers.count(200)} of {len(bodies)} pushes not answered 200")
        published = len(kafkaio.read_all(infra.bootstrap, topic, PARTITIONS, reports, timeout=ctx.timeout(60)))
        if published != reports:
            problems.append(f"receipts: {published:,} statuses on the topic for {reports:,} reports")
        code = receiver.stop(ctx.timeout(30))
        if code != 0:
            problems.append(f"receipts receiver exited with {code} (log {receiver.log_path})")
    finally:
        receiver.kill()
        removed = sum(1 for key in client.scan_iter(match=prefix + "*", count=10_000) if client.delete(key))
        client.close()
    rate = reports / elapsed
    per_core = reports / cpu_s if cpu_s else None
    ratio = rate / ACCOUNT_RECEIPTS_S
    target = f"30,000/s (3 × 10,000 recipients/s){'' if ratio >= 1 else ': info, receivers scale out'}"
    rows = [
        _row(
            "receipts/s through one receiver (HTTP, 100 a push)",
            rate,
            f"{rate:,.0f}/s = {ratio:.2f} of the account's 30,000",
            target,
            True if ratio >= 1 else None,
        ),
        _row("receipts per CPU-second of the receiver", per_core, f"{per_core:,.0f}/s ({cpu_s:.1f} CPU-s)" if per_core else "n/a", "info", None),
    ]
    details = {"reports": reports, "pushes": len(bodies), "senders": SENDERS, "seconds": elapsed, "receiver_cpu_s": cpu_s, "published": published,
               "redis_keys_removed": removed}  # fmt: skip
    ctx.say(f"receipts: {reports:,} reports in {len(bodies)} pushes in {elapsed:.1f} s: {rate:,.0f}/s ({ratio:.2f} of 30,000/s), receiver {cpu_s:.1f} CPU-s")
    return {"rows": rows, "details": details, "problems": problems, "rate": rate}
