"""Processes the benchmark starts: the mock broker, the local CAMS endpoint and service instances.

Every child gets ``PR_SET_PDEATHSIG`` (SIGTERM when this process dies) besides the try/finally of
the caller, so that a killed benchmark leaves nothing running; every wait has a timeout.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from chatapp_devkit.local_cams import LocalCams
from chatapp_devkit.mockcluster import MockCluster

from consumer.childproc import read_ready_line

from .kafkaio import RealCluster

ROOT = Path(__file__).resolve().parents[1]
KEY_ID = "LTAI_BENCH_LOCAL_ONLY"
SECRET = "bench-secret-local-only"
_PR_SET_PDEATHSIG = 1


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the forked child must not dlopen


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the benchmark process goes away (one libc call,
    nothing that could take a lock another thread held at fork time)."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATAPP_", "ALIBABA_CLOUD_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "devkit")])  # the service, and the devkit's broker and CAMS endpoint
    env.update(extra)
    return env


def start_cams(rate_limit: int = 10, timeout: float = 15.0) -> LocalCams:
    """``python -m chatapp_devkit.local_cams`` knowing the bench key, wrapped in ``LocalCams``."""
    argv = [sys.executable, "-m", "chatapp_devkit.local_cams", "--host", "127.0.0.1", "--port", "0",
            "--rate-limit", str(rate_limit), "--account", f"{KEY_ID}:{SECRET}"]  # fmt: skip
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=child_env(), cwd=ROOT,
                               preexec_fn=_die_with_parent)  # noqa: PLW1509  # fmt: skip
    try:
        url = json.loads(read_ready_line(process, timeout, "local CAMS"))["url"]
    except BaseException:
        process.kill()
        process.wait(10)
        raise
    return LocalCams(process, url)


INITIAL_REBALANCE_DELAY_MS = 3000
"""A real broker's default ``group.initial.rebalance.delay.ms``."""


class Infra:
    """The broker and the endpoint, shared by every scenario of one run (topics differ)."""

    def __init__(self, bootstrap: str | None = None) -> None:
        self.cluster: MockCluster | RealCluster | None = None
        self.cams: LocalCams | None = None
        self._bootstrap = bootstrap
        """A real cluster's bootstrap servers (None: the mock broker, started here)."""

    def start(self) -> Infra:
        self.cluster = RealCluster(self._bootstrap) if self._bootstrap else MockCluster.start(brokers=1, timeout=30.0)
        self.cams = start_cams()
        return self

    @property
    def real(self) -> bool:
        return self._bootstrap is not None

    @property
    def bootstrap(self) -> str:
        assert self.cluster is not None
        return self.cluster.bootstrap_servers

    def topics(self, name: str, partitions: int) -> tuple[str, str, str]:
        """Fresh request, result and dead-letter topics for one scenario."""
        assert self.cluster is not None
        names = (f"bench.{name}.requests", f"bench.{name}.results", f"bench.{name}.dlq")
        self.cluster.create_topic(names[0], partitions)
        self.cluster.create_topic(names[1], partitions)
        self.cluster.create_topic(names[2], 1)
        return names

    def gather_new_groups(self, gather: bool) -> None:
        """A new group's first join waits ``INITIAL_REBALANCE_DELAY_MS`` for more members (as a
        real broker's ``group.initial.rebalance.delay.ms``), or completes at once (the default
        here: every scenario but the pipeline's worker runs starts sooner)."""
        assert self.cluster is not None
        self.cluster.set_initial_rebalance_delay(INITIAL_REBALANCE_DELAY_MS if gather else 0)

    def endpoint(self, rate_limit: int, latency_ms: float = 0.0) -> LocalCams:
        """Forget earlier calls and set the endpoint's limit and latency."""
        assert self.cams is not None
        self.cams.reset()
        self.cams.set_faults(rate_limit=rate_limit, latency_ms=latency_ms)
        return self.cams

    def close(self) -> None:
        if self.cams is not None:
            self.cams.stop(timeout=10.0)
        if self.cluster is not None:
            self.cluster.stop(timeout=10.0)


def service_env(bootstrap: str, cams_url: str, topics: tuple[str, str, str], **settings: Any) -> dict[str, str]:
    """The service's environment: the bench's topics, key and mock-broker settings, then ``settings``
    (``name=value`` for ``CHATAPP_NAME``, or full upper-case variable names)."""
    env = child_env(
        CHATAPP_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        CHATAPP_CAMS_ENDPOINT=cams_url,
        ALIBABA_CLOUD_ACCESS_KEY_ID=KEY_ID,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=SECRET,
        CHATAPP_REQUEST_TOPIC=topics[0],
        CHATAPP_REPLY_TOPIC=topics[1],
        CHATAPP_DLQ_TOPIC=topics[2],
        CHATAPP_KAFKA_CONSUMER_OPT_FETCH_WAIT_MAX_MS="10",  # the mock broker holds a Fetch this long
        # the mock coordinator holds a rebalance for session timeout - 1 s: 3 s keeps group joins short
        CHATAPP_SESSION_TIMEOUT_MS="3000",
        CHATAPP_METRICS_HOST="127.0.0.1",
        CHATAPP_METRICS_PORT=str(free_port()),
        CHATAPP_LOG_FORMAT="json",
        CHATAPP_DRAIN_TIMEOUT_S="20",
    )
    for name, value in settings.items():
        env[name if name.isupper() else "CHATAPP_" + name.upper()] = str(value)
    return env


