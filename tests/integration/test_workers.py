"""``workers`` = 2: one instance as a supervisor and two service processes, against the mock
broker over TCP and the local CAMS endpoint over HTTP. They split the partitions, draw on one
rate limit without Redis, show up in one /metrics with a worker label, and are restarted,
stopped and orphaned as the supervisor promises; with Redis a killed worker's sends are not
repeated."""

from __future__ import annotations

import collections
import os
import re
import signal
import time
from pathlib import Path

import pytest
from chatapp_devkit.local_cams import LocalCams

from tests.fixtures.calls import assert_kept_to_the_rate
from tests.fixtures.service import RESULTS, TEST_KEY_ID, TEST_SECRET, encode_samples, produce, service_env, wait_for

PARTITIONS = 8
RATE = 10
# from the endpoint's receipt of a call to the sender's done mark: the answer's round trip and one
# ledger write, with room for a loaded machine
IN_FLIGHT_S = 1.0


@pytest.fixture(autouse=True)
def _workers_join_together(service_cluster) -> None:
    """An instance's workers start within a second: the group's first join waits 2 s for them
    (a real broker's group.initial.rebalance.delay.ms), instead of one taking every partition
    and handing half over."""
    service_cluster.set_initial_rebalance_delay(2000)


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited


def answered(reader, count: int) -> collections.Counter:
    reader.read_until(lambda r: len({x["request_id"] for x in r.results()}) >= count, timeout=60)
    return collections.Counter(x["request_id"] for x in reader.results())


def test_two_workers_split_the_partitions_and_share_one_budget(service_cluster, start_service, topic_reader):
    total = 3000  # 30 or more calls of up to 100: 3 s or more at 10 calls/s
    with LocalCams.start(accounts={TEST_KEY_ID: TEST_SECRET}, rate_limit=RATE) as cams:
        service = start_service(service_env(service_cluster.bootstrap_servers, cams.url, workers=2, batch_max_recipients=100, rate_limit_per_second=RATE))
        service.wait_ready(timeout=60)  # ready = every worker holds partitions
        workers = children(service.process.pid)
        assert len(workers) == 2
        produce(service_cluster.bootstrap_servers, encode_samples(total))
        counts = answered(topic_reader(service_cluster.bootstrap_servers, RESULTS), total)
        stats = cams.stats()
        received = cams.calls()
        assigned = [service.metric("chatapp_assigned_partitions", worker=w) for w in ("0", "1")]
        calls = [service.metric("chatapp_api_calls_total", code="OK", worker=w) for w in ("0", "1")]
        running = service.metric("chatapp_workers_running")
        live, ready = service.get("/healthz"), service.get("/readyz")
        assert service.stop() == 0
    assert len(counts) == total and set(counts.values()) == {1}, "every request answered once"
    assert set(stats["by_code"]) == {"OK"}, "never throttled: one budget, not two"
    assert stats["recipients_accepted"] == total and stats["duplicate_recipients_accepted"] == 0
    assert_kept_to_the_rate(received, RATE)  # the two workers together, every call received counted
    assert all(a > 0 for a in assigned) and sum(assigned) == PARTITIONS
    assert all(c > 0 for c in calls) and sum(calls) == stats["accepted_calls"], "both workers sent; their metrics add up to the endpoint's count"
    assert running == 2
    assert live.status_code == 200 and live.json()["workers_live"] == {"0": True, "1": True}
    assert ready.status_code == 200
    assert wait_for(lambda: all(gone(pid) for pid in workers), 10, every=0.1), "not within 10 s: the workers exited with the supervisor"


def worker_pid(service, index: int) -> int:
    """The pid the supervisor logged for worker ``index`` (its latest start)."""
    pids = re.findall(rf"worker {index} started \(pid (\d+)\)", service.log_path.read_text())
    assert pids, f"worker {index} never started:\n{service.log_tail()}"
    return int(pids[-1])


