"""What ``topics`` and ``check-config`` ask of the cluster: its topics, their configs, new topics.

Only whole-cluster metadata is read: a metadata request naming a topic makes a broker that
auto-creates topics (librdkafka's mock cluster does) create it. Configs and new topics go
through the controller; a cluster whose metadata names no controller among its brokers (the
mock cluster, whose CreateTopics and DescribeConfigs are not supported) is told apart at once
rather than after a timeout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from ..config import Config
from .client import _common
from .clientlog import logged
from .tools import KafkaUnavailable

ADMIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Cluster:
    brokers: int
    topics: dict[str, int]
    """Every topic's partitions."""
    controller: bool
    """Its metadata names a controller among its brokers (admin requests can be made)."""
    mock: bool
    """librdkafka's mock cluster (its cluster id says so)."""


class TopicAdmin:
    def __init__(self, config: Config, bootstrap: str | None = None):
        """An admin client with the options shared by the consumer and the producer (security)."""
        options = _common(config) | ({"bootstrap.servers": bootstrap} if bootstrap else {})
        self._admin = AdminClient(logged(options))

    def cluster(self, timeout_s: float = 5.0) -> Cluster:
        """The cluster as its metadata says; KafkaUnavailable when it does not answer in time."""
        try:
            metadata = self._admin.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise KafkaUnavailable(str(exc)) from exc
        topics = {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}
        return Cluster(len(metadata.brokers), topics, metadata.controller_id in metadata.brokers, str(metadata.cluster_id).startswith("mockCluster"))

    def configs(self, names: Iterable[str]) -> dict[str, dict[str, str]]:
        """The configs of each topic that could be read ({} for one that could not)."""
        futures = self._admin.describe_configs([ConfigResource(ResourceType.TOPIC, name) for name in names], request_timeout=ADMIN_TIMEOUT_S)
        out: dict[str, dict[str, str]] = {}
        for resource, future in futures.items():
            try:
                out[resource.name] = {name: entry.value for name, entry in future.result(ADMIN_TIMEOUT_S).items() if entry.value is not None}
            except KafkaException:
                out[resource.name] = {}
        return out

    def create(self, topics: Iterable[tuple[str, int, int, Mapping[str, str]]]) -> dict[str, str | None]:
        """Create (name, partitions, replication, configs) topics; each name's error, or None."""
        new = [NewTopic(name, partitions, replication, config=dict(configs)) for name, partitions, replication, configs in topics]
        futures = self._admin.create_topics(new, request_timeout=ADMIN_TIMEOUT_S, operation_timeout=ADMIN_TIMEOUT_S)
        out: dict[str, str | None] = {}
        for name, future in futures.items():
            try:
                future.result(ADMIN_TIMEOUT_S * 2)
                out[name] = None
            except KafkaException as exc:
                out[name] = exc.args[0].str() if exc.args else str(exc)
        return out
