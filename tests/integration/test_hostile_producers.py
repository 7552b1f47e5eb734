"""Hostile and careless producers against the service in its own process (mock broker over TCP,
local CAMS endpoint over HTTP): no record it writes crashes it, no destination stalls a commit."""

from __future__ import annotations

from chatapp_devkit.samples import phone, request_record

from consumer.codec import PlainAvroCodec
from tests.fixtures.service import DLQ, REQUESTS, RESULTS, committed, encode_samples, produce, service_env, wait_for

PARTITIONS = 4
PRODUCE = 0
TOPIC_AUTHORIZATION_FAILED = 29


def _end_offsets(cluster) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap_servers, "group.id": "end-offsets"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(REQUESTS, p), timeout=10)[1] for p in range(PARTITIONS)}
    finally:
        consumer.close()


def _commits_reach_the_end(cluster, timeout: float = 30) -> bool:
    ends = _end_offsets(cluster)

    def reached() -> bool:  # a partition nobody wrote to has no commit (-1001) and ends at 0
        return {p: max(0, o) for p, o in committed(cluster.bootstrap_servers, "chatapp-consumer", REQUESTS, PARTITIONS).items()} == ends

    return wait_for(reached, timeout, every=0.5)


def test_records_too_large_to_answer_as_they_are_never_crash_the_service(service_cluster, local_cams, start_service, topic_reader):
    """Each of these made every instance exit in turn (MSG_SIZE_TOO_LARGE raised out of the main loop)."""
    codec = PlainAvroCodec()
    key = [b"k"]
    huge_id = codec.encode_request(request_record("i" * 600_000, "welcome", "en", [phone(1)]))
    bad_phone = codec.encode_request(request_record("bad-phone", "welcome", "en", ["12"]))
    huge_account = codec.encode_request(request_record("huge-account", "welcome", "en", [phone(2)], account="a" * 300_000))
    produce(service_cluster.bootstrap_servers, encode_samples(50))
    produce(service_cluster.bootstrap_servers, [huge_id], keys=key)
    produce(service_cluster.bootstrap_servers, [bad_phone], headers=[("correlation-id", b"c" * 900_000)], keys=key)
    produce(service_cluster.bootstrap_servers, [b"\xff" * 999_950], keys=key)
    produce(service_cluster.bootstrap_servers, [huge_account], keys=key)
    produce(service_cluster.bootstrap_servers, encode_samples(50, start=50))
    service = start_service(service_env(service_cluster.bootstrap_servers, local_cams.url))
    results = topic_reader(service_cluster.bootstrap_servers, RESULTS)
    dlq = topic_reader(service_cluster.bootstrap_servers, DLQ)
    assert results.read_until(lambda r: len(r.messages) >= 103, timeout=60), service.log_tail()
    assert dlq.read_until(lambda r: len(r.messages) >= 1, timeout=10), service.log_tail()
    assert service.alive(), service.log_tail()
    by_id = {r["request_id"]: r for r in results.results()}
    assert {r for r, v in by_id.items() if v["status"] == "SENT"} == {f"req-{i}" for i in range(100)}
    assert by_id["i" * 256]["status"] == "REJECTED" and "request_id must be" in by_id["i" * 256]["message"]
    assert by_id["bad-phone"]["status"] == "REJECTED"
    assert dict(next(m for m in results.messages if m.key() == b"bad-phone").headers())["correlation-id"] == b"c" * 1024
    assert by_id["huge-account"]["status"] == "REJECTED" and len(by_id["huge-account"]["message"]) <= 2000
    letter = dlq.messages[0]
    headers = dict(letter.headers())
    assert headers["chatapp.dlq.truncated"] == b"999950" and 0 < len(letter.value()) < 999_950
    assert all(len(m.value()) < 1_000_000 for m in results.messages)
    assert _commits_reach_the_end(service_cluster), service.log_tail()
    assert service.stop() == 0