class Service:
    """One ``python -m consumer run`` (or another ``command``) process; output to ``log_path``.

    It runs in a process group of its own (``kill`` takes a supervisor's workers with it) but in
    the benchmark's session: with autogroup scheduling (Linux's default on desktops and this
    machine) the kernel shares the CPU between sessions first, so instances in sessions of their
    own, standing for machines of their own but sharing these two cores, would each get a third
    of them whatever their threads' priorities, and one instance's sender thread, granted a slot,
    waited behind the other instances' decoding loops (see ``CHATAPP_INTAKE_NICE``)."""

    def __init__(self, env: Mapping[str, str], log_path: Path, command: str = "run"):
        self.env = dict(env)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (open while the process runs; closed by stop/kill)
        self.process = subprocess.Popen([sys.executable, "-m", "consumer", command], env=self.env, cwd=ROOT,
                                        stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                        preexec_fn=_die_with_parent, process_group=0)  # noqa: PLW1509  # fmt: skip
        self.started = time.monotonic()
        self.url = f"http://127.0.0.1:{self.env['CHATAPP_METRICS_PORT']}"
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"service exited with {self.process.returncode}:\n{self.log_tail()}")

    def _get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=2.0)

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Until /readyz answers 200 (partitions assigned); returns the seconds it took."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if self._get("/readyz").status_code == 200:
                    return time.monotonic() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"service not ready after {timeout} s:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics as ``name{labels}`` -> value ({} when it does not answer)."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = self._get("/metrics").text
        except httpx.HTTPError:
            return {}
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith(("_bucket", "_created")):
                    continue
                # a supervisor's workers' series are added up: the instance's figures
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "worker")
                key = f"{sample.name}{{{labels}}}" if labels else sample.name
                out[key] = out.get(key, 0.0) + sample.value
        return out

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (the service drains), then SIGKILL after ``timeout`` s; returns the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.returncode = self.process.returncode
        if not self._log.closed:
            self._log.close()
        return self.returncode

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(10)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # a supervisor's workers too
        except ProcessLookupError:
            pass
        if not self._log.closed:
            self._log.close()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_problems(self, limit: int = 5) -> dict[str, Any]:
        """WARNING/ERROR lines of the JSON log: counts and the first few messages."""
        counts: dict[str, int] = {}
        first: list[str] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                if "Traceback" in line or "Error" in line:
                    counts["unparsed"] = counts.get("unparsed", 0) + 1
                    if len(first) < limit:
                        first.append(line[:300])
                continue
            level = entry.get("level")
            if level in ("WARNING", "ERROR", "CRITICAL"):
                counts[level] = counts.get(level, 0) + 1
                if len(first) < limit:
                    first.append(f"{level} {entry.get('logger')}: {str(entry.get('msg'))[:300]}")
        return {"counts": counts, "first": first}


def memory_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of ``pid`` in KiB ({} once it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    name, value = line.split(":", 1)
                    out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _TICK


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads) and of its live child
    processes (a supervisor's workers); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            children = [int(child) for child in listing.read().split()]
    except OSError:  # gone meanwhile, or a kernel without the listing: the process's own CPU still counts
        children = []
    return own + sum(process_cpu_s(child) for child in children)


class CpuAccount:
    """Machine CPU used by this benchmark (itself, its reaped children, the broker and the endpoint)
    and by everything else: other work on the machine disturbs the figures, so it is reported."""

    def __init__(self, infra: Infra):
        self._infra = infra
        self._start = self._snapshot()

    def _snapshot(self) -> tuple[float, float, float]:
        t = os.times()
        mine = t.user + t.system + t.children_user + t.children_system
        for child in (self._infra.cluster, self._infra.cams):
            process = getattr(child, "process", None)  # a real cluster is not ours: not counted
            if process is not None:
                mine += process_cpu_s(process.pid)
        return time.monotonic(), _machine_busy_s(), mine

    def since_start(self) -> dict[str, float]:
        """CPU seconds since this account was opened: the bench's, others', and cores busy on average."""
        now, busy, mine = self._snapshot()
        wall, all_busy, own = now - self._start[0], busy - self._start[1], mine - self._start[2]
        others = max(0.0, all_busy - own)
        return {"wall_s": wall, "bench_cpu_s": own, "other_cpu_s": others,
                "bench_cores": own / wall if wall else 0.0, "other_cores": others / wall if wall else 0.0}  # fmt: skip


def wait_quiet(infra: Infra, max_wait: float, threshold: float = 0.25, sample_s: float = 0.5) -> dict[str, float]:
    """Between scenarios (nothing of ours busy): wait up to ``max_wait`` s until the rest of the
    machine uses under ``threshold`` cores over a ``sample_s`` sample."""
    started = time.monotonic()
    others = 0.0
    while True:
        account = CpuAccount(infra)
        time.sleep(sample_s)
        others = account.since_start()["other_cores"]
        waited = time.monotonic() - started
        if others < threshold or waited >= max_wait:
            return {"waited_s": max(0.0, waited - sample_s), "other_cores": others}
