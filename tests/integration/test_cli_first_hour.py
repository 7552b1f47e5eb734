"""A new user's first hour with the operators' commands, each in its own process against the mock
broker, the local CAMS endpoint and the service: ``produce`` refuses what the user did not mean
with one line naming the fix, ``results`` prints what the service wrote, ``run`` logs a summary
line, and a broker that cannot be reached is a few log lines, not a flood."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from chatapp_devkit.mockcluster import MockCluster

from consumer.codec import PlainAvroCodec
from consumer.kafka.clientlog import REPEAT_S
from consumer.tools import DELIVERY_TIMEOUT_S
from tests.fixtures.kafka import consume_all
from tests.fixtures.service import DLQ, REQUESTS, RESULTS, ROOT, decode_result, free_port, produce, service_env, wait_for
from tests.integration.test_cli_tools import _command, cli

GOOD = {"request_id": "ok-1", "template_code": "welcome", "language": "en", "from_number": "8613800000000", "recipients": [{"to": "8613911110001"}]}
# what the service rejects, and the message its REJECTED result carries (validate.py)
INVALID = {
    "spaced-phone": (
        {**GOOD, "request_id": "bad-phone", "recipients": [{"to": "+86 139 1111 0002"}]},
        "recipients[0].to is not a phone number (6-15 digits, optional +)",
    ),
    "no-template": ({**GOOD, "request_id": "bad-template", "template_code": None}, "template_code or template_name is required"),
}


@pytest.fixture(scope="module")
def cluster():
    with MockCluster.start(topics={REQUESTS: 2}) as c:
        yield c


@pytest.fixture
def topic(cluster: MockCluster) -> str:
    name = f"first.{uuid.uuid4().hex[:12]}"
    cluster.create_topic(name, 2)
    return name


def _write(tmp_path: Path, *records: dict | str) -> str:
    path = tmp_path / "requests.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def _one_error_line(stderr: str) -> str:
    """The command's own message: stderr without log lines (JSON objects) and empty lines."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert "Traceback" not in stderr, stderr
    return lines[0] if lines else ""


# --------------------------------------------------------------------------- produce


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({**GOOD, "expire_at": 1_900_000_000_000}, "unknown field 'expire_at': did you mean 'expires_at'?"),
        (
            {**GOOD, "recipients": [{"to": "8613911110001", "template_param": {"name": "Ana"}}]},
            "unknown field 'recipients[0].template_param': did you mean 'template_params'?",
        ),
        ({k: v for k, v in {**GOOD, "langauge": "en"}.items() if k != "language"}, "unknown field 'langauge': did you mean 'language'?"),
        ({**GOOD, "expires_at": "2030-01-01T09:00:00"}, "expires_at '2030-01-01T09:00:00' has no UTC offset: add Z or one such as +08:00"),
        ({**GOOD, "expires_at": "next week"}, "expires_at 'next week' is not an ISO-8601 time"),
        ({**GOOD, "expires_at": 1_900_000_000}, "expires_at 1900000000 looks like seconds: give milliseconds (1900000000000)"),
        *[(record, f"would be REJECTED (Chatapp.InvalidRequest): {message} (--no-validate sends it anyway)") for record, message in INVALID.values()],
    ],
    ids=["typo", "nested-typo", "typo-of-required", "naive-time", "not-a-time", "seconds", *INVALID],
)
def test_produce_refuses_what_the_user_did_not_mean_in_one_line(cluster, topic, tmp_path, record, expected):
    done = cli("produce", "--file", _write(tmp_path, record), "--bootstrap-servers", cluster.bootstrap_servers, env={"CHATAPP_REQUEST_TOPIC": topic})
    assert done.returncode == 1, done.stderr
    assert _one_error_line(done.stderr).startswith(f"{tmp_path / 'requests.jsonl'}:1: {expected}"), done.stderr
    assert consume_all(cluster.bootstrap_servers, topic, 1, timeout=2) == [], "nothing is produced"


