"""consumer.cams.client over httpx.MockTransport: request shape, signed headers, response parsing, errors."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from consumer.cams import signing
from consumer.cams.client import (
    ACTION,
    USER_AGENT,
    VERSION,
    CallResult,
    CamsClient,
    Credentials,
    StaticCredentials,
    build_http_client,
)
from consumer.cams.errors import Outcome
from consumer.cams.payload import build_query
from tests.fixtures.builders import RICH, avro_recipient, make_key

NOW = 1767225600.5  # 2026-01-01T00:00:00.5Z
NONCE = "0123456789abcdef0123456789abcdef"
AK = StaticCredentials("LTAI-test-key", "test-secret")
STS = StaticCredentials("STS.test-key", "sts-secret", "sts-token-value")
ENDPOINT = "https://cams.ap-southeast-1.aliyuncs.com"
KEY = make_key(fallback_content="Fallback text *~", fallback_duration_s=120)
RECIPIENTS = [avro_recipient("8613800000001", template_params={"name": "Ann Lee", "city": "北京"}), RICH]


def ok_body(**extra: Any) -> dict[str, Any]:
    return {"RequestId": "REQ-1", "Code": "OK", "Message": "ignored", "GroupMessageId": "GM-1", **extra}


class Recorder:
    """A MockTransport handler: records each request, answers with ``reply`` (a response or an exception)."""

    def __init__(self, reply: httpx.Response | Exception | None = None) -> None:
        self.reply = reply if reply is not None else httpx.Response(200, json=ok_body())
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def make_client(handler: Callable[[httpx.Request], httpx.Response], endpoint: str = ENDPOINT) -> CamsClient:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return CamsClient(endpoint, http, clock=lambda: NOW, nonce=lambda: NONCE)


def send(reply: httpx.Response | Exception | None = None, credentials: Credentials = AK) -> tuple[CallResult, Recorder]:
    recorder = Recorder(reply)
    result = make_client(recorder).send(credentials, KEY, RECIPIENTS)
    return result, recorder


def wire_query(request: httpx.Request) -> str:
    target: bytes = request.extensions["target"]
    path, _, query = target.decode("ascii").partition("?")
    assert path == "/"
    return query


def test_request_is_a_bodyless_post_to_root_with_the_sdk_query() -> None:
    _, recorder = send()
    (request,) = recorder.requests
    assert request.method == "POST"
    assert request.url == httpx.URL(ENDPOINT + "/")
    assert request.read() == b""
    assert request.headers["content-length"] == "0"
    query = wire_query(request)
    assert parse_qsl(query, keep_blank_values=True) == list(build_query(KEY, RECIPIENTS).items())
    assert "Fallback+text+%2A~" in query  # form-encoded like the SDK: space as +, * escaped, ~ literal
    assert "%20" not in query


def test_headers_are_the_sdk_set_and_all_signed() -> None:
    _, recorder = send()
    headers = recorder.requests[0].headers
    assert headers["host"] == "cams.ap-southeast-1.aliyuncs.com"
    assert headers["x-acs-action"] == ACTION
    assert headers["x-acs-version"] == VERSION
    assert headers["x-acs-date"] == "2026-01-01T00:00:00Z"
    assert headers["x-acs-signature-nonce"] == NONCE
    assert headers["x-acs-content-sha256"] == signing.EMPTY_BODY_SHA256
    assert headers["accept"] == "application/json"
    assert headers["user-agent"] == USER_AGENT
    assert "x-acs-security-token" not in headers
    assert "x-acs-accesskey-id" not in headers
    auth = signing.parse_authorization(headers["authorization"])
    assert auth.access_key_id == AK.access_key_id
    assert auth.signed_headers == (
        "accept",
        "host",
        "user-agent",
        "x-acs-action",
        "x-acs-content-sha256",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-version",
    )


def verify(request: httpx.Request, secret: str) -> bool:
    """Check the request's signature as the gateway does: from the SignedHeaders list and the wire query."""
    auth = signing.parse_authorization(request.headers["authorization"])
    headers = {name: request.headers[name] for name in auth.signed_headers}
    query = dict(parse_qsl(wire_query(request), keep_blank_values=True))
    canonical = signing.canonical_request(request.method, request.url.path, query, headers, auth.signed_headers, signing.EMPTY_BODY_SHA256)
    return signing.signature(secret, canonical) == auth.signature


def test_signature_verifies_against_the_wire_request() -> None:
    _, recorder = send()
    assert verify(recorder.requests[0], AK.access_key_secret)
    assert not verify(recorder.requests[0], "another-secret")


def test_sts_adds_signed_key_id_and_token() -> None:
    _, recorder = send(credentials=STS)
    request = recorder.requests[0]
    assert request.headers["x-acs-accesskey-id"] == STS.access_key_id
    assert request.headers["x-acs-security-token"] == STS.security_token
    auth = signing.parse_authorization(request.headers["authorization"])
    assert {"x-acs-accesskey-id", "x-acs-security-token"} <= set(auth.signed_headers)
    assert verify(request, STS.access_key_secret)


