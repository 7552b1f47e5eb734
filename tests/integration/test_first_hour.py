"""What a new user meets in the first hour (issue 21), each against real processes: the service
(``python -m consumer run``) and the commands in processes of their own, the mock broker over
TCP, the local CAMS endpoint over HTTP. Judged by the broker's topics and the endpoint's own
record of calls; the service's log only where a log line is the behaviour under test."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chatapp_devkit.local_cams import LocalCams
from chatapp_devkit.mockcluster import MockCluster
from confluent_kafka import Consumer, TopicPartition

from tests.fixtures.receipts import STATUS
from tests.fixtures.service import DLQ, REQUESTS, RESULTS, TEST_KEY_ID, TEST_SECRET, encode_samples, produce, service_env, wait_for
from tests.integration.test_cli_tools import cli

WAIT_S = 60


@pytest.fixture
def cams() -> Iterator[LocalCams]:
    with LocalCams.start(accounts={TEST_KEY_ID: TEST_SECRET}, rate_limit=10, timeout=15.0) as c:
        yield c


def log_lines(service: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(service.log_path).read_text().splitlines() if line.startswith("{")]


def records_on(bootstrap: str, topic: str, partitions: int) -> int:
    """How many records the broker holds on ``topic`` (sum of the high watermarks)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks", "log_level": 0})
    try:
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions))
    finally:
        consumer.close()


# --------------------------------------------------------------------------- the service


def test_consumed_total_counts_records_not_error_events_and_json_is_dead_lettered_as_not_avro(cams, start_service, topic_reader):
    """The request topic does not exist when the service subscribes: librdkafka hands the
    consumer error events (UNKNOWN_TOPIC_OR_PART) until it is created. Then valid requests and
    JSON values arrive: the counter is the number of records on the topic, and each JSON value
    is dead-lettered ``not-avro`` with the hint to use ``produce``."""
    with MockCluster.start(topics={RESULTS: 2, DLQ: 1}) as cluster:
        service = start_service(service_env(cluster.bootstrap_servers, cams.url))
        assert wait_for(lambda: any("consume error" in line["msg"] for line in log_lines(service)), timeout=WAIT_S), service.log_tail()

        cluster.create_topic(REQUESTS, 2)
        valid = encode_samples(40)
        as_json = [json.dumps({"request_id": f"json-{i}", "template_code": "welcome", "recipients": [{"to": "8613900000001"}]}).encode() for i in range(3)]
        produce(cluster.bootstrap_servers, valid + as_json)
        results, dlq = topic_reader(cluster.bootstrap_servers, RESULTS), topic_reader(cluster.bootstrap_servers, DLQ)
        assert results.read_until(lambda r: len(r.messages) >= 40, timeout=WAIT_S), service.log_tail()
        assert dlq.read_until(lambda r: len(r.messages) >= 3, timeout=WAIT_S), service.log_tail()

        on_topic = records_on(cluster.bootstrap_servers, REQUESTS, 2)
        assert on_topic == 43
        assert wait_for(lambda: service.metric("chatapp_requests_consumed_total") == on_topic, timeout=10), service.metric("chatapp_requests_consumed_total")
        headers = [dict(m.headers()) for m in dlq.messages]
        assert [h["chatapp.dlq.reason"] for h in headers] == [b"not-avro"] * 3
        assert all(b"looks like JSON" in h["chatapp.dlq.error"] and b"chatapp-consumer produce" in h["chatapp.dlq.error"] for h in headers)
        assert service.stop() == 0


def test_lower_case_log_level_is_taken_and_an_unknown_variable_is_warned_with_a_did_you_mean(service_cluster, cams, start_service):
    env = service_env(service_cluster.bootstrap_servers, cams.url, CHATAPP_LOG_LEVEL="debug", CHATAPP_RATE_LIMIT="5", CHATAPP_LOG_FORMAT="json")
    service = start_service(env)
    service.wait_ready(timeout=WAIT_S)
    lines = log_lines(service)
    warnings = [line["msg"] for line in lines if line["level"] == "WARNING" and "CHATAPP_RATE_LIMIT" in line["msg"]]
    assert warnings == ["config: CHATAPP_RATE_LIMIT: not a setting, ignored (did you mean CHATAPP_RATE_LIMIT_PER_SECOND or CHATAPP_RATE_LIMIT_BURST?)"]
    assert service.stop() == 0
    shown = cli("check-config", "--no-connect", env={k: v for k, v in env.items() if k.startswith(("CHATAPP_", "ALIBABA_CLOUD_"))})
    assert shown.returncode == 0 and json.loads(shown.stdout)["log_level"] == "DEBUG", shown.stderr


def test_a_restarted_instance_says_why_it_waits_for_partitions(service_cluster, cams, start_service):
    """kill -9 leaves the old member in the group until its session times out: the new process
    holds no partition meanwhile, and says so instead of sitting unready without a word."""
    env = service_env(service_cluster.bootstrap_servers, cams.url, CHATAPP_SESSION_TIMEOUT_MS="12000")
    first = start_service(env)
    first.wait_ready(timeout=WAIT_S)
    first.stop(signal.SIGKILL)
    second = start_service(env)
    second.wait_ready(timeout=WAIT_S)
    waiting = [line for line in log_lines(second) if line["msg"].startswith(f"no partitions of {REQUESTS} assigned yet")]
    assert waiting, second.log_tail()
    first_line = waiting[0]
    assert first_line["level"] == "INFO"
    assert re.match(rf"no partitions of {REQUESTS} assigned yet after \d+ s: waiting for group chatapp-consumer \(", first_line["msg"])
    assert "session.timeout.ms=12,000 ms" in first_line["msg"] and "chatapp-consumer topics describe" in first_line["msg"]
    assigned_at = next(line["ts"] for line in log_lines(second) if line["msg"].startswith("assigned "))
    assert first_line["ts"] < assigned_at
    assert second.stop() == 0


