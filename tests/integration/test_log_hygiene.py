"""What the service writes to its log during a run with faults, at DEBUG: every line is a JSON
object, the access key secret never appears, and no phone number of the traffic appears in full
(not even when the API echoes the numbers back in its error, written with separators or inside
identifiers)."""

from __future__ import annotations

import collections
import json
import re
import time
from pathlib import Path

import pytest
from chatapp_devkit.local_cams import LocalCams
from chatapp_devkit.mockcluster import MockCluster
from chatapp_devkit.samples import phone, request_record, sample_records

from consumer.codec import PlainAvroCodec
from tests.fixtures.service import (
    DLQ,
    REQUESTS,
    RESULTS,
    TEST_KEY_ID,
    produce,
    service_env,
)

SECRET = "Hyg1ene-Secret-c0ffee-42"  # distinctive: a hit cannot be a coincidence
PARTITIONS = 4
SAMPLES = 3000
FAILING_TEMPLATE = "promo_autumn"  # every call of this template is refused for good
BAD_NUMBER = phone(17)  # the API refuses any call carrying it (the batch is split to isolate it)
ECHO_TEMPLATE = "echo_numbers"
ECHO_NUMBERS = ["8613977700001", "+8613977700002", "447700900123"]
# The API's refusal of ECHO_TEMPLATE names the recipients in its Code (and so in its Message).
ECHO_CODE = "Recipient.Blocked:" + ",".join(ECHO_NUMBERS)
FORMATTED_TEMPLATE = "echo_formatted"
# Its refusal names numbers as people write them, and inside identifiers: each must be masked.
FORMATTED_ECHOES = {
    "+86 139 7770 0004": "8613977700004",
    "+1 (415) 555-0107": "14155550107",
    "req-8613977700005": "8613977700005",
    "id_8613977700006": "8613977700006",
    "to8613977700007": "8613977700007",
}
FORMATTED_CODE = "Recipient.Blocked:" + ";".join(FORMATTED_ECHOES)
DLQ_VALUES = [
    b"",
    b"\x00\x01\x02garbage",
    b"x" * 300,
    # a producer that sent JSON by mistake: the bytes carry a number of the traffic
    json.dumps({"request_id": "json-1", "recipients": [{"to": "8613977700009"}]}).encode(),
]
REQUIRED_KEYS = {"ts", "level", "logger", "msg"}


@pytest.fixture
def cluster():
    with MockCluster.start(topics={REQUESTS: PARTITIONS, RESULTS: PARTITIONS, DLQ: 1}) as c:
        yield c


@pytest.fixture
def cams():
    with LocalCams.start(accounts={TEST_KEY_ID: SECRET}, rate_limit=10, timeout=15.0) as c:
        c.set_faults(
            error_rate=0.1,
            error_mix={"http500": 1},
            permanent_codes={FAILING_TEMPLATE: "Template.NotFound", ECHO_TEMPLATE: ECHO_CODE, FORMATTED_TEMPLATE: FORMATTED_CODE},
            invalid_numbers=[BAD_NUMBER],
            seed=7,
        )
        yield c


def _traffic() -> tuple[list[bytes], set[str], int]:
    """(values to produce, every `to` number in them, valid requests among them)."""
    codec = PlainAvroCodec()
    records = list(sample_records(SAMPLES, prefix="hyg"))
    records.append(request_record("echo-1", ECHO_TEMPLATE, "en", ECHO_NUMBERS))
    records.append(request_record("echo-2", FORMATTED_TEMPLATE, "en", [phone(90_004)]))
    valid = len(records)
    rejected = request_record("dup-1", "welcome", "en", [phone(90_003), phone(90_003)])  # REJECTED: a number twice
    values = [codec.encode_request(r) for r in [*records, rejected]]
    for i, bad in enumerate(DLQ_VALUES):
        values.insert(500 * (i + 1), bad)
    numbers = {r["to"] for record in [*records, rejected] for r in record["recipients"]} | {"8613977700009"}
    return values, numbers, valid + 1


def _digit_runs_hitting(line: str, numbers: set[str], lengths: set[int]) -> list[str]:
    """Numbers of ``numbers`` that appear in full inside a digit run of ``line``."""
    hits = []
    for run in re.findall(r"\d{6,}", line):
        for size in lengths:
            for start in range(len(run) - size + 1):
                if run[start : start + size] in numbers:
                    hits.append(run[start : start + size])
    return hits


