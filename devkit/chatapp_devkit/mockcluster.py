"""An embedded Kafka broker for tests, the demo and the benchmark: librdkafka's mock cluster.

librdkafka ships a mock cluster (``src/rdkafka_mock.h``) inside the shared library that the
confluent-kafka wheel already carries; this module drives it through ctypes, in a process of
its own, so clients talk to it over TCP exactly as they would to a real cluster.

``python -m chatapp_devkit.mockcluster`` runs the broker and prints one JSON line
(``bootstrap_servers``, ``control_url``) once it is ready; a small JSON HTTP API then injects
faults. :class:`MockCluster` starts and drives that process for callers.

The mock API is experimental and outside librdkafka's ABI promise: the confluent-kafka range
is pinned in devkit/pyproject.toml and every symbol used is checked at start-up.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from chatapp_devkit.processes import child_env, read_ready_line, stop_process

_c_int_p = ctypes.POINTER(ctypes.c_int)

# name -> (restype, argtypes): every librdkafka call this module makes, checked at start-up.
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "rd_kafka_conf_new": (ctypes.c_void_p, []),
    "rd_kafka_conf_set": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t],
    ),
    "rd_kafka_new": (ctypes.c_void_p, [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]),
    "rd_kafka_mock_cluster_new": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int]),
    "rd_kafka_mock_cluster_bootstraps": (ctypes.c_char_p, [ctypes.c_void_p]),
    "rd_kafka_mock_cluster_destroy": (None, [ctypes.c_void_p]),
    "rd_kafka_mock_group_initial_rebalance_delay_ms": (None, [ctypes.c_void_p, ctypes.c_int32]),
    "rd_kafka_mock_topic_create": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]),
    "rd_kafka_mock_push_request_errors_array": (
        None,
        [ctypes.c_void_p, ctypes.c_int16, ctypes.c_size_t, _c_int_p],
    ),
    "rd_kafka_mock_broker_set_down": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int32]),
    "rd_kafka_mock_broker_set_up": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int32]),
    "rd_kafka_mock_broker_set_rtt": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int]),
    "rd_kafka_mock_partition_set_leader": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32],
    ),
}

_RD_KAFKA_PRODUCER = 0
_RD_KAFKA_CONF_OK = 0
_INT32_MAX = 2**31 - 1
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_MAX_PARTITIONS = 10_000
_MAX_PUSHED_ERRORS = 10_000
_MAX_DELAY_MS = 3_600_000
_SIGNALS = {signal.SIGTERM, signal.SIGINT}
_CONTROL_TIMEOUT_S = 5.0

# librdkafka answers that are the caller's fault, by HTTP status.
_ERR_STATUS = {
    3: 404,  # UNKNOWN_TOPIC_OR_PART
    8: 404,  # BROKER_NOT_AVAILABLE (no broker with that id)
    36: 409,  # TOPIC_ALREADY_EXISTS
}


class MockClusterError(RuntimeError):
    """The mock cluster could not start, or refused a control call (``status`` is the HTTP code)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- broker process


def _library_path() -> str:
    """The librdkafka that confluent-kafka uses: the wheel's copy, else the one mapped in."""
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    wheel_copies = sorted(libs.glob("librdkafka*.so*"))
    if wheel_copies:
        return str(wheel_copies[0])
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            path = line.split(maxsplit=5)[-1].strip()
            if "librdkafka" in Path(path).name:
                return path
    raise MockClusterError("librdkafka not found beside confluent_kafka nor in /proc/self/maps")


def _load_librdkafka() -> ctypes.CDLL:
    """Load librdkafka, fail clearly if any symbol is missing, declare every signature."""
    path = _library_path()
    lib = ctypes.CDLL(path)
    missing = [name for name in _SIGNATURES if not hasattr(lib, name)]
    if missing:
        raise MockClusterError(
            f"{path} lacks mock-cluster symbols {missing}: the mock API is experimental, use the confluent-kafka range pinned in devkit/pyproject.toml"
        )
    for name, (restype, argtypes) in _SIGNATURES.items():
        func = getattr(lib, name)
        func.restype = restype
        func.argtypes = argtypes
    return lib


def _err_name(code: int) -> str:
    """librdkafka's name for an error code, e.g. ``TOPIC_ALREADY_EXISTS``."""
    from confluent_kafka import KafkaError

    return str(KafkaError(code).name())