# --------------------------------------------------------------------------- the commands


def test_check_config_names_the_missing_topics_and_its_cams_probe_makes_no_call(cams):
    with MockCluster.start(topics={REQUESTS: 2}) as cluster:
        env = {"CHATAPP_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers, "CHATAPP_CAMS_ENDPOINT": cams.url, "CHATAPP_REDIS_ULR": "redis://x"}
        done = cli("check-config", env=env)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    topics = next(line for line in lines if line.startswith("topics "))
    assert topics.startswith(f"topics FAIL missing {RESULTS}, {DLQ}: this is librdkafka's mock cluster, which takes no CreateTopics")
    assert "chatapp-devkit mock-broker --topic NAME:PARTITIONS" in topics
    probe = next(line for line in lines if line.startswith("cams "))
    assert probe.startswith(f"cams   ok   {cams.url} reachable") and "no API call made" in probe and "HTTP 400" not in probe
    assert cams.stats()["calls"] == 0, "the probe is no API call: the endpoint recorded none"
    assert "config warning: CHATAPP_REDIS_ULR: not a setting, ignored (did you mean CHATAPP_REDIS_URL?)" in done.stderr.splitlines()


def test_topics_describe_and_create_on_the_mock_broker():
    with MockCluster.start(topics={REQUESTS: 3}) as cluster:
        env = {"CHATAPP_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers}
        described = cli("topics", "describe", env=env)
        assert described.returncode == 1, described.stderr
        rows = {line.split()[0]: line.split()[1] for line in described.stdout.splitlines()}
        assert rows == {REQUESTS: "ok", RESULTS: "MISSING", DLQ: "MISSING"}
        assert f"{REQUESTS}" in described.stdout and "3 partitions" in described.stdout

        created = cli("topics", "create", env=env)
        assert created.returncode == 1
        assert created.stderr.splitlines() == [
            f"missing {RESULTS}, {DLQ}: this is librdkafka's mock cluster, which takes no CreateTopics: start it with "
            '`chatapp-devkit mock-broker --topic NAME:PARTITIONS` for each, or POST {"name": NAME, "partitions": N} to its control_url + /topics'
        ]
        assert "exists   3 partitions: left as it is" in created.stdout

        for name, partitions in ((RESULTS, 3), (DLQ, 1)):  # as the hint says
            cluster.create_topic(name, partitions)
        again = cli("topics", "describe", env=env)
        assert again.returncode == 0, again.stderr
        assert [line.split()[:3] for line in again.stdout.splitlines()] == [[REQUESTS, "ok", "3"], [RESULTS, "ok", "3"], [DLQ, "ok", "1"]]


def test_topics_create_dry_run_prints_the_documented_kafka_topics_lines():
    done = cli("topics", "create", "--dry-run", "--partitions", "32", env={"CHATAPP_KAFKA_BOOTSTRAP_SERVERS": "broker:9092"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("kafka-topics.sh --bootstrap-server broker:9092 --create --topic ") for line in lines)
    assert "--topic chatapp.send-results --partitions 32 --replication-factor 3 --config cleanup.policy=delete" in lines[1]
    assert "--topic chatapp.send-requests.dlq --partitions 1 " in lines[2]
    documented = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    for line in cli("topics", "create", "--dry-run", env={}).stdout.splitlines():
        assert line in documented, f"docs/operations.md lacks {line!r}"


def test_the_demo_says_where_each_number_comes_from():
    from tests.integration.test_cli_tools import devkit_cli

    done = devkit_cli("demo", "--requests", "200", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("results read back"))
    tail, funnel = lines[first : first + 6], lines[first + 7 :]
    assert tail[0] == f"results read back from {RESULTS}: {{'SENT': 200, 'REJECTED': 2}}  (202 records)"
    assert tail[1].startswith(f"dead letters read back from {DLQ}: 2 (")
    metrics = re.fullmatch(r"API calls by the service's metrics: (\d+) accepted carrying 200 recipients \(mean \d+ per call, cap 1,000\)", tail[2])
    endpoint = re.fullmatch(
        r"API calls by the local endpoint's own record: (\d+) accepted carrying 200 recipients, max (\d+) in any 1 s window \(limit 10\)", tail[3]
    )
    assert metrics and endpoint and metrics.group(1) == endpoint.group(1) and int(endpoint.group(2)) <= 10, tail
    assert tail[4].endswith("recipients/s accepted by the endpoint")
    assert tail[5] == "(the broker and the endpoint are processes on this machine: nothing left it)"
    # the delivery funnel, from the status topic, beside the endpoint's own count of what it pushed
    assert funnel[0].startswith(f"delivery funnel read back from {STATUS}") and "100 %) joined to their request_id" in funnel[0], funnel
    # numbers end in 13 (131050) or 7 (131026): 200 numbers, 22 failed, the rest sent and delivered
    assert re.fullmatch(r"  sent 178 \(89 %\) -> delivered 178 \(89 %\) -> read \d+ \(\d+ %\) of 200 recipients", funnel[1]), funnel
    assert funnel[2] == "  failed 22: 131026 x20, 131050 x2", funnel
    pushed = re.fullmatch(r"receipts by the local endpoint's own record: ([\d,]+) pushed and acknowledged \(.*\), ([\d,]+) of them repeats", funnel[3])
    assert pushed and funnel[4] == f"repeats dropped by the receiver (its metrics): {pushed.group(2)}", funnel
