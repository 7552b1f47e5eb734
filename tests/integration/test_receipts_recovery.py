"""The SIGKILL gap, made to happen on purpose: a receiver that died after the broker acknowledged
a push's statuses and before Redis marked them done leaves claims that say nothing of it. Here
the dead receiver is played exactly: its claims written to Redis as a receiver writes them (with
the topic's end as its mark, claimed long ago), half of its statuses written to the topic. The
push CAMS repeats, taken by a real receiver, must publish only the other half."""

from __future__ import annotations

import time

import orjson
from confluent_kafka import Consumer, TopicPartition
from redis import Redis

from consumer.receipts.dedupe import RedisSeen, Seen
from consumer.receipts.encode import StatusEncoder
from consumer.receipts.parse import parse_push, status_record
from tests.fixtures.kafka import consume_all
from tests.fixtures.receipts import STATUS, cams_report, decode_status, post, receipts_env
from tests.fixtures.service import produce


def test_statuses_a_dead_receiver_published_before_marking_them_done_are_not_published_again(mock_cluster, private_redis, start_receiver) -> None:
    mock_cluster.create_topic(STATUS, 3)
    bootstrap = mock_cluster.bootstrap_servers
    before = [cams_report(f"old-{i}", f"86137{i:08d}", "Read", "t-old", 1_700_000_000_000) for i in range(30)]
    produce(bootstrap, [StatusEncoder("s").encode(status_record(r, None, 1)) for r in parse_push(orjson.dumps(before))[0]], topic=STATUS)
    reports = [cams_report(f"gap-{i}", f"86138{i:08d}", status, "t-gap", 1_700_000_000_000) for i in range(100) for status in ("Sent", "Delivered")]
    receipts, _ = parse_push(orjson.dumps(reports))
    # the dead receiver: claimed every report an hour ago (its mark: the topic's end then, 30
    # records in), published half of them, died before its done mark
    dead = RedisSeen(Redis.from_url(private_redis.url), 3600, 30, clock=lambda: time.time() - 3600)
    mark = ",".join(f"{p}:{n}" for p, n in enumerate(_ends(bootstrap)))
    assert dead.claim([r.seen_key for r in receipts], "dead-push", mark) == [Seen.NEW] * len(receipts)
    published = receipts[::2]
    produce(bootstrap, [StatusEncoder("s").encode(status_record(r, None, 2)) for r in published], topic=STATUS, keys=[b"k"] * len(published))
    dead.close()
    receiver = start_receiver(receipts_env(bootstrap, private_redis.url))
    receiver.wait_ready()
    assert post(receiver.url, reports) == 200, "CAMS's repeat of the push"
    assert post(receiver.url, reports) == 200, "and once more: all done now"
    records = [decode_status(m.value()) for m in consume_all(bootstrap, STATUS, 30 + 2 * len(published) + 1, timeout=10)]
    gap = [(r["message_id"], r["status"]) for r in records if r["message_id"].startswith("gap-")]
    assert sorted(gap) == sorted((r.message_id, r.status) for r in receipts), "each status once: the dead receiver's half not again, the rest published"
    assert receiver.metric("chatapp_receipts_recovered_total") == len(published)
    assert receiver.metric("chatapp_receipts_published_total") == len(receipts) - len(published)


def _ends(bootstrap: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ends"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(STATUS, p), timeout=10)[1] for p in range(3)]
    finally:
        consumer.close()
