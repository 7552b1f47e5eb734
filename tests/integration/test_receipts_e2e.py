"""Issue 22's end-to-end test, every part real and in its own process: the service (``run``,
CHATAPP_RECEIPTS_JOIN=on, Redis) sends N requests to the local CAMS endpoint, which pushes their
receipts (Sent, Delivered, Read for a share, Failed for numbers ending in 7; a share pushed twice,
a share reordered, a share lost) to two ``chatapp-consumer receipts`` processes behind one
round-robin address; one receiver is SIGKILLed while a push is inside it and started again on
its port (the endpoint's retries redeliver what it was answering).

Judged from two independent records: the endpoint's ``/_admin/receipts`` log (every report it
got a 2xx for) and the status topic. Every acknowledged (MessageId, Status) is on the topic
exactly once, keyed by the request that carried the recipient (from the endpoint's call log and
the requests produced, never from the join); nothing the endpoint gave up on, nothing extra.

``RECEIPTS_N`` sets N: the issue's 20,000 by default (about 53,000 reports pushed in 530 POSTs):
20 s here at a load average of 4.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import pytest
from chatapp_devkit.local_cams import LocalCams
from chatapp_devkit.samples import sample_records

from tests.fixtures.receipts import CAMS_STATUS, STATUS, TOKEN, decode_status, receipts_env
from tests.fixtures.service import RESULTS, TEST_KEY_ID, TEST_SECRET, TopicReader, encode_samples, produce, service_env, wait_for

N = int(os.environ.get("RECEIPTS_N", "20000"))
CORRELATION = b"corr-e2e"
PUSH = {
    "max_per_post": 100,
    "flush_interval_ms": 100,
    "delays_ms": {"Sent": 50, "Delivered": 200, "Read": 400, "Failed": 100},
    "jitter_ms": 300,
    "read_rate": 0.5,
    "failures": [{"regex": r"\d*7", "code": "131026"}],
    "duplicate_rate": 0.1,
    "duplicate_after_ms": 300,
    "reorder_rate": 0.2,
    "loss_rate": 0.01,
    "retry_delays_s": [0.5, 1, 1, 2, 2, 3, 3, 5, 5, 5, 5, 5, 5],
    "push_timeout_s": 10,
    "push_concurrency": 4,
    "log_limit": 1_000_000,
    "seed": 22,
}

pytestmark = pytest.mark.timeout(600)


def test_every_acknowledged_receipt_reaches_the_status_topic_once_with_its_request_through_two_receivers_one_killed(
    service_cluster, start_service, start_receiver, round_robin, private_redis
) -> None:
    bootstrap = service_cluster.bootstrap_servers
    service_cluster.create_topic(STATUS, 4)
    redis = private_redis
    env = receipts_env(bootstrap, redis.url, receipts_claim_s=5, receipts_publish_timeout_s=2)
    receivers = [start_receiver(env), start_receiver(env)]
    for receiver in receivers:
        receiver.wait_ready()
    upstreams = [f"http://127.0.0.1:{r.port}" for r in receivers]
    proxy = round_robin(upstreams)
    cams = LocalCams.start({TEST_KEY_ID: TEST_SECRET}, rate_limit=10, receipts={"callback_url": proxy.url(f"/chatapp/status/{TOKEN}"), **PUSH})
    results = TopicReader(bootstrap, RESULTS)
    try:
        started = time.monotonic()
        service = start_service(service_env(bootstrap, cams.url, receipts_join="on", redis_url=redis.url))
        produce(bootstrap, encode_samples(N), headers=[("correlation-id", CORRELATION)])
        service.wait_ready(timeout=60)
        # killed once about a fifth of the reports are acknowledged, with a push inside it; back on its address at once (a pod restarted)
        victim = receivers[0]
        mid_push = lambda: cams.receipts(limit=0)["stats"]["reports_acknowledged"] >= N // 2 and proxy.under_way[upstreams[0]] > 0  # noqa: E731
        assert wait_for(mid_push, 120, every=0.005), f"no push reached the receiver: {cams.receipts(limit=0)['stats']}"
        victim.process.kill()
        killed_at = cams.receipts(limit=0)["stats"]["reports_acknowledged"]
        restarted = start_receiver(env, port=victim.port)
        restarted.wait_ready()
        assert results.read_until(lambda r: len(r.messages) >= N, timeout=180), f"{len(results.messages)}/{N} results:\n{service.log_tail()}"
        quiet = lambda: (s := cams.receipts(limit=0)["stats"])["pending"] == 0 and s["planned"] > 0  # noqa: E731
        assert wait_for(quiet, 240, every=0.5), f"receipts still pending: {cams.receipts(limit=0)['stats']}"
        elapsed = time.monotonic() - started
        recovered = sum(r.metric("chatapp_receipts_recovered_total") for r in (receivers[1], restarted))
        record = cams.receipts()
        calls = [call for call in cams.calls() if call["accepted_at"] is not None]
    finally:
        results.close()
        cams.stop(timeout=10.0)
    stats = record["stats"]
    assert stats["abandoned"] == 0, "the endpoint gave up on a push: its retries were too short for the kill"
    acknowledged = {(e["MessageId"], e["Status"]): e for e in record["log"] if e["fate"] == "acknowledged"}
    assert stats["duplicates"] > 0 and stats["dropped_by_loss"] > 0 and stats["retried"] > 0, stats
    request_of = {r["recipients"][0]["to"]: r["request_id"] for r in sample_records(N)}
    request_for = {(call["params"]["TaskId"], to): request_of[to] for call in calls for to in call["to"]}
    assert len(request_for) == N, "each number in one accepted call"
    messages = _statuses(bootstrap, len(acknowledged))
    seen: Counter[tuple[str, str]] = Counter()
    for message in messages:
        status = decode_status(message.value())
        key = (status["message_id"], CAMS_STATUS[status["status"]])
        seen[key] += 1
        report = acknowledged[key]  # KeyError: a status the endpoint never had acknowledged
        request_id = request_for[(report["TaskId"], report["To"])]
        assert status["request_id"] == request_id and message.key() == request_id.encode(), (status, report)
        assert dict(message.headers() or [])["correlation-id"] == CORRELATION
        assert status["occurred_at"] == report["Timestamp"] and status["error_code"] == report["ErrorCode"]
        assert (status["status"] == "FAILED") == report["To"].endswith("7"), "Failed (131026) exactly for the numbers the rule names"
    doubled = [key for key, count in seen.items() if count > 1]
    assert not doubled, f"{len(doubled)} statuses published more than once, e.g. {doubled[:3]}"
    assert set(seen) == set(acknowledged), f"{len(set(acknowledged) - set(seen))} acknowledged statuses not on the topic"
    funnel = Counter(status for _, status in seen)
    print(
        f"\n{N} requests, {len(seen)} statuses ({dict(funnel)}), {stats['reports_pushed']} reports pushed in {stats['posts']} POSTs"
        f" ({stats['duplicates']} duplicated, {stats['retried']} retried, {stats['dropped_by_loss']} lost) through 2 receivers,"
        f" one killed at {killed_at} acknowledged ({recovered:.0f} of its statuses found published); {elapsed:.0f}s; forwarded {dict(proxy.forwarded)}, failed {dict(proxy.failed)}"
    )


def _statuses(bootstrap: str, expected: int) -> list[Any]:
    reader = TopicReader(bootstrap, STATUS)
    try:
        reader.read_until(lambda r: len(r.messages) >= expected, 120)
        while reader.poll(1.0):  # anything past the expected count: a double
            pass
        return reader.messages
    finally:
        reader.close()