def test_reply_to_names_only_allowed_topics(service_cluster, local_cams, start_service, topic_reader):
    """Any producer could route results into any topic, and one the broker never acknowledged
    held the partition's commit back for good."""
    codec = PlainAvroCodec()
    hostile = ["__consumer_offsets", REQUESTS, DLQ, "bad name!", "other-team.events", "t" * 300]
    for i, topic in enumerate(hostile):
        produce(service_cluster.bootstrap_servers, [codec.encode_request(request_record(f"hostile-{i}", "welcome", "en", [phone(100 + i)]))],
                headers=[("reply-to", topic.encode())])  # fmt: skip
    produce(
        service_cluster.bootstrap_servers, [codec.encode_request(request_record("own", "welcome", "en", [phone(1)]))], headers=[("reply-to", RESULTS.encode())]
    )
    produce(service_cluster.bootstrap_servers, encode_samples(20, start=10))
    service = start_service(service_env(service_cluster.bootstrap_servers, local_cams.url))
    results = topic_reader(service_cluster.bootstrap_servers, RESULTS)
    assert results.read_until(lambda r: len(r.messages) >= len(hostile) + 21, timeout=60), service.log_tail()
    by_id = {r["request_id"]: r for r in results.results()}
    for i in range(len(hostile)):
        assert (by_id[f"hostile-{i}"]["status"], by_id[f"hostile-{i}"]["code"]) == ("REJECTED", "Chatapp.ReplyToNotAllowed"), hostile[i]
    assert by_id["own"]["status"] == "SENT"
    sent_to = {number for call in local_cams.calls() for number in call["to"]}
    assert not sent_to & {phone(100 + i) for i in range(len(hostile))}, "a rejected request was sent"
    assert _commits_reach_the_end(service_cluster), service.log_tail()
    assert service.stop() == 0


def test_a_failing_reply_to_topic_falls_back_and_the_commit_moves_on(service_cluster, local_cams, start_service, topic_reader):
    codec = PlainAvroCodec()
    service_cluster.create_topic("team-a.results", 1)
    produce(
        service_cluster.bootstrap_servers,
        [codec.encode_request(request_record("routed", "welcome", "en", [phone(2)]))],
        headers=[("reply-to", b"team-a.results")],
    )
    # the broker refuses the next produce requests, the service's first (as an ACL denying the topic
    # would): the team's result fails twice, then falls back to the reply topic
    service_cluster.push_request_errors(PRODUCE, [TOPIC_AUTHORIZATION_FAILED] * 2)
    service = start_service(service_env(service_cluster.bootstrap_servers, local_cams.url, reply_to_pattern=r"team-[a-z]\.results"))
    results = topic_reader(service_cluster.bootstrap_servers, RESULTS)
    team = topic_reader(service_cluster.bootstrap_servers, "team-a.results")
    assert results.read_until(lambda r: len(r.messages) >= 1, timeout=30), service.log_tail()
    routed = results.results()[0]
    assert (routed["request_id"], routed["status"], routed["code"]) == ("routed", "SENT", "Chatapp.ReplyToFailed") and "its code was OK" in routed["message"]
    assert "delivery to team-a.results failed" in service.log_path.read_text()
    # an allowed, working reply-to gets its result
    produce(
        service_cluster.bootstrap_servers,
        [codec.encode_request(request_record("routed-ok", "welcome", "en", [phone(3)]))],
        headers=[("reply-to", b"team-a.results")],
    )
    assert team.read_until(lambda r: len(r.messages) >= 1, timeout=30), service.log_tail()
    assert [x["request_id"] for x in team.results()] == ["routed-ok"]
    assert [x["request_id"] for x in results.results()] == ["routed"]
    assert _commits_reach_the_end(service_cluster), service.log_tail()
    assert wait_for(lambda: service.metric("chatapp_committed_lag") == 0, 15)
    assert service.stop() == 0
