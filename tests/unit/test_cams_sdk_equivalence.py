"""Our CamsClient against the official SDK (alibabacloud-cams20200606 5.3.1), on the wire.

Both send the same call (same input, credentials, x-acs-date and nonce) to one loopback capture
server; the SDK's date and nonce helpers are pinned by monkeypatching
``alibabacloud_tea_openapi.utils.Utils.get_timestamp`` / ``get_nonce`` (the SDK's call reads both
from there). Checked: the same query string and SenderList, the same signed headers (the
user-agent is ours; ``x-acs-credentials-provider`` is SDK telemetry we do not send), the SDK's
signing code signs our request as we did, and our signing code signs the SDK's request as it did.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from alibabacloud_cams20200606 import models as cams_models
from alibabacloud_cams20200606.client import Client as SdkClient
from alibabacloud_tea_openapi import models as openapi_models
from alibabacloud_tea_openapi.utils import (
    Utils,
    get_canonical_query_string,
    get_canonicalized_headers,
)
from darabonba.request import DaraRequest

from consumer.cams import signing
from consumer.cams.client import CamsClient, Credentials, StaticCredentials
from consumer.cams.errors import Outcome
from consumer.models import BatchKey, Recipient
from tests.fixtures.builders import RICH, avro_recipient, make_key

NOW = 1767225600.0
DATE = "2026-01-01T00:00:00Z"
NONCE = "5f0c6a1e9b8d4c7fa2e3b4c5d6e7f809"
SDK_ONLY_HEADERS = {"x-acs-credentials-provider"}
UNSIGNED_TRANSPORT_HEADERS = {"accept-encoding", "connection", "content-length"}
MAX_REQUEST_LINE = 16 * 1024 * 1024
REPLY = {"RequestId": "90E63D28-E31D-1EB2-8939-A9486641AAAA", "Code": "OK", "GroupMessageId": "8900000100020000"}


@dataclass(frozen=True)
class Captured:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def query_string(self) -> str:
        path, _, query = self.target.partition("?")
        assert path == "/"
        return query

    @property
    def query(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query_string, keep_blank_values=True, strict_parsing=True)

    @property
    def authorization(self) -> signing.Authorization:
        return signing.parse_authorization(self.headers["authorization"])

    @property
    def signed(self) -> dict[str, str]:
        return {name: self.headers[name] for name in self.authorization.signed_headers}


class _CaptureHandler(http.server.BaseHTTPRequestHandler):
    """Records each request and answers REPLY. Accepts request lines far past http.server's 64 KiB."""

    server: _CaptureServer

    def handle_one_request(self) -> None:
        self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self.send_error(414)
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if self.parse_request():
            self._capture()
            self.wfile.flush()

    def _capture(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.captured.append(Captured(self.command, self.path, headers, body))
        out = json.dumps(REPLY).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json;charset=utf-8")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _CaptureServer(http.server.ThreadingHTTPServer):
    captured: list[Captured]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_CaptureServer]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    srv = _CaptureServer(("127.0.0.1", 0), _CaptureHandler)
    srv.captured = []
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), name="sdk-capture", daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def pinned_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Utils, "get_timestamp", staticmethod(lambda: DATE))
    monkeypatch.setattr(Utils, "get_nonce", staticmethod(lambda: NONCE))


def _sdk_recipient(r: Recipient) -> cams_models.SendChatappMassMessageRequestSenderList:
    """The same recipient as an SDK model; unset (empty) Avro fields are None, as an SDK user leaves them."""
    product = r.get("product_action")
    flow = r.get("flow_action")
    return cams_models.SendChatappMassMessageRequestSenderList(
        to=r["to"],
        recipient_type=r.get("recipient_type") or None,
        template_params=r.get("template_params") or None,
        payload=r.get("payload") or None,
        product_action=cams_models.SendChatappMassMessageRequestSenderListProductAction(
            thumbnail_product_retailer_id=product.get("thumbnail_product_retailer_id"),
            sections=[
                cams_models.SendChatappMassMessageRequestSenderListProductActionSections(
                    title=section["title"],
                    product_items=[
                        cams_models.SendChatappMassMessageRequestSenderListProductActionSectionsProductItems(product_retailer_id=item["product_retailer_id"])
                        for item in section["product_items"]
                    ],
                )
                for section in product["sections"]
            ],
        )
        if product
        else None,
        flow_action=cams_models.SendChatappMassMessageRequestSenderListFlowAction(
            flow_token=flow.get("flow_token"), flow_action_data=flow.get("flow_action_data") or None
        )
        if flow
        else None,
    )