class _Cluster:
    """The mock cluster inside this process; every call is serialised by one lock."""

    def __init__(self, lib: ctypes.CDLL, brokers: int, initial_rebalance_delay_ms: int) -> None:
        self._lib = lib
        self._lock = threading.Lock()
        self.brokers = brokers
        errstr = ctypes.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        if lib.rd_kafka_conf_set(conf, b"log_level", b"0", errstr, len(errstr)) != _RD_KAFKA_CONF_OK:
            raise MockClusterError(f"rd_kafka_conf_set(log_level): {errstr.value.decode()}")
        rk = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errstr, len(errstr))  # takes conf
        if not rk:
            raise MockClusterError(f"rd_kafka_new: {errstr.value.decode()}")
        self._mcluster: int | None = lib.rd_kafka_mock_cluster_new(rk, brokers)
        if not self._mcluster:
            raise MockClusterError("rd_kafka_mock_cluster_new failed")
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self._mcluster, initial_rebalance_delay_ms)
        self.bootstrap_servers: str = lib.rd_kafka_mock_cluster_bootstraps(self._mcluster).decode()

    def _call(self, name: str, *args: Any) -> None:
        """Run one mock call under the lock; a non-zero librdkafka error becomes MockClusterError."""
        with self._lock:
            if self._mcluster is None:
                raise MockClusterError("mock cluster is shutting down", 503)
            err = getattr(self._lib, name)(self._mcluster, *args)
        if err:
            raise MockClusterError(f"{name}: {_err_name(err)} ({err})", _ERR_STATUS.get(err, 500))

    def create_topic(self, name: str, partitions: int, replication: int) -> None:
        self._call("rd_kafka_mock_topic_create", name.encode(), partitions, replication)

    def push_request_errors(self, api_key: int, errors: Sequence[int]) -> None:
        self._call("rd_kafka_mock_push_request_errors_array", api_key, len(errors), (ctypes.c_int * len(errors))(*errors))

    def set_broker_up(self, broker_id: int, up: bool) -> None:
        self._call("rd_kafka_mock_broker_set_up" if up else "rd_kafka_mock_broker_set_down", broker_id)

    def set_rtt(self, broker_id: int, rtt_ms: int) -> None:
        self._call("rd_kafka_mock_broker_set_rtt", broker_id, rtt_ms)

    def set_partition_leader(self, topic: str, partition: int, broker_id: int) -> None:
        self._call("rd_kafka_mock_partition_set_leader", topic.encode(), partition, broker_id)

    def set_initial_rebalance_delay(self, delay_ms: int) -> None:
        self._call("rd_kafka_mock_group_initial_rebalance_delay_ms", delay_ms)

    def destroy(self) -> None:
        """Stop the brokers; later control calls get 503."""
        with self._lock:
            if self._mcluster is not None:
                self._lib.rd_kafka_mock_cluster_destroy(self._mcluster)
                self._mcluster = None


