"""Render the Grafana dashboard's panels from a run on this machine's embedded pieces, for the docs.

    .venv/bin/python scripts/render_dashboard.py                 # run (~70-90 s), then render
    .venv/bin/python scripts/render_dashboard.py --from-run docs/dashboard-run.json   # re-render only

The run is the tests' set-up: the mock broker, the local CAMS endpoint (10 calls/s) and one
service process (``python -m consumer run``, default settings). Before the service starts, a
backlog of single-recipient requests over 5 templates x 2 languages waits on the topic; then a
steady stream follows with undecodable messages mixed in; for ``--fault-for`` seconds the
endpoint answers 20% of the calls with HTTP 500 or System.LimitControl. The service's
``/metrics`` is scraped every second until every result is out, plus a short tail.

The panels are then computed from those scrapes by evaluating the dashboard's own PromQL
(``config/grafana/chatapp-consumer.json``) with a small evaluator of the shapes it uses:
selectors with label matchers, ``rate``/``increase`` over a range (Prometheus' extrapolation),
``sum``/``max``/``min`` with ``by``, ``histogram_quantile`` (Prometheus' bucket interpolation),
``/`` (also by a number), ``or`` and ``vector``. ``$__rate_interval`` is ``--rate-window`` (10 s),
``$__range``/``$__range_s`` the whole run (the stat row's reduction, lastNotNull, then reads the
run's total or mean), ``$job`` and
``$instance`` match everything; every series gets ``job`` and ``instance`` labels as a
Prometheus scrape would, and ``up`` is synthesised from the scrapes' success.

Output: ``docs/dashboard-<slug>.png`` per panel, ``docs/dashboard.png`` (all of them in a grid
under the dashboard's stat row) and ``docs/dashboard-run.json`` (the raw scrapes). Needs the
``docs`` extra (matplotlib) and, for a run, the ``dev`` extra (the tests' fixtures).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DASHBOARD = ROOT / "config" / "grafana" / "chatapp-consumer.json"
DOCS = ROOT / "docs"
JOB = "chatapp-consumer"

# The panels rendered, by dashboard title, in overview order.
PANELS = [
    "Requests / s",
    "Recipients / s",
    "Batch fill (recipients per API call)",
    "API calls by code",
    "API latency",
    "API retries by reason",
    "Limiter wait p99",
    "Limiter rate",
    "Consumer lag per partition",
    "End-to-end latency",
    "DLQ records by reason",
    "Buffered recipients",
    "Back-pressure paused",
    "Main loop CPU",
]


# =========================================================================== the run


@dataclass
class Run:
    """Scrapes of one service: ``times`` (unix s) and, per series, one value per scrape (None = absent)."""

    times: list[float] = field(default_factory=list)
    series: dict[str, list[float | None]] = field(default_factory=dict)
    events: dict[str, float] = field(default_factory=dict)
    scenario: dict[str, Any] = field(default_factory=dict)

    def add(self, at: float, samples: dict[str, float]) -> None:
        index = len(self.times)
        self.times.append(at)
        for key, value in samples.items():
            self.series.setdefault(key, [None] * index).append(value)
        for values in self.series.values():
            if len(values) < index + 1:
                values.append(None)

    def to_json(self) -> dict[str, Any]:
        t0 = self.times[0]
        return {
            "started_at": round(t0, 3),
            "scenario": self.scenario,
            "events_s": {k: round(v - t0, 2) for k, v in self.events.items()},
            "times_s": [round(t - t0, 2) for t in self.times],
            "series": {k: [_compact(v) for v in vs] for k, vs in sorted(self.series.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        t0 = data["started_at"]
        return cls([t0 + t for t in data["times_s"]], data["series"], {k: t0 + v for k, v in data["events_s"].items()}, data["scenario"])


def _compact(value: float | None) -> float | int | None:
    if value is None or math.isnan(value):
        return None
    if value == int(value) and abs(value) < 2**53:
        return int(value)
    return float(f"{value:.6g}")


def series_key(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def parse_key(key: str) -> tuple[str, dict[str, str]]:
    name, _, rest = key.partition("{")
    return name, dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))


def scrape(url: str, instance: str) -> dict[str, float]:
    """One scrape of ``/metrics`` as Prometheus stores it: series -> value, with job/instance."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url, timeout=2).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue  # prometheus_client's creation timestamps: not on the dashboard
            out[series_key(sample.name, {**sample.labels, "job": JOB, "instance": instance})] = sample.value
    return out


