"""The local CAMS endpoint over real loopback HTTP: gateway checks, parameter checks, the sliding-window
rate limit, every fault kind, the admin API, 100 KB request lines, and the official SDK's calls.

Requests are signed with ``consumer.cams.signing.sign_headers``; each test runs its own endpoint
process (the ``local_cams`` fixture) or an in-process ``LocalCamsServer`` it stops itself.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from alibabacloud_cams20200606 import models as cams_models
from alibabacloud_cams20200606.client import Client as SdkClient
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.models import Config
from chatapp_devkit.local_cams import LocalCams, LocalCamsServer

from tests.fixtures.cams import FROM, HTTP_TIMEOUT, TEST_KEY_ID, TEST_SECRET, call, iso_date, number, post, send_query, signed

pytestmark = pytest.mark.timeout(120)


def code_of(response: httpx.Response) -> str:
    body = response.json()
    assert body["RequestId"], body
    return str(body["Code"])


# --- gateway checks -----------------------------------------------------------------------------


def test_good_call_is_accepted_and_recorded(local_cams: LocalCams) -> None:
    query = send_query(recipients=3, FallBackDuration=120)
    before = time.time()
    response = call(local_cams.url, query)
    assert response.status_code == 200
    body = response.json()
    assert body["Code"] == "OK" and body["Message"] == "OK" and body["AccessDeniedDetail"] == "None"
    assert body["GroupMessageId"] and body["RequestId"]
    [record] = local_cams.calls()
    assert record["index"] == 0 and record["access_key_id"] == TEST_KEY_ID
    assert record["to"] == [number(0), number(1), number(2)] and record["recipients"] == 3
    assert record["params"] == {k: v for k, v in query.items() if k != "SenderList"}
    assert record["code"] == "OK" and record["http_status"] == 200 and record["fault"] is None
    assert record["group_message_id"] == body["GroupMessageId"] and record["request_id"] == body["RequestId"]
    assert before <= record["received_at"] <= record["accepted_at"] <= time.time()


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("wrong_secret", 400, "SignatureDoesNotMatch"),
        ("unknown_key", 403, "InvalidAccessKeyId.NotFound"),
        ("tampered_query", 400, "SignatureDoesNotMatch"),
        ("tampered_signed_header", 400, "SignatureDoesNotMatch"),
        ("stale_date", 400, "InvalidTimeStamp.Expired"),
        ("future_date", 400, "InvalidTimeStamp.Expired"),
        ("bad_date", 400, "InvalidTimeStamp.Format"),
        ("wrong_action", 400, "InvalidAction.NotFound"),
        ("wrong_version", 400, "InvalidVersion"),
        ("no_authorization", 400, "IncompleteSignature"),
        ("nonce_not_signed", 400, "IncompleteSignature"),
        ("wrong_body_hash", 400, "SignatureDoesNotMatch"),
    ],
)
def test_gateway_rejects(local_cams: LocalCams, case: str, status: int, code: str) -> None:
    url, query = local_cams.url, send_query()
    headers = signed(url, query)
    if case == "wrong_secret":
        headers = signed(url, query, secret="not-the-secret")
    elif case == "unknown_key":
        headers = signed(url, query, key="LTAI_NOBODY")
    elif case == "tampered_query":
        query = {**query, "From": "8613800000666"}
    elif case == "tampered_signed_header":
        headers["x-acs-signature-nonce"] = uuid.uuid4().hex
    elif case == "stale_date":
        headers = signed(url, query, x_acs_date=iso_date(datetime.now(UTC) - timedelta(minutes=20)))
    elif case == "future_date":
        headers = signed(url, query, x_acs_date=iso_date(datetime.now(UTC) + timedelta(minutes=20)))
    elif case == "bad_date":
        headers = signed(url, query, x_acs_date="yesterday")
    elif case == "wrong_action":
        headers = signed(url, query, x_acs_action="SendChatappMessage")
    elif case == "wrong_version":
        headers = signed(url, query, x_acs_version="2017-05-25")
    elif case == "no_authorization":
        del headers["authorization"]
    elif case == "nonce_not_signed":
        nonce = uuid.uuid4().hex
        headers = {**signed(url, query, x_acs_signature_nonce=nonce)}
        auth = headers["authorization"].replace("x-acs-signature-nonce;", "")
        headers["authorization"] = auth
    elif case == "wrong_body_hash":
        headers["x-acs-content-sha256"] = "0" * 64
    response = post(url, query, headers)
    assert (response.status_code, code_of(response)) == (status, code), response.text
    [record] = local_cams.calls()
    assert record["code"] == code and record["http_status"] == status and record["accepted_at"] is None
    assert local_cams.stats()["accepted_calls"] == 0


def test_reused_nonce_is_rejected(local_cams: LocalCams) -> None:
    query = send_query()
    headers = signed(local_cams.url, query)
    assert post(local_cams.url, query, headers).status_code == 200
    replay = post(local_cams.url, query, headers)
    assert (replay.status_code, code_of(replay)) == (400, "SignatureNonceUsed")
    assert [c["code"] for c in local_cams.calls()] == ["OK", "SignatureNonceUsed"]


def test_sts_account_needs_its_signed_token(local_cams: LocalCams) -> None:
    local_cams.add_account("STS.KEY", "sts-secret", "token-123")
    url, query = local_cams.url, send_query()
    missing = call(url, query, key="STS.KEY", secret="sts-secret")
    assert (missing.status_code, code_of(missing)) == (403, "MissingSecurityToken")
    wrong = call(url, query, key="STS.KEY", secret="sts-secret", x_acs_accesskey_id="STS.KEY", x_acs_security_token="other")
    assert (wrong.status_code, code_of(wrong)) == (403, "InvalidSecurityToken.MismatchWithAccessKey")
    good = call(url, query, key="STS.KEY", secret="sts-secret", x_acs_accesskey_id="STS.KEY", x_acs_security_token="token-123")
    assert (good.status_code, code_of(good)) == (200, "OK")


# --- parameter checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["ChannelType", "TemplateCode", "Language", "From", "SenderList"])
def test_missing_parameter(local_cams: LocalCams, missing: str) -> None:
    response = call(local_cams.url, send_query(**{missing: None}))
    assert (response.status_code, code_of(response)) == (400, "MissingParameter")
    assert missing.replace("Code", "") in response.json()["Message"]


def test_template_name_replaces_template_code(local_cams: LocalCams) -> None:
    response = call(local_cams.url, send_query(TemplateCode=None, TemplateName="welcome"))
    assert code_of(response) == "OK"


@pytest.mark.parametrize(
    "overrides",
    [
        {"ChannelType": "sms"},
        {"FallBackDuration": 59},
        {"FallBackDuration": 43201},
        {"FallBackDuration": "soon"},
        {"SenderList": "[]"},
        {"SenderList": "not json"},
        {"SenderList": '{"To": "861380000000"}'},
        {"SenderList": '[{"To": "861380000000"}, {"TemplateParams": {}}]'},
        {"SenderList": '[{"To": 8613800000000}]'},
    ],
)
def test_invalid_parameter(local_cams: LocalCams, overrides: dict[str, Any]) -> None:
    response = call(local_cams.url, send_query(**overrides))
    assert (response.status_code, code_of(response)) == (400, "InvalidParameter"), response.text


def test_1001_recipients_are_rejected_1000_accepted(local_cams: LocalCams) -> None:
    too_many = send_query(recipients=1001)
    response = call(local_cams.url, too_many)
    assert (response.status_code, code_of(response)) == (400, "InvalidParameter")
    full = send_query(recipients=1000)
    assert len(urlencode(full)) > 64 * 1024  # longer than http.server's request-line limit
    response = call(local_cams.url, full)
    assert (response.status_code, code_of(response)) == (200, "OK")
    rejected, accepted = local_cams.calls()
    assert rejected["recipients"] == 1001 and rejected["code"] == "InvalidParameter"
    assert accepted["recipients"] == 1000 and accepted["to"][-1] == number(999)
    assert local_cams.stats()["recipients_accepted"] == 1000


# --- rate limit ---------------------------------------------------------------------------------


def test_sliding_window_rate_limit(local_cams: LocalCams) -> None:
    url = local_cams.url
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        codes = []
        for i in range(14):
            query = send_query(first=i)
            codes.append(code_of(post(url, query, signed(url, query), client)))
        calls = local_cams.calls()
        burst_s = calls[-1]["received_at"] - calls[0]["received_at"]
        assert burst_s < 1.0, f"burst took {burst_s:.2f}s, too slow to test a 1 s window"
        assert codes == ["OK"] * 10 + ["System.LimitControl"] * 4
        throttled = post(url, send_query(), signed(url, send_query()), client)
        assert throttled.status_code == 400
        assert throttled.json()["Message"] == "The system is under flow control."
        # the window slides: once the first accepted call's arrival is 1 s old, one more call fits
        first_arrival = calls[0]["received_at"]
        time.sleep(max(0.0, first_arrival + 1.05 - time.time()))
        query = send_query(first=100)
        assert code_of(post(url, query, signed(url, query), client)) == "OK"
    stats = local_cams.stats()
    assert stats["accepted_calls"] == 11 and stats["max_accepted_1s"] == 10
    assert stats["by_code"] == {"OK": 11, "System.LimitControl": 5}
    assert stats["accounts"][TEST_KEY_ID]["max_calls_1s"] >= 15


def test_rate_limit_per_account_and_unlimited(local_cams: LocalCams) -> None:
    local_cams.add_account("LTAI_OTHER", "other-secret")
    local_cams.set_faults(rate_limit=0, rate_limits={"LTAI_OTHER": 2})
    url = local_cams.url
    assert all(code_of(call(url)) == "OK" for _ in range(25))
    codes = [code_of(call(url, key="LTAI_OTHER", secret="other-secret")) for _ in range(3)]
    assert codes == ["OK", "OK", "System.LimitControl"]


# --- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [("http500", 500, "InternalError"), ("limit", 400, "System.LimitControl")],
)
def test_injected_error_answers(local_cams: LocalCams, kind: str, status: int, code: str) -> None:
    local_cams.set_faults(error_rate=1.0, error_mix={kind: 1})
    response = call(local_cams.url)
    assert (response.status_code, code_of(response)) == (status, code)
    [record] = local_cams.calls()
    assert (record["fault"], record["code"], record["http_status"], record["accepted_at"]) == (kind, code, status, None)


def test_injected_timeout_sleeps_then_answers_504(local_cams: LocalCams) -> None:
    local_cams.set_faults(error_rate=1.0, error_mix={"timeout": 1}, timeout_sleep_s=1.0)
    query = send_query()
    with pytest.raises(httpx.ReadTimeout):
        post(local_cams.url, query, signed(local_cams.url, query), timeout=httpx.Timeout(5.0, read=0.3))
    started = time.monotonic()
    response = call(local_cams.url)
    assert time.monotonic() - started >= 1.0
    assert (response.status_code, code_of(response)) == (504, "GatewayTimeout")
    assert [(c["fault"], c["code"]) for c in local_cams.calls()] == [("timeout", "GatewayTimeout")] * 2


def test_injected_drop_closes_without_answer(local_cams: LocalCams) -> None:
    local_cams.set_faults(error_rate=1.0, error_mix={"drop": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        call(local_cams.url)
    [record] = local_cams.calls()
    assert (record["fault"], record["code"], record["http_status"]) == ("drop", "Dropped", None)


def test_latency_and_jitter(local_cams: LocalCams) -> None:
    local_cams.set_faults(latency_ms=300, jitter_ms=100)
    started = time.monotonic()
    assert code_of(call(local_cams.url)) == "OK"
    assert 0.3 <= time.monotonic() - started < 3.0


def test_template_codes_and_invalid_numbers(local_cams: LocalCams) -> None:
    local_cams.set_faults(
        rate_limit=0,
        permanent_codes={"T_DENIED": "Ram.PermissionDeny"},
        http200_codes={"T_GONE": "Template.NotFound"},
        invalid_numbers=[number(7)],
        invalid_number_regex=r"86199\d+",
    )
    url = local_cams.url
    denied = call(url, send_query(template="T_DENIED"))
    assert (denied.status_code, code_of(denied)) == (400, "Ram.PermissionDeny")
    assert denied.json()["Message"] == "You are not authorized to perform the operation."
    gone = call(url, send_query(TemplateCode=None, TemplateName="T_GONE"))
    assert (gone.status_code, code_of(gone)) == (200, "Template.NotFound")
    bad_number = call(url, send_query(recipients=10))
    assert (bad_number.status_code, code_of(bad_number)) == (400, "InvalidParameter")
    senders = json.dumps([{"To": number(1)}, {"To": "8619900001111"}])
    assert code_of(call(url, send_query(SenderList=senders))) == "InvalidParameter"
    assert code_of(call(url, send_query(recipients=5))) == "OK"  # numbers 0..4: none invalid
    faults = [c["fault"] for c in local_cams.calls()]
    assert faults == ["permanent", "http200", "invalid_number", "invalid_number", None]
    assert local_cams.stats()["accepted_calls"] == 1


def test_seeded_faults_are_reproducible(local_cams: LocalCams) -> None:
    def run() -> list[str]:
        local_cams.set_faults(rate_limit=0, error_rate=0.5, error_mix={"http500": 1, "limit": 1}, seed=42)
        return [code_of(call(local_cams.url)) for _ in range(20)]

    first, second = run(), run()
    assert first == second
    assert {"OK", "InternalError", "System.LimitControl"} <= set(first)


def test_invalid_fault_settings_are_refused(local_cams: LocalCams) -> None:
    for bad in ({"error_rate": 2}, {"error_mix": {"meteor": 1}}, {"no_such_setting": 1}, {"invalid_number_regex": "("}):
        with pytest.raises(ValueError):
            local_cams.set_faults(**bad)
    assert local_cams.set_faults(latency_ms=5)["latency_ms"] == 5


# --- admin API, concurrency, process ------------------------------------------------------------


def test_admin_paging_stats_and_reset(local_cams: LocalCams) -> None:
    url = local_cams.url
    assert code_of(call(url, send_query(recipients=3))) == "OK"  # numbers 0, 1, 2
    assert code_of(call(url, send_query(recipients=2, first=2))) == "OK"  # numbers 2, 3
    assert code_of(call(url, send_query(ChannelType=None))) == "MissingParameter"
    assert [c["index"] for c in local_cams.calls(since=1)] == [1, 2]
    assert [c["index"] for c in local_cams.calls(since=1, limit=1)] == [1]
    stats = local_cams.stats()
    assert stats["calls"] == 3 and stats["accepted_calls"] == 2 and stats["recipients_accepted"] == 5
    assert stats["by_code"] == {"OK": 2, "MissingParameter": 1}
    account = stats["accounts"][TEST_KEY_ID]
    assert account["distinct_recipients_accepted"] == 4
    assert account["duplicate_recipients_accepted"] == 1 and account["duplicates"] == {number(2): 2}
    local_cams.set_faults(error_rate=1.0)
    local_cams.reset()
    assert local_cams.calls() == [] and local_cams.stats()["calls"] == 0
    assert code_of(call(url)) == "OK"  # faults back to the starting settings
    response = httpx.get(url + "/_admin/faults", timeout=HTTP_TIMEOUT)
    assert response.json()["error_rate"] == 0.0
    assert httpx.get(url + "/_admin/nothing", timeout=HTTP_TIMEOUT).status_code == 404


def test_concurrent_keep_alive_calls(local_cams: LocalCams) -> None:
    local_cams.set_faults(rate_limit=0)
    url = local_cams.url

    def worker(offset: int) -> list[str]:
        with httpx.Client(timeout=HTTP_TIMEOUT) as client:
            codes = []
            for i in range(10):
                query = send_query(recipients=1000, first=(offset * 10 + i) * 1000)
                codes.append(code_of(post(url, query, signed(url, query), client)))
            return codes

    with ThreadPoolExecutor(8) as pool:
        codes = [code for result in pool.map(worker, range(8), timeout=90) for code in result]
    assert codes == ["OK"] * 80
    stats = local_cams.stats()
    assert stats["recipients_accepted"] == 80_000 and stats["duplicate_recipients_accepted"] == 0


def test_process_exits_zero_on_sigterm() -> None:
    cams = LocalCams.start(accounts={TEST_KEY_ID: TEST_SECRET}, timeout=15.0)
    try:
        assert code_of(call(cams.url)) == "OK"
    finally:
        assert cams.stop(timeout=10.0) == 0


def test_in_process_server() -> None:
    with LocalCamsServer({TEST_KEY_ID: TEST_SECRET}, rate_limit=1) as server:
        with httpx.Client(timeout=HTTP_TIMEOUT) as client:  # keep-alive connection open at stop
            query = send_query()
            assert code_of(post(server.url, query, signed(server.url, query), client)) == "OK"
            query = send_query()
            assert code_of(post(server.url, query, signed(server.url, query), client)) == "System.LimitControl"
            assert server.stats()["accepted_calls"] == 1
        server.set_faults(rate_limit=0, error_rate=1.0, error_mix={"timeout": 1}, timeout_sleep_s=60)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(call, server.url)
            deadline = time.monotonic() + 10
            while len(server.calls()) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            started = time.monotonic()
            server.stop(timeout=5.0)  # wakes the answer sleeping 60 s and closes its connection
            with pytest.raises(httpx.RemoteProtocolError):
                pending.result(timeout=10)
            assert time.monotonic() - started < 5.0
    with pytest.raises(RuntimeError):
        _ = server.url


# --- the official SDK -----------------------------------------------------------------------------


@pytest.fixture
def sdk_client(local_cams: LocalCams) -> Iterator[SdkClient]:
    yield sdk_for(local_cams, TEST_KEY_ID, TEST_SECRET)


def sdk_for(cams: LocalCams, key: str, secret: str, token: str | None = None) -> SdkClient:
    endpoint = cams.url.split("//", 1)[1]
    config = Config(access_key_id=key, access_key_secret=secret, security_token=token, endpoint=endpoint,
                    protocol="http", connect_timeout=5000, read_timeout=10000)  # fmt: skip
    return SdkClient(config)


def sdk_request(recipients: int = 2, template: str = "T_OK") -> cams_models.SendChatappMassMessageRequest:
    senders = [cams_models.SendChatappMassMessageRequestSenderList(to=number(i), template_params={"name": f"Zoë {i}*~ x"}) for i in range(recipients)]
    return cams_models.SendChatappMassMessageRequest(
        channel_type="whatsapp", template_code=template, language="en", from_=FROM, sender_list=senders,
        fall_back_duration=120, task_id="task 1",
    )  # fmt: skip


def test_official_sdk_call_is_accepted(local_cams: LocalCams, sdk_client: SdkClient) -> None:
    response = sdk_client.send_chatapp_mass_message(sdk_request(recipients=1000))
    assert response.status_code == 200 and response.body.code == "OK" and response.body.group_message_id
    [record] = local_cams.calls()
    assert record["recipients"] == 1000 and record["params"]["TaskId"] == "task 1"
    assert record["to"][:2] == [number(0), number(1)]


def test_official_sdk_sts_call_is_accepted(local_cams: LocalCams) -> None:
    local_cams.add_account("STS.KEY", "sts-secret", "token-123")
    client = sdk_for(local_cams, "STS.KEY", "sts-secret", token="token-123")
    assert client.send_chatapp_mass_message(sdk_request()).body.code == "OK"


def test_official_sdk_sees_gateway_and_business_errors(local_cams: LocalCams) -> None:
    wrong = sdk_for(local_cams, TEST_KEY_ID, "not-the-secret")
    with pytest.raises(ClientException) as signature_error:
        wrong.send_chatapp_mass_message(sdk_request())
    assert signature_error.value.code == "SignatureDoesNotMatch"
    local_cams.set_faults(error_rate=1.0, error_mix={"limit": 1}, http200_codes={"T_GONE": "Template.NotFound"})
    with pytest.raises(ClientException) as throttled:
        sdk_for(local_cams, TEST_KEY_ID, TEST_SECRET).send_chatapp_mass_message(sdk_request())
    assert throttled.value.code == "System.LimitControl"
    local_cams.set_faults(error_rate=0.0)
    gone = sdk_for(local_cams, TEST_KEY_ID, TEST_SECRET).send_chatapp_mass_message(sdk_request(template="T_GONE"))
    assert gone.status_code == 200 and gone.body.code == "Template.NotFound"
