"""Exactly-once mode against the mock broker, as far as it can show it (a real broker for the
rest: docs/delivery-guarantees.md). The mock runs the transactional producer's protocol (init,
produce in a transaction, send offsets, commit, abort) but, measured here, applies no
transactional offset commit, hides no aborted record from read_committed readers and fences no
older producer: so the suite checks that the service runs its transactions end to end and
answers every request once, and pins those three limits, so that a mock that learns them shows."""

from __future__ import annotations

import collections
import signal
import time
import uuid

import pytest
from chatapp_devkit.mockcluster import MockCluster
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from tests.fixtures.service import RESULTS, encode_samples, produce, service_env

FAST = {"fetch.wait.max.ms": 10, "enable.auto.commit": False}


def test_exactly_once_mode_answers_every_request_once_and_sends_no_recipient_twice(service_cluster, local_cams, start_service, topic_reader):
    total = 3_000
    produce(service_cluster.bootstrap_servers, encode_samples(total))
    service = start_service(_exactly_once_env(service_cluster, local_cams))
    results = topic_reader(service_cluster.bootstrap_servers, RESULTS)  # read_committed, librdkafka's default
    wanted = {f"req-{i}" for i in range(total)}
    assert results.read_until(lambda r: {x["request_id"] for x in r.results()} >= wanted, timeout=120), service.log_tail()
    results.poll(1.0)  # anything repeated behind the last
    counts = collections.Counter(r["request_id"] for r in results.results())
    assert set(counts) == wanted and max(counts.values()) == 1
    assert local_cams.stats()["duplicate_recipients_accepted"] == 0
    assert service.stop(signal.SIGTERM, timeout=60) == 0, service.log_tail()
    assert "transactional.id chatapp-consumer.eos-test-0" in service.log_path.read_text()


PRODUCE, END_TXN, TXN_OFFSET_COMMIT = 0, 26, 28
PRODUCER_FENCED, ILLEGAL_GENERATION, INVALID_PRODUCER_EPOCH = 90, 22, 47


def _exactly_once_env(cluster, cams, **settings) -> dict[str, str]:
    return service_env(cluster.bootstrap_servers, cams.url, processing_guarantee="exactly-once", instance_id="eos-test-0", batch_max_recipients=100,
                       **settings)  # fmt: skip


def test_an_aborted_transaction_is_read_again_and_answered_from_the_ledger_without_a_second_send(service_cluster, local_cams, start_service, topic_reader):
    """The broker refuses a transaction's offsets (an abortable error): its records are
    discarded, every partition is read again, and what was sent is answered from the ledger."""
    total = 2_000
    service = start_service(_exactly_once_env(service_cluster, local_cams))
    service.wait_ready(60)
    service_cluster.push_request_errors(TXN_OFFSET_COMMIT, [ILLEGAL_GENERATION, ILLEGAL_GENERATION])
    produce(service_cluster.bootstrap_servers, encode_samples(total))
    results = topic_reader(service_cluster.bootstrap_servers, RESULTS)
    wanted = {f"req-{i}" for i in range(total)}
    assert results.read_until(lambda r: {x["request_id"] for x in r.results()} >= wanted, timeout=120), service.log_tail()
    assert local_cams.stats()["duplicate_recipients_accepted"] == 0  # read again, not sent again
    assert local_cams.stats()["recipients_accepted"] == total
    assert service.stop(signal.SIGTERM, timeout=60) == 0, service.log_tail()


@pytest.mark.parametrize(("api", "error"), [(END_TXN, PRODUCER_FENCED), (PRODUCE, INVALID_PRODUCER_EPOCH)], ids=["on-commit", "on-produce"])
def test_a_fenced_instance_exits_3_and_its_restart_answers_everything(service_cluster, local_cams, shared_redis, start_service, topic_reader, api, error):
    """Fenced (at its commit, or as a real broker answers a fenced producer's records: librdkafka
    raises that from the producer's poll): it commits nothing more and exits 3; restarted under
    its instance id, it reads everything again and answers what was sent from the shared ledger
    (the mock applies no transactional offset, so nothing was committed)."""
    total = 2_000
    # the first instance's in-flight marks are stale (its calls' fate unknown) this long after it died
    env = _exactly_once_env(service_cluster, local_cams, redis_url=shared_redis, inflight_stale_s=6)
    first = start_service(env)
    first.wait_ready(60)
    produce(service_cluster.bootstrap_servers, encode_samples(total))
    service_cluster.push_request_errors(api, [error])  # after our own producer's requests: the next is the service's
    assert first.process.wait(60) == 3, first.log_tail()
    second = start_service(env)  # the same instance id: the orchestrator's restart
    results = topic_reader(service_cluster.bootstrap_servers, RESULTS)
    wanted = {f"req-{i}" for i in range(total)}
    assert results.read_until(lambda r: {x["request_id"] for x in r.results()} >= wanted, timeout=180), second.log_tail()
    assert local_cams.stats()["duplicate_recipients_accepted"] == 0
    assert second.stop(signal.SIGTERM, timeout=60) == 0, second.log_tail()


def _read(bootstrap: str, topic: str, partitions: int, isolation: str, expected: int, timeout: float = 10.0) -> list[bytes]:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex}", "isolation.level": isolation, **FAST})
    try:
        reader.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            got += [m.value() for m in reader.consume(100, 0.2) if m.error() is None]
        return got
    finally:
        reader.close()


def test_what_the_mock_broker_does_with_transactions(mock_cluster: MockCluster) -> None:
    bootstrap = mock_cluster.bootstrap_servers
    mock_cluster.create_topic("src", 1)
    mock_cluster.create_topic("out", 1)
    group = f"g-{uuid.uuid4().hex}"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, **FAST})
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": group, "transaction.timeout.ms": 10_000})
    try:
        producer.init_transactions(10)
        producer.begin_transaction()
        producer.produce("out", b"committed")
        producer.send_offsets_to_transaction([TopicPartition("src", 0, 5, metadata="v1:x")], consumer.consumer_group_metadata(), 10)
        producer.commit_transaction(10)
        producer.begin_transaction()
        producer.produce("out", b"aborted")
        assert producer.flush(10) == 0
        producer.abort_transaction(10)
        # accepted, but not applied: the group has no committed offset
        assert [tp.offset for tp in consumer.committed([TopicPartition("src", 0)], timeout=10)] == [-1001]
        # a read_committed reader sees the aborted record too
        assert sorted(_read(bootstrap, "out", 1, "read_committed", 2)) == [b"aborted", b"committed"]
        # a second producer with the same id does not fence the first
        producer.begin_transaction()
        producer.produce("out", b"zombie")
        successor = Producer({"bootstrap.servers": bootstrap, "transactional.id": group})
        successor.init_transactions(10)
        try:
            producer.commit_transaction(10)
            fenced = False
        except KafkaException:
            fenced = True
        assert not fenced
    finally:
        consumer.close()