def _checked_int(value: Any, name: str, lo: int, hi: int) -> int:
    """``value`` if it is an integer in [lo, hi] (booleans refused), else a 400."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise MockClusterError(f"{name!r} must be an integer in [{lo}, {hi}], got {value!r}", 400)
    return value


def _int_field(body: Mapping[str, Any], name: str, lo: int, hi: int, default: int | None = None) -> int:
    """An integer in [lo, hi] from a JSON body."""
    return _checked_int(body.get(name, default), name, lo, hi)


def _topic_field(body: Mapping[str, Any], name: str) -> str:
    """A legal Kafka topic name from a JSON body."""
    value = body.get(name)
    if not isinstance(value, str) or not _TOPIC_NAME.fullmatch(value):
        raise MockClusterError(f"{name!r} must be a topic name matching {_TOPIC_NAME.pattern}, got {value!r}", 400)
    return value


def _broker_id(text: str) -> int:
    """A broker id from the URL path: -1 (all brokers) or a positive id."""
    try:
        broker_id = int(text)
    except ValueError:
        raise MockClusterError(f"broker id must be an integer, got {text!r}", 400) from None
    if broker_id != -1 and not 0 <= broker_id <= _INT32_MAX:
        raise MockClusterError(f"broker id must be -1 or a broker's id, got {broker_id}", 400)
    return broker_id


class _ControlHandler(BaseHTTPRequestHandler):
    """The JSON control API; ``server.cluster`` is the :class:`_Cluster` it drives."""

    server: _ControlServer

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        if self.path == "/health":
            cluster = self.server.cluster
            self._reply(200, {"status": "ok", "bootstrap_servers": cluster.bootstrap_servers, "brokers": cluster.brokers})
        else:
            self._reply(404, {"error": f"no route GET {self.path}"})

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        try:
            self._route(self._body())
        except MockClusterError as exc:
            self._reply(exc.status or 500, {"error": str(exc)})
        else:
            self._reply(200, {"status": "ok"})

    def _body(self) -> dict[str, Any]:
        """The request's JSON object (an empty body is an empty object)."""
        try:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length) if length > 0 else b"{}"
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MockClusterError(f"body is not JSON: {exc}", 400) from None
        if not isinstance(body, dict):
            raise MockClusterError("body must be a JSON object", 400)
        return body

    def _route(self, body: dict[str, Any]) -> None:
        """Validate the body for the path and make the mock call."""
        cluster = self.server.cluster
        parts = self.path.strip("/").split("/")
        if parts == ["topics"]:
            cluster.create_topic(
                _topic_field(body, "name"),
                _int_field(body, "partitions", 1, _MAX_PARTITIONS),
                _int_field(body, "replication", 1, cluster.brokers, default=1),
            )
        elif parts == ["request-errors"]:
            errors = body.get("errors")
            if not isinstance(errors, list) or not 1 <= len(errors) <= _MAX_PUSHED_ERRORS:
                raise MockClusterError(f"'errors' must be a list of 1 to {_MAX_PUSHED_ERRORS} error codes", 400)
            codes = [_checked_int(e, "errors[]", -(2**31), _INT32_MAX) for e in errors]
            cluster.push_request_errors(_int_field(body, "api_key", 0, 2**15 - 1), codes)
        elif len(parts) == 3 and parts[0] == "brokers" and parts[2] in ("down", "up"):
            cluster.set_broker_up(_broker_id(parts[1]), parts[2] == "up")
        elif len(parts) == 3 and parts[0] == "brokers" and parts[2] == "rtt":
            cluster.set_rtt(_broker_id(parts[1]), _int_field(body, "rtt_ms", 0, _MAX_DELAY_MS))
        elif parts == ["partitions", "leader"]:
            cluster.set_partition_leader(
                _topic_field(body, "topic"),
                _int_field(body, "partition", 0, _MAX_PARTITIONS - 1),
                _int_field(body, "broker_id", -1, _INT32_MAX),
            )
        elif parts == ["groups", "initial-rebalance-delay"]:
            cluster.set_initial_rebalance_delay(_int_field(body, "delay_ms", 0, _MAX_DELAY_MS))
        else:
            raise MockClusterError(f"no route POST {self.path}", 404)

    def _reply(self, status: int, payload: Mapping[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base signature)
        """Keep stderr for real problems: no access log."""


class _ControlServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], cluster: _Cluster) -> None:
        super().__init__(address, _ControlHandler)
        self.cluster = cluster


def _topic_spec(text: str) -> tuple[str, int]:
    """``NAME:PARTITIONS`` from the command line."""
    name, _, count = text.rpartition(":")
    if not _TOPIC_NAME.fullmatch(name) or not count.isdigit() or not 1 <= int(count) <= _MAX_PARTITIONS:
        raise argparse.ArgumentTypeError(f"expected NAME:PARTITIONS, got {text!r}")
    return name, int(count)


def _parse_args(argv: Sequence[str] | None, prog: str = "python -m chatapp_devkit.mockcluster") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", type=int, default=1)
    parser.add_argument("--topic", type=_topic_spec, action="append", default=[], metavar="NAME:PARTITIONS")
    parser.add_argument("--control-host", default="127.0.0.1")
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--initial-rebalance-delay-ms", type=int, default=0)
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin closes, so that a parent that dies never leaves a broker behind",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.brokers <= 100:
        parser.error("--brokers must be in [1, 100]")
    return args


