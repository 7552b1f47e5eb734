"""Operators' tools behind the CLI: produce requests, check configuration (``replay-dlq`` is ``kafka/replay.py``)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

import httpx

from .codec import DecodeError, PlainAvroCodec, build_codec
from .config import Config
from .config_checks import bootstrap_problem
from .intake import REJECTED_CODE
from .kafka import producer_config
from .kafka.tools import KafkaUnavailable, Writer, cluster_summary
from .redact import redact_text
from .request_json import BadJson, strict_record
from .topics_tool import check_line
from .validate import Validator

DELIVERY_TIMEOUT_S = 10.0
"""How long ``produce`` waits for the broker to take a record before it gives up on it."""
QUEUED_RECORDS = 5000


class BadRecord(Exception):
    """A line of the input that is not a SendRequest record."""


def _records_from(path: str, stream: IO[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, record) for each non-blank line; ``where`` is ``path:line``."""
    with stream:
        number = 0
        try:
            for number, line in enumerate(stream, 1):
                if line.strip():
                    try:
                        yield f"{path}:{number}", json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise BadRecord(f"{path}:{number}: not JSON ({exc.msg} at column {exc.colno})") from exc
        except UnicodeDecodeError as exc:
            raise BadRecord(f"{path}:{number + 1}: not UTF-8 text ({exc.reason}): give JSON lines") from exc


