"""The operators' commands as an operator runs them: ``chatapp-consumer produce``,
``check-config`` and ``run``'s refusal of bad configuration, each in its own process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from chatapp_devkit.local_cams import LocalCams
from chatapp_devkit.mockcluster import MockCluster

from consumer.codec import PlainAvroCodec
from tests.fixtures.kafka import consume_all
from tests.fixtures.service import DLQ, REQUESTS, RESULTS, ROOT, TEST_KEY_ID, TEST_SECRET, free_port

SECRET = "Sup3r-S3cret-Value-7f1d"  # distinctive, so a leak cannot be a coincidence
REDIS_PASSWORD = "hunter2-Redis-Pw-93c1"
KAFKA_PASSWORD = "sasl-Pw-0b6e44"
COMMAND_TIMEOUT_S = 60


def _command() -> list[str]:
    script = Path(sys.executable).parent / "chatapp-consumer"
    return [str(script)] if script.exists() else [sys.executable, "-m", "consumer"]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT_S, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``chatapp-consumer ARGS`` with a clean environment (no CHATAPP_* / ALIBABA_CLOUD_* from
    the caller) plus ``env``; killed after ``timeout`` s."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CHATAPP_", "ALIBABA_CLOUD_"))}
    clean.update(env or {})
    clean["PYTHONPATH"] = str(ROOT)
    return subprocess.run([*_command(), *args], check=False, env=clean, cwd=ROOT, capture_output=True, text=True, timeout=timeout, input=stdin)


def devkit_cli(*args: str, env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """``chatapp-devkit ARGS`` (``python -m chatapp_devkit`` where it is not installed), like ``cli``."""
    script = Path(sys.executable).parent / "chatapp-devkit"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "chatapp_devkit"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CHATAPP_", "ALIBABA_CLOUD_"))}
    clean.update(env or {})
    clean["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "devkit")])
    return subprocess.run([*command, *args], check=False, env=clean, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster() -> Iterator[MockCluster]:
    with MockCluster.start(topics={REQUESTS: 4, RESULTS: 4, DLQ: 1}) as c:
        yield c


@pytest.fixture
def topic(cluster: MockCluster, request: pytest.FixtureRequest) -> str:
    """A fresh request topic per test (the module shares one broker)."""
    name = f"cli.{request.node.name.replace('[', '.').replace(']', '')[:60]}"
    cluster.create_topic(name, 2)
    return name


@pytest.fixture
def cams() -> Iterator[LocalCams]:
    with LocalCams.start(accounts={TEST_KEY_ID: TEST_SECRET}, rate_limit=10, timeout=15.0) as c:
        yield c


# --------------------------------------------------------------------------- produce


def test_produce_samples_puts_decodable_requests_on_the_topic_with_a_progress_bar(cluster, topic):
    done = devkit_cli("produce-samples", "500", env={"CHATAPP_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers, "CHATAPP_REQUEST_TOPIC": topic})
    assert done.returncode == 0, done.stderr
    assert re.search(r"\[#{30}\] 500/500 \(", done.stderr), f"no finished progress bar on stderr: {done.stderr!r}"
    assert done.stdout == ""

    messages = consume_all(cluster.bootstrap_servers, topic, 500, timeout=30)
    assert len(messages) == 500
    codec = PlainAvroCodec()
    records = [codec.decode(m.value()) for m in messages]
    assert {r["request_id"] for r in records} == {f"req-{i}" for i in range(500)}
    assert all(m.key().decode() == codec.decode(m.value())["request_id"] for m in messages), "key = request_id"
    assert all(len(r["recipients"]) == 1 for r in records)


def test_produce_file_with_minimal_records(cluster, topic, tmp_path):
    lines = [
        # only the required fields: every optional one is filled with its default
        {"request_id": "file-1", "template_code": "welcome", "language": "en", "from_number": "8613800000000", "recipients": [{"to": "8613911110001"}]},
        {
            "request_id": "file-2",
            "template_name": "order_shipped",
            "language": "es",
            "from_number": "8613800000000",
            "expires_at": 1_900_000_000_000,
            "recipients": [{"to": "8613911110002", "template_params": {"name": "Ana"}}, {"to": "+8613911110003"}],
        },
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")  # a trailing blank line is fine
    done = cli("produce", "--file", str(path), "--bootstrap-servers", cluster.bootstrap_servers, env={"CHATAPP_REQUEST_TOPIC": topic})
    assert done.returncode == 0, done.stderr
    assert "2 produced" in done.stderr

    messages = consume_all(cluster.bootstrap_servers, topic, 2, timeout=30)
    records = {r["request_id"]: r for r in (PlainAvroCodec().decode(m.value()) for m in messages)}
    assert set(records) == {"file-1", "file-2"}
    one, two = records["file-1"], records["file-2"]
    assert one["channel_type"] == "whatsapp" and one["account"] is None and one["template_name"] is None
    assert one["recipients"] == [
        {"to": "8613911110001", "recipient_type": None, "template_params": {}, "payload": [], "product_action": None, "flow_action": None}
    ]
    assert two["template_code"] is None and two["template_name"] == "order_shipped" and two["expires_at"] is not None
    assert [r["to"] for r in two["recipients"]] == ["8613911110002", "+8613911110003"]
    assert two["recipients"][0]["template_params"] == {"name": "Ana"}


def test_produce_from_stdin(cluster, topic):
    line = json.dumps(
        {"request_id": "stdin-1", "template_code": "welcome", "language": "en", "from_number": "8613800000000", "recipients": [{"to": "8613911110009"}]}
    )
    done = cli("produce", "--file", "-", "--bootstrap-servers", cluster.bootstrap_servers, env={"CHATAPP_REQUEST_TOPIC": topic}, stdin=line + "\n")
    assert done.returncode == 0, done.stderr
    [message] = consume_all(cluster.bootstrap_servers, topic, 1, timeout=30)
    assert PlainAvroCodec().decode(message.value())["request_id"] == "stdin-1"


GOOD = {"request_id": "ok", "template_code": "welcome", "language": "en", "from_number": "8613800000000", "recipients": [{"to": "8613911110001"}]}


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ('{"request_id": "broken", ', r"requests\.jsonl:3: not JSON"),
        (
            json.dumps({"request_id": "no-language", "template_code": "welcome", "from_number": "1", "recipients": []}),
            r"requests\.jsonl:3: does not match schemas/send_request\.avsc: .*language",
        ),
        (json.dumps({**GOOD, "recipients": [{"to": 8613911110001}]}), r"requests\.jsonl:3: does not match schemas/send_request\.avsc: .*\bto\b"),
        (json.dumps({**GOOD, "ttl_s": "thirty"}), r"requests\.jsonl:3: does not match schemas/send_request\.avsc: .*ttl_s"),
    ],
    ids=["not-json", "missing-required", "wrong-type", "wrong-optional-type"],
)
def test_produce_file_with_a_bad_line_fails_naming_it(cluster, topic, tmp_path, bad_line, expected):
    path = tmp_path / "requests.jsonl"
    path.write_text(
        "\n".join([json.dumps({**GOOD, "request_id": "a"}), json.dumps({**GOOD, "request_id": "b"}), bad_line, json.dumps({**GOOD, "request_id": "d"})]) + "\n"
    )
    done = cli("produce", "--file", str(path), "--bootstrap-servers", cluster.bootstrap_servers, env={"CHATAPP_REQUEST_TOPIC": topic})
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert re.search(expected, done.stderr), done.stderr
    assert "Traceback" not in done.stderr
    # nothing after the bad line was produced (what came before may have been)
    ids = {PlainAvroCodec().decode(m.value())["request_id"] for m in consume_all(cluster.bootstrap_servers, topic, 3, timeout=3)}
    assert ids <= {"a", "b"}


def test_produce_without_bootstrap_servers_is_a_config_error():
    for done in (cli("produce", "--file", "-", stdin=""), devkit_cli("produce-samples", "1")):
        assert done.returncode == 2
        assert done.stderr.startswith("config error: CHATAPP_KAFKA_BOOTSTRAP_SERVERS")


def test_the_service_cli_points_to_the_devkit_for_the_demo_and_samples():
    done = cli("demo", "--requests", "10")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["the demo is the devkit's: pip install -e ./devkit (from a checkout), then chatapp-devkit demo"]
    done = cli("produce", "--file", "-", "--samples", "1", stdin="")
    assert done.returncode == 2 and "unrecognized arguments: --samples 1" in done.stderr
    assert "chatapp-devkit produce-samples" in cli("--help").stdout


@pytest.mark.parametrize(("command", "option"), [("mock-broker", "--brokers"), ("local-cams", "--rate-limit")])
def test_the_devkit_commands_take_their_modules_options(command, option):
    done = devkit_cli(command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: chatapp-devkit {command} ")
    assert option in done.stdout


# --------------------------------------------------------------------------- check-config


def _secret_env(**more: str) -> dict[str, str]:
    return {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI_CLI_TEST",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
        "ALIBABA_CLOUD_SECURITY_TOKEN": "sts-token-" + SECRET,
        "CHATAPP_REDIS_URL": f"redis://chatapp:{REDIS_PASSWORD}@127.0.0.1:6379/15",
        "CHATAPP_KAFKA_OPT_SASL_PASSWORD": KAFKA_PASSWORD,
        "CHATAPP_KAFKA_OPT_SASL_USERNAME": "chatapp",
        **more,
    }


def _assert_no_secret(text: str) -> None:
    for secret in (SECRET, REDIS_PASSWORD, KAFKA_PASSWORD):
        assert secret not in text, f"secret {secret[:4]}... leaked:\n{text}"


def test_check_config_no_connect_prints_the_effective_config_with_secrets_redacted():
    done = cli("check-config", "--no-connect", env=_secret_env(CHATAPP_BATCH_LINGER_MS="350", CHATAPP_GROUP_ID="ops-group"))
    assert done.returncode == 0, done.stderr
    _assert_no_secret(done.stdout + done.stderr)
    effective = json.loads(done.stdout)  # the whole of stdout is one JSON document
    assert effective["batch_linger_ms"] == 350 and effective["group_id"] == "ops-group"
    assert effective["rate_limit_per_second"] == 10.0  # defaults are shown too
    assert effective["access_key_id"] == "LTAI_CLI_TEST"
    assert effective["access_key_secret"] == "***" and effective["security_token"] == "***"
    assert effective["redis_url"] == "redis://chatapp:***@127.0.0.1:6379/15"
    assert effective["kafka_options"] == {"sasl.password": "***", "sasl.username": "chatapp"}
    assert effective["accounts"]["default"]["access_key_secret"] == "***"


def test_check_config_reports_kafka_redis_and_cams_ok(cluster, cams, shared_redis):
    env = {
        "CHATAPP_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "CHATAPP_REDIS_URL": shared_redis,
        "CHATAPP_CAMS_ENDPOINT": cams.url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
    }
    done = cli("check-config", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_no_secret(done.stdout + done.stderr)
    lines = done.stdout.splitlines()
    assert re.search(rf"^kafka\s+ok\s+1 brokers; {re.escape(REQUESTS)}: 4 partitions$", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"^redis\s+ok\s+PING ok$", done.stdout, re.MULTILINE), done.stdout
    assert re.search(
        rf"^topics\s+ok\s+{re.escape(REQUESTS)} \(4 partitions\), {re.escape(RESULTS)} \(4 partitions\), {re.escape(DLQ)} \(1 partition\)$",
        done.stdout,
        re.MULTILINE,
    )
    assert re.search(rf"^cams\s+ok\s+{re.escape(cams.url)} reachable \(DNS, TCP, TLS, HTTP; no API call made", done.stdout, re.MULTILINE), done.stdout
    assert not [line for line in lines if "FAIL" in line]
    # the configuration is printed first, as JSON, then one line per check
    assert json.loads(done.stdout[: done.stdout.index("\nkafka")])["cams_endpoint"] == cams.url


def test_check_config_fails_when_cams_is_unreachable(cluster, shared_redis):
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"CHATAPP_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers, "CHATAPP_REDIS_URL": shared_redis, "CHATAPP_CAMS_ENDPOINT": dead}
    done = cli("check-config", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(rf"^cams\s+FAIL\s+{re.escape(dead)}: ", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"^kafka\s+ok\b", done.stdout, re.MULTILINE) and re.search(r"^redis\s+ok\b", done.stdout, re.MULTILINE)


def test_check_config_failing_redis_auth_does_not_echo_the_password(cluster, cams, shared_redis):
    """The machine's Redis has no password: AUTH fails, and the FAIL line must not carry it."""
    env = _secret_env(CHATAPP_KAFKA_BOOTSTRAP_SERVERS=cluster.bootstrap_servers, CHATAPP_CAMS_ENDPOINT=cams.url)
    del env["CHATAPP_KAFKA_OPT_SASL_PASSWORD"], env["CHATAPP_KAFKA_OPT_SASL_USERNAME"]  # the mock broker speaks plaintext
    done = cli("check-config", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"^redis\s+FAIL\s+\S", done.stdout, re.MULTILINE), done.stdout
    _assert_no_secret(done.stdout + done.stderr)


