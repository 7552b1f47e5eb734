"""Operators' artifacts of the receipts receiver: its metrics named by the alerts and the
dashboard are exported by a running receiver (``chatapp-consumer receipts``, its own process);
its Kubernetes manifests (deploy/kubernetes/receipts/) agree with its settings and validate
against the Kubernetes API schemas; its start-up refuses what it cannot run without."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import orjson
import pytest
import yaml

from consumer import config as settings
from tests.fixtures.kafka import consume_all
from tests.fixtures.receipts import STATUS, cams_report, decode_status, post, post_until_taken, receipts_env
from tests.fixtures.service import wait_for
from tests.integration.test_ops_artifacts import DASHBOARD, RECEIVER_PREFIX, alert_rules, dashboard_exprs, exported_sample_names, promql_metric_names

ROOT = Path(__file__).resolve().parents[2]
RECEIPTS_K8S = ROOT / "deploy/kubernetes/receipts"


def test_alert_and_dashboard_metrics_of_the_receiver_are_exported_by_a_running_receiver(mock_cluster, private_redis, start_receiver) -> None:
    receiver = start_receiver(receipts_env(mock_cluster.bootstrap_servers, private_redis.url))
    receiver.wait_ready()
    exported = exported_sample_names(httpx.get(receiver.metrics_url + "/metrics", timeout=5).text)
    sources = [(f"dashboard {where}", expr) for where, expr in dashboard_exprs(json.loads(DASHBOARD.read_text()))]
    sources += [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    named = {(where, name) for where, expr in sources for name in promql_metric_names(expr) if name.startswith(RECEIVER_PREFIX)}
    assert {name for _, name in named} >= {"chatapp_receipts_published_total", "chatapp_receipts_pushes_total"}
    missing = sorted(f"{where}: {name}" for where, name in named if name not in exported)
    assert not missing, "not exported by the receiver:\n" + "\n".join(missing)
    shown = {exported.get(name) for _, name in named}
    assert set(exported.values()) - shown == set(), "a receiver metric no dashboard panel or alert shows"
    ready = httpx.get(receiver.metrics_url + "/readyz", timeout=5).json()
    assert ready["ok"] and ready["seen_store"]
    assert receiver.stop() == 0, receiver.log_tail()


@pytest.mark.parametrize(
    ("unset", "named"),
    [
        ("CHATAPP_RECEIPTS_TOKEN", "CHATAPP_RECEIPTS_TOKEN"),
        ("CHATAPP_REDIS_URL", "CHATAPP_REDIS_URL"),
        ("CHATAPP_KAFKA_BOOTSTRAP_SERVERS", "CHATAPP_KAFKA_BOOTSTRAP_SERVERS"),
    ],
)
def test_the_receiver_refuses_to_start_without_what_it_needs(unset: str, named: str) -> None:
    env = {k: v for k, v in receipts_env("127.0.0.1:1", "redis://127.0.0.1:1/0").items() if k != unset}
    done = subprocess.run([sys.executable, "-m", "consumer", "receipts"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2 and f"config error: {named}: not set" in done.stderr, done.stderr


def objects() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(RECEIPTS_K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            found[doc["kind"]] = doc | {"__file__": path.name}
    return found


def test_receiver_manifests_agree_with_its_settings_and_validate() -> None:
    objs = objects()
    assert {"Deployment", "Service", "ServiceMonitor", "Secret", "Kustomization"} <= set(objs)
    deploy, svc, secret = objs["Deployment"], objs["Service"], objs["Secret"]
    defaults = settings.load(env={"CHATAPP_RECEIPTS_TOKEN": "a-token-of-24-characters"})
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["receipts"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"receipts": defaults.receipts_port, "metrics": defaults.metrics_port}
    assert {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == {"receipts": "receipts", "metrics": "metrics"}
    assert svc["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    assert set(secret["stringData"]) == {"CHATAPP_RECEIPTS_TOKEN"} and "REPLACE" in secret["stringData"]["CHATAPP_RECEIPTS_TOKEN"]
    refs = {v["name"] for e in container["envFrom"] for v in e.values()}
    assert refs == {"chatapp-consumer-config", secret["metadata"]["name"]}
    assert deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > defaults.receipts_publish_timeout_s
    assert objs["ServiceMonitor"]["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert set(objs["Kustomization"]["resources"]) == {"deployment.yaml", "service.yaml", "servicemonitor.yaml"}
    for kind in ("Deployment", "Service", "Secret"):
        doc = {k: v for k, v in objs[kind].items() if k != "__file__"}
        try:
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            raise AssertionError(f"{kind}: {exc.message} at {list(exc.path)}") from None


def test_with_redis_down_pushes_are_answered_503_and_counted_then_taken_once_it_is_back(mock_cluster, private_redis, start_receiver) -> None:
    receiver = start_receiver(receipts_env(mock_cluster.bootstrap_servers, private_redis.url))
    receiver.wait_ready()
    reports = [cams_report(f"down-{i}", f"86139{i:08d}", "Delivered", "t-down", 1_700_000_000_000) for i in range(50)]
    private_redis.kill()
    assert post(receiver.url, reports) == 503
    assert receiver.metric("chatapp_receipts_errors_total", kind="redis") == 1
    assert wait_for(lambda: httpx.get(receiver.metrics_url + "/readyz", timeout=5).status_code == 503, 10), "not ready without Redis"
    private_redis.start()
    post_until_taken([receiver.url], reports, timeout=30)
    records = [decode_status(m.value()) for m in consume_all(mock_cluster.bootstrap_servers, STATUS, 50, timeout=30)]
    assert sorted(r["message_id"] for r in records) == sorted(r["MessageId"] for r in reports)
    assert all(r["request_id"] is None for r in records), "no sender recorded t-down: unmatched, kept"
    assert receiver.alive()


def test_the_largest_push_allowed_is_taken_whole(mock_cluster, private_redis, start_receiver) -> None:
    receiver = start_receiver(receipts_env(mock_cluster.bootstrap_servers, private_redis.url))
    receiver.wait_ready()
    limit = settings.load(env={"CHATAPP_RECEIPTS_TOKEN": "a-token-of-24-characters"}).receipts_max_body_bytes
    reports: list[dict[str, Any]] = []
    while len(orjson.dumps(reports)) < limit - 1000:
        reports.append(cams_report(f"big-{len(reports)}", f"86139{len(reports):08d}", "Read", "t-big", 1_700_000_000_000))
    assert post(receiver.url, reports, timeout=120) == 200
    assert len(consume_all(mock_cluster.bootstrap_servers, STATUS, len(reports), timeout=60)) == len(reports)
    assert post(receiver.url, reports + reports[:10], timeout=120) == 413, "one report more than the limit"
    assert post(receiver.url, reports, timeout=120) == 200, "all repeats: dropped, answered 200"
    assert receiver.metric("chatapp_receipts_duplicates_total") == len(reports)


def test_with_the_broker_down_pushes_are_answered_503_and_published_once_when_it_is_back(mock_cluster, private_redis, start_receiver) -> None:
    mock_cluster.create_topic(STATUS, 1)
    receiver = start_receiver(receipts_env(mock_cluster.bootstrap_servers, private_redis.url, receipts_publish_timeout_s=1, receipts_claim_s=3))
    receiver.wait_ready()
    reports = [cams_report(f"kdown-{i}", f"86139{i:08d}", "Sent", "t-kdown", 1_700_000_000_000) for i in range(100)]
    assert post(receiver.url, reports[:10]) == 200  # the producer knows the cluster
    mock_cluster.broker_down()
    try:
        assert post(receiver.url, reports) == 503
        assert receiver.metric("chatapp_receipts_errors_total", kind="publish") == 1
    finally:
        mock_cluster.broker_up()
    post_until_taken([receiver.url], reports, timeout=60)  # CAMS pushes again
    # one more than expected is waited for (10 s): a status written late by the first push would be it
    records = [decode_status(m.value()) for m in consume_all(mock_cluster.bootstrap_servers, STATUS, 101, timeout=10)]
    assert sorted(r["message_id"] for r in records) == sorted(r["MessageId"] for r in reports), "each once: none written late, none lost"