def test_produce_no_validate_sends_the_broken_request_on_purpose(cluster, topic, tmp_path):
    record, _ = INVALID["spaced-phone"]
    done = cli(
        "produce", "--no-validate", "--file", _write(tmp_path, record), "--bootstrap-servers", cluster.bootstrap_servers, env={"CHATAPP_REQUEST_TOPIC": topic}
    )
    assert done.returncode == 0, done.stderr
    [message] = consume_all(cluster.bootstrap_servers, topic, 1, timeout=30)
    assert PlainAvroCodec().decode(message.value())["recipients"][0]["to"] == "+86 139 1111 0002"


@pytest.mark.parametrize(
    ("written", "millis"),
    [("2030-01-01T00:00:00Z", 1_893_456_000_000), ("2030-01-01T08:00:00+08:00", 1_893_456_000_000), (1_893_456_000_123, 1_893_456_000_123)],
)
def test_produce_takes_iso_8601_or_epoch_milliseconds_for_expires_at(cluster, topic, tmp_path, written, millis):
    done = cli(
        "produce",
        "--file",
        _write(tmp_path, {**GOOD, "expires_at": written}),
        "--bootstrap-servers",
        cluster.bootstrap_servers,
        env={"CHATAPP_REQUEST_TOPIC": topic},
    )
    assert done.returncode == 0, done.stderr
    [message] = consume_all(cluster.bootstrap_servers, topic, 1, timeout=30)
    assert PlainAvroCodec().decode_request(message.value()).expires_at_ms == millis


def test_produce_file_problems_are_one_line_each(cluster, topic, tmp_path):
    missing = cli("produce", "--file", str(tmp_path / "nope.jsonl"), "--bootstrap-servers", cluster.bootstrap_servers)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"produce: cannot read --file {tmp_path / 'nope.jsonl'}: No such file or directory"
    bad_json = cli(
        "produce",
        "--file",
        _write(tmp_path, GOOD, "", '{"request_id": "x",'),
        "--bootstrap-servers",
        cluster.bootstrap_servers,
        env={"CHATAPP_REQUEST_TOPIC": topic},
    )
    assert bad_json.returncode == 1
    assert re.fullmatch(rf"{re.escape(str(tmp_path / 'requests.jsonl'))}:3: not JSON \(Expecting .* at column \d+\)", _one_error_line(bad_json.stderr)), (
        bad_json.stderr
    )
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage\n")
    not_text = cli("produce", "--file", str(binary), "--bootstrap-servers", cluster.bootstrap_servers, env={"CHATAPP_REQUEST_TOPIC": topic})
    assert not_text.returncode == 1 and "binary.jsonl:1: not UTF-8 text" in _one_error_line(not_text.stderr), not_text.stderr


def test_produce_to_an_unreachable_broker_gives_up_soon_in_one_line_naming_the_address(tmp_path):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    done = cli("produce", "--file", _write(tmp_path, GOOD, {**GOOD, "request_id": "ok-2"}), "--bootstrap-servers", address)
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert took < DELIVERY_TIMEOUT_S + 20, f"gave up after {took:.0f} s"
    assert f"2 of 2 requests not delivered: Kafka at {address} did not take them within 10 s" in done.stderr
    assert "%3|" not in done.stderr and "Traceback" not in done.stderr
    logged = [line for line in done.stderr.splitlines() if line.startswith("{")]
    assert len(logged) <= took / REPEAT_S * 3 + 3, logged  # a few kinds of line, each once per REPEAT_S


# --------------------------------------------------------------------------- bootstrap addresses and librdkafka's log


