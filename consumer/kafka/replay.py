"""``replay-dlq``: copy dead-lettered messages back to the request topic after a fix."""

from __future__ import annotations

import sys
import time
from typing import cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from ..config import Config
from .client import Consumed, consumer_config, producer_config
from .clientlog import logged
from .records import DLQ_HEADER_PREFIX


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
    consumer = Consumer(logged({**consumer_config(config), "group.id": f"{config.group_id}.dlq-replay"}))
    producer = Producer(logged(producer_config(config)))
    try:
        try:
            metadata = consumer.list_topics(config.dlq_topic, timeout=10).topics.get(config.dlq_topic)
        except KafkaException as exc:
            print(f"replay: Kafka at {config.kafka_bootstrap_servers} did not answer ({exc.args[0].str()}): is a broker listening there?", file=sys.stderr)
            return 1
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
            # the stub types a consumed message loosely (see Consumed)
            batch = cast("list[Consumed]", consumer.consume(min(500, limit - replayed) if limit else 500, 0.5))
            messages = [m for m in batch if m.error() is None and m.offset() < ends[m.partition()]]
            for m in batch:
                if m.error() is None and m.offset() >= ends[m.partition()] - 1:
                    todo.discard(m.partition())
            if not messages:
                continue
            last_seen = time.monotonic()
            for message in messages:
                headers = message.headers() or []
                meta = {k[len(DLQ_HEADER_PREFIX) :]: (v or b"").decode("utf-8", "replace") for k, v in headers if k.startswith(DLQ_HEADER_PREFIX)}
                reasons[meta.get("reason", "?")] = reasons.get(meta.get("reason", "?"), 0) + 1
                if "truncated" in meta or "dropped" in meta:
                    skipped += 1
                    print(
                        f"replay: skipped {message.topic()}[{message.partition()}]@{message.offset()}: the copy is incomplete; "
                        f"the original is {meta.get('topic', '?')}[{meta.get('partition', '?')}]@{meta.get('offset', '?')}",
                        file=sys.stderr,
                    )
                elif not dry_run:
                    original: list[tuple[str, str | bytes | None]] = [(k, v) for k, v in headers if not k.startswith(DLQ_HEADER_PREFIX)]
                    original.append(("chatapp.replayed-from", f"{message.topic()}:{message.partition()}:{message.offset()}".encode()))
                    producer.produce(target, message.value(), message.key(), headers=original)
            replayed += len(messages)
            if not dry_run:
                if producer.flush(30) != 0:
                    print("replay: the broker did not acknowledge every copy; nothing committed", file=sys.stderr)
                    return 1
                positions = {(m.topic(), m.partition()): m.offset() + 1 for m in messages}
                consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()], asynchronous=False)
    finally:
        consumer.close()
    print(
        f"{'would replay' if dry_run else 'replayed'} {replayed - skipped} messages from {config.dlq_topic} to {target}: {reasons}"
        + (f"; {skipped} incomplete copies skipped" if skipped else "")
    )
    return 0
