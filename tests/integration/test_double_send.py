"""One request, one send, across instances: the same ``request_id`` read by two service
processes at once (two partitions, shared Redis) is sent once and answered alike everywhere;
the same id with other content is rejected, never answered with the first request's result."""

from __future__ import annotations

import collections

from chatapp_devkit.samples import phone, request_record
from confluent_kafka import Producer

from consumer.codec import PlainAvroCodec
from tests.fixtures.service import REQUESTS, RESULTS, produce, service_env, wait_for

PARTITIONS = 4
IDS = 20


def produce_to_every_partition(bootstrap: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for value in values:
        for partition in range(PARTITIONS):
            producer.produce(REQUESTS, value, key=b"k", partition=partition)
    assert producer.flush(30) == 0


def test_the_same_request_on_two_instances_is_sent_once(service_cluster, local_cams, shared_redis, start_service, topic_reader):
    bootstrap = service_cluster.bootstrap_servers
    local_cams.set_faults(rate_limit=0, latency_ms=400)  # the first call is still on its way when the other instance reads its copy
    env = service_env(bootstrap, local_cams.url, redis_url=shared_redis, batch_linger_ms=50)
    service_cluster.set_initial_rebalance_delay(2000)  # both join the group's first generation together
    services = [start_service(env) for _ in range(2)]
    for s in services:
        s.wait_ready(timeout=45)
    assert wait_for(
        lambda: (
            all(s.metric("chatapp_assigned_partitions") > 0 for s in services) and sum(s.metric("chatapp_assigned_partitions") for s in services) == PARTITIONS
        ),
        timeout=60,
    ), services[0].log_tail()
    codec = PlainAvroCodec()
    produce_to_every_partition(bootstrap, [codec.encode_request(request_record(f"dup-{i}", "welcome", "en", [phone(i)])) for i in range(IDS)])
    results = topic_reader(bootstrap, RESULTS)
    assert results.read_until(lambda r: len(r.messages) >= IDS * PARTITIONS, timeout=90), services[0].log_tail() + services[1].log_tail()
    by_id = collections.defaultdict(set)
    for r in results.results():
        by_id[r["request_id"]].add((r["status"], r["group_message_id"]))
    assert all(len(answers) == 1 and next(iter(answers))[0] == "SENT" for answers in by_id.values()), by_id
    stats = local_cams.stats()
    assert stats["duplicate_recipients_accepted"] == 0, "a number was received twice"
    assert stats["recipients_accepted"] == IDS
    assert all(s.metric("chatapp_api_calls_total") < IDS * PARTITIONS for s in services)
    for s in services:
        assert s.stop() == 0


def test_a_reused_request_id_is_rejected_not_answered_with_the_first_result(service_cluster, local_cams, shared_redis, start_service, topic_reader):
    bootstrap = service_cluster.bootstrap_servers
    codec = PlainAvroCodec()
    service = start_service(service_env(bootstrap, local_cams.url, redis_url=shared_redis))
    results = topic_reader(bootstrap, RESULTS)
    produce(bootstrap, [codec.encode_request(request_record("shared-id", "welcome", "en", [phone(1)]))])
    assert results.read_until(lambda r: len(r.messages) >= 1, timeout=60), service.log_tail()
    produce(
        bootstrap,
        [
            codec.encode_request(request_record("shared-id", "welcome", "en", [phone(2), phone(3)])),  # other content
            codec.encode_request(request_record("shared-id", "welcome", "en", [phone(1)])),
        ],
    )  # a copy
    assert results.read_until(lambda r: len(r.messages) >= 3, timeout=60), service.log_tail()
    answers = results.results()
    [reused] = [r for r in answers if r["status"] != "SENT"]
    first, copy = [r for r in answers if r["status"] == "SENT"]
    assert copy == first, "the copy is answered with the first one's result"
    assert (reused["status"], reused["code"], reused["recipients"], reused["group_message_id"]) == ("REJECTED", "Chatapp.RequestIdReused", 2, None)
    sent = {n for call in local_cams.calls() if call["code"] == "OK" for n in call["to"]}
    assert sent == {phone(1)}, "the reused id's numbers were never sent"
    assert service.metric("chatapp_duplicates_total", kind="reused") == 1
    assert service.stop() == 0
