"""consumer.config: defaults < TOML file < environment, every problem at once, secrets hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.config import AccountConfig, ConfigError, load
from consumer.settings import SETTINGS

SECRET = "s3cr3t-value-Zq9"
TOKEN = "sts-token-value-Xy7"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def problems_of(env: dict[str, str], path: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(env, path)
    return caught.value.problems


# -- defaults and sources ----------------------------------------------------------------------------


def test_defaults_with_an_empty_environment() -> None:
    config = load({})
    for spec in SETTINGS:
        assert getattr(config, spec.name) == spec.default, spec.name
    assert config.batch_max_recipients == 1000
    assert config.batch_linger_ms == 200
    assert config.cams_endpoint == "https://cams.ap-southeast-1.aliyuncs.com"
    assert config.kafka_bootstrap_servers is None
    # no keys and no [accounts.*]: the default account signs with the default credential chain
    assert list(config.accounts) == ["default"]
    default = config.accounts["default"]
    assert default.credentials == "default-chain"
    assert (default.access_key_id, default.access_key_secret, default.security_token) == (None, None, None)
    assert (default.rate_limit_per_second, default.rate_limit_burst) == (10.0, 1)
    assert not config.has_credentials
    assert dict(config.kafka_options) == dict(config.consumer_options) == dict(config.producer_options) == {}


def test_environment_overrides_defaults_with_conversion() -> None:
    config = load(
        {
            "CHATAPP_BATCH_LINGER_MS": "50",
            "CHATAPP_RATE_LIMIT_PER_SECOND": "2.5",
            "CHATAPP_KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
            "CHATAPP_LOG_FORMAT": "json",
            "CHATAPP_INFLIGHT_POLICY": "fail",
        }
    )
    assert config.batch_linger_ms == 50
    assert config.rate_limit_per_second == 2.5
    assert config.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert config.log_format == "json"
    assert config.inflight_policy == "fail"


def test_empty_environment_variable_counts_as_unset(tmp_path: Path) -> None:
    path = write(tmp_path, "batch_linger_ms = 75\n")
    assert load({"CHATAPP_BATCH_LINGER_MS": ""}).batch_linger_ms == 200
    assert load({"CHATAPP_BATCH_LINGER_MS": ""}, path).batch_linger_ms == 75


def test_toml_file_overrides_defaults_and_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'batch_linger_ms = 100\nsend_concurrency = 4\ngroup_id = "from-file"\nrate_limit_per_second = 20\n',
    )
    config = load({"CHATAPP_BATCH_LINGER_MS": "25"}, path)
    assert config.batch_linger_ms == 25  # env wins
    assert config.send_concurrency == 4  # file wins over default
    assert config.group_id == "from-file"
    assert config.rate_limit_per_second == 20.0
    assert config.retry_max_attempts == 6  # default


def test_config_file_named_by_chatapp_config(tmp_path: Path) -> None:
    path = write(tmp_path, "send_concurrency = 3\n")
    assert load({"CHATAPP_CONFIG": str(path)}).send_concurrency == 3


def test_missing_config_file_is_a_problem(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert problems_of({"CHATAPP_CONFIG": str(missing)}) == [f"CHATAPP_CONFIG: no such file {missing}"]


def test_malformed_toml_is_one_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "batch_linger_ms = = 3\n")
    (problem,) = problems_of({}, path)
    assert problem.startswith(f"CHATAPP_CONFIG: cannot read {path}: ")
    assert "\n" not in problem


def test_integral_float_in_toml_is_an_int_but_fraction_or_bool_is_not(tmp_path: Path) -> None:
    assert load({}, write(tmp_path, "batch_linger_ms = 20.0\n")).batch_linger_ms == 20
    path = write(tmp_path, "batch_linger_ms = 20.5\nsend_concurrency = true\n")
    assert problems_of({}, path) == [
        f"batch_linger_ms in {path}: expected int, got 20.5",
        f"send_concurrency in {path}: expected int, got True",
    ]


def test_unknown_settings_in_the_file_are_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "batch_lingr_ms = 5\nmystery = 1\nbatch_linger_ms = 5\n")
    assert problems_of({}, path) == [
        "CHATAPP_CONFIG: unknown setting 'batch_lingr_ms'",
        "CHATAPP_CONFIG: unknown setting 'mystery'",
    ]


# -- every problem at once -----------------------------------------------------------------------------


def test_every_bad_value_is_reported_at_once_one_line_each(tmp_path: Path) -> None:
    path = write(tmp_path, 'batch_lingr_ms = 5\nsession_timeout_ms = "long"\n')
    env = {
        "CHATAPP_BATCH_LINGER_MS": "soon",
        "CHATAPP_SEND_CONCURRENCY": "0",
        "CHATAPP_LOG_FORMAT": "xml",
        "CHATAPP_METRICS_PORT": "70000",
        "CHATAPP_CAMS_ENDPOINT": "ftp://cams",
        "CHATAPP_REDIS_URL": "localhost:6379",
        "CHATAPP_RETRY_BACKOFF_MS": "5000",
        "CHATAPP_RETRY_BACKOFF_MAX_MS": "1000",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-only-the-id",
    }
    with pytest.raises(ConfigError) as caught:
        load(env, path)
    expected = {
        "CHATAPP_CONFIG: unknown setting 'batch_lingr_ms'",
        f"session_timeout_ms in {path}: expected int, got 'long'",
        "CHATAPP_BATCH_LINGER_MS: expected int, got 'soon'",
        "CHATAPP_SEND_CONCURRENCY: must be at least 1 (got 0)",
        "CHATAPP_LOG_FORMAT: must be one of auto, json, text (got 'xml')",
        "CHATAPP_METRICS_PORT: must be at most 65535 (got 70000)",
        "CHATAPP_CAMS_ENDPOINT: must be http(s)://host[:port] with nothing after the host, e.g. https://cams.ap-southeast-1.aliyuncs.com (got 'ftp://cams')",
        "CHATAPP_REDIS_URL: must be redis://[[user]:password@]host[:port][/db], rediss://... (TLS) or unix:///path/to/socket (got 'localhost:6379')",
        "CHATAPP_RETRY_BACKOFF_MAX_MS: must be at least CHATAPP_RETRY_BACKOFF_MS",
        "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET must be set together",
    }
    problems = caught.value.problems
    assert set(problems) == expected
    assert len(problems) == len(expected)  # one line per problem, none twice
    assert str(caught.value).splitlines() == problems


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"CHATAPP_BATCH_MAX_RECIPIENTS": "1001"}, "CHATAPP_BATCH_MAX_RECIPIENTS: must be at most 1000 (got 1001)"),
        ({"CHATAPP_BATCH_MAX_RECIPIENTS": "0"}, "CHATAPP_BATCH_MAX_RECIPIENTS: must be at least 1 (got 0)"),
        ({"CHATAPP_RATE_LIMIT_PER_SECOND": "0.05"}, "CHATAPP_RATE_LIMIT_PER_SECOND: must be at least 0.1 (got 0.05)"),
        ({"CHATAPP_RATE_LIMIT_PER_SECOND": "inf"}, "CHATAPP_RATE_LIMIT_PER_SECOND: must be at most 1000 (got inf)"),
        ({"CHATAPP_RATE_LIMIT_PER_SECOND": "fast"}, "CHATAPP_RATE_LIMIT_PER_SECOND: expected float, got 'fast'"),
        ({"CHATAPP_SEND_CONCURRENCY": "2.5"}, "CHATAPP_SEND_CONCURRENCY: expected int, got '2.5'"),
        ({"CHATAPP_LOG_LEVEL": "verbose"}, "CHATAPP_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR (got 'verbose')"),
        ({"CHATAPP_INFLIGHT_POLICY": "maybe"}, "CHATAPP_INFLIGHT_POLICY: must be one of resend, fail, receipts (got 'maybe')"),
        (
            {"CHATAPP_INFLIGHT_POLICY": "receipts"},
            "CHATAPP_INFLIGHT_POLICY: receipts needs CHATAPP_RECEIPTS_JOIN=on (it gives each call the TaskId its receipts are looked up by)",
        ),
        (
            {"CHATAPP_REDIS_URL": "http://redis:6379"},
            "CHATAPP_REDIS_URL: must be redis://[[user]:password@]host[:port][/db], rediss://... (TLS) or unix:///path/to/socket (got 'http://redis:6379')",
        ),
        ({"ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET}, "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET must be set together"),
    ],
)
def test_single_bad_value(env: dict[str, str], problem: str) -> None:
    assert problems_of(env) == [problem]


@pytest.mark.parametrize("value", ["1000", "0.1"])
def test_rate_limit_bounds_are_inclusive(value: str) -> None:
    assert load({"CHATAPP_RATE_LIMIT_PER_SECOND": value}).rate_limit_per_second == float(value)


def test_not_a_number_is_rejected_for_float_settings() -> None:
    env = {
        "CHATAPP_RATE_LIMIT_PER_SECOND": "nan",
        "CHATAPP_HTTP_READ_TIMEOUT_S": "nan",
        "CHATAPP_DRAIN_TIMEOUT_S": "nan",
    }
    with pytest.raises(ConfigError) as caught:
        load(env)
    reported = " ".join(caught.value.problems)
    for name in env:
        assert name in reported, f"{name}=nan was accepted"


def test_secret_values_never_appear_in_problems(tmp_path: Path) -> None:
    path = write(tmp_path, f'access_key_secret = "{SECRET}"\nbogus = "{SECRET}"\n')
    problems = problems_of({"CHATAPP_LOG_FORMAT": "xml", "ALIBABA_CLOUD_SECURITY_TOKEN": TOKEN}, path)
    joined = "\n".join(problems)
    assert SECRET not in joined and TOKEN not in joined


def test_non_table_kafka_or_accounts_values_are_reported_not_crashed(tmp_path: Path) -> None:
    path = write(tmp_path, 'kafka = "oops"\naccounts = 5\n')
    problems = problems_of({}, path)
    assert len(problems) == 2
    assert any("kafka" in p for p in problems) and any("accounts" in p for p in problems)


# -- secrets --------------------------------------------------------------------------------------------


def full_secret_env() -> dict[str, str]:
    return {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-default",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
        "ALIBABA_CLOUD_SECURITY_TOKEN": TOKEN,
        "CHATAPP_KAFKA_OPT_SASL_PASSWORD": SECRET + "-sasl",
        "CHATAPP_KAFKA_OPT_SASL_USERNAME": "svc-user",
        "CHATAPP_KAFKA_CONSUMER_OPT_SSL_KEY_PASSWORD": SECRET + "-sslkey",
        "CHATAPP_KAFKA_PRODUCER_OPT_SASL_OAUTHBEARER_CLIENT_SECRET": SECRET + "-oauth",
        "MARKETING_SECRET": SECRET + "-marketing",
    }


def test_secrets_never_in_repr_or_redacted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'[accounts.marketing]\naccess_key_id = "LTAI-mkt"\naccess_key_secret_env = "MARKETING_SECRET"\nsecurity_token = "{TOKEN}-mkt"\n',
    )
    config = load(full_secret_env(), path)
    assert config.access_key_secret == SECRET
    assert config.accounts["marketing"].access_key_secret == SECRET + "-marketing"
    texts = [repr(config), str(config), repr(config.redacted()), repr(config.accounts), str(config.accounts["marketing"])]
    for text in texts:
        assert SECRET not in text
        assert TOKEN not in text
    redacted = config.redacted()
    assert redacted["access_key_secret"] == "***"
    assert redacted["security_token"] == "***"
    assert redacted["access_key_id"] == "LTAI-default"
    assert redacted["kafka_options"] == {"sasl.password": "***", "sasl.username": "svc-user"}
    assert redacted["consumer_options"] == {"ssl.key.password": "***"}
    assert redacted["producer_options"] == {"sasl.oauthbearer.client.secret": "***"}
    assert redacted["accounts"]["marketing"]["access_key_secret"] == "***"
    assert redacted["accounts"]["marketing"]["security_token"] == "***"
    assert redacted["accounts"]["default"]["access_key_secret"] == "***"
    assert set(redacted) >= {spec.name for spec in SETTINGS}


def test_redacted_shows_unset_secrets_as_none() -> None:
    redacted = load({}).redacted()
    assert redacted["access_key_secret"] is None
    assert redacted["security_token"] is None


@pytest.mark.parametrize(
    ("env_name", "url"),
    [
        ("CHATAPP_REDIS_URL", f"redis://:{SECRET}@redis.internal:6379/0"),
        ("CHATAPP_SCHEMA_REGISTRY_URL", f"https://registry-user:{SECRET}@registry.internal"),
    ],
)
def test_passwords_inside_urls_are_not_shown(env_name: str, url: str) -> None:
    config = load({env_name: url})
    assert SECRET not in repr(config)
    assert SECRET not in repr(config.redacted())


# -- librdkafka pass-through --------------------------------------------------------------------------


def test_kafka_option_environment_mapping() -> None:
    config = load(
        {
            "CHATAPP_KAFKA_OPT_SASL_MECHANISMS": "PLAIN",
            "CHATAPP_KAFKA_OPT_SECURITY_PROTOCOL": "SASL_SSL",
            "CHATAPP_KAFKA_OPT_SASL_USERNAME": "svc",
            "CHATAPP_KAFKA_OPT_SASL_PASSWORD": SECRET,
            "CHATAPP_KAFKA_CONSUMER_OPT_FETCH_MAX_BYTES": "1048576",
            "CHATAPP_KAFKA_PRODUCER_OPT_LINGER_MS": "5",
            "CHATAPP_KAFKA_OPT_": "ignored: no name",
            "OTHER_KAFKA_OPT_X": "ignored: other prefix",
        }
    )
    assert dict(config.kafka_options) == {"sasl.mechanisms": "PLAIN", "security.protocol": "SASL_SSL", "sasl.username": "svc", "sasl.password": SECRET}
    assert dict(config.consumer_options) == {"fetch.max.bytes": "1048576"}
    assert dict(config.producer_options) == {"linger.ms": "5"}


def test_kafka_tables_in_the_file_and_environment_precedence(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[kafka]\n"socket.keepalive.enable" = true\n"reconnect.backoff.max.ms" = 10000\n'
        '"log.connection.close" = false\n'
        '"sasl.mechanisms" = "PLAIN"\n'
        '[kafka.consumer]\n"queued.max.messages.kbytes" = 16384\n'
        '[kafka.producer]\n"compression.type" = "zstd"\n"linger.ms" = 10\n',
    )
    config = load({"CHATAPP_KAFKA_OPT_SASL_MECHANISMS": "SCRAM-SHA-512", "CHATAPP_KAFKA_PRODUCER_OPT_LINGER_MS": "1"}, path)
    assert dict(config.kafka_options) == {
        "socket.keepalive.enable": "true",  # TOML booleans spelled as librdkafka wants them
        "log.connection.close": "false",
        "reconnect.backoff.max.ms": "10000",  # values become strings
        "sasl.mechanisms": "SCRAM-SHA-512",  # environment wins
    }
    assert dict(config.consumer_options) == {"queued.max.messages.kbytes": "16384"}
    assert dict(config.producer_options) == {"compression.type": "zstd", "linger.ms": "1"}


def test_kafka_options_the_guarantees_rest_on_cannot_be_overridden(tmp_path: Path) -> None:
    path = write(tmp_path, '[kafka.producer]\nacks = "1"\n[kafka]\n"partition.assignment.strategy" = "range"\n')
    problems = problems_of({"CHATAPP_KAFKA_CONSUMER_OPT_ENABLE_AUTO_COMMIT": "true", "CHATAPP_KAFKA_OPT_GROUP_ID": "other"}, path)
    assert sorted(problems) == [
        "CHATAPP_KAFKA_CONSUMER_OPT_ENABLE_AUTO_COMMIT (enable.auto.commit): cannot be overridden: the service commits only offsets whose results are durable",
        "CHATAPP_KAFKA_OPT_GROUP_ID (group.id): cannot be overridden: set it with CHATAPP_GROUP_ID",
        "CHATAPP_KAFKA_OPT_PARTITION_ASSIGNMENT_STRATEGY (partition.assignment.strategy): cannot be overridden: revocation hands over work incrementally: cooperative-sticky only",
        "CHATAPP_KAFKA_PRODUCER_OPT_ACKS (acks): cannot be overridden: a result counts as published only when every in-sync replica has it",
    ]


def test_unquoted_dotted_kafka_key_is_not_silently_dropped(tmp_path: Path) -> None:
    # natural TOML: ``security.protocol = ...`` is a nested table, not the key "security.protocol"
    path = write(tmp_path, '[kafka]\nsecurity.protocol = "SSL"\n')
    try:
        config = load({}, path)
    except ConfigError as exc:
        assert any("security" in p for p in exc.problems)
    else:
        assert config.kafka_options.get("security.protocol") == "SSL", dict(config.kafka_options)


# -- accounts ----------------------------------------------------------------------------------------------


def test_default_account_from_the_environment() -> None:
    config = load(
        {
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-default",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
            "CHATAPP_RATE_LIMIT_PER_SECOND": "5",
            "CHATAPP_RATE_LIMIT_BURST": "2",
        }
    )
    assert config.accounts == {"default": AccountConfig("default", "LTAI-default", SECRET, None, 5.0, 2)}
    assert config.accounts["default"].credentials == "static"
    assert config.account(None) is config.accounts["default"]
    assert config.account("default") is config.accounts["default"]
    assert config.account("other") is None
    assert config.has_credentials


def test_named_accounts_with_secret_env_and_inherited_limits(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rate_limit_per_second = 8\nrate_limit_burst = 3\n"
        '[accounts.marketing]\naccess_key_id = "LTAI-mkt"\naccess_key_secret_env = "MKT_SECRET"\n'
        '[accounts.transactional]\naccess_key_id = "LTAI-tx"\naccess_key_secret_env = "TX_SECRET"\n'
        'security_token_env = "TX_TOKEN"\nrate_limit_per_second = 20.0\nrate_limit_burst = 2\n',
    )
    config = load({"MKT_SECRET": "mkt-secret", "TX_SECRET": "tx-secret", "TX_TOKEN": "tx-token"}, path)
    assert config.accounts["marketing"] == AccountConfig("marketing", "LTAI-mkt", "mkt-secret", None, 8.0, 3)
    assert config.accounts["transactional"] == AccountConfig("transactional", "LTAI-tx", "tx-secret", "tx-token", 20.0, 2)
    assert "default" not in config.accounts
    assert config.account("marketing").access_key_id == "LTAI-mkt"
    assert config.has_credentials


def test_account_secret_env_naming_an_unset_variable_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, '[accounts.marketing]\naccess_key_id = "LTAI-mkt"\naccess_key_secret_env = "MKT_SECRET"\n')
    assert problems_of({}, path) == ["[accounts.marketing]: needs access_key_id and access_key_secret (or access_key_secret_env naming a set variable)"]


def test_account_problems_are_all_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[accounts.a]\naccess_key_id = "LTAI-a"\naccess_key_secret = "x"\npassword = "x"\n'
        '[accounts.b]\naccess_key_id = "LTAI-b"\naccess_key_secret = "x"\nrate_limit_per_second = 5000\n'
        '[accounts.c]\naccess_key_id = "LTAI-c"\naccess_key_secret = "x"\nrate_limit_burst = "many"\n',
    )
    assert problems_of({}, path) == [
        "[accounts.a]: unknown keys password",
        "[accounts.b]: rate_limit_per_second must be between 0.1 and 1000 (got 5000.0)",
        "[accounts.c]: a value has the wrong type",
    ]


def test_account_that_is_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, '[accounts]\nmarketing = "LTAI"\n')
    assert problems_of({}, path) == ["[accounts.marketing]: must be a table"]


@pytest.mark.parametrize("burst", [0, -1, 1001])
def test_account_burst_out_of_range_is_a_problem(tmp_path: Path, burst: int) -> None:
    path = write(
        tmp_path,
        f'[accounts.a]\naccess_key_id = "LTAI-a"\naccess_key_secret = "x"\nrate_limit_burst = {burst}\n',
    )
    problems = problems_of({}, path)
    assert len(problems) == 1 and "[accounts.a]" in problems[0] and "rate_limit_burst" in problems[0]


def test_account_with_the_default_credential_chain(tmp_path: Path) -> None:
    path = write(tmp_path, '[accounts.ecs]\ncredentials = "default-chain"\nrate_limit_per_second = 4\n')
    config = load({}, path)
    assert list(config.accounts) == ["ecs"]
    account = config.accounts["ecs"]
    assert (account.credentials, account.access_key_id, account.rate_limit_per_second) == ("default-chain", None, 4.0)


def test_default_chain_account_takes_no_keys_and_unknown_sources_are_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[accounts.a]\ncredentials = "default-chain"\naccess_key_id = "LTAI-a"\n[accounts.b]\ncredentials = "vault"\n',
    )
    assert problems_of({}, path) == [
        '[accounts.a]: credentials = "default-chain" takes no access_key_id, access_key_secret or security_token',
        "[accounts.b]: credentials must be one of static, default-chain (got 'vault')",
    ]


def test_environment_keys_with_named_accounts_give_both(tmp_path: Path) -> None:
    path = write(tmp_path, '[accounts.mkt]\naccess_key_id = "LTAI-mkt"\naccess_key_secret_env = "MKT"\n')
    config = load({"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-d", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET, "MKT": "m"}, path)
    assert sorted(config.accounts) == ["default", "mkt"]
    assert config.account(None).access_key_id == "LTAI-d"


# -- addresses, librdkafka options and TOML types: one line each, no traceback, no secret ----------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CHATAPP_CAMS_ENDPOINT": f"https://user:{SECRET}@cams.example/v1"}, "CHATAPP_CAMS_ENDPOINT"),  # a path
        ({"CHATAPP_CAMS_ENDPOINT": f"https://cams.example?token={SECRET}"}, "CHATAPP_CAMS_ENDPOINT"),  # a query
        ({"CHATAPP_CAMS_ENDPOINT": "https://cams.example:99999"}, "CHATAPP_CAMS_ENDPOINT"),
        ({"CHATAPP_REDIS_URL": f"redis://app:{SECRET}@redis.internal:six/0"}, "CHATAPP_REDIS_URL"),
        ({"CHATAPP_REDIS_URL": f"redis://app:{SECRET}/0"}, "CHATAPP_REDIS_URL"),  # the host forgotten: the "port" is the password
        ({"CHATAPP_REDIS_URL": f"redis://:{SECRET}@redis.internal/0?socket_timeout=soon"}, "CHATAPP_REDIS_URL"),
        ({"CHATAPP_REDIS_URL": f"redis://:{SECRET}@redis.internal/0?no_such_option=1"}, "CHATAPP_REDIS_URL"),
        ({"CHATAPP_SCHEMA_REGISTRY_URL": f"ftp://registry-user:{SECRET}@registry.internal"}, "CHATAPP_SCHEMA_REGISTRY_URL"),
        ({"CHATAPP_SCHEMA_REGISTRY_URL": f"https://registry.internal,registry-user:{SECRET}@backup"}, "CHATAPP_SCHEMA_REGISTRY_URL"),
        ({"CHATAPP_METRICS_HOST": "no-such-host.invalid"}, "CHATAPP_METRICS_HOST"),
        ({"CHATAPP_KAFKA_OPT_NO_SUCH_THING": "1"}, "CHATAPP_KAFKA_OPT_NO_SUCH_THING (no.such.thing)"),
        ({"CHATAPP_KAFKA_CONSUMER_OPT_FETCH_WAIT_MAX_MS": "soon"}, "CHATAPP_KAFKA_CONSUMER_OPT_FETCH_WAIT_MAX_MS (fetch.wait.max.ms)"),
        ({"CHATAPP_KAFKA_PRODUCER_OPT_COMPRESSION_CODEC": "zip"}, "CHATAPP_KAFKA_PRODUCER_OPT_COMPRESSION_CODEC (compression.codec)"),
        (
            {"CHATAPP_KAFKA_OPT_SECURITY_PROTOCOL": "SASL_SSL", "CHATAPP_KAFKA_OPT_SASL_MECHANISMS": "PLAIN", "CHATAPP_KAFKA_OPT_SASL_PASSWORD": SECRET},
            "Kafka options",
        ),  # no sasl.username: librdkafka refuses the set
    ],
)
def test_bad_address_or_kafka_option_is_one_line_naming_the_setting_without_its_secret(env: dict[str, str], named: str) -> None:
    [problem] = problems_of(env)
    assert problem.startswith(named + ":"), problem
    assert SECRET not in problem
    assert "must be" in problem or "give" in problem or "correct" in problem  # it says what would be right


def test_url_problems_show_the_url_redacted() -> None:
    [problem] = problems_of({"CHATAPP_CAMS_ENDPOINT": f"https://user:{SECRET}@cams.example/v1"})
    assert problem.endswith("(got 'https://user:***@cams.example/v1')"), problem


def test_a_kafka_option_shared_by_consumer_and_producer_is_reported_once() -> None:
    assert problems_of({"CHATAPP_KAFKA_OPT_NO_SUCH_THING": "1"}) == [
        'CHATAPP_KAFKA_OPT_NO_SUCH_THING (no.such.thing): librdkafka refuses it (No such configuration property: "no.such.thing"): '
        "correct its name or remove it (see librdkafka's CONFIGURATION.md)"
    ]


def test_good_addresses_pass(tmp_path: Path) -> None:
    config = load(
        {
            "CHATAPP_CAMS_ENDPOINT": "http://127.0.0.1:8080/",
            "CHATAPP_REDIS_URL": "rediss://app:pw@redis.internal:6380/2?socket_timeout=1",
            "CHATAPP_SCHEMA_REGISTRY_URL": "https://registry.internal/sr,https://backup:8081",
            "CHATAPP_METRICS_HOST": "localhost",
            "CHATAPP_KAFKA_CONSUMER_OPT_FETCH_WAIT_MAX_MS": "10",
        }
    )
    assert config.redis_url.startswith("rediss://") and config.metrics_host == "localhost"
    assert load({"CHATAPP_REDIS_URL": "unix:///run/redis.sock?db=1"}).redis_url == "unix:///run/redis.sock?db=1"


def test_kafka_consumer_or_producer_given_as_a_string_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    path = write(tmp_path, '[kafka]\nconsumer = "fetch.wait.max.ms=10"\nproducer = ["linger.ms"]\n')
    problems = problems_of({}, path)
    assert len(problems) == 2, problems
    assert problems[0].startswith("CHATAPP_CONFIG: [kafka.consumer] must be a table")
    assert problems[1].startswith("CHATAPP_CONFIG: [kafka.producer] must be a table")


def test_toml_arrays_tables_and_booleans_are_refused_for_string_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'group_id = ["a", "b"]\nreply_topic = true\n[metrics_host]\nhost = "0.0.0.0"\n[kafka]\ndebug = ["cgrp", "topic"]\n"sasl.password" = ["{SECRET}"]\n',
    )
    problems = problems_of({}, path)
    assert sorted(problems) == sorted(
        [
            f"group_id in {path}: expected str, got ['a', 'b']",
            f"reply_topic in {path}: expected str, got True",
            f"metrics_host in {path}: expected str, got {{'host': '0.0.0.0'}}",
            f"debug in [kafka] of {path}: expected a string, number or boolean, got ['cgrp', 'topic']",
            f"sasl.password in [kafka] of {path}: expected a string, number or boolean, got (hidden)",
        ]
    )


def test_numbers_are_still_accepted_as_text_for_string_settings(tmp_path: Path) -> None:
    assert load({}, write(tmp_path, "group_id = 42\n")).group_id == "42"


def test_redacted_hides_credentials_in_every_url(tmp_path: Path) -> None:
    config = load(
        {
            "CHATAPP_CAMS_ENDPOINT": f"https://user:{SECRET}@cams.example",
            "CHATAPP_REDIS_URL": f"redis://redis.internal:6379/0?password={SECRET}",
            "CHATAPP_SCHEMA_REGISTRY_URL": f"https://registry.internal?token={SECRET}",
            "CHATAPP_KAFKA_OPT_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": f"https://idp.example/token?client_secret={SECRET}",
            "CHATAPP_KAFKA_OPT_SASL_KERBEROS_KINIT_CMD": f"kinit --url https://kdc:{SECRET}@kdc.example",
        }
    )
    redacted = config.redacted()
    assert SECRET not in repr(redacted) and SECRET not in repr(config)
    assert redacted["cams_endpoint"] == "https://user:***@cams.example"
    assert redacted["redis_url"] == "redis://redis.internal:6379/0?password=***"
    assert redacted["schema_registry_url"] == "https://registry.internal?token=***"
    assert redacted["kafka_options"]["sasl.kerberos.kinit.cmd"] == "kinit --url https://kdc:***@kdc.example"


def test_a_wrongly_typed_url_setting_is_shown_redacted(tmp_path: Path) -> None:
    path = write(tmp_path, f'redis_url = ["redis://app:{SECRET}@redis.internal"]\nschema_registry_url = "user:{SECRET}@registry"\n')
    problems = problems_of({}, path)
    assert len(problems) == 2 and SECRET not in "\n".join(problems), problems
