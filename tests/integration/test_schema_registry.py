"""The Confluent wire format against the Schema Registry stand-in (``chatapp_devkit.registry_standin``).

First the codec alone against the in-thread stand-in, then the service in its own process with
the stand-in in its own process too: producers use confluent-kafka's AvroSerializer (one of them
with a newer, compatible writer schema), results are read back with its AvroDeserializer.
"""

from __future__ import annotations

import copy
import json
import select
import struct
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from chatapp_devkit.local_cams import LocalCams
from chatapp_devkit.mockcluster import MockCluster
from chatapp_devkit.processes import child_env
from chatapp_devkit.registry_standin import RegistryStandIn
from chatapp_devkit.samples import phone, request_record, sample_records
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from consumer.codec import (
    REQUEST_SCHEMA_JSON,
    RESULT_SCHEMA_JSON,
    DecodeError,
    PlainAvroCodec,
    RegistryAvroCodec,
)
from consumer.kafka.registry import registry_functions
from consumer.models import SendResult
from tests.fixtures.service import DLQ, REQUESTS, RESULTS, ROOT, produce, service_env

REQUEST_SUBJECT = f"{REQUESTS}-value"
RESULT_SUBJECT = f"{RESULTS}-value"
UNKNOWN_ID = 987_654


def evolved_request_schema() -> dict[str, Any]:
    """The bundled SendRequest schema plus two optional fields a newer producer writes."""
    schema = copy.deepcopy(REQUEST_SCHEMA_JSON)
    schema["fields"].append({"name": "campaign", "type": ["null", "string"], "default": None})
    recipients = next(f for f in schema["fields"] if f["name"] == "recipients")
    recipients["type"]["items"]["fields"].append({"name": "priority", "type": ["null", "int"], "default": None})
    return schema


def evolved_record(record: dict[str, Any], campaign: str) -> dict[str, Any]:
    """``record`` with the newer fields filled in."""
    return {**record, "campaign": campaign, "recipients": [{**r, "priority": 5} for r in record["recipients"]]}


def unknown_id_value(record: dict[str, Any]) -> bytes:
    """A well-formed Avro body framed with a schema id the registry never issued."""
    return b"\x00" + struct.pack(">I", UNKNOWN_ID) + PlainAvroCodec().encode_request(record)


# -- the codec against the in-thread stand-in --------------------------------------------------


@pytest.fixture
def registry() -> Iterator[RegistryStandIn]:
    """The stand-in in a thread of this process, stopped at teardown."""
    with RegistryStandIn() as standin:
        yield standin


@pytest.fixture
def codec(registry: RegistryStandIn) -> RegistryAvroCodec:
    """The service's registry codec on confluent-kafka's client, pointed at the stand-in."""
    fetch, register = registry_functions(registry.url)
    return RegistryAvroCodec(fetch, register, RESULT_SUBJECT, REQUEST_SUBJECT)


def test_encode_decode_roundtrip_registers_both_schemas(registry: RegistryStandIn, codec: RegistryAvroCodec) -> None:
    record = request_record("rt-1", "welcome", "en", [phone(1), phone(2)])
    value = codec.encode_request(record)
    client = SchemaRegistryClient({"url": registry.url})
    request_id = client.get_latest_version(REQUEST_SUBJECT).schema_id
    assert value[:5] == b"\x00" + struct.pack(">I", request_id)
    assert codec.decode(value) == record
    assert codec.decode(codec.encode_request(record)) == record  # the id is cached: one registration
    assert [p for m, p in registry.requests if m == "POST"] == [f"/subjects/{REQUEST_SUBJECT}/versions"]

    result = {
        "request_id": "rt-1",
        "status": "SENT",
        "code": "OK",
        "message": None,
        "group_message_id": "g-1",
        "api_request_id": "a-1",
        "recipients": 2,
        "attempts": 1,
        "batch_id": "b-1",
        "completed_at": 1_700_000_000_000,
    }
    encoded = codec.encode_result(SendResult.from_record(result))
    assert client.get_subjects() == sorted([REQUEST_SUBJECT, RESULT_SUBJECT])
    assert json.loads(client.get_latest_version(RESULT_SUBJECT).schema.schema_str) == RESULT_SCHEMA_JSON
    decoded = AvroDeserializer(client)(encoded, SerializationContext(RESULTS, MessageField.VALUE))
    assert {**decoded, "completed_at": int(decoded["completed_at"].timestamp() * 1000)} == result


def test_newer_writer_schema_is_resolved_against_the_bundled_reader(registry: RegistryStandIn, codec: RegistryAvroCodec) -> None:
    client = SchemaRegistryClient({"url": registry.url})
    serializer = AvroSerializer(client, json.dumps(evolved_request_schema()))
    record = request_record("evo-1", "welcome", "en", [phone(3)])
    value = serializer(evolved_record(record, "spring"), SerializationContext(REQUESTS, MessageField.VALUE))
    assert codec.decode(value) == record  # the new fields are dropped, the rest is intact


