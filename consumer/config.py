"""Settings: declared once, loaded from a TOML file and the environment, validated at start-up.

Every setting is one ``Setting`` row in ``SETTINGS``: its name, environment variable, type,
default, bounds and help. The README's configuration reference is that table. Loading collects
every problem before failing, so an operator sees all of them at once, one line each; secrets
never appear in a repr, a log line or ``check-config``'s output.

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

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_checks import KAFKA_OPT_PREFIXES, PUBLIC_CAMS_ENDPOINT, address_problems, librdkafka_problems, reserved_kafka_options
from .env_names import unknown_variables
from .redact import HIDDEN, is_secret_name, redact_text, redact_url

DEFAULT_ACCOUNT = "default"
KAFKA_SECTIONS = {"kafka_options": "kafka", "consumer_options": "kafka.consumer", "producer_options": "kafka.producer"}
"""The TOML table of each set of librdkafka options."""
INFLIGHT_POLICIES = ("resend", "fail")
GROUP_PROTOCOLS = ("classic", "consumer")
PROCESSING_GUARANTEES = ("at-least-once", "exactly-once")
LOG_FORMATS = ("auto", "json", "text")
URL_SETTINGS = ("cams_endpoint", "schema_registry_url", "redis_url")
RECEIPTS_JOIN = ("off", "on")
CREDENTIAL_SOURCES = ("static", "default-chain")  # as consumer.credentials.CREDENTIAL_SOURCES


class ConfigError(Exception):
    """Bad configuration: ``problems`` holds one human sentence per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    type: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    secret: bool = False


def _s(name: str, typ: type, default: Any, help: str, **kw: Any) -> Setting:
    env = kw.pop("env", None) or "CHATAPP_" + name.upper()
    return Setting(name, env, typ, default, help, **kw)


