"""Operators' tools behind the CLI: produce requests, check configuration, replay the DLQ."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from .codec import build_codec
from .config import Config
from .kafka_io import consumer_config, produce_waiting, producer_config
from .redact import redact_text
from .reply import DLQ_HEADER_PREFIX
from .samples import sample_records


class BadRecord(Exception):
    """A line of the input that is not a SendRequest record."""


def _records_from(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, record) for each non-blank line; ``where`` is ``path:line``."""
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        for number, line in enumerate(stream, 1):
            if line.strip():
                try:
                    yield f"{path}:{number}", json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BadRecord(f"{path}:{number}: not JSON: {exc}") from exc


def _progress(done: int, total: int | None, started: float) -> None:
    rate = done / max(time.monotonic() - started, 1e-6)
    if total:
        filled = int(30 * done / total)
        print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done:,}/{total:,} ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
    else:
        print(f"\r{done:,} produced ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)


def produce(config: Config, path: str | None, samples: int | None, bootstrap: str | None) -> int:
    servers = bootstrap or config.kafka_bootstrap_servers
    if not servers:
        print("config error: CHATAPP_KAFKA_BOOTSTRAP_SERVERS (or --bootstrap-servers): not set", file=sys.stderr)
        return 2
    codec = build_codec(config.schema_registry_url, config.request_topic, config.reply_topic)
    producer = Producer({**producer_config(config), "bootstrap.servers": servers})
    records: Iterable[tuple[str, dict[str, Any]]] = (
        ((f"sample {i}", r) for i, r in enumerate(sample_records(samples))) if samples is not None else _records_from(path or "-")
    )
    started, done, failed = time.monotonic(), 0, []

    def delivered(err, msg) -> None:
        if err is not None:
            failed.append(err)

    try:
        for where, record in records:
            try:
                value = codec.encode_request(record)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise BadRecord(f"{where}: does not match schemas/send_request.avsc: {exc}") from exc
            produce_waiting(producer, config.request_topic, value, key=str(record.get("request_id", "")).encode(), on_delivery=delivered)
            done += 1
            if done % 1000 == 0:
                producer.poll(0)
                _progress(done, samples, started)
    except BadRecord as exc:
        left = producer.flush(60)
        print(f"\n{exc}\n{done - left - len(failed)} records before it were delivered; nothing after it was produced", file=sys.stderr)
        return 1
    left = producer.flush(60)
    _progress(done, samples, started)
    print(file=sys.stderr)
    if left or failed:
        print(f"{left + len(failed)} of {done} messages were not delivered: {failed[:1]}", file=sys.stderr)
        return 1
    return 0


def check_connectivity(config: Config) -> int:
    """Try Kafka, Redis and the CAMS endpoint; one line each (URLs redacted); exit 1 if any is unreachable."""
    checks: list[tuple[str, bool, str]] = []
    if config.kafka_bootstrap_servers:
        try:
            metadata = Producer(producer_config(config)).list_topics(timeout=5)
            topic = metadata.topics.get(config.request_topic)
            detail = f"{len(metadata.brokers)} brokers; {config.request_topic}: " + (f"{len(topic.partitions)} partitions" if topic else "missing")
            checks.append(("kafka", True, detail))
        except KafkaException as exc:
            checks.append(("kafka", False, str(exc)))
    else:
        checks.append(("kafka", False, "CHATAPP_KAFKA_BOOTSTRAP_SERVERS not set"))
    if config.redis_url:
        import redis

        try:
            redis.Redis.from_url(config.redis_url, socket_timeout=2, socket_connect_timeout=2).ping()
            checks.append(("redis", True, "PING ok"))
        except redis.RedisError as exc:
            checks.append(("redis", False, str(exc)))
    try:
        status = httpx.get(config.cams_endpoint, timeout=5).status_code
        checks.append(("cams", True, f"{config.cams_endpoint} answered HTTP {status}"))
    except httpx.HTTPError as exc:
        checks.append(("cams", False, f"{config.cams_endpoint}: {exc}"))
    for name, ok, detail in checks:
        print(f"{name:6} {'ok  ' if ok else 'FAIL'} {redact_text(detail)}")
    return 0 if all(ok for _, ok, _ in checks) else 1


def replay_dlq(config: Config, limit: int | None, dry_run: bool, idle_timeout: float, to_topic: str | None = None) -> int:
    """Copy dead-lettered messages (original value, key and headers) to the request topic, or to
    ``to_topic`` when the operator names one (never to the topic a dead letter's own headers name:
    a producer could have set them). A copy the service cut (``chatapp.dlq.truncated``) or
    dropped (``chatapp.dlq.dropped``) is skipped and counted: its original is still at the
    source position the headers give.

    Replays what the DLQ holds when it starts (messages dead-lettered again meanwhile wait for
    the next replay, so a still-broken message cannot loop). Reads as group
    ``<group_id>.dlq-replay``, whose offsets are committed only after the copies are
    acknowledged: an interrupted replay resumes where it stopped.
    """
    if not config.kafka_bootstrap_servers:
        print("config error: CHATAPP_KAFKA_BOOTSTRAP_SERVERS: not set", file=sys.stderr)
        return 2
    target = to_topic or config.request_topic
    consumer = Consumer({**consumer_config(config), "group.id": f"{config.group_id}.dlq-replay"})
    producer = Producer(producer_config(config))
    try:
        metadata = consumer.list_topics(config.dlq_topic, timeout=10).topics.get(config.dlq_topic)
        if metadata is None or metadata.error is not None:
            print(f"replay: topic {config.dlq_topic} not found", file=sys.stderr)
            return 1
        partitions = [TopicPartition(config.dlq_topic, p) for p in metadata.partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
        starts = consumer.committed(partitions, timeout=10)
        todo = {tp.partition for tp in starts if (tp.offset if tp.offset >= 0 else 0) < ends[tp.partition]}
        consumer.assign([tp if tp.offset >= 0 else TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in starts])
        replayed, last_seen = 0, time.monotonic()
        reasons: dict[str, int] = {}
        skipped = 0
        while todo and (limit is None or replayed < limit) and time.monotonic() - last_seen < idle_timeout:
            batch = consumer.consume(min(500, limit - replayed) if limit else 500, 0.5)
            messages = [m for m in batch if m.error() is None and m.offset() < ends[m.partition()]]
            for m in batch:
                if m.error() is None and m.offset() >= ends[m.partition()] - 1:
                    todo.discard(m.partition())
            if not messages:
                continue
            last_seen = time.monotonic()
            for message in messages:
                headers = message.headers() or []
                meta = {k[len(DLQ_HEADER_PREFIX):]: v.decode("utf-8", "replace") for k, v in headers if k.startswith(DLQ_HEADER_PREFIX)}
                reasons[meta.get("reason", "?")] = reasons.get(meta.get("reason", "?"), 0) + 1
                if "truncated" in meta or "dropped" in meta:
                    skipped += 1
                    print(f"replay: skipped {message.topic()}[{message.partition()}]@{message.offset()}: the copy is incomplete; "
                          f"the original is {meta.get('topic', '?')}[{meta.get('partition', '?')}]@{meta.get('offset', '?')}", file=sys.stderr)
                elif not dry_run:
                    original = [(k, v) for k, v in headers if not k.startswith(DLQ_HEADER_PREFIX)]
                    origin = f"{message.topic()}:{message.partition()}:{message.offset()}".encode()
                    producer.produce(target, message.value(), message.key(), headers=original + [("chatapp.replayed-from", origin)])
            replayed += len(messages)
            if not dry_run:
                if producer.flush(30) != 0:
                    print("replay: the broker did not acknowledge every copy; nothing committed", file=sys.stderr)
                    return 1
                positions = {(m.topic(), m.partition()): m.offset() + 1 for m in messages}
                consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()], asynchronous=False)
    finally:
        consumer.close()
    print(f"{'would replay' if dry_run else 'replayed'} {replayed - skipped} messages from {config.dlq_topic} to {target}: {reasons}"
          + (f"; {skipped} incomplete copies skipped" if skipped else ""))
    return 0