def bad_values(count: int) -> list[bytes]:
    """Undecodable messages, three DLQ reasons in turn (truncated, not-avro, trailing-bytes)."""
    from chatapp_devkit.samples import sample_records

    from consumer.codec import PlainAvroCodec

    codec = PlainAvroCodec()
    out = []
    for i, record in enumerate(sample_records(count, prefix="bad")):
        value = codec.encode_request(record)
        out.append([value[:-3], b"x" * 300, value + b"\x00\x00"][i % 3])
    return out


def run_scenario(args: argparse.Namespace) -> Run:
    from chatapp_devkit.local_cams import LocalCams
    from chatapp_devkit.mockcluster import MockCluster
    from confluent_kafka import Producer

    from tests.fixtures.service import DLQ, REQUESTS, RESULTS, TEST_KEY_ID, TEST_SECRET, ServiceProcess, encode_samples, produce, service_env

    run = Run(scenario={
        "requests": args.backlog + args.stream, "backlog": args.backlog, "stream": args.stream, "stream_per_s": args.rate, "bad_messages": args.bad,
        "partitions": args.partitions, "cams_rate_limit": 10, "scrape_interval_s": args.interval,
        "rate_window_s": args.rate_window, "faults": {"error_rate": 0.2, "error_mix": {"http500": 1, "limit": 1}},
    })  # fmt: skip
    total = args.backlog + args.stream
    print(f"encoding {total:,} requests ...", file=sys.stderr)
    good = encode_samples(total)
    bad = bad_values(args.bad)
    backlog, stream = good[: args.backlog], good[args.backlog :]
    stop = threading.Event()
    started: list[Any] = []
    feeder: threading.Thread | None = None
    workdir = tempfile.TemporaryDirectory(prefix="render-dashboard-")
    try:
        cluster = MockCluster.start(topics={REQUESTS: args.partitions, RESULTS: args.partitions, DLQ: 1})
        started.append(cluster)
        cams = LocalCams.start(accounts={TEST_KEY_ID: TEST_SECRET}, rate_limit=10, timeout=15.0)
        started.append(cams)
        print(f"producing a backlog of {len(backlog):,} requests ...", file=sys.stderr)
        produce(cluster.bootstrap_servers, backlog)
        service = ServiceProcess(service_env(cluster.bootstrap_servers, cams.url), Path(workdir.name) / "service.log")
        started.append(service)
        service.wait_ready(timeout=30)
        instance = f"127.0.0.1:{service.env['CHATAPP_METRICS_PORT']}"
        t0 = time.time()
        run.events["service_ready"] = t0

        def feed() -> None:
            """The stream after the backlog: ``rate``/s in 100-ms steps, bad messages spread evenly."""
            producer = Producer({"bootstrap.servers": cluster.bootstrap_servers, "linger.ms": 20, "enable.idempotence": True})
            step, sent, bad_left = max(1, int(args.rate / 10)), 0, list(bad)
            every = max(1, len(stream) // (len(bad) + 1))
            next_at = time.monotonic()
            while sent < len(stream) and not stop.is_set():
                for value in stream[sent : sent + step]:
                    producer.produce(REQUESTS, value, key=str(sent).encode())
                    sent += 1
                    if bad_left and sent % every == 0:
                        producer.produce(REQUESTS, bad_left.pop(), key=b"bad")
                producer.poll(0)
                next_at += 0.1
                time.sleep(max(0.0, next_at - time.monotonic()))
            for value in bad_left:
                producer.produce(REQUESTS, value, key=b"bad")
            producer.flush(30)
            run.events["stream_end"] = time.time()

        feeder = threading.Thread(target=feed, name="feeder", daemon=True)
        feeder.start()
        fault_on = fault_off = False
        done_at: float | None = None
        next_scrape = time.monotonic()
        while True:
            now = time.time()
            elapsed = now - t0
            if not fault_on and elapsed >= args.fault_at:
                cams.set_faults(error_rate=0.2, error_mix={"http500": 1, "limit": 1})
                run.events["faults_on"], fault_on = now, True
            if fault_on and not fault_off and elapsed >= args.fault_at + args.fault_for:
                cams.set_faults(error_rate=0.0)
                run.events["faults_off"], fault_off = now, True
            try:
                samples = scrape(service.metrics_url + "/metrics", instance)
                samples[series_key("up", {"job": JOB, "instance": instance})] = 1.0
            except Exception as exc:  # noqa: BLE001 (a missed scrape is a gap, as in Prometheus)
                print(f"scrape failed: {exc}", file=sys.stderr)
                samples = {series_key("up", {"job": JOB, "instance": instance}): 0.0}
            run.add(now, samples)
            finished = _total(samples, "chatapp_results_total") >= total and _total(samples, "chatapp_dlq_records_total") >= args.bad
            finished = finished and _total(samples, "chatapp_buffered_recipients") == 0 and fault_off
            if finished and done_at is None:
                done_at = now
                run.events["all_results"] = now
                print(f"all {total:,} results and {args.bad} dead letters after {elapsed:.0f} s", file=sys.stderr)
            if done_at is not None and now - done_at >= args.tail and elapsed >= args.min_duration:
                break
            if elapsed >= args.max_duration:
                print(f"stopping after {args.max_duration} s without every result", file=sys.stderr)
                break
            if int(elapsed) % 10 == 0:
                print(
                    f"t={elapsed:5.1f}s results={_total(samples, 'chatapp_results_total'):,.0f} buffered={_total(samples, 'chatapp_buffered_recipients'):,.0f}",
                    file=sys.stderr,
                )
            next_scrape += args.interval
            time.sleep(max(0.0, next_scrape - time.monotonic()))
        stats = cams.stats()
        run.scenario["cams"] = {k: stats[k] for k in ("calls", "by_code", "by_fault", "accepted_calls", "recipients_accepted", "max_accepted_1s") if k in stats}
        code = service.stop()
        if code != 0:
            print(f"service exited with {code}:\n{service.log_tail()}", file=sys.stderr)
    finally:
        stop.set()
        if feeder is not None:
            feeder.join(10)
        for part in reversed(started):
            try:
                if isinstance(part, ServiceProcess):
                    part.kill()
                    if not part._log.closed:
                        part._log.close()
                else:
                    part.stop()
            except Exception as exc:  # noqa: BLE001 (keep stopping the others)
                print(f"stopping {type(part).__name__}: {exc}", file=sys.stderr)
        workdir.cleanup()
    return run


def _total(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(name + "{"))


# =========================================================================== PromQL (the dashboard's shapes)

Labels = frozenset  # of (name, value) pairs; __name__ included only for raw selectors
Vector = dict  # Labels -> float

_TOKEN = re.compile(
    r"""\s*(?:(?P<num>\d+(?:\.\d+)?(?![\w]))|(?P<dur>\d+[smhd])|(?P<id>[A-Za-z_:][\w:]*)|(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>=~|!~|!=|[=(){}\[\],/]))"""
)
AGGREGATIONS = {"sum": sum, "max": max, "min": min, "avg": lambda v: sum(v) / len(v), "count": len}


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"PromQL: cannot read {text[pos : pos + 20]!r}")
        kind = m.lastgroup
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