@pytest.mark.parametrize("command", [["run"], ["check-config"], ["results"], ["replay-dlq"]])
def test_a_bootstrap_address_without_a_port_is_refused_with_the_fix(command):
    done = cli(*command, env={"CHATAPP_KAFKA_BOOTSTRAP_SERVERS": "localhost", "ALIBABA_CLOUD_ACCESS_KEY_ID": "k", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s"})
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["config error: CHATAPP_KAFKA_BOOTSTRAP_SERVERS: 'localhost' has no port: give host:port, e.g. localhost:9092?"]


def test_produce_bootstrap_option_without_a_port_is_refused_with_the_fix(tmp_path):
    done = cli("produce", "--file", _write(tmp_path, GOOD), "--bootstrap-servers", "broker-1:9092,broker-2")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["config error: CHATAPP_KAFKA_BOOTSTRAP_SERVERS: 'broker-2' has no port: give host:port, e.g. broker-2:9092?"]


def test_check_config_names_the_kafka_address_it_tried_in_one_line():
    address = f"127.0.0.1:{free_port()}"
    done = cli("check-config", env={"CHATAPP_KAFKA_BOOTSTRAP_SERVERS": address, "CHATAPP_CAMS_ENDPOINT": f"http://127.0.0.1:{free_port()}"})
    assert done.returncode == 1
    [kafka] = [line for line in done.stdout.splitlines() if line.startswith("kafka")]
    assert kafka.startswith(f"kafka  FAIL {address}: ") and "CHATAPP_KAFKA_BOOTSTRAP_SERVERS" in kafka, kafka
    assert "%3|" not in done.stderr + done.stdout


def test_run_against_an_unreachable_broker_logs_a_few_lines_not_a_flood(tmp_path):
    env = service_env(f"127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}", metrics_port=str(free_port()))
    seconds = 12
    process = subprocess.Popen([*_command(), "run"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(seconds)  # the flood, if any, comes in this time: nothing to wait for but the clock
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    lines = output.splitlines()
    assert all(line.startswith("{") for line in lines), [line for line in lines if not line.startswith("{")][:3]
    kafka = [json.loads(line) for line in lines if '"consumer.librdkafka"' in line]
    assert 1 <= len(kafka) <= seconds / REPEAT_S * 3 + 3, [k["msg"] for k in kafka]
    assert all(k["level"] == "WARNING" for k in kafka)


# --------------------------------------------------------------------------- results and the summary line


def _results(*args: str, bootstrap: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return cli("results", *args, env={"CHATAPP_KAFKA_BOOTSTRAP_SERVERS": bootstrap}, timeout=timeout)


def test_results_prints_what_the_service_wrote_and_run_logs_summaries(service_cluster, local_cams, start_service, tmp_path):
    bootstrap = service_cluster.bootstrap_servers
    good = [{**GOOD, "request_id": f"good-{i}", "recipients": [{"to": f"86139111100{i:02d}"}]} for i in range(5)]
    invalid = [record for record, _ in INVALID.values()]
    done = cli("produce", "--no-validate", "--file", _write(tmp_path, *good, *invalid), "--bootstrap-servers", bootstrap)
    assert done.returncode == 0, done.stderr
    produce(bootstrap, [b'{"request_id": "json-by-mistake"}'], keys=[b"json-by-mistake"])
    service = start_service(service_env(bootstrap, local_cams.url, summary_interval_s="1"))
    service.wait_ready()

    written = consume_all(bootstrap, RESULTS, 7, timeout=60)
    assert len(written) == 7
    expected = {r["request_id"]: r for r in (decode_result(m.value()) for m in written)}

    shown = _results("--from-beginning", "--max", "7", bootstrap=bootstrap)
    assert shown.returncode == 0, shown.stderr
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert {r["request_id"] for r in rows} == set(expected)
    for row in rows:
        want = expected[row["request_id"]]
        assert (row["status"], row["code"], row["message"], row["recipients"], row["batch_id"]) == (
            want["status"],
            want["code"],
            want["message"],
            want["recipients"],
            want["batch_id"],
        )
    assert shown.stderr.splitlines()[-1] == "results: 7 records from chatapp.send-results (REJECTED 2, SENT 5)"
    # produce's refusal and the REJECTED result say the same
    for record, message in INVALID.values():
        assert expected[record["request_id"]]["message"] == message

    rejected = _results("--from-beginning", "--status", "rejected", "--timeout", "2", bootstrap=bootstrap)
    assert {json.loads(line)["request_id"] for line in rejected.stdout.splitlines()} == {"bad-phone", "bad-template"}
    one = _results("--from-beginning", "--request-id", "good-3", "--table", "--timeout", "2", bootstrap=bootstrap)
    header, row = one.stdout.splitlines()
    assert header.split() == ["completed_at", "request_id", "status", "code", "recipients", "message"]
    assert row.split()[1:4] == ["good-3", "SENT", "OK"], row
    dead = _results("--dlq", "--from-beginning", "--max", "1", bootstrap=bootstrap)
    [letter] = [json.loads(line) for line in dead.stdout.splitlines()]
    [original] = consume_all(bootstrap, DLQ, 1, timeout=10)
    headers = dict(original.headers())
    assert (letter["request_id"], letter["status"], letter["bytes"]) == ("json-by-mistake", headers["chatapp.dlq.reason"].decode(), len(original.value()))

    # the summary lines add up to what the topics and the endpoint hold
    def summed() -> dict[str, int]:
        totals: dict[str, int] = {}
        for line in service.log_path.read_text().splitlines():
            if line.startswith("{") and (m := re.fullmatch(r"last \d+s: (.*); dead-lettered (\d+); calls (\d+).*", json.loads(line)["msg"])):
                for part in m.group(1).split(", "):
                    status, count = part.split()
                    totals[status] = totals.get(status, 0) + int(count)
                totals["dead"] = totals.get("dead", 0) + int(m.group(2))
                totals["calls"] = totals.get("calls", 0) + int(m.group(3))
        return totals

    calls = len(local_cams.calls())
    want = {"SENT": 5, "FAILED": 0, "REJECTED": 2, "EXPIRED": 0, "dead": 1, "calls": calls}
    assert wait_for(lambda: summed() == want, timeout=30), (summed(), want)


def test_results_prints_its_summary_on_sigterm(service_cluster):
    process = subprocess.Popen([*_command(), "results"], env={**service_env(service_cluster.bootstrap_servers, "http://127.0.0.1:1")}, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        time.sleep(2)  # following, from now: nothing comes
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out == ""
    assert err.splitlines()[-1] == "results: 0 records from chatapp.send-results (none)"


def test_results_names_a_missing_topic_and_an_unreachable_broker(cluster):
    missing = cli("results", env={"CHATAPP_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers, "CHATAPP_REPLY_TOPIC": "no.such.topic"})
    assert missing.returncode == 1
    assert _one_error_line(missing.stderr).startswith("results: topic no.such.topic does not exist at ")
    address = f"127.0.0.1:{free_port()}"
    down = cli("results", env={"CHATAPP_KAFKA_BOOTSTRAP_SERVERS": address})
    assert down.returncode == 1
    assert _one_error_line(down.stderr).startswith(f"results: Kafka at {address} did not answer")
    bad = cli("results", "--status", "SENDED", env={"CHATAPP_KAFKA_BOOTSTRAP_SERVERS": address})
    assert bad.returncode == 2 and bad.stderr.splitlines() == ["results: --status SENDED: give one or more of EXPIRED, FAILED, REJECTED, SENT"]


def test_replay_dlq_names_an_unreachable_broker_in_one_line():
    address = f"127.0.0.1:{free_port()}"
    done = cli("replay-dlq", env={"CHATAPP_KAFKA_BOOTSTRAP_SERVERS": address})
    assert done.returncode == 1
    assert _one_error_line(done.stderr).startswith(f"replay: Kafka at {address} did not answer"), done.stderr
    assert "%3|" not in done.stderr
