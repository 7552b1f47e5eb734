"""consumer.redact: credentials out of URLs wherever they appear, names of secrets recognised."""

from __future__ import annotations

import pytest

from consumer.redact import is_secret_name, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://chatapp:pw@127.0.0.1:6379/15", "redis://chatapp:***@127.0.0.1:6379/15"),
        ("redis://:pw@redis:6379", "redis://:***@redis:6379"),
        ("https://ghp_token@github.example/x", "https://***@github.example/x"),  # a user-info without a colon is a token
        ("redis://app:p/a?s#s@host:6379", "redis://app:***@host:6379"),  # a password with / ? #
        ("redis://app:secret/0", "redis://app:***/0"),  # the host forgotten: the "port" is the password
        ("https://h/x?a=1&password=p&Signature=s&AccessKeyId=LTAI&sig=x&key=k", "https://h/x?a=1&password=***&Signature=***&AccessKeyId=LTAI&sig=***&key=***"),
        ("redis://h:6379/0?password=zz", "redis://h:6379/0?password=***"),
        ("unix://:pw@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ("https://cams.ap-southeast-1.aliyuncs.com", "https://cams.ap-southeast-1.aliyuncs.com"),
        ("host:9092", "host:9092"),
        (None, None),
        ("", ""),
    ],
)
def test_redact_url(url: str | None, redacted: str | None) -> None:
    assert redact_url(url) == redacted


def test_redact_text_finds_every_url_in_a_message() -> None:
    text = "cannot reach 'https://u:pw1@a.example/x' nor \"redis://:pw2@b:6379\", see http://c.example?token=pw3 (done)"
    out = redact_text(text)
    assert out == "cannot reach 'https://u:***@a.example/x' nor \"redis://:***@b:6379\", see http://c.example?token=*** (done)"
    assert redact_text("no url at all: 8613812345678") == "no url at all: 8613812345678"


@pytest.mark.parametrize(
    "name",
    [
        "sasl.password",
        "ssl.key.password",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.config",
        "ssl.key.pem",
        "token",
        "X-Amz-Signature",
        "api_key",
        "apiKey",
        "sig",
        "auth",
        "pwd",
        "SecurityToken",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["sasl.username", "security.protocol", "AccessKeyId", "db", "fetch.wait.max.ms", "keystore", "monkey"])
def test_names_that_hold_no_secret(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("registry-user:pw@registry.internal:8081", "registry-user:***@registry.internal:8081"),
        ("app:secret/0", "app:***/0"),
        ("redis.internal:6379", "redis.internal:6379"),
        ("['redis://app:pw@h']", "['redis://app:***@h']"),  # the repr of a wrongly typed value
    ],
)
def test_redact_url_without_a_scheme(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
