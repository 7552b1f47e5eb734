"""Settings loaded from a TOML file and the environment, validated at start-up: the ``Config``.

Every setting is one ``Setting`` row in ``consumer.settings.SETTINGS`` (its name, environment
variable, type, default, bounds and help; the configuration reference is that table). Loading
collects every problem before failing, so an operator sees all of them at once, one line each;
secrets never appear in a repr, a log line or ``check-config``'s output.

Sources, later wins: defaults < the TOML file named by ``CHATAPP_CONFIG`` < environment.
The TOML file may also hold ``[kafka]`` (any librdkafka setting, passed through to the consumer
and the producer), ``[kafka.consumer]`` and ``[kafka.producer]`` (settings for one of them) and
``[accounts.NAME]`` tables (credentials and rate limit of each named CAMS account).
Any librdkafka setting can also come from the environment as ``CHATAPP_KAFKA_OPT_<NAME>`` (both),
``CHATAPP_KAFKA_CONSUMER_OPT_<NAME>`` or ``CHATAPP_KAFKA_PRODUCER_OPT_<NAME>``, the name
upper-cased with dots as underscores (``CHATAPP_KAFKA_OPT_SASL_MECHANISMS=PLAIN``).

Validation goes as far as the start would: the URLs are parsed as their clients parse them
(the Redis one by redis-py itself), the metrics host is resolved, and librdkafka builds a
consumer and a producer of the Kafka options (no broker is contacted). URLs in problems and in
``redacted()`` pass ``consumer.redact``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_checks import KAFKA_OPT_PREFIXES, address_problems, librdkafka_problems, reserved_kafka_options
from .env_names import unknown_variables
from .redact import HIDDEN, is_secret_name, redact_text, redact_url
from .settings import SETTINGS, Setting

DEFAULT_ACCOUNT = "default"
KAFKA_SECTIONS = {"kafka_options": "kafka", "consumer_options": "kafka.consumer", "producer_options": "kafka.producer"}
"""The TOML table of each set of librdkafka options."""
URL_SETTINGS = ("cams_endpoint", "schema_registry_url", "redis_url")
CREDENTIAL_SOURCES = ("static", "default-chain")  # as consumer.credentials.CREDENTIAL_SOURCES


class ConfigError(Exception):
    """Bad configuration: ``problems`` holds one human sentence per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class AccountConfig:
    """One CAMS account: whose credentials sign its calls and its own rate limit."""

    name: str
    access_key_id: str | None
    access_key_secret: str | None = field(default=None, repr=False)
    security_token: str | None = field(default=None, repr=False)
    rate_limit_per_second: float = 10.0
    rate_limit_burst: int = 1
    credentials: str = "static"  # "static": the keys above; "default-chain": the Alibaba Cloud default credential chain


