"""The pure pieces behind issue 21's second half: the did-you-mean for unknown variables, when the
no-partition line is due, the topics' plan, and JSON told apart from Avro."""

from __future__ import annotations

import json
import logging

import pytest

from consumer import config as settings
from consumer.codec import DecodeError, PlainAvroCodec, looks_like_json
from consumer.env_names import suggestions, unknown_variables
from consumer.group_wait import AssignmentWait, waiting_line
from consumer.settings import SETTINGS
from consumer.topics import differences, kafka_topics_commands, plan

KNOWN = [s.env for s in SETTINGS]


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("CHATAPP_RATE_LIMIT", ["CHATAPP_RATE_LIMIT_PER_SECOND", "CHATAPP_RATE_LIMIT_BURST"]),
        ("CHATAPP_REDIS_ULR", ["CHATAPP_REDIS_URL"]),
        ("CHATAPP_LOGLEVEL", ["CHATAPP_LOG_LEVEL"]),
        ("CHATAPP_NOTHING_LIKE_IT", []),
    ],
)
def test_suggestions(name: str, meant: list[str]) -> None:
    assert suggestions(name, KNOWN) == meant


def test_unknown_variables_leave_settings_options_worker_links_and_account_secrets_alone() -> None:
    env = {
        "CHATAPP_RATE_LIMIT_PER_SECOND": "5",
        "CHATAPP_KAFKA_OPT_LINGER_MS": "5",
        "CHATAPP_KAFKA_CONSUMER_OPT_FETCH_WAIT_MAX_MS": "10",
        "CHATAPP_WORKER": "1",
        "CHATAPP_CONFIG": "/etc/chatapp.toml",
        "CHATAPP_MARKETING_SECRET": "s",
        "CHATAPP_KAFKA_OPT_": "empty name",
        "CHATAPP_BATCH_SIZE": "500",
        "HOME": "/root",
    }
    accounts = {"marketing": {"access_key_id": "k", "access_key_secret_env": "CHATAPP_MARKETING_SECRET"}}
    assert unknown_variables(env, KNOWN, accounts) == [
        "CHATAPP_BATCH_SIZE: not a setting, ignored (every setting: docs/configuration.md)",
        "CHATAPP_KAFKA_OPT_: not a setting, ignored (every setting: docs/configuration.md)",
    ]


def test_choice_settings_take_any_case_and_keep_the_canonical_spelling() -> None:
    loaded = settings.load({"CHATAPP_LOG_LEVEL": " debug", "CHATAPP_LOG_FORMAT": "JSON", "CHATAPP_INFLIGHT_POLICY": "Fail"})
    assert (loaded.log_level, loaded.log_format, loaded.inflight_policy) == ("DEBUG", "json", "fail")
    assert settings.load({"CHATAPP_RATE_LIMIT": "5"}).warnings == (
        "CHATAPP_RATE_LIMIT: not a setting, ignored (did you mean CHATAPP_RATE_LIMIT_PER_SECOND or CHATAPP_RATE_LIMIT_BURST?)",
    )


def test_the_no_partition_line_comes_at_doubling_intervals_and_starts_again_after_an_assignment() -> None:
    wait = AssignmentWait(now=0.0)
    due = [t for t in range(0, 2000) if wait.due(False, float(t)) is not None]
    assert due == [5, 10, 20, 40, 80, 160, 320, 620, 920, 1220, 1520, 1820]
    assert wait.due(True, 2000.0) is None
    assert wait.due(False, 2001.0) is None and wait.due(False, 2006.0) == 5.0


def test_the_no_partition_line_warns_once_a_session_timeout_cannot_explain_the_wait() -> None:
    assert waiting_line(12, "t", "g", 6000)[0] == logging.INFO
    level, message = waiting_line(17, "t", "g", 6000)
    assert level == logging.WARNING and message.startswith("no partitions of t assigned yet after 17 s: waiting for group g (")
    assert "group.consumer.session.timeout.ms" in waiting_line(5, "t", "g", None)[1]


def test_the_topics_plan() -> None:
    specs = plan(settings.load({"CHATAPP_LEDGER_RETENTION_S": "86400", "CHATAPP_REPLY_TOPIC": "out"}), partitions=6, replication=2)
    assert [(s.role, s.name, s.partitions) for s in specs] == [
        ("request", "chatapp.send-requests", 6),
        ("reply", "out", 6),
        ("dlq", "chatapp.send-requests.dlq", 1),
    ]
    assert specs[0].configs["retention.ms"] == "86400000", "the requests are kept as long as the ledger remembers them"
    assert all(s.configs["cleanup.policy"] == "delete" and s.configs["min.insync.replicas"] == "1" for s in specs)
    assert kafka_topics_commands(specs[1:2], 2, "b:9092") == [
        "kafka-topics.sh --bootstrap-server b:9092 --create --topic out --partitions 6 --replication-factor 2 "
        "--config cleanup.policy=delete --config retention.ms=604800000 --config min.insync.replicas=1"
    ]
    assert differences(specs[1], 6, {"cleanup.policy": "compact", "retention.ms": "604800000"}) == ["cleanup.policy=compact (advised delete)"]
    assert differences(specs[0], 1, None) == ["1 partition: one process of the group can read it"]


def test_json_is_told_apart_from_avro_only_when_avro_fails() -> None:
    codec = PlainAvroCodec()
    valid = codec.encode_request({"request_id": "{", "template_code": "w", "language": "en", "from_number": "1", "recipients": [{"to": "8613900000001"}]})
    assert codec.decode_request(valid).request_id == "{"
    for value in (b'{"request_id": "x"}', b" [1, 2]\n", json.dumps({"to": "8613900000000"}).encode()):
        with pytest.raises(DecodeError) as caught:
            codec.decode_request(value)
        assert caught.value.reason == "not-avro" and caught.value.detail.startswith("looks like JSON")
    assert not looks_like_json(b"{not json") and not looks_like_json(b"\xff{}")
    with pytest.raises(DecodeError) as caught:
        codec.decode_request(b"{not json")
    assert "JSON" not in caught.value.detail
