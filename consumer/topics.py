"""The three topics the service needs, as its guarantees assume them. No I/O.

| topic    | partitions | cleanup | retention | why |
|----------|------------|---------|-----------|-----|
| requests | ``--partitions`` (12): at least the group's processes | delete | the ledger's (``CHATAPP_LEDGER_RETENTION_S``, 7 days) | an uncommitted request is read again after an outage; the ledger answers it for as long as it remembers the id, so the topic keeps nothing the ledger has forgotten |
| results  | as many    | delete, **not compact** | 7 days | key = ``request_id``; a REJECTED ``Chatapp.RequestIdReused`` result has the key of the first request's SENT one, and compaction would keep only the later: consumers de-duplicate by ``request_id`` instead |
| DLQ      | 1          | delete  | 30 days   | ``replay-dlq`` re-injects from it after a fix; dead letters are rare |

Every one: ``min.insync.replicas`` one under the replication factor (2 of 3; results and dead
letters are produced with ``acks=all``), and the request topic and the DLQ take a record of
2 MiB (``max.message.bytes``: a request may be 1 MiB encoded, plus key, headers and the batch).
``docs/decisions/0028-topics.md`` has the reasoning; ``deploy/strimzi/topics.yaml`` and the
``kafka-topics.sh`` lines of ``docs/operations.md`` are these specs (a test keeps them equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .config import Config

DEFAULT_PARTITIONS = 12
DEFAULT_REPLICATION = 3
DAY_MS = 86_400_000
RESULT_RETENTION_MS = 7 * DAY_MS
DLQ_RETENTION_MS = 30 * DAY_MS
LARGE_RECORD_BYTES = 2 * 1024 * 1024
MOCK_CREATE_HINT = (
    "this is librdkafka's mock cluster, which takes no CreateTopics: start it with `chatapp-devkit mock-broker --topic NAME:PARTITIONS` "
    'for each, or POST {"name": NAME, "partitions": N} to its control_url + /topics'
)


@dataclass(frozen=True)
class TopicSpec:
    role: str
    """request, reply or dlq."""
    name: str
    partitions: int
    configs: Mapping[str, str]


def plan(config: Config, partitions: int = DEFAULT_PARTITIONS, replication: int = DEFAULT_REPLICATION) -> list[TopicSpec]:
    """The request, reply and dead-letter topics of ``config`` as the guarantees assume them."""
    insync = {"min.insync.replicas": str(max(1, min(2, replication - 1)))}
    large = {"max.message.bytes": str(LARGE_RECORD_BYTES)}
    return [
        TopicSpec(
            "request", config.request_topic, partitions, {"cleanup.policy": "delete", "retention.ms": str(config.ledger_retention_s * 1000), **large, **insync}
        ),  # fmt: skip
        TopicSpec("reply", config.reply_topic, partitions, {"cleanup.policy": "delete", "retention.ms": str(RESULT_RETENTION_MS), **insync}),
        TopicSpec("dlq", config.dlq_topic, 1, {"cleanup.policy": "delete", "retention.ms": str(DLQ_RETENTION_MS), **large, **insync}),
    ]


def kafka_topics_commands(specs: list[TopicSpec], replication: int, bootstrap: str = "$B") -> list[str]:
    """The ``kafka-topics.sh --create`` line of each topic (what ``topics create`` asks for)."""
    return [
        f"kafka-topics.sh --bootstrap-server {bootstrap} --create --topic {s.name} --partitions {s.partitions} --replication-factor {replication} "
        + " ".join(f"--config {k}={v}" for k, v in s.configs.items())
        for s in specs
    ]


def differences(spec: TopicSpec, partitions: int, configs: Mapping[str, str] | None) -> list[str]:
    """How an existing topic differs from ``spec`` where it matters (``configs`` None: not readable)."""
    out = []
    if spec.role == "request" and partitions < 2:
        out.append(f"{partitions} partition: one process of the group can read it")
    if configs is not None:
        for name, advised in spec.configs.items():
            have = configs.get(name)
            if have is not None and have != advised:
                out.append(f"{name}={have} (advised {advised})")
    return out


def missing_line(missing: list[str], mock: bool) -> str:
    """What to do about topics that do not exist, in one line."""
    how = MOCK_CREATE_HINT if mock else "create them with `chatapp-consumer topics create` (or the kafka-topics.sh lines in docs/operations.md)"
    return f"missing {', '.join(missing)}: {how}"