@dataclass(frozen=True, repr=False)
class Config:
    kafka_bootstrap_servers: str | None
    group_id: str
    request_topic: str
    reply_topic: str
    dlq_topic: str
    reply_to_pattern: str | None
    schema_registry_url: str | None
    cams_endpoint: str
    access_key_id: str | None
    access_key_secret: str | None = field(repr=False)
    security_token: str | None = field(repr=False)
    rate_limit_per_second: float
    rate_limit_burst: int
    rate_limit_safety_margin: float
    rate_limit_decrease: float
    rate_limit_recovery_per_s: float
    rate_limit_throttle_tolerance: int
    limiter_fallback_instances: int
    redis_url: str | None
    redis_key_prefix: str
    batch_max_recipients: int
    batch_max_bytes: int
    batch_linger_ms: int
    workers: int
    send_concurrency: int
    intake_nice: int
    max_buffered_recipients: int
    max_buffered_seconds: float
    max_buffered_bytes: int
    retry_max_attempts: int
    retry_backoff_ms: int
    retry_backoff_max_ms: int
    throttle_max_retries: int
    http_connect_timeout_s: float
    http_read_timeout_s: float
    ledger_retention_s: int
    ledger_memory_entries: int
    inflight_policy: str
    inflight_stale_s: int
    inflight_receipts_wait_s: float
    drain_timeout_s: float
    commit_interval_ms: int
    group_protocol: str
    processing_guarantee: str
    instance_id: str | None
    transaction_timeout_ms: int
    session_timeout_ms: int
    summary_interval_s: float
    receipts_join: str
    receipts_retention_s: int
    receipts_token: str | None = field(repr=False)
    receipts_host: str
    receipts_port: int
    receipts_max_body_bytes: int
    receipts_claim_s: float
    receipts_publish_timeout_s: float
    status_topic: str
    metrics_host: str
    metrics_port: int
    log_format: str
    log_level: str
    kafka_options: Mapping[str, str] = field(default_factory=dict, repr=False)
    consumer_options: Mapping[str, str] = field(default_factory=dict, repr=False)
    producer_options: Mapping[str, str] = field(default_factory=dict, repr=False)
    accounts: Mapping[str, AccountConfig] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    """What is not wrong enough to refuse, one line each (``CHATAPP_*`` variables that are no setting)."""

    def account(self, name: str | None) -> AccountConfig | None:
        return self.accounts.get(name or DEFAULT_ACCOUNT)

    def __repr__(self) -> str:
        return f"Config({self.redacted()!r})"

    def redacted(self) -> dict[str, Any]:
        """Every effective setting with secrets replaced by ``***`` and URLs redacted (for check-config)."""
        out: dict[str, Any] = {}
        for spec in SETTINGS:
            value = getattr(self, spec.name)
            out[spec.name] = HIDDEN if spec.secret and value else _redacted(spec, value)
        for table in KAFKA_OPT_PREFIXES:
            out[table] = {k: (HIDDEN if is_secret_name(k) else redact_text(v)) for k, v in getattr(self, table).items()}
        out["accounts"] = {
            name: {
                "access_key_id": acc.access_key_id,
                "access_key_secret": HIDDEN if acc.access_key_secret else None,
                "security_token": HIDDEN if acc.security_token else None,
                "rate_limit_per_second": acc.rate_limit_per_second,
                "rate_limit_burst": acc.rate_limit_burst,
                "credentials": acc.credentials,
            }
            for name, acc in self.accounts.items()
        }
        return out

    @property
    def has_credentials(self) -> bool:
        return any(acc.access_key_id and acc.access_key_secret for acc in self.accounts.values())


def _librdkafka_value(value: Any) -> str:
    """librdkafka spells booleans true/false; TOML gives Python bools. An array (or a TOML date)
    is no librdkafka value: ValueError."""
    if not isinstance(value, (str, int, float)):
        raise ValueError
    return str(value).lower() if isinstance(value, bool) else str(value)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``security.protocol = "x"`` written without quotes is a nested TOML table: flatten it back."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _redacted(spec: Setting, value: Any) -> Any:
    """``value`` of a setting that is not secret, credentials of its URLs hidden: the whole value
    for a URL setting (it may lack its scheme), each ``scheme://...`` in any other text."""
    if not isinstance(value, str):
        return value
    return redact_url(value) if spec.name in URL_SETTINGS else redact_text(value)


def _shown(spec: Setting, raw: Any) -> str:
    return "(hidden)" if spec.secret else _redacted(spec, repr(raw))


_ACCOUNT_KEYS: dict[str, Callable[[Any], Any]] = {
    "access_key_id": str,
    "access_key_secret": str,
    "access_key_secret_env": str,
    "security_token": str,
    "security_token_env": str,
    "rate_limit_per_second": float,
    "rate_limit_burst": int,
    "credentials": str,
}


