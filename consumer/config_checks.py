"""The checks of configuration that reach past the settings table: URLs parsed as their clients
parse them (the Redis one by redis-py itself), the metrics host resolved, and librdkafka asked
whether it takes the Kafka options (it builds a consumer and a producer; no broker is contacted).
Each problem is one line naming the setting and its right form, secrets hidden."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

from .redact import HIDDEN, is_secret_name, redact_text, redact_url

if TYPE_CHECKING:
    from .config import Config

PUBLIC_CAMS_ENDPOINT = "https://cams.ap-southeast-1.aliyuncs.com"
KAFKA_OPT_PREFIXES = {
    "kafka_options": "CHATAPP_KAFKA_OPT_",
    "consumer_options": "CHATAPP_KAFKA_CONSUMER_OPT_",
    "producer_options": "CHATAPP_KAFKA_PRODUCER_OPT_",
}
"""The environment variables' prefix of each set of librdkafka options."""

RESERVED_KAFKA_OPTIONS = {
    "bootstrap.servers": "set it with CHATAPP_KAFKA_BOOTSTRAP_SERVERS",
    "group.id": "set it with CHATAPP_GROUP_ID",
    "enable.auto.commit": "the service commits only offsets whose results are durable",
    "enable.auto.offset.store": "the service commits only offsets whose results are durable",
    "partition.assignment.strategy": "revocation hands over work incrementally: cooperative-sticky only",
    "session.timeout.ms": "set it with CHATAPP_SESSION_TIMEOUT_MS",
    "enable.idempotence": "results must not be duplicated or reordered by producer retries",
    "acks": "a result counts as published only when every in-sync replica has it",
    "on_commit": "the service tracks commits itself",
    "transactional.id": "set CHATAPP_PROCESSING_GUARANTEE=exactly-once and CHATAPP_INSTANCE_ID",
    "transaction.timeout.ms": "set it with CHATAPP_TRANSACTION_TIMEOUT_MS",
    "isolation.level": "the service reads only committed requests",
}
"""librdkafka settings the delivery guarantees or the service's own settings depend on: a
pass-through option may not override them."""


def _option_env(table: str, name: str) -> str:
    """How a problem names librdkafka option ``name`` of ``table``: its variable, then its name."""
    return f"{KAFKA_OPT_PREFIXES[table]}{name.upper().replace('.', '_')} ({name})"


def reserved_kafka_options(values: Mapping[str, Any]) -> list[str]:
    return [
        f"{_option_env(table, name)}: cannot be overridden: {why}"
        for table in KAFKA_OPT_PREFIXES
        for name in values.get(table, {})
        if (why := RESERVED_KAFKA_OPTIONS.get(name))
    ]


ENDPOINT_FORM = f"must be http(s)://host[:port] with nothing after the host, e.g. {PUBLIC_CAMS_ENDPOINT}"
REGISTRY_FORM = "must be http(s)://host[:port][/path], several separated by commas"
REDIS_FORM = "must be redis://[[user]:password@]host[:port][/db], rediss://... (TLS) or unix:///path/to/socket"
METRICS_HOST_FORM = "an address of this machine to listen on, e.g. 0.0.0.0 (every interface) or 127.0.0.1"


def _split(url: str, schemes: tuple[str, ...]) -> SplitResult | None:
    """``url`` split, if it has one of ``schemes``, a host (unix://: none needed) and a port that
    is a number from 0 to 65535 or none."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError unless the port is a number from 0 to 65535 or absent
    except ValueError:
        return None
    return parts if parts.scheme in schemes and (parts.hostname or parts.scheme == "unix") else None


def _redis_url_problem(url: str) -> str | None:
    """Why redis-py would refuse ``url`` (None: it would not), without a secret of it."""
    if _split(url, ("redis", "rediss", "unix")) is None:
        return REDIS_FORM
    import redis

    try:
        redis.Redis.from_url(url).connection_pool.make_connection()  # parses as the service will; no I/O
    except (TypeError, ValueError) as exc:  # a query option redis-py does not know, or a bad value of one
        return f"redis-py refuses it ({exc}); {REDIS_FORM}"
    return None


_BROKER = re.compile(r"(?:[A-Za-z_]+://)?(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):\d{1,5}")
"""A bootstrap address: host:port, [IPv6]:port, optionally after a listener's ``NAME://``."""