SETTINGS: tuple[Setting, ...] = (
    _s(
        "kafka_bootstrap_servers",
        str,
        None,
        "Kafka bootstrap servers (host:port,...). Unset: `run` refuses to start; `chatapp-devkit demo` starts an embedded broker.",
    ),
    _s("group_id", str, "chatapp-consumer", "Consumer group id shared by every instance."),
    _s("request_topic", str, "chatapp.send-requests", "Topic of SendRequest messages."),
    _s("reply_topic", str, "chatapp.send-results", "Topic of SendResult messages (a request's `reply-to` header overrides it)."),
    _s("dlq_topic", str, "chatapp.send-requests.dlq", "Dead-letter topic for undecodable input (original bytes, reason in headers)."),
    _s(
        "reply_to_pattern",
        str,
        None,
        "Regular expression of the topics a request's `reply-to` header may name (the whole name must match; never internal `__` topics, the request or the dead-letter topic). Unset: only the reply topic; a request naming another is REJECTED with code Chatapp.ReplyToNotAllowed.",
    ),
    _s("schema_registry_url", str, None, "Confluent Schema Registry URL. Set: values use the Confluent wire format; unset: plain Avro binary."),
    _s("cams_endpoint", str, PUBLIC_CAMS_ENDPOINT, "CAMS API endpoint (https://host or http://127.0.0.1:PORT)."),
    _s("access_key_id", str, None, "Access key id of the default account.", env="ALIBABA_CLOUD_ACCESS_KEY_ID"),
    _s("access_key_secret", str, None, "Access key secret of the default account.", env="ALIBABA_CLOUD_ACCESS_KEY_SECRET", secret=True),
    _s("security_token", str, None, "STS security token of the default account.", env="ALIBABA_CLOUD_SECURITY_TOKEN", secret=True),
    _s(
        "rate_limit_per_second",
        float,
        10.0,
        "API calls per second per account (the CAMS limit), shared by the whole group when Redis is set.",
        minimum=0.1,
        maximum=1000,
    ),
    _s(
        "rate_limit_burst",
        int,
        1,
        "Calls that may go back to back after an idle period (1 spaces calls evenly; any burst stays within the calls per second of every window).",
        minimum=1,
        maximum=1000,
    ),
    _s(
        "rate_limit_safety_margin",
        float,
        0.005,
        "Fraction added to the window (and the interval between calls) to absorb network jitter.",
        minimum=0.0,
        maximum=0.5,
    ),
    _s(
        "rate_limit_decrease",
        float,
        0.7,
        "On System.LimitControl the account's rate is multiplied by this (shared by the group with Redis).",
        minimum=0.1,
        maximum=0.95,
    ),
    _s(
        "rate_limit_recovery_per_s",
        float,
        0.1,
        "After a slow-down the rate climbs back by this fraction of the configured rate per second.",
        minimum=0.01,
        maximum=10,
    ),
    _s(
        "rate_limit_throttle_tolerance",
        int,
        2,
        "System.LimitControl answers per 2 s taken as jitter (retried) before the account is slowed down.",
        minimum=0,
        maximum=100,
    ),
    _s(
        "limiter_fallback_instances",
        int,
        3,
        "With Redis unreachable, each service process sends at rate / this number (count every worker of every instance).",
        minimum=1,
        maximum=1000,
    ),
    _s("redis_url", str, None, "Redis URL (redis://host:6379/0). Set: shared rate limiter and de-duplication ledger; unset: in-process ones."),
    _s("redis_key_prefix", str, "chatapp:", "Prefix of every Redis key (limiter and ledger); instances sharing a budget must agree on it."),
    _s("batch_max_recipients", int, 1000, "Recipients per API call (the API's cap is 1,000).", minimum=1, maximum=1000),
    _s(
        "batch_max_bytes",
        int,
        1 << 20,
        "Request bytes per API call (the encoded size of the requests it carries): a batch closes before a request would pass it, and a larger request goes alone. Bounds a call's size (percent-encoding makes parameters up to 3 times longer) and the memory of preparing it.",
        minimum=1 << 16,
        maximum=1 << 24,
    ),
    _s("batch_linger_ms", int, 200, "How long a batch that is not full waits for more requests.", minimum=0, maximum=60_000),
    _s(
        "workers",
        int,
        1,
        "Service processes of this instance, under one supervisor (one core each: Python runs one thread at a time); they share the instance's rate limit and its metrics port.",
        minimum=1,
        maximum=64,
    ),
    _s(
        "send_concurrency",
        int,
        8,
        "API calls in flight at once per account, per service process (per worker): the sender has this many threads for each configured account, so one account never takes another's.",
        minimum=1,
        maximum=256,
    ),
    _s(
        "intake_nice",
        int,
        10,
        "Niceness the main loop (consume, decode, batch, publish results) adds to its own thread, so that the sender threads carrying granted calls get the CPU first when it is short (Linux; 0 = off).",
        minimum=0,
        maximum=19,
    ),
    _s(
        "max_buffered_recipients",
        int,
        50_000,
        "Back-pressure: partitions pause when this many recipients wait (batches, limiter, in flight).",
        minimum=1000,
        maximum=10_000_000,
    ),
    _s(
        "max_buffered_seconds",
        float,
        5.0,
        "Back-pressure below max_buffered_recipients: partitions pause once more recipients wait than this process sent in this many seconds lately (never fewer than 3 full batches of each batch key sent lately); instances sharing a budget then read the backlog at the pace they send it. 0 = off.",
        minimum=0,
        maximum=3600,
    ),
    _s(
        "max_buffered_bytes",
        int,
        64 * 1024 * 1024,
        "Back-pressure: partitions pause when buffered message bytes exceed this.",
        minimum=1 << 20,
        maximum=1 << 34,
    ),
    _s("retry_max_attempts", int, 6, "API attempts per batch for transient failures (timeouts, 5xx, connection errors).", minimum=1, maximum=100),
    _s("retry_backoff_ms", int, 200, "First retry delay; doubles each attempt, with full jitter.", minimum=1, maximum=600_000),
    _s("retry_backoff_max_ms", int, 10_000, "Cap of the retry delay.", minimum=1, maximum=3_600_000),
    _s("throttle_max_retries", int, 50, "Retries of a batch throttled with System.LimitControl before it fails.", minimum=0, maximum=10_000),
    _s("http_connect_timeout_s", float, 5.0, "CAMS connect timeout.", minimum=0.1, maximum=120),
    _s("http_read_timeout_s", float, 10.0, "CAMS read timeout.", minimum=0.1, maximum=600),
    _s("ledger_retention_s", int, 7 * 86400, "How long the de-duplication ledger remembers a request id.", minimum=60, maximum=90 * 86400),
    _s(
        "ledger_memory_entries",
        int,
        100_000,
        "Without Redis: request ids the in-process ledger remembers (oldest forgotten first).",
        minimum=1000,
        maximum=10_000_000,
    ),
    _s(
        "inflight_policy",
        str,
        "resend",
        "A redelivered request that was in flight when an instance died: resend it, or fail it (code Chatapp.InFlightUnknown).",
        choices=INFLIGHT_POLICIES,
    ),
    _s("inflight_stale_s", int, 60, "An in-flight mark older than this belongs to a dead instance.", minimum=1, maximum=86400),
    _s("drain_timeout_s", float, 30.0, "On shutdown or revocation: how long to keep sending what is buffered.", minimum=0, maximum=3600),
    _s("commit_interval_ms", int, 1000, "How often finished offsets are committed.", minimum=10, maximum=60_000),
    _s(
        "group_protocol",
        str,
        "classic",
        "Consumer group protocol: classic (JoinGroup/SyncGroup, cooperative-sticky, the client's session timeout and heartbeats) or consumer (KIP-848, Kafka 4.0+: the broker assigns and sets the session timeout and heartbeat interval; CHATAPP_SESSION_TIMEOUT_MS is not used).",
        choices=GROUP_PROTOCOLS,
    ),
    _s(
        "processing_guarantee",
        str,
        "at-least-once",
        "at-least-once: results, dead letters and offsets are written apart (a crash may repeat results). exactly-once: they go in one Kafka transaction per commit interval, so readers with isolation.level=read_committed see one result per request; needs CHATAPP_INSTANCE_ID.",
        choices=PROCESSING_GUARANTEES,
    ),
    _s(
        "instance_id",
        str,
        None,
        "Stable id of this instance, unique in the group and the same after a restart (a StatefulSet pod name, a host name plus a slot). Exactly-once mode: the transactional.id is <group id>.<instance id> (.w<n> per worker), and a restart fences its predecessor's open transaction at once.",
    ),
    _s(
        "transaction_timeout_ms",
        int,
        10_000,
        "Exactly-once mode: the broker aborts a transaction left open this long (a dead instance holds read_committed readers back at most this long). Above CHATAPP_COMMIT_INTERVAL_MS.",
        minimum=1000,
        maximum=900_000,
    ),
    _s("session_timeout_ms", int, 45_000, "Consumer group session timeout.", minimum=1000, maximum=3_600_000),
    _s(
        "summary_interval_s",
        float,
        30.0,
        "`run` logs what it did since its last summary line (results by status, dead letters, API calls, budget use) this often; 0: never.",
        minimum=0,
        maximum=86_400,
    ),
    _s(
        "receipts_join",
        str,
        "off",
        "on: the sender records, for each recipient of an accepted call, its TaskId and number → request id (in Redis, else in process), and gives a call of requests without task_id a TaskId of its own, so that delivery receipts can be joined to requests (docs/receipts.md).",
        choices=RECEIPTS_JOIN,
    ),
    _s(
        "receipts_retention_s",
        int,
        7 * 86400,
        "How long the join (and the receipts seen, for de-duplication) is kept: the latest a Read receipt can still find its request.",
        minimum=60,
        maximum=90 * 86400,
    ),
    _s(
        "receipts_token",
        str,
        None,
        "The secret last segment of the receipts callback URL (/chatapp/status/<token>): 16 to 256 letters, digits, -, _ or .; required by `receipts`.",
        secret=True,
    ),
    _s("receipts_host", str, "0.0.0.0", "Address the receipts receiver listens on."),
    _s("receipts_port", int, 9402, "Port of the receipts receiver (0 = any free port).", minimum=0, maximum=65535),
    _s("receipts_max_body_bytes", int, 4 << 20, "Largest receipts push taken; a larger one is answered 413.", minimum=1024, maximum=1 << 28),
    _s(
        "receipts_claim_s",
        float,
        30.0,
        "How long a receiver holds a receipt it took before its status is published (at least the publish timeout + 2 s); a crashed receiver's receipts are taken again after it, once its statuses are looked for on the status topic.",
        minimum=1,
        maximum=3600,
    ),
    _s(
        "receipts_publish_timeout_s",
        float,
        10.0,
        "How long a push waits for the broker to acknowledge its statuses before it is answered 503 (CAMS pushes it again).",
        minimum=0.5,
        maximum=600,
    ),
    _s("status_topic", str, "chatapp.send-status", "Topic of SendStatus records (delivery receipts joined to requests), key = request_id."),
    _s("metrics_host", str, "0.0.0.0", "Address of the metrics and health HTTP server."),
    _s("metrics_port", int, 9400, "Port of /metrics, /healthz, /readyz (0 = any free port).", minimum=0, maximum=65535),
    _s("log_format", str, "auto", "json, text, or auto (text on a terminal, JSON otherwise).", choices=LOG_FORMATS),
    _s("log_level", str, "INFO", "Log level.", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
)


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


def _convert(spec: Setting, raw: Any) -> Any:
    if raw is None:
        return None
    if spec.type is str:
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):  # a TOML array, table, date
            raise ValueError
        if spec.choices:  # any case: debug, Debug and DEBUG are the same level
            return next((choice for choice in spec.choices if choice.casefold() == str(raw).strip().casefold()), str(raw))
        return str(raw)
    if isinstance(raw, bool):
        raise ValueError
    if spec.type is int:
        if isinstance(raw, float) and not raw.is_integer():
            raise ValueError
        return int(raw)
    value = spec.type(raw)
    if isinstance(value, float) and math.isnan(value):  # inf fails the range check instead
        raise ValueError
    return value


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


