"""What the service asks of librdkafka for its group: heartbeats at most a quarter of a second apart, and the
next-generation protocol's settings when chosen."""

from __future__ import annotations

import pytest

from consumer.config import load
from consumer.kafka import consumer_config
from consumer.kafka.options import refusal


def _consumer(**env: str) -> dict:
    return consumer_config(load({"CHATAPP_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", **env}, path=None))


@pytest.mark.parametrize(("session_ms", "heartbeat_ms"), [("45000", 250), ("6000", 250), ("1200", 240), ("1000", 200)])
def test_heartbeats_come_at_most_a_quarter_of_a_second_apart(session_ms: str, heartbeat_ms: int) -> None:
    settings = _consumer(CHATAPP_SESSION_TIMEOUT_MS=session_ms)
    assert settings["heartbeat.interval.ms"] == heartbeat_ms
    assert settings["partition.assignment.strategy"] == "cooperative-sticky"


def test_the_consumer_group_protocol_leaves_assignment_session_and_heartbeat_to_the_broker() -> None:
    settings = _consumer(CHATAPP_GROUP_PROTOCOL="consumer")
    assert settings["group.protocol"] == "consumer"
    assert not {"session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy"} & set(settings)
    assert refusal("consumer", settings) is None  # librdkafka takes it as it is