def _stop_on_stdin_eof() -> None:
    """Read stdin to its end, then signal this process as SIGTERM would (sigwait takes it)."""
    while sys.stdin.buffer.read(4096):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: Sequence[str] | None = None, prog: str = "python -m chatapp_devkit.mockcluster") -> None:
    """Run the broker until SIGTERM/SIGINT, then leave with ``os._exit`` (never returns)."""
    args = _parse_args(argv, prog)
    # Before any librdkafka or helper thread exists, so that all of them inherit the mask and
    # the signals wait, pending, for sigwait below.
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        cluster = _Cluster(_load_librdkafka(), args.brokers, args.initial_rebalance_delay_ms)
        for name, partitions in args.topic:
            cluster.create_topic(name, partitions, 1)
        server = _ControlServer((args.control_host, args.control_port), cluster)
    except (MockClusterError, OSError) as exc:
        print(f"mockcluster: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    threading.Thread(target=server.serve_forever, name="mock-control", daemon=True).start()
    if args.exit_on_stdin_eof:
        threading.Thread(target=_stop_on_stdin_eof, name="mock-stdin", daemon=True).start()
    host, port = server.server_address[:2]
    assert isinstance(host, str), "an AF_INET server's address is (host, port)"
    print(json.dumps({"bootstrap_servers": cluster.bootstrap_servers, "control_url": f"http://{host}:{port}"}), flush=True)
    signal.sigwait(_SIGNALS)
    cluster.destroy()
    os._exit(0)


# --------------------------------------------------------------------------- caller side


class MockCluster:
    """A running ``python -m chatapp_devkit.mockcluster`` process and its control API."""

    def __init__(self, process: subprocess.Popen[bytes], bootstrap_servers: str, control_url: str) -> None:
        self.process = process
        self.bootstrap_servers = bootstrap_servers
        self.control_url = control_url

    @classmethod
    def start(
        cls,
        brokers: int = 1,
        topics: Mapping[str, int] | None = None,
        timeout: float = 15.0,
        initial_rebalance_delay_ms: int = 0,
    ) -> MockCluster:
        """Spawn the broker process and wait (at most ``timeout`` s) for its ready line.

        The process also stops by itself if this one dies (its stdin closes).
        """
        argv = [sys.executable, "-m", "chatapp_devkit.mockcluster", "--brokers", str(brokers), "--exit-on-stdin-eof"]
        argv += ["--initial-rebalance-delay-ms", str(initial_rebalance_delay_ms)]
        for name, partitions in (topics or {}).items():
            argv += ["--topic", f"{name}:{partitions}"]
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env())
        try:
            ready = json.loads(read_ready_line(process, timeout, "mock cluster"))
        except (RuntimeError, ValueError) as exc:
            process.kill()
            process.wait()
            raise MockClusterError(f"mock cluster did not start (exit {process.returncode}): {exc}") from None
        return cls(process, ready["bootstrap_servers"], ready["control_url"])

    def _control(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One control call (POST with a body, GET without); a 4xx/5xx raises MockClusterError."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.control_url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=_CONTROL_TIMEOUT_S) as response:
                return dict(json.load(response))
        except urllib.error.HTTPError as exc:
            try:
                message = json.load(exc)["error"]
            except (ValueError, KeyError, TypeError):
                message = exc.reason
            raise MockClusterError(f"{path}: {exc.code} {message}", exc.code) from None

    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "bootstrap_servers": ..., "brokers": N}``."""
        return self._control("/health")

    def create_topic(self, name: str, partitions: int, replication: int = 1) -> None:
        self._control("/topics", {"name": name, "partitions": partitions, "replication": replication})

    def push_request_errors(self, api_key: int, errors: Sequence[int]) -> None:
        """The next ``len(errors)`` requests of ``api_key`` fail with these codes, in order."""
        self._control("/request-errors", {"api_key": api_key, "errors": list(errors)})

    def broker_down(self, broker_id: int = -1) -> None:
        """Disconnect the broker (-1: all) and refuse connections; leadership does not move."""
        self._control(f"/brokers/{broker_id}/down", {})

    def broker_up(self, broker_id: int = -1) -> None:
        """Accept connections again on the same port."""
        self._control(f"/brokers/{broker_id}/up", {})

    def set_rtt(self, broker_id: int, rtt_ms: int) -> None:
        """Delay every response of the broker (-1: all) by ``rtt_ms``."""
        self._control(f"/brokers/{broker_id}/rtt", {"rtt_ms": rtt_ms})

    def set_partition_leader(self, topic: str, partition: int, broker_id: int) -> None:
        """Move a partition's leader (-1: leaderless).

        Quirk: librdkafka creates an unknown ``topic`` (one partition) rather than refusing it.
        """
        self._control("/partitions/leader", {"topic": topic, "partition": partition, "broker_id": broker_id})

    def set_initial_rebalance_delay(self, delay_ms: int) -> None:
        """How long the first join of a group (a group id not seen before) waits for more
        members before it completes (set at start, 0 unless given; a real broker's
        ``group.initial.rebalance.delay.ms`` is 3,000)."""
        self._control("/groups/initial-rebalance-delay", {"delay_ms": delay_ms})

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to ``timeout`` s, SIGKILL if still running; returns the exit code."""
        return stop_process(self.process, timeout)

    def __enter__(self) -> MockCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


if __name__ == "__main__":
    main()
