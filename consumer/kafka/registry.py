"""The Confluent Schema Registry, through confluent-kafka's client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient


def registry_functions(url: str, client_config: dict[str, Any] | None = None) -> tuple[Callable[[int], str], Callable[[str, str], int]]:
    """(fetch by id, register under subject) backed by confluent-kafka's SchemaRegistryClient."""
    client = SchemaRegistryClient({"url": url, **(client_config or {})})

    def fetch(schema_id: int) -> str:
        # a schema without text (the client's type allows it) is undecodable like any non-Avro one:
        # "" fails to parse where None did, and the message is dead-lettered as not-avro-schema
        return client.get_schema(schema_id).schema_str or ""

    def register(subject: str, schema_str: str) -> int:
        return client.register_schema(subject, Schema(schema_str, "AVRO"))

    return fetch, register
