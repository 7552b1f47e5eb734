"""The service end to end, in its own process, against the mock broker over TCP and the local
CAMS endpoint over HTTP."""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

import pytest
from chatapp_devkit.samples import LANGUAGES, TEMPLATES, phone, request_record

from consumer.codec import PlainAvroCodec
from tests.fixtures.calls import assert_kept_to_the_rate
from tests.fixtures.service import (
    DLQ,
    REQUESTS,
    RESULTS,
    committed,
    encode_samples,
    produce,
    service_env,
)

PARTITIONS = 8


def _result_ids(reader) -> collections.Counter:
    return collections.Counter(r["request_id"] for r in reader.results())


def _nice(pid: int, thread: str) -> int:
    """A thread's niceness, from /proc (field 19 of its stat, counted after the command's parenthesis)."""
    stat = Path(f"/proc/{pid}/task/{thread}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


def test_twenty_thousand_requests_become_full_batches(service_cluster, local_cams, start_service, topic_reader):
    total = 20_000
    produce(service_cluster.bootstrap_servers, encode_samples(total))
    service = start_service(service_env(service_cluster.bootstrap_servers, local_cams.url))
    reader = topic_reader(service_cluster.bootstrap_servers, RESULTS)
    assert reader.read_until(lambda r: len(r.messages) >= total, timeout=90), f"{len(reader.messages)} results:\n{service.log_tail()}"
    # the main loop (its thread id is the process id) gave way to the sender threads by intake_nice
    niceness = {int(task.name): _nice(service.process.pid, task.name) for task in Path(f"/proc/{service.process.pid}/task").iterdir()}
    assert niceness.pop(service.process.pid) == 10 and set(niceness.values()) == {0}, niceness
    reader.read_until(lambda r: False, timeout=0.5)  # the scenario: time for a repeated result to show up, if any
    results = reader.results()
    assert len(results) == total, "exactly one result per request"
    assert collections.Counter(r["status"] for r in results) == {"SENT": total}
    assert set(_result_ids(reader)) == {f"req-{i}" for i in range(total)}

    calls = [c for c in local_cams.calls() if c["code"] == "OK"]
    sizes = [c["recipients"] for c in calls]
    assert sum(sizes) == total and max(sizes) <= 1000
    keys = len(TEMPLATES) * len(LANGUAGES)
    # full batches are full: beyond one partial call per key (the first linger), every call carries 1,000
    assert sum(1 for s in sizes if s < 1000) <= keys, sizes
    # batching keys never mix: every number in a call belongs to the call's template and language
    pairs = [(t, lang) for t in TEMPLATES for lang in LANGUAGES]
    for call in calls:
        for number in call["to"]:
            template, language = pairs[int(number[5:]) % len(pairs)]
            assert (call["params"]["TemplateCode"], call["params"]["Language"]) == (template, language)
    # every call the endpoint received, throttled ones included: none in excess of 10 in a 1 s window
    assert_kept_to_the_rate(local_cams.calls(), 10)
    assert service.stop() == 0


def test_bad_messages_go_to_the_dlq_while_good_ones_flow(service_cluster, local_cams, start_service, topic_reader):
    codec = PlainAvroCodec()
    good = encode_samples(500)
    bad = [b"", b"\x00\x01\x02garbage", good[0][:-3], b"x" * 300]
    invalid = [codec.encode_request(request_record(f"invalid-{i}", "welcome", "en", numbers)) for i, numbers in enumerate([[], ["12"], [phone(1)] * 2])]
    values = []
    for i, value in enumerate(good):
        values.append(value)
        if i % 100 == 0 and bad:
            values.append(bad.pop())
    produce(service_cluster.bootstrap_servers, values + invalid)
    service = start_service(service_env(service_cluster.bootstrap_servers, local_cams.url))
    results = topic_reader(service_cluster.bootstrap_servers, RESULTS)
    dlq = topic_reader(service_cluster.bootstrap_servers, DLQ)
    assert results.read_until(lambda r: len(r.messages) >= 503, timeout=60), service.log_tail()
    assert dlq.read_until(lambda r: len(r.messages) >= 4, timeout=10)
    by_status = collections.defaultdict(set)
    for r in results.results():
        by_status[r["status"]].add(r["request_id"])
    assert by_status["SENT"] == {f"req-{i}" for i in range(500)}
    assert by_status["REJECTED"] == {"invalid-0", "invalid-1", "invalid-2"}
    rejected = {r["request_id"]: r["message"] for r in results.results() if r["status"] == "REJECTED"}
    assert "recipients must hold 1-1000" in rejected["invalid-0"]
    assert "not a phone number" in rejected["invalid-1"]
    assert "repeats an earlier recipient" in rejected["invalid-2"]
    for message in dlq.messages:
        headers = dict(message.headers())
        assert headers["chatapp.dlq.topic"] == REQUESTS.encode()
        assert {"chatapp.dlq.reason", "chatapp.dlq.error", "chatapp.dlq.partition", "chatapp.dlq.offset", "chatapp.dlq.timestamp"} <= set(headers)
    assert sorted(m.value() for m in dlq.messages) == sorted([b"", b"\x00\x01\x02garbage", good[0][:-3], b"x" * 300])
    assert service.alive()
    assert service.stop() == 0


def test_reply_headers_and_api_errors_become_results(service_cluster, local_cams, start_service, topic_reader):
    codec = PlainAvroCodec()
    local_cams.set_faults(permanent_codes={"payment_due": "Ram.PermissionDeny"}, http200_codes={"promo_autumn": "Template.NotFound"})
    produce(
        service_cluster.bootstrap_servers, [codec.encode_request(request_record("r-ok", "welcome", "en", [phone(1)]))], headers=[("correlation-id", b"c-123")]
    )
    produce(
        service_cluster.bootstrap_servers,
        [codec.encode_request(request_record("r-other", "welcome", "en", [phone(2)]))],
        headers=[("reply-to", b"custom.replies")],
    )
    produce(service_cluster.bootstrap_servers, [codec.encode_request(request_record("r-denied", "payment_due", "en", [phone(3)]))])
    produce(service_cluster.bootstrap_servers, [codec.encode_request(request_record("r-missing", "promo_autumn", "en", [phone(4)]))])
    produce(
        service_cluster.bootstrap_servers,
        [codec.encode_request(request_record("r-expired", "welcome", "en", [phone(5)], expires_at=int(time.time() * 1000) - 1000))],
    )
    service_cluster.create_topic("custom.replies", 1)
    service = start_service(service_env(service_cluster.bootstrap_servers, local_cams.url, reply_to_pattern=r"custom\.[a-z]+"))
    results = topic_reader(service_cluster.bootstrap_servers, RESULTS)
    custom = topic_reader(service_cluster.bootstrap_servers, "custom.replies")
    assert results.read_until(lambda r: len(r.messages) >= 4, timeout=30), service.log_tail()
    assert custom.read_until(lambda r: len(r.messages) >= 1, timeout=10)
    by_id = {r["request_id"]: r for r in results.results()}
    assert by_id["r-ok"]["status"] == "SENT" and by_id["r-ok"]["code"] == "OK" and by_id["r-ok"]["group_message_id"]
    ok_message = next(m for m in results.messages if m.key() == b"r-ok")
    assert dict(ok_message.headers())["correlation-id"] == b"c-123"
    assert by_id["r-denied"]["status"] == "FAILED" and by_id["r-denied"]["code"] == "Ram.PermissionDeny"
    assert by_id["r-missing"]["status"] == "FAILED" and by_id["r-missing"]["code"] == "Template.NotFound"
    assert by_id["r-expired"]["status"] == "EXPIRED"
    assert custom.results()[0]["request_id"] == "r-other"
    assert service.stop() == 0


@pytest.mark.slow
def test_sigterm_mid_stream_loses_nothing(service_cluster, local_cams, start_service, topic_reader):
    total = 30_000
    produce(service_cluster.bootstrap_servers, encode_samples(total))
    env = service_env(service_cluster.bootstrap_servers, local_cams.url)
    first = start_service(env)
    results = topic_reader(service_cluster.bootstrap_servers, RESULTS)
    assert results.read_until(lambda r: len(r.messages) >= 5_000, timeout=60), first.log_tail()
    started = time.monotonic()
    assert first.stop(signal.SIGTERM, timeout=40) == 0, first.log_tail()
    assert time.monotonic() - started < 30
    assert "stopped" in first.log_tail(5)
    second = start_service(env)
    assert results.read_until(lambda r: set(_result_ids(r)) >= {f"req-{i}" for i in range(total)}, timeout=120), second.log_tail()
    ids = _result_ids(results)
    assert set(ids) == {f"req-{i}" for i in range(total)}
    # the first instance committed what it answered: nothing was answered (let alone sent) twice
    assert max(ids.values()) == 1
    assert local_cams.stats()["duplicate_recipients_accepted"] == 0
    assert second.stop() == 0


@pytest.mark.slow
def test_commits_never_pass_an_unfinished_message(service_cluster, local_cams, start_service, topic_reader):
    """Out-of-order completion: some batches fail transiently and finish seconds after later ones.
    Killed mid-way, the instance must have committed no offset beyond a message without a result."""
    total = 6_000
    values = encode_samples(total)
    produce(service_cluster.bootstrap_servers, values, keys=[str(i).encode() for i in range(total)])
    local_cams.set_faults(error_rate=0.5, error_mix={"http500": 1.0})
    env = service_env(
        service_cluster.bootstrap_servers,
        local_cams.url,
        retry_backoff_ms=1500,
        retry_backoff_max_ms=3000,
        batch_max_recipients=100,
        batch_linger_ms=20,
        rate_limit_per_second=50,
        max_buffered_recipients=2000,
    )
    local_cams.set_faults(rate_limit=0)
    service = start_service(env)
    results = topic_reader(service_cluster.bootstrap_servers, RESULTS)
    assert results.read_until(lambda r: len(r.messages) >= 2_000, timeout=60), service.log_tail()
    time.sleep(1.0)  # the scenario: completion runs out of order a while longer before the kill
    service.kill()  # SIGKILL: whatever is committed now must be covered by results
    results.read_until(lambda r: False, timeout=2)
    answered = set(_result_ids(results))
    # which request sits at which offset: read the request topic back
    source = topic_reader(service_cluster.bootstrap_servers, REQUESTS)
    assert source.read_until(lambda r: len(r.messages) >= total, timeout=30)
    at = {(m.partition(), m.offset()): m for m in source.messages}
    request_ids = {key: json_free_id(m.key()) for key, m in at.items()}
    positions = committed(service_cluster.bootstrap_servers, "chatapp-consumer", REQUESTS, PARTITIONS)
    checked = 0
    out_of_order_seen = False
    for partition, position in positions.items():
        offsets = sorted(o for p, o in at if p == partition)
        for offset in offsets:
            rid = request_ids[(partition, offset)]
            if offset < position:
                assert rid in answered, f"committed {partition}@{position} passes unanswered offset {offset}"
                checked += 1
            elif rid in answered:
                out_of_order_seen = True
    assert checked > 0, "nothing was committed: the test proves nothing"
    assert out_of_order_seen, "no result beyond a commit position: completion was not out of order"


def json_free_id(key: bytes) -> str:
    return f"req-{int(key)}"
