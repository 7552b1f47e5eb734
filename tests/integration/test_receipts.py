"""Delivery receipts joined to their requests, against real processes: the service sends N
requests to the local CAMS endpoint (CHATAPP_RECEIPTS_JOIN=on, Redis), then receipts for the
calls the endpoint accepted (its ``/_admin/calls`` log: TaskId and numbers) are pushed in CAMS's
format to ``chatapp-consumer receipts`` processes; the status topic is the judge.

The expected request of each (TaskId, number) comes from the endpoint's log and the requests
produced (each sample request has one number of its own), never from the join itself.
``RECEIPTS_N`` sets N (default 2,000; the issue's 20,000 runs in about a minute).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest
from chatapp_devkit.local_cams import LocalCams
from chatapp_devkit.mockcluster import MockCluster
from chatapp_devkit.samples import sample_records
from redis import Redis

from tests.fixtures.receipts import CAMS_STATUS, STATUS, TOKEN, cams_report, decode_status, post, post_until_taken, receipts_env
from tests.fixtures.redis import PrivateRedis
from tests.fixtures.service import (
    DLQ,
    REQUESTS,
    RESULTS,
    TEST_KEY_ID,
    TEST_SECRET,
    ServiceProcess,
    TopicReader,
    encode_samples,
    free_port,
    produce,
    service_env,
    wait_for,
)

N = int(os.environ.get("RECEIPTS_N", "2000"))
CORRELATION = b"corr-receipts"
PUSH_SIZE = 500


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """N requests sent by the service for real; what the join must know: (TaskId, number) -> request id."""
    workdir = tmp_path_factory.mktemp("receipts")
    redis = PrivateRedis(workdir)
    redis.start()
    with MockCluster.start(topics={REQUESTS: 4, RESULTS: 4, DLQ: 1}) as cluster, LocalCams.start(accounts={TEST_KEY_ID: TEST_SECRET}, rate_limit=10) as cams:
        bootstrap = cluster.bootstrap_servers
        service = ServiceProcess(service_env(bootstrap, cams.url, receipts_join="on", redis_url=redis.url), workdir / "service.log")
        results = TopicReader(bootstrap, RESULTS)
        try:
            produce(bootstrap, encode_samples(N), headers=[("correlation-id", CORRELATION)])
            service.wait_ready(timeout=60)
            assert results.read_until(lambda r: len(r.messages) >= N, timeout=120), f"{len(results.messages)}/{N} results:\n{service.log_tail()}"
            assert {r["status"] for r in results.results()} == {"SENT"}
            request_of = {record["recipients"][0]["to"]: record["request_id"] for record in sample_records(N)}
            calls = [call for call in cams.calls() if call["accepted_at"] is not None]
            expected = {(call["params"]["TaskId"], to): request_of[to] for call in calls for to in call["to"]}
            assert len(expected) == N, "every number in one accepted call, each call with a TaskId of its own"
            tasks = Counter(task for task, _ in expected)
            client = Redis.from_url(redis.url)
            # the join is written after the call, off the sender's path: wait until it is there
            assert wait_for(lambda: all(client.hlen(f"chatapp:receipts:task:{task}") >= n for task, n in tasks.items()), 30), "join not recorded"
            client.close()
            assert service.stop() == 0, service.log_tail()
            yield {"bootstrap": bootstrap, "cluster": cluster, "redis": redis.url, "expected": expected, "calls": calls}
        finally:
            results.close()
            service.kill()
            redis.kill()


def receipts_for(expected: dict[tuple[str, str], str], tag: str, now_ms: int) -> list[dict[str, Any]]:
    """Sent, then Delivered and Read (every tenth number: Failed) for each recipient, each
    message with a MessageId of its own (``tag`` keeps the tests' ids apart)."""
    reports = []
    for n, (task, to) in enumerate(sorted(expected)):
        message_id = f"{tag}-{n}"
        statuses = ["Sent", "Failed"] if n % 10 == 0 else ["Sent", "Delivered", "Read"]
        reports += [cams_report(message_id, to, status, task, now_ms + 1000 * k) for k, status in enumerate(statuses)]
    return reports


def statuses_on(bootstrap: str, topic: str, expected: int, timeout: float = 120.0) -> list[Any]:
    """Every record of ``topic`` once ``expected`` are there and no more come for a second."""
    reader = TopicReader(bootstrap, topic)
    try:
        reader.read_until(lambda r: len(r.messages) >= expected, timeout)
        while reader.poll(1.0):  # anything past the expected count: a double
            pass
        return reader.messages
    finally:
        reader.close()


def check_once_each(messages: list[Any], reports: list[dict[str, Any]], expected: dict[tuple[str, str], str]) -> None:
    """Each distinct (MessageId, Status) reported is on the topic exactly once, with its request."""
    wanted = {(r["MessageId"], r["Status"]): r for r in reports}
    seen = Counter()
    for message in messages:
        record = decode_status(message.value())
        report = wanted[(record["message_id"], CAMS_STATUS[record["status"]])]
        seen[(record["message_id"], record["status"])] += 1
        request_id = expected[(report["TaskId"], report["To"])]
        assert record["request_id"] == request_id and message.key() == request_id.encode()
        assert dict(message.headers() or [])["correlation-id"] == CORRELATION
        assert record["task_id"] == report["TaskId"] and record["to"] == report["To"]
        assert record["occurred_at"] == report["Timestamp"] and record["received_at"] >= report["Timestamp"] - 60_000
        assert record["group_message_id"], "the call's GroupMessageId from the join"
        if record["status"] == "FAILED":
            assert record["error_code"] == "131026"
    doubled = [key for key, count in seen.items() if count > 1]
    assert not doubled, f"{len(doubled)} statuses published more than once, e.g. {doubled[:3]}"
    assert len(seen) == len(wanted), f"{len(wanted) - len(seen)} statuses lost"


def test_every_status_reaches_the_topic_once_through_two_receivers_despite_repeats_and_disorder(sent, start_receiver) -> None:
    topic = "status-two-receivers"
    sent["cluster"].create_topic(topic, 4)
    env = receipts_env(sent["bootstrap"], sent["redis"], status_topic=topic)
    receivers = [start_receiver(env), start_receiver(env)]
    for receiver in receivers:
        receiver.wait_ready()
    reports = receipts_for(sent["expected"], "two", int(time.time() * 1000))
    rng = random.Random(22)
    pushed = reports + rng.sample(reports, len(reports) // 10)  # a tenth pushed twice
    rng.shuffle(pushed)  # a Read before its Delivered, a repeat before its first
    pushes = [pushed[i : i + PUSH_SIZE] for i in range(0, len(pushed), PUSH_SIZE)]
    pushes += rng.sample(pushes, max(1, len(pushes) // 5))  # whole pushes again, as CAMS does after a timeout
    urls = [receiver.url for receiver in receivers]
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:  # "behind one address": pushes spread over both, concurrently
        tries = list(pool.map(lambda p: post_until_taken([urls[id(p) % 2], urls[(id(p) + 1) % 2]], p), pushes))
    elapsed = time.monotonic() - started
    messages = statuses_on(sent["bootstrap"], topic, len({(r["MessageId"], r["Status"]) for r in reports}))
    check_once_each(messages, reports, sent["expected"])
    print(f"\n{len(pushed)} reports in {len(pushes)} pushes ({sum(tries)} tries) through 2 receivers in {elapsed:.1f}s: {len(pushed) / elapsed:,.0f} reports/s")


def test_a_receiver_killed_mid_push_loses_and_doubles_nothing_when_the_pushes_are_retried(sent, start_receiver) -> None:
    topic = "status-killed"
    sent["cluster"].create_topic(topic, 4)
    env = receipts_env(sent["bootstrap"], sent["redis"], status_topic=topic, receipts_claim_s=5, receipts_publish_timeout_s=2)
    first = start_receiver(env)
    first.wait_ready()
    reports = receipts_for(sent["expected"], "kill", int(time.time() * 1000))
    pushes = [reports[i : i + PUSH_SIZE] for i in range(0, len(reports), PUSH_SIZE)]
    answers: dict[int, Any] = {}
    client = Redis.from_url(sent["redis"])
    with ThreadPoolExecutor(4) as pool:
        for index, push in enumerate(pushes):
            pool.submit(lambda i, p: answers.__setitem__(i, _post_or_error(first.url, p)), index, push)
        try:  # killed once it has answered a few pushes, with others taken in (claimed) and on their way
            taken = lambda: sum(a == 200 for a in list(answers.values())) >= 3 and bool(client.keys("chatapp:receipts:seen:kill-*"))  # noqa: E731
            assert wait_for(taken, 60, every=0.005), f"the receiver answered {answers}"
        finally:
            client.close()
            first.process.kill()
    unanswered = [i for i in range(len(pushes)) if answers.get(i) != 200]
    assert unanswered, "every push was answered before the kill: nothing was tested"
    second = start_receiver(env, port=first.port)  # the same address, as a restarted pod
    second.wait_ready()
    for index in unanswered:  # CAMS pushes again what was not answered 200
        post_until_taken([second.url], pushes[index])
    messages = statuses_on(sent["bootstrap"], topic, len(reports))
    check_once_each(messages, reports, sent["expected"])
    recovered = second.metric("chatapp_receipts_recovered_total")
    print(f"\n{len(unanswered)} of {len(pushes)} pushes unanswered at the kill and pushed again; {recovered:.0f} statuses found published by the dead receiver")


def _post_or_error(url: str, reports: list[Any]) -> Any:
    try:
        return post(url, reports)
    except Exception as exc:  # the receiver died with the connection open
        return type(exc).__name__


def test_malformed_and_unmatched_receipts_are_counted_and_kept_without_dropping_good_ones(sent, start_receiver) -> None:
    topic = "status-odd"
    sent["cluster"].create_topic(topic, 1)
    receiver = start_receiver(receipts_env(sent["bootstrap"], sent["redis"], status_topic=topic, receipts_max_body_bytes=4096))
    receiver.wait_ready()
    (task, to), request_id = next(iter(sent["expected"].items()))
    now = int(time.time() * 1000)
    good = cams_report("odd-1", to, "Delivered", task, now)
    unmatched = [cams_report("odd-2", "8613000000001", "Read", "no-such-task", now), cams_report("odd-3", to, "Sent", None, now)]
    novel = cams_report("odd-4", to, "Pending", task, now)  # a status this schema does not know: kept as UNKNOWN
    assert post(receiver.url, b"{not json") == 400
    assert post(receiver.url, b'"a string"') == 400
    assert post(receiver.url, [good, 42, {"Status": "Read"}, *unmatched, novel]) == 200
    assert post(receiver.url, [good] * 200) == 413  # over the 4,096 bytes allowed
    assert post(receiver.url.replace("test-receipts", "wrong"), [good]) == 401
    assert post(receiver.url.rsplit("/", 1)[0] + "/", [good]) == 401
    with httpx.Client(timeout=30) as client:  # one kept-alive connection, as CAMS may use: a refused body is never read as a request
        body = orjson.dumps([good])
        assert client.post(receiver.url.replace("test-receipts", "wrong"), content=body).status_code == 401
        assert client.post(receiver.url, content=body + b" " * 5000).status_code == 413
        assert client.post(receiver.url, content=body).status_code == 200
    records = [decode_status(m.value()) for m in statuses_on(sent["bootstrap"], topic, 4, timeout=30)]
    by_id = {r["message_id"]: r for r in records}
    assert sorted(by_id) == ["odd-1", "odd-2", "odd-3", "odd-4"] and len(records) == 4
    assert by_id["odd-1"]["request_id"] == request_id and by_id["odd-1"]["status"] == "DELIVERED"
    assert by_id["odd-2"]["request_id"] is None and by_id["odd-3"]["request_id"] is None
    assert by_id["odd-4"]["status"] == "UNKNOWN" and by_id["odd-4"]["request_id"] == request_id
    assert receiver.metric("chatapp_receipts_malformed_total", reason="report") == 2
    assert receiver.metric("chatapp_receipts_malformed_total", reason="not-json") == 1
    assert receiver.metric("chatapp_receipts_malformed_total", reason="not-an-array") == 1
    assert receiver.metric("chatapp_receipts_malformed_total", reason="too-large") == 2
    assert receiver.metric("chatapp_receipts_published_total", join="unmatched") == 2
    assert receiver.metric("chatapp_receipts_pushes_total", code="401") == 3
    assert receiver.alive()


def test_without_redis_the_service_hosts_the_receiver_on_its_own_join(service_cluster, local_cams, start_service, topic_reader) -> None:
    """One process, no Redis (the demo): ``run`` with a token serves the callback URL itself."""
    count = 300
    bootstrap = service_cluster.bootstrap_servers
    service_cluster.create_topic(STATUS, 4)
    port = free_port()
    service = start_service(service_env(bootstrap, local_cams.url, receipts_join="on", receipts_token=TOKEN, receipts_port=port, receipts_host="127.0.0.1"))
    results = topic_reader(bootstrap, RESULTS)
    produce(bootstrap, encode_samples(count), headers=[("correlation-id", CORRELATION)])
    service.wait_ready(timeout=60)
    assert results.read_until(lambda r: len(r.messages) >= count, timeout=60), service.log_tail()
    request_of = {record["recipients"][0]["to"]: record["request_id"] for record in sample_records(count)}
    expected = {(call["params"]["TaskId"], to): request_of[to] for call in local_cams.calls() if call["accepted_at"] for to in call["to"]}
    reports = receipts_for(expected, "local", int(time.time() * 1000))
    url = f"http://127.0.0.1:{port}/chatapp/status/{TOKEN}"
    for start in range(0, len(reports), PUSH_SIZE):  # the join is written just after each call: a push may come first
        post_until_taken([url], reports[start : start + PUSH_SIZE])
    check_once_each(statuses_on(bootstrap, STATUS, len(reports)), reports, expected)
    assert service.stop() == 0, service.log_tail()