def test_logs_are_json_and_never_hold_the_secret_or_a_full_number(cluster, cams, start_service, topic_reader):
    values, numbers, expected_results = _traffic()
    assert BAD_NUMBER in numbers and set(ECHO_NUMBERS) <= numbers
    produce(cluster.bootstrap_servers, values)
    env = service_env(
        cluster.bootstrap_servers,
        cams.url,
        log_level="DEBUG",
        batch_max_recipients=50,  # many calls, so the 10% faults and retries really happen
        batch_linger_ms=50,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=SECRET,
        # librdkafka's own debug lines (group protocol) must come through the JSON formatter too
        CHATAPP_KAFKA_CONSUMER_OPT_DEBUG="cgrp",
    )
    service = start_service(env)
    service.wait_ready(timeout=30)
    results = topic_reader(cluster.bootstrap_servers, RESULTS)
    dlq = topic_reader(cluster.bootstrap_servers, DLQ)
    # a short broker outage mid-run: librdkafka logs connection warnings of its own (not debug)
    assert results.read_until(lambda r: len(r.messages) >= 300, timeout=60), service.log_tail()
    cluster.broker_down()
    time.sleep(3)  # the scenario: 3 s with the broker down
    cluster.broker_up()
    assert results.read_until(lambda r: len(r.messages) >= expected_results, timeout=120), f"{len(results.messages)} results:\n{service.log_tail()}"
    assert dlq.read_until(lambda r: len(r.messages) >= len(DLQ_VALUES), timeout=30), f"{len(dlq.messages)} dead letters:\n{service.log_tail()}"
    by_id = {r["request_id"]: r for r in results.results()}
    assert service.metric("chatapp_api_retries_total", reason="transient") > 0, "the 10% http500 faults never hit"
    assert service.stop() == 0

    # the run took the paths that log: permanent failures, the echo, the split, rejects, DLQ
    assert by_id["echo-1"]["status"] == "FAILED" and by_id["echo-1"]["code"] == ECHO_CODE
    assert by_id["echo-2"]["status"] == "FAILED"
    assert by_id["hyg-9"]["status"] == "FAILED" and by_id["hyg-9"]["code"] == "Template.NotFound"  # 9 % 10 -> promo_autumn/es
    assert by_id["hyg-17"]["status"] == "FAILED" and by_id["hyg-17"]["code"] == "InvalidParameter"
    assert by_id["dup-1"]["status"] == "REJECTED"
    statuses = collections.Counter(r["status"] for r in by_id.values())
    assert statuses["SENT"] == SAMPLES - SAMPLES // 5 - 1, statuses  # all but promo_autumn (en, es) and BAD_NUMBER's request

    lines = Path(service.log_path).read_text(encoding="utf-8").splitlines()
    assert len(lines) > 50
    entries, not_json = [], []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            not_json.append(line)
            continue
        if not (isinstance(entry, dict) and REQUIRED_KEYS <= set(entry) and all(isinstance(entry[k], str) for k in REQUIRED_KEYS)):
            not_json.append(line)
        entries.append(entry)
    assert not not_json, "lines that are not JSON objects with ts/level/logger/msg:\n" + "\n".join(not_json[:10])
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["ts"]) for e in entries)
    levels = collections.Counter(e["level"] for e in entries)
    assert levels["WARNING"] > 0 and levels["DEBUG"] > 0, levels

    leaks = [line for line in lines if SECRET in line]
    assert not leaks, f"the access key secret is in {len(leaks)} log lines, e.g. {leaks[0]}"
    lengths = {len(n) for n in numbers}
    full = [(hit, line) for line in lines for hit in _digit_runs_hitting(line, numbers, lengths)]
    assert not full, f"{len(full)} unmasked numbers of the traffic, e.g. {full[:3]}"

    # the echo was provoked and logged, masked
    echoed = [e["msg"] for e in entries if "Recipient.Blocked:8613" in e["msg"]]  # ECHO_CODE, not FORMATTED_CODE
    assert echoed, "the API's echo of the numbers was never logged"
    assert "8613*******01" in echoed[0] and "+8613*******02" in echoed[0] and "4477******23" in echoed[0], echoed[0]
    # ... and the echo of numbers with separators or inside identifiers, masked too
    assert any("+86 13* **** **04" in e["msg"] and "req-8613*******05" in e["msg"] for e in entries), [
        e["msg"] for e in entries if "Recipient.Blocked" in e["msg"]
    ]
    separated = [(digits, line) for line in lines for digits in FORMATTED_ECHOES.values() if digits in re.sub(r"[\s().+-]", "", line)]
    assert not separated, f"numbers written with separators or in identifiers, unmasked: {separated[:3]}"
    assert any("dead-lettered" in e["msg"] for e in entries)

    # librdkafka's own lines: routed through Python logging, so JSON like the rest
    rdkafka = [e for e in entries if e["logger"] == "consumer.librdkafka"]
    assert rdkafka, "no librdkafka log line came through"
    assert any("CGRP" in e["msg"] for e in rdkafka), rdkafka[:3]
    outage = [e for e in rdkafka if e["level"] in ("WARNING", "ERROR")]
    assert outage, "librdkafka logged nothing above DEBUG about the broker outage"