def kill_a_worker_midway(service, bootstrap: str, total: int) -> float:
    """SIGKILL worker 0 once it has published results of its own (so some are read again), and
    wait until the supervisor has started it again; answers when it was killed (epoch seconds)."""
    victim = worker_pid(service, 0)
    produce(bootstrap, encode_samples(total))
    assert wait_for(lambda: service.metric("chatapp_results_total", worker="0") >= 300, 30, every=0.1), "not within 30 s: worker 0 published results"
    killed_at = time.time()
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: service.metric("chatapp_worker_restarts_total") == 1, 20, every=0.1), "not within 20 s: the supervisor restarted the worker"
    assert wait_for(lambda: len(children(service.process.pid)) == 2 and victim not in children(service.process.pid), 10, every=0.1), (
        "not within 10 s: two workers again"
    )
    return killed_at


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_nothing_is_lost(service_cluster, start_service, topic_reader):
    """Without Redis each worker's ledger is its own, as each instance's is: what the killed
    worker sent and had not committed may be sent again (see the next test), nothing is lost."""
    total = 4000
    with LocalCams.start(accounts={TEST_KEY_ID: TEST_SECRET}, rate_limit=RATE) as cams:
        service = start_service(service_env(service_cluster.bootstrap_servers, cams.url, workers=2, batch_max_recipients=100, rate_limit_per_second=RATE))
        service.wait_ready(timeout=60)
        reader = topic_reader(service_cluster.bootstrap_servers, RESULTS)
        kill_a_worker_midway(service, service_cluster.bootstrap_servers, total)
        counts = answered(reader, total)
        received = cams.calls()
        assert service.stop() == 0
    assert len(counts) == total, "every request answered"
    assert_kept_to_the_rate(received, RATE)  # the restarted worker joined the same budget
    assert "exited with -9" in service.log_path.read_text()


@pytest.mark.slow
def test_with_redis_a_killed_workers_requests_are_not_sent_again(service_cluster, start_service, topic_reader, private_redis):
    """With Redis the workers share its ledger, as instances do: the worker that reads the killed
    one's partitions again answers what it had sent from the ledger; only calls in flight at the
    kill are sent again (``inflight_policy=resend``, counted), once the killed worker's marks are
    stale (``inflight_stale_s``, 3 s here: its heartbeat stopped)."""
    total = 4000
    with LocalCams.start(accounts={TEST_KEY_ID: TEST_SECRET}, rate_limit=RATE) as cams:
        service = start_service(service_env(service_cluster.bootstrap_servers, cams.url, workers=2, batch_max_recipients=100, rate_limit_per_second=RATE,
                                            redis_url=private_redis.url, limiter_fallback_instances=2, inflight_stale_s=3,
                                            commit_interval_ms=60_000))  # no commit before the kill: every result it published is read again  # fmt: skip
        service.wait_ready(timeout=60)
        reader = topic_reader(service_cluster.bootstrap_servers, RESULTS)
        killed_at = kill_a_worker_midway(service, service_cluster.bootstrap_servers, total)
        counts = answered(reader, total)
        answered_again = service.metric("chatapp_duplicates_total", kind="done")
        calls = [c for c in cams.calls() if c["code"] == "OK"]
        assert service.stop() == 0
    assert len(counts) == total, "every request answered"
    outcomes = collections.defaultdict(set)
    for result in reader.results():
        outcomes[result["request_id"]].add(result["group_message_id"])
    # judged from the endpoint's log of calls received and the results topic: a request sent twice
    # was first sent in a call in flight at the kill (received by the endpoint, its done mark not
    # yet written: within IN_FLIGHT_S before the kill); the recipients sent twice are no more
    # than those calls carried
    by_group = {c["group_message_id"]: c for c in calls}
    in_flight = [c for c in calls if killed_at - IN_FLIGHT_S <= c["received_at"] <= killed_at + 0.1]
    for request_id, ids in outcomes.items():
        if len(ids) > 1:
            first = min((by_group[g] for g in ids), key=lambda c: c["received_at"])
            assert first in in_flight, f"{request_id} sent twice, first at {first['received_at']:.3f}, not in flight at the kill ({killed_at:.3f})"
    numbers = collections.Counter(n for c in calls for n in c["to"])
    sent_twice = sum(count - 1 for count in numbers.values())
    assert sent_twice <= sum(c["recipients"] for c in in_flight), f"{sent_twice} recipients sent twice; {len(in_flight)} calls were in flight at the kill"
    assert answered_again > 0, "what the killed worker had answered was answered again from the ledger, not sent"


def test_workers_drain_and_stop_when_their_supervisor_dies(service_cluster, start_service):
    with LocalCams.start(accounts={TEST_KEY_ID: TEST_SECRET}) as cams:
        service = start_service(service_env(service_cluster.bootstrap_servers, cams.url, workers=2))
        service.wait_ready(timeout=60)
        workers = children(service.process.pid)
        service.process.kill()  # the supervisor alone
        service.process.wait(10)
        assert wait_for(lambda: all(gone(pid) for pid in workers), 30, every=0.1), "not within 30 s: orphaned workers stopped on their own"
    log = service.log_path.read_text()
    assert log.count("stop requested: finishing buffered work") == 2
    assert log.count('"msg": "stopped: ') == 2, "each worker committed and left the group"