def _accounts(values: dict[str, Any], table: Mapping[str, Any], env: Mapping[str, str], problems: list[str]) -> dict[str, AccountConfig]:
    accounts: dict[str, AccountConfig] = {}
    if values.get("access_key_id") or values.get("access_key_secret"):
        if not (values.get("access_key_id") and values.get("access_key_secret")):
            problems.append("ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET must be set together")
        accounts[DEFAULT_ACCOUNT] = AccountConfig(
            DEFAULT_ACCOUNT,
            values.get("access_key_id"),
            values.get("access_key_secret"),
            values.get("security_token"),
            values["rate_limit_per_second"],
            values["rate_limit_burst"],
        )
    elif not table:  # no keys, no [accounts.*]: the default account signs with the default credential chain
        accounts[DEFAULT_ACCOUNT] = AccountConfig(
            DEFAULT_ACCOUNT, None, None, None, values["rate_limit_per_second"], values["rate_limit_burst"], credentials="default-chain"
        )
    for name, raw in table.items():
        where = f"[accounts.{name}]"
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: must be a table")
            continue
        unknown = sorted(set(raw) - set(_ACCOUNT_KEYS))
        if unknown:
            problems.append(f"{where}: unknown keys {', '.join(unknown)}")
        try:
            item = {k: _ACCOUNT_KEYS[k](v) for k, v in raw.items() if k in _ACCOUNT_KEYS}
        except (TypeError, ValueError):
            problems.append(f"{where}: a value has the wrong type")
            continue
        secret = item.get("access_key_secret") or env.get(item.get("access_key_secret_env", ""), None)
        token = item.get("security_token") or env.get(item.get("security_token_env", ""), None)
        source = item.get("credentials", "static")
        if source not in CREDENTIAL_SOURCES:
            problems.append(f"{where}: credentials must be one of {', '.join(CREDENTIAL_SOURCES)} (got {source!r})")
        elif source == "default-chain":
            if item.get("access_key_id") or secret or token:
                problems.append(f'{where}: credentials = "default-chain" takes no access_key_id, access_key_secret or security_token')
        elif not item.get("access_key_id") or not secret:
            problems.append(f"{where}: needs access_key_id and access_key_secret (or access_key_secret_env naming a set variable)")
        rate = item.get("rate_limit_per_second", values["rate_limit_per_second"])
        if not 0.1 <= rate <= 1000:
            problems.append(f"{where}: rate_limit_per_second must be between 0.1 and 1000 (got {rate})")
        burst = item.get("rate_limit_burst", values["rate_limit_burst"])
        if not 1 <= burst <= 1000:
            problems.append(f"{where}: rate_limit_burst must be between 1 and 1000 (got {burst})")
        accounts[name] = AccountConfig(name, item.get("access_key_id"), secret, token, rate, item.get("rate_limit_burst", values["rate_limit_burst"]), source)
    return accounts


def _validated(values: dict[str, Any]) -> Config:
    problems = [msg for spec in SETTINGS if (msg := spec.problem(values.get(spec.name)))]
    problems += reserved_kafka_options(values)
    if values["retry_backoff_max_ms"] < values["retry_backoff_ms"]:
        problems.append("CHATAPP_RETRY_BACKOFF_MAX_MS: must be at least CHATAPP_RETRY_BACKOFF_MS")
    if values["receipts_claim_s"] < values["receipts_publish_timeout_s"] + 2:
        # a push publishes only within claim - publish timeout - 1 s of claiming (a claim gone stale while its statuses may still be written would let another push publish them again)
        problems.append("CHATAPP_RECEIPTS_CLAIM_S: must be at least CHATAPP_RECEIPTS_PUBLISH_TIMEOUT_S + 2")
    if values["inflight_policy"] == "receipts" and values["receipts_join"] != "on":
        problems.append("CHATAPP_INFLIGHT_POLICY: receipts needs CHATAPP_RECEIPTS_JOIN=on (it gives each call the TaskId its receipts are looked up by)")
    problems += _guarantee_problems(values)
    problems += address_problems(values)
    if values.get("reply_to_pattern"):
        try:
            re.compile(values["reply_to_pattern"])
        except re.error as exc:
            problems.append(f"CHATAPP_REPLY_TO_PATTERN: not a regular expression ({exc})")
    if problems:
        raise ConfigError(problems)
    config = Config(**values)
    problems = librdkafka_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def _guarantee_problems(values: dict[str, Any]) -> list[str]:
    if values.get("processing_guarantee") != "exactly-once":
        return []
    problems = []
    if not values.get("instance_id"):
        problems.append("CHATAPP_INSTANCE_ID: required with CHATAPP_PROCESSING_GUARANTEE=exactly-once (a stable id per instance, unique in the group)")
    elif not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", values["instance_id"]):
        problems.append(f"CHATAPP_INSTANCE_ID: letters, digits, '.', '_' and '-' only, at most 200 (got {redact_text(repr(values['instance_id']))})")
    if values["transaction_timeout_ms"] <= values["commit_interval_ms"]:
        problems.append("CHATAPP_TRANSACTION_TIMEOUT_MS: must be above CHATAPP_COMMIT_INTERVAL_MS (a transaction is open for a commit interval)")
    return problems