def _check(spec: Setting, value: Any) -> str | None:
    if value is None:
        return None
    if spec.choices is not None and value not in spec.choices:
        return f"{spec.env}: must be one of {', '.join(spec.choices)} (got {value!r})"
    if spec.minimum is not None and value < spec.minimum:
        return f"{spec.env}: must be at least {spec.minimum:g} (got {value})"
    if spec.maximum is not None and value > spec.maximum:
        return f"{spec.env}: must be at most {spec.maximum:g} (got {value})"
    return None


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
    problems = [msg for spec in SETTINGS if (msg := _check(spec, values.get(spec.name)))]
    problems += reserved_kafka_options(values)
    if values["retry_backoff_max_ms"] < values["retry_backoff_ms"]:
        problems.append("CHATAPP_RETRY_BACKOFF_MAX_MS: must be at least CHATAPP_RETRY_BACKOFF_MS")
    if values["receipts_claim_s"] < values["receipts_publish_timeout_s"] + 2:
        # a push publishes only within claim - publish timeout - 1 s of claiming (a claim gone stale while its statuses may still be written would let another push publish them again)
        problems.append("CHATAPP_RECEIPTS_CLAIM_S: must be at least CHATAPP_RECEIPTS_PUBLISH_TIMEOUT_S + 2")
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
            values[spec.name] = _convert(spec, raw)
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


def _number(value: float | None) -> str:
    return f"{int(value):,}" if value is not None and float(value).is_integer() else f"{value:g}"


def reference_markdown() -> str:
    """The README's configuration table, rendered from ``SETTINGS`` (a test keeps them equal)."""
    rows = ["| environment variable | TOML key | default | meaning |", "|---|---|---|---|"]
    for spec in SETTINGS:
        default = "unset" if spec.default is None else f"`{spec.default:,}`" if type(spec.default) is int else f"`{spec.default}`"
        bounds = ""
        if spec.minimum is not None or spec.maximum is not None:
            bounds = f" Range {_number(spec.minimum)}–{_number(spec.maximum)}."
        if spec.choices:
            bounds = f" One of {', '.join(spec.choices)} (any case)."
        rows.append(f"| `{spec.env}` | `{spec.name}` | {default} | {spec.help.replace('|', '/')}{bounds} |")
    return "\n".join(rows)