class Parser:
    """expr := term ('or' term)* ; term := unary ('/' unary)* ; unary := number | agg | call | selector | '(' expr ')'."""

    def __init__(self, text: str):
        self.tokens = tokenize(text)
        self.i = 0

    def parse(self) -> tuple:
        node = self.expr()
        if self.i != len(self.tokens):
            raise ValueError(f"PromQL: unexpected {self.tokens[self.i]}")
        return node

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> str:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise ValueError(f"PromQL: expected {value!r}, got {token}")
        self.i += 1
        return token[1]

    def expr(self) -> tuple:
        node = self.term()
        while self.peek() == ("id", "or"):
            self.take()
            node = ("or", node, self.term())
        return node

    def term(self) -> tuple:
        node = self.unary()
        while self.peek() == ("op", "/"):
            self.take()
            node = ("div", node, self.unary())
        return node

    def labels_list(self) -> list[str]:
        self.take("(")
        names = []
        while self.peek() != ("op", ")"):
            names.append(self.take())
            if self.peek() == ("op", ","):
                self.take()
        self.take(")")
        return names

    def unary(self) -> tuple:
        kind, value = self.peek() or ("", "")
        if kind == "num":
            self.take()
            return ("num", float(value))
        if (kind, value) == ("op", "("):
            self.take()
            node = self.expr()
            self.take(")")
            return node
        if kind != "id":
            raise ValueError(f"PromQL: unexpected {value!r}")
        self.take()
        if value in AGGREGATIONS:
            by = self.labels_list() if self.peek() == ("id", "by") and self.take() else None
            self.take("(")
            inner = self.expr()
            self.take(")")
            if by is None and self.peek() == ("id", "by"):
                self.take()
                by = self.labels_list()
            return ("agg", value, by, inner)
        if self.peek() == ("op", "("):  # a function call
            self.take()
            args = [self.expr()]
            while self.peek() == ("op", ","):
                self.take()
                args.append(self.expr())
            self.take(")")
            return ("call", value, args)
        matchers = []
        if self.peek() == ("op", "{"):
            self.take()
            while self.peek() != ("op", "}"):
                label, op, text = self.take(), self.take(), self.take()
                matchers.append((label, op, json.loads(text)))
                if self.peek() == ("op", ","):
                    self.take()
            self.take("}")
        node: tuple = ("sel", value, matchers)
        if self.peek() == ("op", "["):
            self.take()
            duration = self.take()
            self.take("]")
            node = ("range", node, _seconds(duration))
        return node