def _table(value: Any, name: str, problems: list[str]) -> Mapping[str, Any]:
    """``value`` of TOML table ``[name]``, or an empty one and a problem when it is no table."""
    if isinstance(value, Mapping):
        return value
    problems.append(f"CHATAPP_CONFIG: [{name}] must be a table (a [{name}] header followed by key = value lines), got {redact_text(repr(value))}")
    return {}


def load(env: Mapping[str, str] | None = None, path: str | os.PathLike[str] | None = None) -> Config:
    """Build the Config from defaults, the TOML file (``path`` or ``$CHATAPP_CONFIG``) and ``env``.

    Raises ConfigError listing every problem found.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    file_values: dict[str, Any] = {}
    path = path or env.get("CHATAPP_CONFIG")
    if path:
        try:
            file_values = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            problems.append(f"CHATAPP_CONFIG: no such file {path}")
        except (OSError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"CHATAPP_CONFIG: cannot read {path}: {exc}")
    kafka_table = _table(file_values.pop("kafka", {}), "kafka", problems)
    account_table = _table(file_values.pop("accounts", {}), "accounts", problems)
    known = {spec.name for spec in SETTINGS}
    for name in sorted(set(file_values) - known):
        problems.append(f"CHATAPP_CONFIG: unknown setting {name!r}")

    values: dict[str, Any] = {}
    for spec in SETTINGS:
        raw, where = spec.default, None
        if spec.name in file_values:
            raw, where = file_values[spec.name], f"{spec.name} in {path}"
        if env.get(spec.env, "") != "":
            raw, where = env[spec.env], spec.env
        try:
            values[spec.name] = spec.convert(raw)
        except (TypeError, ValueError):
            problems.append(f"{where}: expected {spec.type.__name__}, got {_shown(spec, raw)}")
            values[spec.name] = spec.default

    tables = {
        "kafka_options": _flatten({k: v for k, v in kafka_table.items() if k not in ("consumer", "producer")}),
        "consumer_options": _flatten(_table(kafka_table.get("consumer", {}), "kafka.consumer", problems)),
        "producer_options": _flatten(_table(kafka_table.get("producer", {}), "kafka.producer", problems)),
    }
    for table, prefix in KAFKA_OPT_PREFIXES.items():
        options = {}
        for name, value in tables[table].items():
            try:
                options[name] = _librdkafka_value(value)
            except ValueError:
                shown = "(hidden)" if is_secret_name(name) else redact_text(repr(value))
                problems.append(f"{name} in [{KAFKA_SECTIONS[table]}] of {path}: expected a string, number or boolean, got {shown}")
        for name, value in env.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                options[name[len(prefix) :].lower().replace("_", ".")] = value
        values[table] = options
    values["accounts"] = _accounts(values, account_table, env, problems)
    values["warnings"] = tuple(unknown_variables(env, [spec.env for spec in SETTINGS], account_table))
    try:
        config = _validated(values)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return config
