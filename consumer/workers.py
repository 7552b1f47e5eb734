"""``workers`` > 1: one instance as a supervisor process and N service processes (workers).

The pipeline is Python, and Python runs one thread of a process at a time: one service process
uses one core, however many it is given. With ``workers`` = N the instance starts N complete
service processes (``python -m consumer run`` with ``CHATAPP_WORKERS=1``): each is a member of
the consumer group with its own consumer, sender and ledger, and the partitions are shared
among them as among instances. The supervisor

- hosts the rate limiter the workers share (``limiter/hosted.py``) when there is no Redis (with
  Redis they share Redis's, as instances do);
- restarts a worker that exits while the instance is not stopping, after 1 s, doubling to 30 s
  for one that keeps failing within a minute of its start (``chatapp_worker_restarts_total``);
- on SIGTERM / SIGINT passes the signal on (each worker drains, commits and leaves the group as
  an instance does), waits for them all, and exits 0 if they all exited 0;
- serves ``/metrics`` (every worker's series with a ``worker`` label, plus its own),
  ``/healthz`` (its loop runs and every worker is running and live) and ``/readyz`` (every
  worker ready) on ``metrics_port``; workers serve theirs on loopback ports of their own.

A worker stops (draining like on SIGTERM) when its supervisor is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from .config import Config
from .kafka import CLOSE_TIMEOUT_S
from .limiter.hosted import LimiterHost
from .metrics import StatusServer
from .worker_link import WorkerLink

log = logging.getLogger("consumer.workers")

RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
STABLE_AFTER_S = 60.0
"""A worker that ran this long before exiting is restarted after ``RESTART_FIRST_S`` again."""
STARTING_GRACE_S = 60.0
"""A worker is live before its status server answers, for this long after it was started."""
STALL_AFTER_S = 60.0
"""The supervisor is not live when its watch loop has not turned for this long."""
WATCH_EVERY_S = 0.2
SCRAPE_TIMEOUT_S = 2.0
STOP_MARGIN_S = 15.0
"""Stopping: the workers get ``drain_timeout_s`` + the consumer's close timeout + this."""


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class _Worker:
    """One worker slot: its process (None between a crash and its restart) and its history."""

    def __init__(self, index: int):
        self.index = index
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.started_at = 0.0
        self.failures = 0
        self.restart_at: float | None = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class WorkerPages:
    """Fetches the workers' status pages (one keep-alive client: a client per request would build
    a TLS context each time, 10-30 ms of CPU, even for plain HTTP)."""

    def __init__(self, host: str):
        self._host = host
        self._http = httpx.Client(timeout=SCRAPE_TIMEOUT_S)

    def get(self, worker: _Worker, path: str) -> str | None:
        """A worker's page, or None when it is not running or does not answer 200."""
        if not worker.running():
            return None
        try:
            response = self._http.get(f"http://{self._host}:{worker.port}{path}")
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None


class WorkerMetrics:
    """The workers' ``/metrics``, merged: each sample gets a ``worker`` label (a prometheus_client
    collector, scraped when the supervisor's ``/metrics`` is)."""

    def __init__(self, workers: list[_Worker], pages: WorkerPages):
        self._workers = workers
        self._pages = pages

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for worker in self._workers:
            text = self._pages.get(worker, "/metrics")
            if text is None:
                continue
            for family in text_string_to_metric_families(text):
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                label = str(worker.index)
                into.samples.extend(sample._replace(labels={**sample.labels, "worker": label}) for sample in family.samples)
        yield from merged.values()


class SupervisorStatus:
    """``/metrics``, ``/healthz``, ``/readyz`` of the supervisor (the ``StatusServer``'s metrics and health)."""

    def __init__(self, supervisor: Supervisor):
        self._supervisor = supervisor
        self.registry = CollectorRegistry()
        self.workers_running = Gauge("chatapp_workers_running", "Worker processes running.", registry=self.registry)
        self.restarts = Counter("chatapp_worker_restarts", "Worker processes restarted after they exited unexpectedly.", registry=self.registry)
        self._pages = WorkerPages(supervisor.status_host)
        self.registry.register(WorkerMetrics(supervisor.workers, self._pages))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def live(self) -> tuple[bool, dict]:
        supervisor = self._supervisor
        age = time.monotonic() - supervisor.last_beat
        workers = {str(w.index): w.running() and (self._pages.get(w, "/healthz") is not None or time.monotonic() - w.started_at < STARTING_GRACE_S)
                   for w in supervisor.workers}  # fmt: skip
        return age < STALL_AFTER_S and all(workers.values()), {"supervisor_last_beat_s": round(age, 3), "workers_live": workers}

    def ready(self) -> tuple[bool, dict]:
        supervisor = self._supervisor
        workers = {str(w.index): self._pages.get(w, "/readyz") is not None for w in supervisor.workers}
        return all(workers.values()), {"workers_ready": workers}