def test_each_call_gets_a_fresh_date_and_nonce() -> None:
    recorder = Recorder()
    ticks = iter([NOW, NOW + 61])
    nonces = iter(["a" * 32, "b" * 32])
    client = CamsClient(
        ENDPOINT,
        httpx.Client(transport=httpx.MockTransport(recorder)),
        clock=lambda: next(ticks),
        nonce=lambda: next(nonces),
    )
    client.send(AK, KEY, RECIPIENTS)
    client.send(AK, KEY, RECIPIENTS)
    first, second = (r.headers for r in recorder.requests)
    assert (first["x-acs-date"], second["x-acs-date"]) == ("2026-01-01T00:00:00Z", "2026-01-01T00:01:01Z")
    assert (first["x-acs-signature-nonce"], second["x-acs-signature-nonce"]) == ("a" * 32, "b" * 32)
    assert first["authorization"] != second["authorization"]


def test_default_nonce_is_32_hex() -> None:
    recorder = Recorder()
    CamsClient(ENDPOINT, httpx.Client(transport=httpx.MockTransport(recorder))).send(AK, KEY, RECIPIENTS)
    nonce = recorder.requests[0].headers["x-acs-signature-nonce"]
    assert len(nonce) == 32 and int(nonce, 16) >= 0


def test_loopback_endpoint_keeps_its_port_in_host() -> None:
    recorder = Recorder()
    make_client(recorder, "http://127.0.0.1:18080").send(AK, KEY, RECIPIENTS)
    request = recorder.requests[0]
    assert request.headers["host"] == "127.0.0.1:18080"
    assert request.url == httpx.URL("http://127.0.0.1:18080/")


@pytest.mark.parametrize("endpoint", ["cams.ap-southeast-1.aliyuncs.com", "https://h/path", "https://h/?a=1", "ftp://h"])
def test_endpoint_must_be_scheme_and_host(endpoint: str) -> None:
    with pytest.raises(ValueError):
        CamsClient(endpoint, httpx.Client())


def test_thousand_recipient_query_goes_past_httpx_url_limit() -> None:
    recorder = Recorder()
    recipients = [avro_recipient(f"86138{i:08d}", template_params={"name": f"User {i}", "x": "*~ +&="}) for i in range(1000)]
    result = make_client(recorder).send(AK, KEY, recipients)
    assert result.outcome is Outcome.OK
    request = recorder.requests[0]
    assert len(wire_query(request)) > 65536
    assert dict(parse_qsl(wire_query(request)))["SenderList"] == build_query(KEY, recipients)["SenderList"]
    assert verify(request, AK.access_key_secret)


def test_ok_response_is_parsed() -> None:
    result, _ = send(httpx.Response(200, json=ok_body()))
    assert result.outcome is Outcome.OK
    assert (result.code, result.message) == ("OK", "ignored")
    assert (result.api_request_id, result.group_message_id) == ("REQ-1", "GM-1")
    assert result.http_status == 200
    assert result.retry_after_s is None
    assert result.latency_s >= 0


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, {"RequestId": "R", "Code": "Template.NotFound", "Message": "no template"}, Outcome.PERMANENT),
        (400, {"RequestId": "R", "Code": "System.LimitControl", "Message": "flow control"}, Outcome.THROTTLED),
        (400, {"RequestId": "R", "Code": "InvalidParameter", "Message": "bad SenderList"}, Outcome.INVALID_REQUEST),
        (403, {"RequestId": "R", "Code": "Ram.PermissionDeny", "Message": "denied"}, Outcome.PERMANENT),
        (503, {"RequestId": "R", "Code": "ServiceUnavailable", "Message": "later"}, Outcome.TRANSIENT),
    ],
)
def test_error_responses_are_classified(status: int, body: dict[str, Any], outcome: Outcome) -> None:
    result, _ = send(httpx.Response(status, json=body))
    assert result.outcome is outcome
    assert (result.code, result.message, result.api_request_id) == (body["Code"], body["Message"], "R")
    assert result.http_status == status
    assert result.group_message_id is None


def test_lower_camel_case_error_body_is_understood_like_the_sdk() -> None:
    result, _ = send(httpx.Response(400, json={"requestId": "r-1", "code": "Throttling.User", "message": "slow down"}))
    assert (result.outcome, result.code, result.message, result.api_request_id) == (
        Outcome.THROTTLED,
        "Throttling.User",
        "slow down",
        "r-1",
    )


def test_retry_after_header_means_throttled() -> None:
    reply = httpx.Response(400, json={"Code": "Whatever", "RequestId": "R"}, headers={"x-acs-retry-after": "3"})
    result, _ = send(reply)
    assert result.outcome is Outcome.THROTTLED
    assert result.retry_after_s == 3.0