# --------------------------------------------------------------------------- run


def test_run_with_bad_settings_exits_2_with_one_line_per_problem():
    env = {
        "CHATAPP_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "CHATAPP_BATCH_MAX_RECIPIENTS": "5000",
        "CHATAPP_LOG_LEVEL": "LOUD",
        "CHATAPP_SEND_CONCURRENCY": "many",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,  # without its key id: a problem too
    }
    done = cli("run", env=env, timeout=30)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert all(line.startswith("config error: ") for line in lines), lines
    named = {
        name: [line for line in lines if name in line]
        for name in ("CHATAPP_BATCH_MAX_RECIPIENTS", "CHATAPP_LOG_LEVEL", "CHATAPP_SEND_CONCURRENCY", "ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    }
    assert all(len(found) == 1 for found in named.values()), lines
    assert len(lines) == 4, lines
    _assert_no_secret(done.stdout + done.stderr)
    assert done.stdout == ""


def test_run_without_bootstrap_servers_exits_2():
    done = cli("run", env={"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI_X", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET}, timeout=30)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["config error: CHATAPP_KAFKA_BOOTSTRAP_SERVERS: not set (`chatapp-devkit demo` runs on an embedded broker)"]


# --------------------------------------------------------------------------- credentials in URLs, bad configuration


def test_check_config_redacts_credentials_in_every_url(cluster, shared_redis):
    """User-info and secret query parameters of the CAMS endpoint, the Redis URL and the registry
    URL: hidden in the printed configuration and in the connectivity lines."""
    dead_cams = f"http://cams-user:{SECRET}@127.0.0.1:{free_port()}"
    env = {
        "CHATAPP_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "CHATAPP_CAMS_ENDPOINT": dead_cams,
        "CHATAPP_REDIS_URL": f"{shared_redis.split('?')[0]}?password={REDIS_PASSWORD}",
        "CHATAPP_SCHEMA_REGISTRY_URL": f"https://registry-user:{KAFKA_PASSWORD}@registry.internal:8081",
    }
    done = cli("check-config", env=env)
    assert done.returncode == 1, done.stdout + done.stderr  # the CAMS endpoint is down
    _assert_no_secret(done.stdout + done.stderr)
    effective = json.loads(done.stdout[: done.stdout.index("\nkafka")])
    assert effective["cams_endpoint"] == dead_cams.replace(SECRET, "***")
    assert effective["redis_url"].endswith("?password=***")
    assert effective["schema_registry_url"] == "https://registry-user:***@registry.internal:8081"
    assert re.search(r"^cams\s+FAIL\s+http://cams-user:\*\*\*@127\.0\.0\.1:\d+: ", done.stdout, re.MULTILINE), done.stdout


BAD_CONFIG = {
    # what an operator gets wrong -> (environment, file content, the setting the one line must name)
    "endpoint-with-a-path": ({"CHATAPP_CAMS_ENDPOINT": f"https://cams-user:{SECRET}@cams.example/v1/api"}, None, "CHATAPP_CAMS_ENDPOINT"),
    "redis-url-malformed": ({"CHATAPP_REDIS_URL": f"redis://app:{REDIS_PASSWORD}@redis.internal:six379/0"}, None, "CHATAPP_REDIS_URL"),
    "redis-url-without-host": ({"CHATAPP_REDIS_URL": f"redis://app:{REDIS_PASSWORD}/0"}, None, "CHATAPP_REDIS_URL"),
    "registry-url-bad": ({"CHATAPP_SCHEMA_REGISTRY_URL": f"registry-user:{KAFKA_PASSWORD}@registry.internal:8081"}, None, "CHATAPP_SCHEMA_REGISTRY_URL"),
    "librdkafka-unknown-option": ({"CHATAPP_KAFKA_OPT_FETCH_WAIT_MS": "10"}, None, "CHATAPP_KAFKA_OPT_FETCH_WAIT_MS (fetch.wait.ms)"),
    "librdkafka-invalid-value": (
        {"CHATAPP_KAFKA_CONSUMER_OPT_FETCH_WAIT_MAX_MS": "soon"},
        None,
        "CHATAPP_KAFKA_CONSUMER_OPT_FETCH_WAIT_MAX_MS (fetch.wait.max.ms)",
    ),
    "metrics-host-unresolvable": ({"CHATAPP_METRICS_HOST": "metrics.no-such-host.invalid"}, None, "CHATAPP_METRICS_HOST"),
    "toml-kafka-consumer-a-string": ({}, '[kafka]\nconsumer = "fetch.wait.max.ms=10"\n', "CHATAPP_CONFIG: [kafka.consumer]"),
    "toml-array-for-a-string": ({}, 'group_id = ["ops", "group"]\n', "group_id in "),
    "toml-table-for-a-string": ({}, '[metrics_host]\naddress = "0.0.0.0"\n', "metrics_host in "),
}


@pytest.mark.parametrize("command", ["run", "check-config"])
@pytest.mark.parametrize("case", list(BAD_CONFIG))
def test_bad_configuration_is_one_line_naming_the_setting_in_run_and_check_config(command, case, tmp_path):
    env, toml, named = BAD_CONFIG[case]
    env = {"CHATAPP_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI_X", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET, **env}
    if toml is not None:
        path = tmp_path / "chatapp.toml"
        path.write_text(toml)
        env["CHATAPP_CONFIG"] = str(path)
    done = cli(command, env=env, timeout=30)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    [line] = done.stderr.splitlines()
    assert line.startswith(f"config error: {named}"), line
    assert re.search(r"must be|expected|give|correct", line), f"the line does not say what is right: {line}"
    assert done.stdout == ""
    _assert_no_secret(done.stdout + done.stderr)
