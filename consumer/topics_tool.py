"""``chatapp-consumer topics describe|create`` and ``check-config``'s line about the topics.

What each topic should be is ``topics.py``; the cluster is asked through ``kafka/admin.py``.
Topics that exist are never changed: ``create`` makes the missing ones and says how the
others differ from the plan.
"""

from __future__ import annotations

import sys

from .config import Config
from .kafka.admin import Cluster, TopicAdmin
from .kafka.tools import KafkaUnavailable
from .topics import TopicSpec, differences, kafka_topics_commands, missing_line, plan


def _partitions(count: int) -> str:
    return f"{count} partition" + ("" if count == 1 else "s")


def _connect(config: Config, bootstrap: str | None) -> tuple[TopicAdmin, Cluster] | int:
    """An admin client and the cluster it sees, or the exit code after one line naming why not
    (2: no bootstrap servers; 1: the cluster does not answer)."""
    servers = bootstrap or config.kafka_bootstrap_servers
    if not servers:
        print("config error: CHATAPP_KAFKA_BOOTSTRAP_SERVERS (or --bootstrap-servers): not set", file=sys.stderr)
        return 2
    admin = TopicAdmin(config, servers)
    try:
        return admin, admin.cluster()
    except KafkaUnavailable as exc:
        print(f"kafka: not reachable: {exc}", file=sys.stderr)
        return 1


def _describe_lines(admin: TopicAdmin, cluster: Cluster, specs: list[TopicSpec]) -> list[str]:
    present = [s for s in specs if s.name in cluster.topics]
    configs = admin.configs([s.name for s in present]) if present and cluster.controller else {}
    unreadable = "configs not readable: " + ("DescribeConfigs failed" if cluster.controller else "the broker names no controller")
    lines = []
    for spec in specs:
        if spec.name not in cluster.topics:
            lines.append(f"{spec.name:28} MISSING  ({spec.role} topic)")
            continue
        found = configs.get(spec.name) or None
        off = differences(spec, cluster.topics[spec.name], found)
        shown = " ".join(f"{k}={found[k]}" for k in spec.configs if k in found) if found else unreadable
        lines.append(
            f"{spec.name:28} {'ok      ' if not off else 'DIFFERS '} {_partitions(cluster.topics[spec.name])}; {shown}" + (f"; {'; '.join(off)}" if off else "")
        )
    return lines


def describe(config: Config, bootstrap: str | None = None) -> int:
    """One line per topic: missing, or its partitions and configs beside the plan's; 1 if any is missing."""
    connected = _connect(config, bootstrap)
    if isinstance(connected, int):
        return connected
    admin, cluster = connected
    specs = plan(config)
    for line in _describe_lines(admin, cluster, specs):
        print(line)
    missing = [s.name for s in specs if s.name not in cluster.topics]
    if missing:
        print(missing_line(missing, cluster.mock), file=sys.stderr)
        return 1
    return 0


def create(config: Config, partitions: int, replication: int, dry_run: bool, bootstrap: str | None = None) -> int:
    """Create the topics that are missing (``dry_run``: print the kafka-topics.sh lines instead)."""
    specs = plan(config, partitions, replication)
    if dry_run:
        print("\n".join(kafka_topics_commands(specs, replication, bootstrap or config.kafka_bootstrap_servers or "$B")))
        return 0
    connected = _connect(config, bootstrap)
    if isinstance(connected, int):
        return connected
    admin, cluster = connected
    wanted = [s for s in specs if s.name not in cluster.topics]
    for spec in specs:
        if spec.name in cluster.topics:
            print(
                f"{spec.name:28} exists   {_partitions(cluster.topics[spec.name])}: left as it is (`chatapp-consumer topics describe` compares it with the plan)"
            )
    if not wanted:
        return 0
    if not cluster.controller:
        names = [s.name for s in wanted]
        print(
            missing_line(names, True) if cluster.mock else f"missing {', '.join(names)}: the cluster names no controller, which creates topics", file=sys.stderr
        )
        return 1
    if replication > cluster.brokers:
        print(
            f"--replication-factor {replication} needs {replication} brokers; the cluster has {cluster.brokers}: give --replication-factor {cluster.brokers}",
            file=sys.stderr,
        )
        return 1
    errors = admin.create([(s.name, s.partitions, replication, s.configs) for s in wanted])
    for spec in wanted:
        error = errors.get(spec.name)
        print(
            f"{spec.name:28} {'created ' if error is None else 'FAILED  '} "
            + (f"{_partitions(spec.partitions)}, replication {replication}" if error is None else error)
        )
    return 0 if not any(errors.values()) else 1


def check_line(config: Config) -> tuple[str, bool, str]:
    """``check-config``'s line: are the three topics there, and if not, how to create them."""
    try:
        cluster = TopicAdmin(config).cluster()
    except KafkaUnavailable as exc:
        return "topics", False, f"not read: {exc}"
    specs = plan(config)
    missing = [s.name for s in specs if s.name not in cluster.topics]
    if missing:
        return "topics", False, missing_line(missing, cluster.mock)
    return "topics", True, ", ".join(f"{s.name} ({_partitions(cluster.topics[s.name])})" for s in specs)