def _seconds(text: str) -> float:
    return float(text[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[text[-1]]


def _matches(labels: dict[str, str], matchers: list[tuple[str, str, str]]) -> bool:
    for label, op, want in matchers:
        have = labels.get(label, "")
        ok = {"=": have == want, "!=": have != want, "=~": re.fullmatch(want, have) is not None, "!~": re.fullmatch(want, have) is None}[op]
        if not ok:
            return False
    return True


def _extrapolated(times: list[float], values: list[float], start: float, end: float, is_rate: bool) -> float | None:
    """Prometheus' extrapolatedRate for counters: resets handled, edges extrapolated."""
    if len(times) < 2:
        return None
    delta, prev = 0.0, values[0]
    for v in values[1:]:
        delta += v - prev if v >= prev else v  # a reset: the counter restarted from 0
        prev = v
    sampled = times[-1] - times[0]
    average = sampled / (len(times) - 1)
    to_start, to_end = times[0] - start, end - times[-1]
    if delta > 0 and values[0] >= 0:
        to_start = min(to_start, sampled * (values[0] / delta))  # counters do not go below 0
    threshold = average * 1.1
    span = sampled + (to_start if to_start < threshold else average / 2) + (to_end if to_end < threshold else average / 2)
    delta *= span / sampled
    return delta / (end - start) if is_rate else delta


class Evaluator:
    def __init__(self, run: Run, rate_window_s: float):
        self.times = run.times
        self.rate_window_s = rate_window_s
        self.by_name: dict[str, list[tuple[dict[str, str], list[float | None]]]] = {}
        for key, values in run.series.items():
            name, labels = parse_key(key)
            self.by_name.setdefault(name, []).append((labels, values))

    def query(self, expr: str, index: int) -> Vector:
        whole = math.ceil(self.times[-1] - self.times[0])  # the time range: the run
        expr = expr.replace("$__range_s", str(whole)).replace("$__range", f"{whole}s")
        expr = expr.replace("$__rate_interval", f"{int(self.rate_window_s)}s").replace("$job", ".*").replace("$instance", ".*")
        return self.eval(Parser(expr).parse(), index)

    def eval(self, node: tuple, i: int) -> Any:
        kind = node[0]
        if kind == "num":
            return node[1]
        if kind == "sel":
            _, name, matchers = node
            return {
                frozenset({**labels, "__name__": name}.items()): values[i]
                for labels, values in self.by_name.get(name, [])
                if values[i] is not None and _matches(labels, matchers)
            }
        if kind == "range":
            raise ValueError("a range vector needs rate() or increase()")
        if kind == "call":
            return self.call(node[1], node[2], i)
        if kind == "agg":
            _, op, by, inner = node
            groups: dict[Labels, list[float]] = {}
            for labels, value in self.eval(inner, i).items():
                kept = frozenset((k, v) for k, v in labels if by is not None and k in by)
                groups.setdefault(kept, []).append(value)
            return {labels: AGGREGATIONS[op](values) for labels, values in groups.items()}
        if kind == "div":
            left, right = self.eval(node[1], i), self.eval(node[2], i)
            if isinstance(right, float):  # a vector by a number
                return {_drop_name(k): v / right for k, v in left.items()} if right else {}
            right = {_drop_name(k): v for k, v in right.items()}
            return {_drop_name(k): v / right[_drop_name(k)] for k, v in left.items() if right.get(_drop_name(k))}
        if kind == "or":
            left, right = self.eval(node[1], i), self.eval(node[2], i)
            seen = {_drop_name(k) for k in left}
            return {**left, **{k: v for k, v in right.items() if _drop_name(k) not in seen}}
        raise ValueError(f"unknown node {kind}")

    def call(self, name: str, args: list[tuple], i: int) -> Vector:
        if name in ("rate", "increase"):
            (_, (_, metric, matchers), window) = args[0]
            end = self.times[i]
            start = end - window
            lo = next(j for j, t in enumerate(self.times) if t > start - 1e-9)
            out = {}
            for labels, values in self.by_name.get(metric, []):
                if not _matches(labels, matchers):
                    continue
                points = [(self.times[j], values[j]) for j in range(lo, i + 1) if values[j] is not None]
                value = _extrapolated([t for t, _ in points], [v for _, v in points], start, end, name == "rate")
                if value is not None:
                    out[frozenset(labels.items())] = value
            return out
        if name == "histogram_quantile":
            q, vector = self.eval(args[0], i), self.eval(args[1], i)
            groups: dict[Labels, list[tuple[float, float]]] = {}
            for labels, value in vector.items():
                rest = frozenset((k, v) for k, v in labels if k not in ("le", "__name__"))
                groups.setdefault(rest, []).append((float(dict(labels)["le"]), value))
            out = {}
            for labels, buckets in groups.items():
                value = bucket_quantile(q, buckets)
                if value is not None:
                    out[labels] = value
            return out
        if name == "vector":
            return {frozenset(): float(self.eval(args[0], i))}
        raise ValueError(f"PromQL function {name}() is not implemented here")


def _drop_name(labels: Labels) -> Labels:
    return frozenset((k, v) for k, v in labels if k != "__name__")


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over (upper bound, cumulative count) buckets; None = NaN."""
    buckets = sorted(buckets)
    if not buckets or not math.isinf(buckets[-1][0]):
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    b = next(j for j, (_, count) in enumerate(buckets) if count >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0] if len(buckets) > 1 else None
    start, count = 0.0, buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (buckets[b][0] - start) * (rank / count) if count > 0 else buckets[b][0]


def legend(fmt: str | None, labels: Labels, expr: str) -> str:
    values = dict(labels)
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(values.items())) + "}" if values else expr
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values.get(m.group(1), ""), fmt)


def panel_series(panel: dict[str, Any], ev: Evaluator) -> list[tuple[str, list[float | None]]]:
    """Every series a panel draws: (legend, one value per scrape)."""
    out: list[tuple[str, list[float | None]]] = []
    for target in panel.get("targets", []):
        per_label: dict[Labels, list[float | None]] = {}
        for i in range(len(ev.times)):
            for labels, value in ev.query(target["expr"], i).items():
                per_label.setdefault(labels, [None] * len(ev.times))[i] = value if math.isfinite(value) else None
        for labels in sorted(per_label, key=lambda ls: sorted(ls)):
            out.append((legend(target.get("legendFormat"), labels, target["expr"]), per_label[labels]))
    return out


# =========================================================================== rendering (Grafana-like dark theme)

BG, PANEL, BORDER, TEXT, MUTED, GRID = "#111217", "#181b1f", "#2c3037", "#ccccdc", "#8e8e9e", "#2a2d33"
PALETTE = ["#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0", "#508642", "#CCA300", "#447EBC", "#C15C17"]
FAULT = "#E24D42"


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", re.sub(r"\(.*?\)", "", title).lower()).strip("-")


def _si(value: float, digits: int = 3) -> str:
    for limit, suffix in ((1e9, " Bil"), (1e6, " Mil"), (1e3, " K")):
        if abs(value) >= limit:
            return f"{value / limit:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def format_value(value: float, unit: str | None, decimals: int | None = None) -> str:
    if decimals == 0 and unit in (None, "short"):
        return f"{value:,.0f}"
    if unit == "s":
        if value == 0:
            return "0 s"
        if abs(value) < 1:
            return f"{value * 1000:.3g} ms"
        return f"{value:.3g} s"
    suffix = {"ops": " ops/s", "reqps": " req/s"}.get(unit or "", "")
    return _si(value) + suffix


def draw_panel(ax: Any, panel: dict[str, Any], series: list[tuple[str, list[float | None]]], run: Run, compact: bool = False) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    t0 = run.times[0]
    xs = [t - t0 for t in run.times]
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
    fill = custom.get("fillOpacity", 10) / 100
    width = custom.get("lineWidth", 1) + 0.3
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(True, color=GRID, linewidth=0.6)
    ax.tick_params(colors=MUTED, labelsize=7 if compact else 8, length=0)
    ax.tick_params(axis="x", pad=5)
    if "faults_on" in run.events:
        on = run.events["faults_on"] - t0
        off = run.events.get("faults_off", run.times[-1]) - t0
        ax.axvspan(on, off, color=FAULT, alpha=0.10, linewidth=0)
        ax.axvline(on, color=FAULT, alpha=0.6, linewidth=0.8, linestyle="--")
        ax.axvline(off, color=FAULT, alpha=0.6, linewidth=0.8, linestyle="--")
    top = 0.0
    for n, (name, values) in enumerate(series):
        color = PALETTE[n % len(PALETTE)]
        ys = [math.nan if v is None else v for v in values]
        ax.plot(xs, ys, color=color, linewidth=width, label=name)
        ax.fill_between(xs, ys, 0, color=color, alpha=fill, linewidth=0)
        top = max([top] + [v for v in values if v is not None])
    if not series:
        ax.text(0.5, 0.5, "No data", color=MUTED, ha="center", va="center", transform=ax.transAxes, fontsize=11)
    ax.set_xlim(0, xs[-1])
    ax.set_ylim(0, top * 1.12 if top > 0 else 1)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4 if compact else 5))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_value(v, unit)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v) // 60}:{int(v) % 60:02d}"))
    if "faults_on" in run.events:
        ax.text(
            run.events["faults_on"] - t0,
            1.0,
            " CAMS faults",
            color=FAULT,
            fontsize=6.5 if compact else 7.5,
            va="top",
            ha="left",
            transform=ax.get_xaxis_transform(),
            alpha=0.9,
        )
    if series:
        longest = max(len(name) for name, _ in series) + 5
        ncol = max(1, min(len(series), (88 if compact else 120) // longest))
        legend_ = ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13 if compact else -0.11), ncol=ncol, frameon=False,
                            fontsize=6.5 if compact else 8, labelcolor=TEXT, handlelength=1.2, columnspacing=1.2)  # fmt: skip
        for line in legend_.get_lines():
            line.set_linewidth(3)
    ax.set_title(panel["title"], color=TEXT, fontsize=9.5 if compact else 11, loc="left", fontweight="bold", pad=8)


def render(run: Run, out: Path, rate_window_s: float) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dashboard = json.loads(DASHBOARD.read_text())
    panels = {p["title"]: p for p in dashboard["panels"]}
    missing = [t for t in PANELS if t not in panels]
    if missing:
        raise SystemExit(f"panels not in the dashboard: {missing}")
    ev = Evaluator(run, rate_window_s)
    computed = {title: panel_series(panels[title], ev) for title in PANELS}
    written = []
    out.mkdir(parents=True, exist_ok=True)
    for title in PANELS:
        fig, ax = plt.subplots(figsize=(9, 3.6), dpi=110)
        fig.patch.set_facecolor(PANEL)
        draw_panel(ax, panels[title], computed[title], run)
        fig.subplots_adjust(left=0.11, right=0.98, top=0.88, bottom=0.28)
        path = out / f"dashboard-{slug(title)}.png"
        fig.savefig(path, facecolor=PANEL)
        plt.close(fig)
        written.append(path)

    stats = [p for p in dashboard["panels"] if p["type"] == "stat"]
    cols, rows = 3, math.ceil(len(PANELS) / 3)
    height = 2.3 + rows * 3.3
    fig = plt.figure(figsize=(18, height), dpi=100)
    fig.patch.set_facecolor(BG)
    header = 1.9 / height
    sc = run.scenario
    faults = sc.get("cams", {}).get("by_fault", {})
    injected = f"{sum(faults.values())} injected: " + ", ".join(f"{n} {k}" for k, n in sorted(faults.items())) if faults else "20% of calls"
    fig.text(0.01, 1 - 0.28 / height, f"{dashboard['title']}  ·  a run on a shared 2-core machine's embedded pieces (librdkafka's mock broker, the local CAMS endpoint at "
             f"{sc.get('cams_rate_limit', 10)} calls/s; one service process): not production traffic",
             color=TEXT, fontsize=12, va="center")  # fmt: skip
    fig.text(0.01, 1 - 0.58 / height, f"backlog of {sc.get('backlog', 0):,} single-recipient requests, then {sc.get('stream', 0):,} at {sc.get('stream_per_s', 0):g}/s "
             f"with {sc.get('bad_messages', 0)} undecodable; CAMS faults for {sc.get('fault_for_s', 10):g} s (shaded, {injected})  ·  stats: over the whole run, lag at its end",
             color=MUTED, fontsize=10.5, va="center")  # fmt: skip
    for n, panel in enumerate(stats):
        ax = fig.add_axes([0.01 + n * (0.98 / len(stats)), 1 - header, 0.98 / len(stats) - 0.006, header - 0.85 / height])
        ax.set_facecolor(PANEL)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color(BORDER)
        values = [v for _, vs in panel_series(panel, ev) for v in vs[-1:] if v is not None]  # lastNotNull at the end of the run
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        text = format_value(sum(values), defaults.get("unit"), defaults.get("decimals")) if values else "No data"
        ax.text(0.04, 0.86, panel["title"], color=TEXT, fontsize=9, va="top", transform=ax.transAxes)
        ax.text(0.5, 0.38, text, color=PALETTE[0], fontsize=20, fontweight="bold", ha="center", va="center", transform=ax.transAxes)
    body_top = 1 - header - 0.02
    cell_h = body_top / rows
    for n, title in enumerate(PANELS):
        row, col = divmod(n, cols)
        box = fig.add_axes([0.01 + col * (0.98 / cols), body_top - (row + 1) * cell_h, 0.98 / cols - 0.006, cell_h - 0.006])
        box.set_facecolor(PANEL)
        box.set_xticks([])
        box.set_yticks([])
        for spine in box.spines.values():
            spine.set_color(BORDER)
        x0, y0, w, h = box.get_position().bounds
        ax = fig.add_axes([x0 + 0.055 * w + 0.03, y0 + 0.25 * h, w * 0.93 - 0.035, h * 0.62])
        draw_panel(ax, panels[title], computed[title], run, compact=True)
    path = out / "dashboard.png"
    fig.savefig(path, facecolor=BG)
    plt.close(fig)
    written.append(path)
    return written


# =========================================================================== main


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # the backlog outgrows the service's buffer (50,000 recipients by default) so back-pressure and
    # lag (reported every 5 s) show; 10 calls/s x 1,000 recipients drain it in about 20 s
    ap.add_argument("--backlog", type=int, default=200_000, help="single-recipient requests waiting before the service starts")
    ap.add_argument("--stream", type=int, default=30_000, help="requests produced while it runs ...")
    ap.add_argument("--rate", type=float, default=500.0, help="... at this many requests/s")
    ap.add_argument("--bad", type=int, default=50, help="undecodable messages mixed into the stream")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--fault-at", type=float, default=35.0, help="faults start this many s after the service is ready (after the backlog)")
    ap.add_argument("--fault-for", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=1.0, help="scrape interval, s")
    ap.add_argument("--rate-window", type=float, default=10.0, help="$__rate_interval, s")
    ap.add_argument("--tail", type=float, default=8.0, help="keep scraping this long after the last result")
    ap.add_argument("--min-duration", type=float, default=60.0)
    ap.add_argument("--max-duration", type=float, default=180.0)
    ap.add_argument("--out", type=Path, default=DOCS)
    ap.add_argument("--from-run", type=Path, help="render a saved dashboard-run.json instead of running")
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.from_run:
        run = Run.from_json(json.loads(args.from_run.read_text()))
    else:
        run = run_scenario(args)
        run.scenario["fault_for_s"] = args.fault_for
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "dashboard-run.json").write_text(json.dumps(run.to_json(), separators=(",", ":")) + "\n")
    written = render(run, args.out, run.scenario.get("rate_window_s", args.rate_window))
    for path in written:
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