def sdk_send(srv: _CaptureServer, creds: Credentials, key: BatchKey, recipients: list[Recipient]) -> Captured:
    config = openapi_models.Config(
        access_key_id=creds.access_key_id,
        access_key_secret=creds.access_key_secret,
        security_token=creds.security_token,
        endpoint=f"127.0.0.1:{srv.server_port}",
        protocol="http",
    )
    request = cams_models.SendChatappMassMessageRequest(
        channel_type=key.channel_type,
        template_code=key.template_code,
        template_name=key.template_name,
        language=key.language,
        from_=key.from_number,
        fall_back_id=key.fallback_id,
        fall_back_content=key.fallback_content,
        fall_back_rule=key.fallback_rule,
        fall_back_duration=key.fallback_duration_s,
        task_id=key.task_id,
        cust_space_id=key.cust_space_id,
        label=key.label,
        tag=key.tag,
        ttl=key.ttl_s,
        sender_list=[_sdk_recipient(r) for r in recipients],
    )
    response = SdkClient(config).send_chatapp_mass_message(request)
    assert (response.body.code, response.body.request_id, response.body.group_message_id) == (
        REPLY["Code"],
        REPLY["RequestId"],
        REPLY["GroupMessageId"],
    )
    return srv.captured.pop()


def our_send(srv: _CaptureServer, creds: Credentials, key: BatchKey, recipients: list[Recipient]) -> Captured:
    with httpx.Client(trust_env=False) as http:
        client = CamsClient(f"http://127.0.0.1:{srv.server_port}", http, clock=lambda: NOW, nonce=lambda: NONCE)
        result = client.send(creds, key, recipients)
    assert (result.outcome, result.code, result.api_request_id, result.group_message_id) == (
        Outcome.OK,
        REPLY["Code"],
        REPLY["RequestId"],
        REPLY["GroupMessageId"],
    )
    return srv.captured.pop()


AK = StaticCredentials("LTAI5tTestAccessKeyId", "TestAccessKeySecret0123456789")
STS = StaticCredentials("STS.NTestStsKeyId", "StsSecret/With+Odd=Chars", "CAIS.sts+token/with=chars==")

ODD = 'Hello World * ~ + & = % # ? / 你好 ¡olé! 🎉 "quoted" back\\slash\ttab'

CASES: dict[str, tuple[Credentials, BatchKey, list[Recipient]]] = {
    "access_key": (AK, make_key(), [avro_recipient("8613800000001", template_params={"name": "Ann"})]),
    "sts_token": (STS, make_key(), [avro_recipient("8613800000001", template_params={"name": "Ann"})]),
    "template_name_and_fallback": (
        AK,
        make_key(
            template_code=None,
            template_name="order_update",
            fallback_id="S00001",
            fallback_content="Your order has shipped",
            fallback_rule="undelivered",
            fallback_duration_s=120,
            task_id="100000001",
            cust_space_id="28251486512358",
        ),
        [avro_recipient("8613800000001"), avro_recipient("8613800000002", template_params={"n": "2"})],
    ),
    "viber": (
        AK,
        make_key(channel_type="viber", label="pormotion", tag="spring-sale", ttl_s=3600),
        [avro_recipient("380501234567", template_params={"promo": "SPRING"})],
    ),
    "rich_recipient": (STS, make_key(), [RICH, avro_recipient("8613800000003", payload=["only-payload"])]),
    "non_ascii_and_reserved": (
        AK,
        make_key(fallback_content=ODD, task_id="task 1*2~3"),
        [avro_recipient("8613800000001", template_params={"greeting": ODD, "名字": "王 小明", "star*": "a*b"})],
    ),
    "thousand_recipients": (
        STS,
        make_key(),
        [
            avro_recipient(f"86138{i:08d}", template_params={"name": f"User {i}", "code": f"*{i}~", "city": "上海"})
            if i % 10
            else dict(RICH, to=f"86138{i:08d}")
            for i in range(1000)
        ],
    ),
}