def test_unknown_schema_id_is_a_decode_error(codec: RegistryAvroCodec) -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode(unknown_id_value(request_record("u-1", "welcome", "en", [phone(4)])))
    assert caught.value.reason == "unknown-schema-id"
    assert str(UNKNOWN_ID) in caught.value.detail


@pytest.mark.parametrize("value", [b"", b"\x00\x00", PlainAvroCodec().encode_request(request_record("p-1", "welcome", "en", [phone(5)]))])
def test_value_without_magic_byte_and_id_is_not_wire_format(codec: RegistryAvroCodec, value: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode(value)
    assert caught.value.reason == "not-wire-format"


def test_schema_id_of_a_non_avro_schema_is_a_decode_error(registry: RegistryStandIn, codec: RegistryAvroCodec) -> None:
    """A JSON Schema id in the frame must not escape as a crash (it would be a poison pill)."""
    json_id = SchemaRegistryClient({"url": registry.url}).register_schema("other-value", Schema('{"type": "object"}', "JSON"))
    with pytest.raises(DecodeError) as caught:
        codec.decode(b"\x00" + struct.pack(">I", json_id) + b"\x02")
    assert caught.value.reason == "not-avro-schema"


# -- the service in its own process, the stand-in in its own process --------------------------


@pytest.fixture
def registry_process() -> Iterator[str]:
    """``python -m chatapp_devkit.registry_standin --port 0`` as its own process; yields its URL."""
    process = subprocess.Popen([sys.executable, "-m", "chatapp_devkit.registry_standin", "--port", "0"], stdout=subprocess.PIPE, env=child_env(), cwd=ROOT)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 15)
        assert ready, "the registry stand-in printed no URL within 15 s"
        yield json.loads(process.stdout.readline())["url"]
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture
def cluster() -> Iterator[MockCluster]:
    with MockCluster.start(topics={REQUESTS: 4, RESULTS: 4, DLQ: 1}) as c:
        yield c


def _serialized(url: str, schema: dict[str, Any], records: list[dict[str, Any]]) -> list[bytes]:
    serializer = AvroSerializer(SchemaRegistryClient({"url": url}), json.dumps(schema))
    ctx = SerializationContext(REQUESTS, MessageField.VALUE)
    return [serializer(r, ctx) for r in records]


def test_service_reads_and_writes_the_wire_format_with_an_evolving_producer(
    cluster: MockCluster, local_cams: LocalCams, registry_process: str, start_service: Any, topic_reader: Any
) -> None:
    url = registry_process
    old = _serialized(url, REQUEST_SCHEMA_JSON, list(sample_records(20, prefix="v1")))
    new = _serialized(url, evolved_request_schema(), [evolved_record(r, "autumn") for r in sample_records(20, prefix="v2", start=20)])
    client = SchemaRegistryClient({"url": url})
    assert client.get_versions(REQUEST_SUBJECT) == [1, 2]
    new_id = client.get_version(REQUEST_SUBJECT, 2).schema_id
    assert new[0][:5] == b"\x00" + struct.pack(">I", new_id)
    stray = [unknown_id_value(request_record("stray-1", "welcome", "en", [phone(99)])), b"plain, not framed"]
    produce(cluster.bootstrap_servers, old[:10] + [stray[0]] + new[:10] + [stray[1]] + old[10:] + new[10:])

    service = start_service(service_env(cluster.bootstrap_servers, local_cams.url, schema_registry_url=url))
    results = topic_reader(cluster.bootstrap_servers, RESULTS)
    dlq = topic_reader(cluster.bootstrap_servers, DLQ)
    assert results.read_until(lambda r: len(r.messages) >= 40, timeout=60), service.log_tail()
    assert dlq.read_until(lambda r: len(r.messages) >= 2, timeout=15), service.log_tail()

    result_id = client.get_latest_version(RESULT_SUBJECT).schema_id
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": url}))
    ctx = SerializationContext(RESULTS, MessageField.VALUE)
    assert all(m.value()[:5] == b"\x00" + struct.pack(">I", result_id) for m in results.messages)
    decoded = [deserializer(m.value(), ctx) for m in results.messages]
    assert {d["request_id"]: d["status"] for d in decoded} == {**{f"v1-{i}": "SENT" for i in range(20)}, **{f"v2-{i}": "SENT" for i in range(20, 40)}}
    assert len(decoded) == 40

    reasons = {m.value(): dict(m.headers())["chatapp.dlq.reason"] for m in dlq.messages}
    assert reasons == {stray[0]: b"unknown-schema-id", stray[1]: b"not-wire-format"}
    assert service.alive()
    assert service.stop() == 0