class Supervisor:
    def __init__(self, config: Config):
        self.config = config
        self.status_host = "127.0.0.1"
        self.workers = [_Worker(i) for i in range(config.workers)]
        self.last_beat = time.monotonic()
        self._stopping = threading.Event()
        self._link = WorkerLink(0, config.workers, os.getpid())
        """What each worker is told (with its own index)."""
        if not config.redis_url:
            from .limiter.setup import in_process_limiter

            host = LimiterHost(in_process_limiter(config)).start()
            self._link = WorkerLink(0, config.workers, os.getpid(), host.address, host.authkey)
        self.status = SupervisorStatus(self)

    def request_stop(self, *_: object) -> None:
        if not self._stopping.is_set():
            log.info("stop requested: stopping %d workers", len(self.workers))
        self._stopping.set()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        server = None
        if self.config.metrics_port >= 0:
            server = StatusServer(self.config.metrics_host, self.config.metrics_port, self.status, self.status).start()
            log.info("supervisor: metrics and health of %d workers on http://%s:%d/metrics", len(self.workers), self.config.metrics_host, server.port)
        try:
            for worker in self.workers:
                self._start(worker)
            while not self._stopping.wait(WATCH_EVERY_S):
                self.last_beat = time.monotonic()
                self._watch()
            return self._stop_all()
        finally:
            if server is not None:
                server.stop()

    def _start(self, worker: _Worker) -> None:
        worker.port = _free_port(self.status_host)
        env = {
            **os.environ,
            **replace(self._link, index=worker.index).env(),
            "CHATAPP_WORKERS": "1",
            "CHATAPP_METRICS_HOST": self.status_host,
            "CHATAPP_METRICS_PORT": str(worker.port),
        }
        worker.process = subprocess.Popen([sys.executable, "-m", "consumer", "run"], env=env, stdin=subprocess.DEVNULL)
        worker.started_at = time.monotonic()
        worker.restart_at = None
        log.info("worker %d started (pid %d)", worker.index, worker.process.pid)
        self._count_running()

    def _watch(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is not None:
                code = worker.process.returncode
                ran_s = now - worker.started_at
                worker.failures = 1 if ran_s >= STABLE_AFTER_S else worker.failures + 1
                delay = min(RESTART_MAX_S, RESTART_FIRST_S * 2 ** (worker.failures - 1))
                log.error("worker %d (pid %d) exited with %s after %.1f s: restarting it in %.0f s",
                          worker.index, worker.process.pid, code, ran_s, delay)  # fmt: skip
                worker.process = None
                worker.restart_at = now + delay
                self._count_running()
            if worker.restart_at is not None and now >= worker.restart_at:
                self.status.restarts.inc()
                self._start(worker)

    def _count_running(self) -> None:
        self.status.workers_running.set(sum(w.running() for w in self.workers))

    def _stop_all(self) -> int:
        running = [(w, w.process) for w in self.workers if w.process is not None and w.running()]
        for _, process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.drain_timeout_s + CLOSE_TIMEOUT_S + STOP_MARGIN_S
        codes: list[int | None] = []
        for worker, process in running:
            try:
                codes.append(process.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) did not stop in time: killing it", worker.index, process.pid)
                process.kill()
                codes.append(process.wait())
        self.status.workers_running.set(0)
        failed = [(w.index, c) for (w, _), c in zip(running, codes) if c != 0]
        if failed:
            log.error("workers exited with errors: %s", failed)
            return 1
        log.info("stopped: %d workers exited cleanly", len(running))
        return 0
