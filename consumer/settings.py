"""The settings table: every setting declared once, as a ``Setting`` row of ``SETTINGS`` (its name,
environment variable, type, default, bounds, choices and help), how a raw value of one converts
and is checked, and the configuration reference rendered from the table (docs/configuration.md;
``scripts/sync_config_reference.py`` writes it, tests/unit/test_docs.py keeps it in step).

``consumer.config`` loads the settings from the TOML file and the environment, checks them against
one another and builds the ``Config``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .config_checks import PUBLIC_CAMS_ENDPOINT

INFLIGHT_POLICIES = ("resend", "fail", "receipts")
GROUP_PROTOCOLS = ("classic", "consumer")
PROCESSING_GUARANTEES = ("at-least-once", "exactly-once")
LOG_FORMATS = ("auto", "json", "text")
RECEIPTS_JOIN = ("off", "on")


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

    def convert(self, raw: Any) -> Any:
        """``raw`` (from the environment or the TOML file) as a value of this setting; ValueError or
        TypeError when it is none."""
        if raw is None:
            return None
        if self.type is str:
            if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):  # a TOML array, table, date
                raise ValueError
            if self.choices:  # any case: debug, Debug and DEBUG are the same level
                return next((choice for choice in self.choices if choice.casefold() == str(raw).strip().casefold()), str(raw))
            return str(raw)
        if isinstance(raw, bool):
            raise ValueError
        if self.type is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(raw)
        value = self.type(raw)
        if isinstance(value, float) and math.isnan(value):  # inf fails the range check instead
            raise ValueError
        return value

    def problem(self, value: Any) -> str | None:
        """One line saying why ``value`` is out of this setting's choices or bounds, or None."""
        if value is None:
            return None
        if self.choices is not None and value not in self.choices:
            return f"{self.env}: must be one of {', '.join(self.choices)} (got {value!r})"
        if self.minimum is not None and value < self.minimum:
            return f"{self.env}: must be at least {self.minimum:g} (got {value})"
        if self.maximum is not None and value > self.maximum:
            return f"{self.env}: must be at most {self.maximum:g} (got {value})"
        return None


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
        "A redelivered request that was in flight when an instance died: resend it, fail it (code Chatapp.InFlightUnknown), or receipts: answer it SENT if the receipts receiver got a receipt for its call, else resend it once CHATAPP_INFLIGHT_RECEIPTS_WAIT_S passed (needs CHATAPP_RECEIPTS_JOIN=on and a receiver sharing the service's Redis).",
        choices=INFLIGHT_POLICIES,
    ),
    _s("inflight_stale_s", int, 60, "An in-flight mark older than this belongs to a dead instance.", minimum=1, maximum=86400),
    _s(
        "inflight_receipts_wait_s",
        float,
        30.0,
        "inflight_policy=receipts: how long after its mark went stale a request waits for a receipt of its call before it is resent.",
        minimum=0,
        maximum=3600,
    ),
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


def _number(value: float | None) -> str:
    return f"{int(value):,}" if value is not None and float(value).is_integer() else f"{value:g}"


def reference_markdown() -> str:
    """docs/configuration.md's configuration table, rendered from ``SETTINGS`` (a test keeps them equal)."""
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