@pytest.mark.parametrize("value", ["0", "-2", "soon", "nan", ""])
def test_unusable_retry_after_is_ignored(value: str) -> None:
    reply = httpx.Response(400, json={"Code": "Ram.PermissionDeny"}, headers={"x-acs-retry-after": value})
    result, _ = send(reply)
    assert result.retry_after_s is None
    assert result.outcome is Outcome.PERMANENT


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (httpx.Response(200, content=b"<html>oops</html>"), Outcome.TRANSIENT),
        (httpx.Response(200, content=b"[1, 2]"), Outcome.TRANSIENT),
        (httpx.Response(200, json={"RequestId": "R"}), Outcome.TRANSIENT),
        (httpx.Response(502, content=b"Bad Gateway"), Outcome.TRANSIENT),
        (httpx.Response(414, content=b"URI Too Long"), Outcome.INVALID_REQUEST),
    ],
)
def test_unusable_bodies_are_bad_responses(reply: httpx.Response, outcome: Outcome) -> None:
    result, _ = send(reply)
    assert result.code == "Chatapp.BadResponse"
    assert result.outcome is outcome
    assert result.http_status == reply.status_code
    assert result.message is not None and result.message.startswith(f"HTTP {reply.status_code}:")


def test_request_id_header_is_kept_when_the_body_has_none() -> None:
    result, _ = send(httpx.Response(502, content=b"Bad Gateway", headers={"x-acs-request-id": "HDR-1"}))
    assert result.api_request_id == "HDR-1"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.ReadTimeout("read timed out"), "Chatapp.Timeout"),
        (httpx.ConnectTimeout("connect timed out"), "Chatapp.Timeout"),
        (httpx.PoolTimeout("no connection free"), "Chatapp.Timeout"),
        (httpx.ConnectError("refused"), "Chatapp.ConnectionError"),
        (httpx.RemoteProtocolError("server hung up"), "Chatapp.ConnectionError"),
        (httpx.ReadError("reset"), "Chatapp.ConnectionError"),
        (httpx.DecodingError("bad gzip"), "Chatapp.BadResponse"),
    ],
)
def test_transport_errors_become_transient_results(exc: Exception, code: str) -> None:
    result, recorder = send(exc)
    assert len(recorder.requests) == 1
    assert result.outcome is Outcome.TRANSIENT
    assert result.code == code
    assert result.message is not None and type(exc).__name__ in result.message
    assert result.http_status is None
    assert (result.api_request_id, result.group_message_id, result.retry_after_s) == (None, None, None)


def test_refused_connection_on_a_real_socket() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with build_http_client(timeout_connect=1, timeout_read=1) as http:
        result = CamsClient(f"http://127.0.0.1:{port}", http).send(AK, KEY, RECIPIENTS)
    assert (result.outcome, result.code) == (Outcome.TRANSIENT, "Chatapp.ConnectionError")
    assert result.written_after_s is None, "nothing was written"


def test_read_timeout_on_a_silent_server() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        with build_http_client(timeout_connect=1, timeout_read=0.2) as http:
            result = CamsClient(f"http://127.0.0.1:{port}", http).send(AK, KEY, RECIPIENTS)
    assert (result.outcome, result.code) == (Outcome.TRANSIENT, "Chatapp.Timeout")
    assert result.latency_s >= 0.2
    assert result.written_after_s is not None and result.written_after_s < 0.1, "the request was on the wire long before the wait ended"


def test_build_http_client_uses_the_sdk_timeouts() -> None:
    with build_http_client() as http:
        assert (http.timeout.connect, http.timeout.read) == (5, 10)
    with build_http_client(timeout_connect=1, timeout_read=2, max_connections=4) as http:
        assert (http.timeout.connect, http.timeout.read) == (1, 2)


def test_credentials_repr_hides_secret_and_token() -> None:
    for creds in (STS, Credentials("STS.test-key", "sts-secret", "sts-token-value")):
        text = repr(creds) + str(creds)
        assert "STS.test-key" in text
        assert "sts-secret" not in text
        assert "sts-token-value" not in text


def test_static_credentials_provide_themselves() -> None:
    assert STS.get() is STS
    assert isinstance(STS.get(), Credentials)


def test_percent_encoding_is_urllib_quote_for_every_character() -> None:
    """Both of the encoder's paths (ASCII text by replacement, other text by table) against the
    standard library's, on every ASCII character and on random text, ASCII only and with 2-, 3-
    and 4-byte UTF-8 characters."""
    import random
    from urllib.parse import quote, quote_plus

    rng = random.Random(9)
    alphabet = [chr(c) for c in range(128)] + ["é", "ü", "中", "文", "✓", "🚀", "\u2028"]
    texts = ["".join(chr(c) for c in range(128))] + ["".join(rng.choices(alphabet, k=rng.randrange(0, 200))) for _ in range(500)]
    texts += ["".join(rng.choices(alphabet[:128], k=rng.randrange(0, 200))) for _ in range(500)]
    for text in texts:
        assert signing.percent_encode(text) == quote(text, safe="~")
        assert signing.percent_encode(text).replace("%20", "+") == quote_plus(text, safe="")  # the wire's form encoding