def _strict(records: Iterable[tuple[str, dict[str, Any]]], validator: Validator | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """The records checked field by field (``request_json``) and, with a ``validator``, as the
    service checks them: a request it would reject is refused with the REJECTED result's message."""
    codec = PlainAvroCodec()
    for where, record in records:
        try:
            record = strict_record(record)
        except BadJson as exc:
            raise BadRecord(f"{where}: {exc}") from exc
        if validator is not None:
            try:
                request = codec.decode_request(codec.encode_request(record))
            except (ValueError, TypeError, KeyError, AttributeError, DecodeError) as exc:
                raise BadRecord(f"{where}: does not match schemas/send_request.avsc: {exc}") from exc
            problems = validator.problems(request)
            if problems:
                raise BadRecord(f"{where}: would be REJECTED ({REJECTED_CODE}): {'; '.join(problems)} (--no-validate sends it anyway)")
        yield where, record


class _EveryAccount:
    """The accounts ``produce`` checks against when it has none configured: the service's may differ."""

    def __contains__(self, _name: object) -> bool:
        return True


def _progress(done: int, total: int | None, started: float) -> None:
    rate = done / max(time.monotonic() - started, 1e-6)
    if total:
        filled = int(30 * done / total)
        print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done:,}/{total:,} ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
    else:
        print(f"\r{done:,} produced ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)


def produce(config: Config, path: str, bootstrap: str | None, validate: bool = True) -> int:
    """``chatapp-consumer produce --file PATH``: the JSON-lines file's records ('-' = stdin),
    each checked (``_strict``) before it is sent."""
    try:
        stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    except OSError as exc:
        print(f"produce: cannot read --file {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    validator = Validator(config.accounts or _EveryAccount()) if validate else None
    return produce_records(config, _strict(_records_from(path, stream), validator), None, bootstrap)


def produce_records(config: Config, records: Iterable[tuple[str, dict[str, Any]]], total: int | None, bootstrap: str | None) -> int:
    """Encode and produce (where, SendRequest record) pairs with a progress bar (of ``total`` when
    known); 1 if one does not match the schema or is not delivered, 2 without bootstrap servers.
    Also the devkit's ``produce-samples``."""
    servers = bootstrap or config.kafka_bootstrap_servers
    if not servers:
        print("config error: CHATAPP_KAFKA_BOOTSTRAP_SERVERS (or --bootstrap-servers): not set", file=sys.stderr)
        return 2
    if problem := bootstrap_problem(servers):
        print(f"config error: {problem}", file=sys.stderr)
        return 2
    codec = build_codec(config.schema_registry_url, config.request_topic, config.reply_topic)
    # a record waits DELIVERY_TIMEOUT_S at most, in the local queue too: a queue of at most
    # QUEUED_RECORDS keeps that wait a second or two even for a broker that takes a few thousand a second
    writer = Writer({"queue.buffering.max.messages": QUEUED_RECORDS, **producer_config(config), "bootstrap.servers": servers,
                     "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000)})  # fmt: skip
    started, done, failed = time.monotonic(), 0, writer.failed
    try:
        for where, record in records:
            try:
                value = codec.encode_request(record)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise BadRecord(f"{where}: does not match schemas/send_request.avsc: {exc}") from exc
            writer.write(config.request_topic, value, str(record.get("request_id", "")).encode())
            done += 1
            if done % 1000 == 0:
                writer.serve()
                _progress(done, total, started)
    except BadRecord as exc:
        left = writer.flush(DELIVERY_TIMEOUT_S * 2)
        before = f"{done - left - len(failed)} records before it were delivered; nothing after it was produced" if done else "nothing was produced"
        if done >= 1000:
            print(file=sys.stderr)  # ends the progress bar's line
        print(f"{exc}\n{before}", file=sys.stderr)
        return 1
    left = writer.flush(DELIVERY_TIMEOUT_S * 2)
    _progress(done, total, started)
    print(file=sys.stderr)
    if left or failed:
        why = f"{failed[0]}" if failed else "no answer"
        print(f"{left + len(failed)} of {done} requests not delivered: Kafka at {servers} did not take them within {DELIVERY_TIMEOUT_S:.0f} s ({why}); "
              "is the broker running there? (CHATAPP_KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers)", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def cams_probe(endpoint: str) -> tuple[str, bool, str]:
    """Is the CAMS endpoint reachable? An unsigned ``OPTIONS /``: no API action, so the endpoint
    counts no call and no failure (a ``GET /`` is an unsigned RPC call, refused with HTTP 400).
    It proves DNS, TCP, TLS and an HTTP server; not the credentials, which only a signed call
    (the service's first send) checks. A 5xx answer is a failing endpoint."""
    try:
        status = httpx.request("OPTIONS", endpoint, timeout=5).status_code
    except httpx.HTTPError as exc:
        return "cams", False, f"{endpoint}: not reachable: {exc}"
    if status >= 500:
        return "cams", False, f"{endpoint} reachable but failing: HTTP {status} to OPTIONS /"
    return "cams", True, f"{endpoint} reachable (DNS, TCP, TLS, HTTP; no API call made: the credentials are checked by the first send)"


def check_connectivity(config: Config) -> int:
    """Try Kafka, Redis and the CAMS endpoint; one line each (URLs redacted); exit 1 if any is unreachable."""
    checks: list[tuple[str, bool, str]] = []
    if config.kafka_bootstrap_servers:
        try:
            brokers, partitions = cluster_summary(producer_config(config), config.request_topic)
            checks.append(("kafka", True, f"{brokers} brokers; {config.request_topic}: " + (f"{partitions} partitions" if partitions else "missing")))
            checks.append(check_line(config))
        except KafkaUnavailable as exc:
            checks.append(("kafka", False, f"{config.kafka_bootstrap_servers}: {exc}: is a broker listening there? (CHATAPP_KAFKA_BOOTSTRAP_SERVERS)"))
    else:
        checks.append(("kafka", False, "CHATAPP_KAFKA_BOOTSTRAP_SERVERS not set"))
    if config.redis_url:
        import redis

        try:
            redis.Redis.from_url(config.redis_url, socket_timeout=2, socket_connect_timeout=2).ping()
            checks.append(("redis", True, "PING ok"))
        except redis.RedisError as exc:
            checks.append(("redis", False, str(exc)))
    checks.append(cams_probe(config.cams_endpoint))
    for name, ok, detail in checks:
        print(f"{name:6} {'ok  ' if ok else 'FAIL'} {redact_text(detail)}")
    return 0 if all(ok for _, ok, _ in checks) else 1
