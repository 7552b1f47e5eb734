"""More than 50 kinds of hostile and careless messages among normal traffic, one and two
instances sharing Redis (services in their own processes, the mock broker over TCP, the local
CAMS endpoint over HTTP): no instance exits, every good request is sent once, every hostile one
has its result or its dead letter, and the committed offsets reach the end of every partition."""

from __future__ import annotations

import collections
import random

import pytest
from chatapp_devkit.samples import phone, sample_records
from confluent_kafka import Consumer, Producer, TopicPartition

from consumer.codec import PlainAvroCodec
from tests.fixtures.hostile import DLQ, REQUESTS, RESULTS, hostile_messages
from tests.fixtures.service import committed, service_env, wait_for

PARTITIONS = 6
GOOD = 3000


def _produce_in_order(bootstrap: str, messages: list[tuple[bytes | None, list | None, bytes | None]]) -> list[tuple[int, int]]:
    """Produce each (value, headers, key); returns each one's (partition, offset)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    positions: list[tuple[int, int] | None] = [None] * len(messages)

    def delivered(index: int):
        def report(err, msg) -> None:
            assert err is None, err
            positions[index] = (msg.partition(), msg.offset())

        return report

    for index, (value, headers, key) in enumerate(messages):
        producer.produce(REQUESTS, value, key if key is not None else str(index).encode(), headers=headers, on_delivery=delivered(index))
        producer.poll(0)
    assert producer.flush(60) == 0
    assert all(p is not None for p in positions)
    return positions  # type: ignore[return-value]


def _end_offsets(bootstrap: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "end-offsets"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(REQUESTS, p), timeout=10)[1] for p in range(PARTITIONS)}
    finally:
        consumer.close()


@pytest.mark.parametrize("instances", [1, 2])
def test_hostile_and_careless_messages_among_normal_traffic(instances, service_cluster, local_cams, shared_redis, start_service, topic_reader):
    hostile = hostile_messages()
    assert len({h.kind for h in hostile}) >= 50
    codec = PlainAvroCodec()
    good = [(codec.encode_request(r), None, None) for r in sample_records(GOOD)]
    mixed = good + [(h.value, h.headers, h.key) for h in hostile]
    order = list(range(len(mixed)))
    random.Random(instances).shuffle(order)
    positions = _produce_in_order(service_cluster.bootstrap_servers, [mixed[i] for i in order])
    position_of = {index: positions[at] for at, index in enumerate(order)}

    env = service_env(service_cluster.bootstrap_servers, local_cams.url, redis_url=shared_redis, session_timeout_ms=3000)
    services = [start_service(env) for _ in range(instances)]
    results = topic_reader(service_cluster.bootstrap_servers, RESULTS)
    dlq = topic_reader(service_cluster.bootstrap_servers, DLQ)
    expected_ids = {f"req-{i}" for i in range(GOOD)} | {h.request_id for h in hostile if h.status is not None}
    expected_letters = sum(1 for h in hostile if h.status is None)

    def answered() -> bool:  # by distinct ids: a rebalance may repeat results before every request has one
        results.poll()
        dlq.poll()
        return {r["request_id"] for r in results.results()} >= expected_ids and len(dlq.messages) >= expected_letters

    done = wait_for(answered, timeout=120, every=0.5)
    tails = "\n".join(s.log_tail(20) for s in services)
    missing = expected_ids - {r["request_id"] for r in results.results()}
    assert done, f"{len(missing)} requests without a result (e.g. {sorted(missing)[:5]}), {len(dlq.messages)} of {expected_letters} dead letters\n{tails}"
    assert all(s.alive() for s in services), tails

    statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in results.results():
        statuses[r["request_id"]][r["status"]] += 1
    # every good request: SENT (a rebalance may repeat a result, never change it)
    not_sent = {f"req-{i}": dict(statuses[f"req-{i}"]) for i in range(GOOD) if set(statuses[f"req-{i}"]) != {"SENT"}}
    assert not not_sent, list(not_sent.items())[:5]
    # every hostile request: the result it must get, once for each time it was produced
    wanted: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for h in hostile:
        if h.status is not None:
            wanted[h.request_id][h.status] += 1
    for request_id, counts in wanted.items():
        assert set(statuses[request_id]) == set(counts), (request_id[:40], statuses[request_id])
        # an id used for two contents: whichever is read first is sent, the other REJECTED (either way round)
        assert len(counts) > 1 or statuses[request_id][next(iter(counts))] >= sum(counts.values()), (request_id[:40], statuses[request_id])
    # every message that cannot be read: a dead letter naming its position
    lettered = {(int(dict(m.headers())["chatapp.dlq.partition"]), int(dict(m.headers())["chatapp.dlq.offset"])) for m in dlq.messages}
    for index, h in enumerate(hostile, start=GOOD):
        if h.status is None:
            assert position_of[index] in lettered, h.kind

    # the endpoint: each good number once, nothing of a refused request
    calls = [c for c in local_cams.calls() if c["code"] == "OK"]
    received = collections.Counter(n.lstrip("+") for c in calls for n in c["to"])
    wrong = {i: received[phone(i)] for i in range(GOOD) if received[phone(i)] != 1}
    assert not wrong, f"good requests not sent exactly once (index: times): {list(wrong.items())[:10]}"
    assert max(received.values()) == 1, [n for n, c in received.items() if c > 1][:5]
    assert sum(received.values()) == GOOD + len({h.request_id for h in hostile if h.status == "SENT"})  # and the careless ones that are fine
    assert wait_for(lambda: {p: max(0, o) for p, o in committed(service_cluster.bootstrap_servers, "chatapp-consumer", REQUESTS, PARTITIONS).items()}
                    == _end_offsets(service_cluster.bootstrap_servers), 30, every=0.5), tails  # fmt: skip
    for service in services:
        assert service.stop() == 0