def bootstrap_problem(servers: str | None) -> str | None:
    """What is wrong with CHATAPP_KAFKA_BOOTSTRAP_SERVERS, naming the fix (librdkafka would take
    ``localhost`` as ``localhost:9092`` and retry it for ever, quietly, when the broker is elsewhere)."""
    addresses = [address.strip() for address in (servers or "").split(",")]
    for address in [a for a in addresses if a] or [""]:  # a trailing comma is harmless
        if not _BROKER.fullmatch(address):
            if address and ":" not in address.strip("[]"):
                return f"CHATAPP_KAFKA_BOOTSTRAP_SERVERS: {address!r} has no port: give host:port, e.g. {address}:9092?"
            return f"CHATAPP_KAFKA_BOOTSTRAP_SERVERS: {address!r} is not host:port: give host:port[,host:port...], e.g. localhost:9092"
    return None


RECEIPTS_TOKEN = re.compile(r"[A-Za-z0-9._-]{16,256}")


def address_problems(values: Mapping[str, Any]) -> list[str]:
    """What is wrong with the Kafka bootstrap servers, the CAMS endpoint, the Schema Registry and
    Redis URLs, the metrics and receipts hosts and the receipts token, one line each naming the
    setting and its right form (URLs redacted, the token never shown)."""
    problems = []
    if values.get("kafka_bootstrap_servers") and (why := bootstrap_problem(values["kafka_bootstrap_servers"])):
        problems.append(why)
    endpoint = values["cams_endpoint"] or ""
    parts = _split(endpoint, ("http", "https"))
    if parts is None or parts.path not in ("", "/") or parts.query or parts.fragment:
        problems.append(f"CHATAPP_CAMS_ENDPOINT: {ENDPOINT_FORM} (got {redact_url(endpoint)!r})")
    registry = values.get("schema_registry_url")
    if registry and any(_split(url.strip(), ("http", "https")) is None for url in registry.split(",")):
        problems.append(f"CHATAPP_SCHEMA_REGISTRY_URL: {REGISTRY_FORM} (got {redact_url(registry)!r})")
    redis_url = values.get("redis_url")
    if redis_url and (why := _redis_url_problem(redis_url)):
        problems.append(f"CHATAPP_REDIS_URL: {why} (got {redact_url(redis_url)!r})")
    for env, host in (("CHATAPP_METRICS_HOST", values["metrics_host"]), ("CHATAPP_RECEIPTS_HOST", values["receipts_host"])):
        try:
            socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (OSError, UnicodeError) as exc:
            problems.append(f"{env}: cannot resolve {host!r} ({exc}): give {METRICS_HOST_FORM}")
    token = values.get("receipts_token")
    if token is not None and not RECEIPTS_TOKEN.fullmatch(token):
        problems.append("CHATAPP_RECEIPTS_TOKEN: must be 16 to 256 letters, digits, '-', '_' or '.' (it is a segment of the callback URL)")
    return problems


def librdkafka_problems(config: Config) -> list[str]:
    """What librdkafka refuses in the consumer's and the producer's configuration, one line each:
    it builds both (without bootstrap servers, so nothing is contacted) and says what is wrong."""
    from .kafka import consumer_config, producer_config, transactional_id
    from .kafka.options import refusal

    problems: dict[str, None] = {}  # in order, once: an option of both is refused by both
    for role, options, tables in (
        ("consumer", consumer_config(config), ("consumer_options", "kafka_options")),
        ("producer", producer_config(config, transactional_id(config)), ("producer_options", "kafka_options")),
    ):
        refused = refusal(role, options)
        if refused is not None:
            problems[_librdkafka_problem(config, tables, refused)] = None
    return list(problems)


def _librdkafka_problem(config: Config, tables: tuple[str, ...], message: str) -> str:
    """librdkafka's ``message`` as a problem naming the option it is about (its secrets hidden)."""
    message = redact_text(re.sub(r"^Failed to create (consumer|producer): ", "", message.strip()))  # the same for both
    for table in tables:
        for name, value in getattr(config, table).items():
            if is_secret_name(name) and value:
                message = message.replace(f'"{value}"', f'"{HIDDEN}"')  # librdkafka quotes the values it names
    named = re.search(r'property:? "([^"]+)"', message)
    where = [_option_env(table, named.group(1)) for table in tables if named and named.group(1) in getattr(config, table)]
    if not where:  # about several options, or one the service sets
        return f"Kafka options: librdkafka refuses them ({message}): complete or correct them (see librdkafka's CONFIGURATION.md)"
    fix = "correct its name or remove it" if message.startswith("No such configuration property") else "give a value librdkafka takes"
    return f"{where[0]}: librdkafka refuses it ({message}): {fix} (see librdkafka's CONFIGURATION.md)"