@pytest.fixture(params=sorted(CASES))
def pair(request: pytest.FixtureRequest, server: _CaptureServer) -> tuple[Credentials, Captured, Captured]:
    creds, key, recipients = CASES[request.param]
    return creds, sdk_send(server, creds, key, recipients), our_send(server, creds, key, recipients)


def test_same_query_on_the_wire(pair: tuple[Credentials, Captured, Captured]) -> None:
    _, sdk, ours = pair
    assert (ours.method, ours.body) == (sdk.method, sdk.body) == ("POST", b"")
    assert ours.query == sdk.query
    assert ours.query_string == sdk.query_string


def test_same_sender_list_json(pair: tuple[Credentials, Captured, Captured]) -> None:
    _, sdk, ours = pair
    sdk_list, our_list = dict(sdk.query)["SenderList"], dict(ours.query)["SenderList"]
    assert our_list == sdk_list
    assert json.loads(our_list)


def test_same_signed_headers(pair: tuple[Credentials, Captured, Captured]) -> None:
    creds, sdk, ours = pair
    assert set(ours.authorization.signed_headers) == set(sdk.authorization.signed_headers) - SDK_ONLY_HEADERS
    assert set(ours.headers) - {"authorization"} - UNSIGNED_TRANSPORT_HEADERS == set(ours.authorization.signed_headers)
    expected = {name: value for name, value in sdk.signed.items() if name not in SDK_ONLY_HEADERS | {"user-agent"}}
    assert {name: value for name, value in ours.signed.items() if name != "user-agent"} == expected
    assert ours.headers["x-acs-date"] == DATE and ours.headers["x-acs-signature-nonce"] == NONCE
    assert ("x-acs-security-token" in ours.headers) is bool(creds.security_token)
    assert ours.authorization.access_key_id == sdk.authorization.access_key_id == creds.access_key_id


def _sdk_authorization(captured: Captured, creds: Credentials) -> str:
    request = DaraRequest()
    request.method = captured.method
    request.pathname = "/"
    request.query = dict(captured.query)
    request.headers = captured.signed
    payload_hash = hashlib.sha256(captured.body).hexdigest()
    return Utils.get_authorization(request, "ACS3-HMAC-SHA256", payload_hash, creds.access_key_id, creds.access_key_secret)


def test_sdk_signing_code_signs_our_request_as_we_did(pair: tuple[Credentials, Captured, Captured]) -> None:
    creds, _, ours = pair
    query = dict(ours.query)
    assert signing.canonical_query(query) == get_canonical_query_string(query)
    names = ours.authorization.signed_headers
    sdk_headers, sdk_names = get_canonicalized_headers(ours.signed)
    assert signing.canonical_headers(ours.signed, names) == sdk_headers
    assert ";".join(names) == sdk_names
    assert _sdk_authorization(ours, creds) == ours.headers["authorization"]


def test_our_signing_code_signs_the_sdk_request_as_it_did(pair: tuple[Credentials, Captured, Captured]) -> None:
    creds, sdk, _ = pair
    auth = sdk.authorization
    canonical = signing.canonical_request(sdk.method, "/", dict(sdk.query), sdk.signed, auth.signed_headers, hashlib.sha256(sdk.body).hexdigest())
    assert signing.signature(creds.access_key_secret, canonical) == auth.signature
    unsigned = {name: value for name, value in sdk.signed.items() if name != "x-acs-content-sha256"}
    resigned = signing.sign_headers(sdk.method, "/", dict(sdk.query), unsigned, sdk.body, creds.access_key_id, creds.access_key_secret)
    assert resigned["authorization"] == sdk.headers["authorization"]


def test_thousand_recipients_go_past_the_64k_request_line(server: _CaptureServer) -> None:
    creds, key, recipients = CASES["thousand_recipients"]
    ours = our_send(server, creds, key, recipients)
    assert len(ours.target) > 65536
    assert len(json.loads(dict(ours.query)["SenderList"])) == 1000
