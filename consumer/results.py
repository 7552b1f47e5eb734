"""``chatapp-consumer results``: what the service wrote, as an operator watches it.

Follows the reply topic (or, with ``--dlq``, the dead-letter topic) from now or from the
beginning, decodes each record with the service's own codec (plain Avro or the Schema
Registry's wire format, as configured), and prints one JSON line per record (``--table``:
aligned columns) on stdout; ``--request-id`` and ``--status`` filter. It stops after ``--max``
records, after ``--timeout`` seconds without one, or on Ctrl-C/SIGTERM, and then prints the
counts by status (by reason for dead letters) on stderr. The rows are pure functions of a record.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

from .codec import Codec, DecodeError, build_codec
from .config import Config
from .kafka import Record, consumer_config
from .kafka.follow import TopicFollower, TopicMissing
from .kafka.records import DLQ_HEADER_PREFIX
from .kafka.tools import KafkaUnavailable
from .models import Status

STATUSES = frozenset(status.value for status in Status)
TABLE = (("completed_at", 13), ("request_id", 24), ("status", 14), ("code", 26), ("recipients", 11), ("message", 0))
"""The ``--table`` columns and their widths (0: the rest of the line); a time shows as HH:MM:SS.mmm (UTC)."""
DLQ_TABLE = (("dead_lettered_at", 17), ("request_id", 24), ("status", 14), ("source", 34), ("bytes", 8), ("error", 0))


def result_row(record: Record, codec: Codec) -> dict[str, Any]:
    """A reply-topic record as printed: the SendResult's fields and where it was read."""
    try:
        row: dict[str, Any] = codec.decode_result(record.value or b"")
    except DecodeError as exc:
        row = {"request_id": _text(record.key), "status": "UNDECODABLE", "message": str(exc)}
    if isinstance(row.get("completed_at"), datetime):
        row["completed_at"] = row["completed_at"].isoformat(timespec="milliseconds")
    return {**row, "partition": record.partition, "offset": record.offset}


def dead_letter_row(record: Record) -> dict[str, Any]:
    """A dead letter as printed: its reason (as ``status``), error and source position."""
    meta = {name[len(DLQ_HEADER_PREFIX) :]: _text(value) for name, value in record.headers or () if name.startswith(DLQ_HEADER_PREFIX)}
    return {
        "request_id": _text(record.key),
        "status": meta.get("reason", "?"),
        "error": meta.get("error"),
        "source": f"{meta.get('topic', '?')}[{meta.get('partition', '?')}]@{meta.get('offset', '?')}",
        "dead_lettered_at": meta.get("timestamp"),
        "bytes": len(record.value or b""),
        "partition": record.partition,
        "offset": record.offset,
    }


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def wanted(row: dict[str, Any], request_id: str | None, statuses: set[str]) -> bool:
    return (request_id is None or row.get("request_id") == request_id) and (not statuses or str(row.get("status")) in statuses)


def table_line(row: dict[str, Any], columns: tuple[tuple[str, int], ...]) -> str:
    cells = []
    for name, width in columns:
        text = "" if row.get(name) is None else str(row[name])
        if name.endswith("_at") and len(text) > 23:  # an ISO time
            text = text[11:23]
        cells.append(text if not width else (text if len(text) < width else text[: width - 2] + "…").ljust(width))
    return " ".join(cells).rstrip()


def summary(counts: Counter[str], topic: str) -> str:
    by_status = ", ".join(f"{status} {count}" for status, count in sorted(counts.items())) or "none"
    return f"results: {sum(counts.values())} records from {topic} ({by_status})"


class _Stop:
    """Set by SIGINT or SIGTERM: the loop ends at its next turn and the summary is printed."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, *_: object) -> None:
        self.requested = True


def follow_results(config: Config, dlq: bool, from_beginning: bool, request_id: str | None, statuses: set[str], table: bool,
                   limit: int | None, idle_timeout_s: float | None, out: TextIO = sys.stdout) -> int:  # fmt: skip
    """The command (see the module); 1 when Kafka does not answer or the topic is missing."""
    topic = config.dlq_topic if dlq else config.reply_topic
    servers = config.kafka_bootstrap_servers
    try:
        follower = TopicFollower(consumer_config(config), topic, from_beginning)
    except KafkaUnavailable as exc:
        print(f"results: Kafka at {servers} did not answer ({exc}): is the broker running there? (CHATAPP_KAFKA_BOOTSTRAP_SERVERS)", file=sys.stderr)
        return 1
    except TopicMissing:
        print(
            f"results: topic {topic} does not exist at {servers}: create it (README, Topics to create) or set {'CHATAPP_DLQ_TOPIC' if dlq else 'CHATAPP_REPLY_TOPIC'}",
            file=sys.stderr,
        )
        return 1
    codec = build_codec(config.schema_registry_url, config.request_topic, config.reply_topic)
    row_of: Callable[[Record], dict[str, Any]] = dead_letter_row if dlq else (lambda record: result_row(record, codec))
    columns = DLQ_TABLE if dlq else TABLE
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    counts: Counter[str] = Counter()
    last_seen = time.monotonic()
    try:
        if table:
            print(table_line({name: name for name, _ in columns}, columns), file=out, flush=True)
        while not stop.requested and (limit is None or sum(counts.values()) < limit):
            records = follower.poll(0.5)
            if not records:
                if idle_timeout_s is not None and time.monotonic() - last_seen >= idle_timeout_s:
                    break
                continue
            last_seen = time.monotonic()
            for record in records:
                row = row_of(record)
                if not wanted(row, request_id, statuses):
                    continue
                counts[str(row.get("status"))] += 1
                print(table_line(row, columns) if table else json.dumps(row, ensure_ascii=False, default=str), file=out, flush=True)
                if limit is not None and sum(counts.values()) >= limit:
                    break
    except BrokenPipeError:  # the reader of stdout is gone (``| head``): stop as on Ctrl-C
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())  # the interpreter's last flush goes nowhere
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        follower.close()
        print(summary(counts, topic), file=sys.stderr)
    return 0
