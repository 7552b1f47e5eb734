"""One rate limit for the whole consumer group: three service processes share the account's
budget through Redis; CAMS throttling slows them down; a Redis outage falls back and recovers."""

from __future__ import annotations

import collections
import signal
import time

import pytest
from chatapp_devkit.local_cams import LocalCams

from tests.fixtures.calls import max_received_in_window, received_between
from tests.fixtures.service import (
    RESULTS,
    TEST_KEY_ID,
    TEST_SECRET,
    encode_samples,
    produce,
    service_env,
    wait_for,
)

PARTITIONS = 12
RATE = 10


def accepted_arrivals(cams: LocalCams) -> list[float]:
    """When each accepted call arrived: what CAMS's window counts."""
    return sorted(c["received_at"] for c in cams.calls() if c["code"] == "OK")


@pytest.mark.slow
def test_three_instances_share_one_budget_exactly_and_keep_it_full(service_cluster, shared_redis, start_service, topic_reader):
    # 100 recipients per call: 45,000 requests keep a backlog for 45 s; produced once the group has
    # settled, so the time the group takes to form does not eat into the measured run
    total, per_call, run_s = 45_000, 100, 30.0
    backlog = encode_samples(total)
    with LocalCams.start(accounts={TEST_KEY_ID: TEST_SECRET}, rate_limit=RATE) as cams:
        env = service_env(
            service_cluster.bootstrap_servers,
            cams.url,
            redis_url=shared_redis,
            batch_max_recipients=per_call,
            rate_limit_per_second=RATE,
            max_buffered_recipients=3000,
            drain_timeout_s=1,  # the stops after the run leave the rest of the backlog unsent, at once
        )
        service_cluster.set_initial_rebalance_delay(2000)  # the three join the group's first generation together
        services = [start_service(env) for _ in range(3)]
        for service in services:
            service.wait_ready(timeout=30)  # ready = partitions assigned: the group has settled
        produce(service_cluster.bootstrap_servers, backlog)
        produced = time.time()
        while time.time() - produced < run_s + 3:
            assert all(s.alive() for s in services)
            time.sleep(1)  # the scenario: the run goes on for run_s, the instances checked alive each second
        times = accepted_arrivals(cams)
        received = cams.calls()
        calls_per_instance = [s.metric("chatapp_api_calls_total", code="OK") for s in services]
        for service in services:  # all at once: none is handed the others' partitions on its way out
            service.process.send_signal(signal.SIGTERM)
        for service in services:
            assert service.stop() == 0
    assert times, "no call was accepted"
    window_start = times[0] + 1.0  # every instance has fetched its share by then
    in_run = [t for t in times if window_start <= t < window_start + run_s]
    # judged on every call the endpoint received, the ones it refused included (a count of accepted
    # calls cannot exceed the limit: the endpoint refuses the call that would). Three processes on a
    # loaded machine: an arrival's jitter past the 2 % margin (~20 ms) can put an 11th call in a
    # window (seen once in a run beside a busy mutation run); never a 12th, and rarely (the endpoint
    # refuses that call, the service retries it)
    assert max_received_in_window(received) <= RATE + 1, "more than one call of jitter beyond the account's window"
    refused = [c for c in received if c["code"] == "System.LimitControl"]
    assert len(refused) <= 0.01 * len(received), f"{len(refused)} of {len(received)} calls throttled"
    fill = len(in_run) / (RATE * run_s)
    per_second = collections.Counter(int(t - window_start) for t in in_run)
    assert fill >= 0.95, f"only {len(in_run)} calls in {run_s:.0f} s: {fill:.1%} of the budget; per second {sorted(per_second.items())}"
    assert all(calls > 0 for calls in calls_per_instance), f"every instance takes part: {calls_per_instance}"


@pytest.mark.slow
def test_throttling_by_cams_slows_down_and_loses_nothing(service_cluster, start_service, topic_reader):
    """Other clients of the account use part of the budget: CAMS accepts only 6 calls/s."""
    total = 3_000
    produce(service_cluster.bootstrap_servers, encode_samples(total))
    with LocalCams.start(accounts={TEST_KEY_ID: TEST_SECRET}, rate_limit=6) as cams:
        env = service_env(service_cluster.bootstrap_servers, cams.url, batch_max_recipients=50, rate_limit_per_second=RATE)
        service = start_service(env)
        results = topic_reader(service_cluster.bootstrap_servers, RESULTS)
        assert results.read_until(lambda r: len(r.messages) >= total, timeout=120), service.log_tail()
        throttled = service.metric("chatapp_api_calls_total", code="System.LimitControl")
        retried = service.metric("chatapp_api_retries_total", reason="throttled")
        rate_now = service.metric("chatapp_limiter_effective_rate")
        assert service.stop() == 0
        stats = cams.stats()
        received = cams.calls()
    ids = collections.Counter(r["request_id"] for r in results.results())
    assert len(ids) == total and max(ids.values()) == 1
    assert {r["status"] for r in results.results()} == {"SENT"}
    assert throttled > 0 and retried == throttled, "throttled batches are retried, not failed"
    assert stats["by_code"]["System.LimitControl"] == throttled
    assert max_received_in_window(received) <= RATE, "the service never asked more than its own limit"
    assert stats["duplicate_recipients_accepted"] == 0
    assert 0 < rate_now <= RATE


def test_redis_outage_falls_back_then_recovers(service_cluster, private_redis, start_service, topic_reader):
    total = 4_000
    produce(service_cluster.bootstrap_servers, encode_samples(total))
    with LocalCams.start(accounts={TEST_KEY_ID: TEST_SECRET}, rate_limit=RATE) as cams:
        env = service_env(
            service_cluster.bootstrap_servers,
            cams.url,
            redis_url=private_redis.url,
            batch_max_recipients=20,
            rate_limit_per_second=RATE,
            limiter_fallback_instances=2,
        )
        service = start_service(env)
        results = topic_reader(service_cluster.bootstrap_servers, RESULTS)
        assert results.read_until(lambda r: len(r.messages) >= 200, timeout=30), service.log_tail()
        private_redis.kill()
        outage_start = time.time()
        time.sleep(4)  # the scenario: 4 s of sending with Redis down
        assert service.metric("chatapp_limiter_fallback") == 1
        assert service.get("/readyz").status_code == 503, "not ready while the limiter backend is down"
        during = received_between(cams.calls(), outage_start + 1, outage_start + 4)  # every call received, refused ones included
        private_redis.start()
        assert wait_for(lambda: service.metric("chatapp_limiter_fallback") == 0, 10), "not within 10 s: recovered when Redis returned"
        assert service.get("/readyz").status_code == 200
        assert results.read_until(lambda r: len(r.messages) >= total, timeout=120), service.log_tail()
        assert service.stop() == 0
        log = service.log_path.read_text()
    # during the outage this instance sent at rate / fallback_instances = 5 calls/s
    assert 3 * 3 <= len(during) <= 3 * 5 + 1, [(c["received_at"], c["code"]) for c in during]
    assert "falling back" in log.lower() or "fallback" in log.lower()
    ids = collections.Counter(r["request_id"] for r in results.results())
    assert len(ids) == total
