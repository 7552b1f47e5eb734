"""consumer.credentials: static keys, the Alibaba Cloud default chain (alibabacloud-credentials 1.0.12).

The SDK reads the ALIBABA_CLOUD_* variables once, when ``alibabacloud_credentials.utils.auth_util``
is imported; ``sdk_env`` sets the environment and re-imports that module (reload) so the real
``Client()`` chain sees it, and restores both afterwards. One test runs the chain in a fresh
interpreter instead, as production does. Every test turns off the ECS metadata service, the CLI
profile and the credentials file, so nothing leaves the machine.

The OIDC (RRSA) test runs the SDK's real chain against a fake STS on loopback: the chain builds its
``OIDCRoleArnCredentialsProvider`` from the environment, and the test only swaps in one with
``sts_endpoint="http://127.0.0.1:PORT"`` (the chain reads no endpoint from the environment, only
``ALIBABA_CLOUD_STS_REGION``). The SDK's clock (``time`` in its ``refreshable`` module) and ours are
injected, so expiry is crossed without sleeping.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import importlib
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
from alibabacloud_credentials.exceptions import CredentialException
from alibabacloud_credentials.http import HttpOptions
from alibabacloud_credentials.models import CredentialModel
from alibabacloud_credentials.provider import OIDCRoleArnCredentialsProvider
from alibabacloud_credentials.provider import default as sdk_default
from alibabacloud_credentials.provider import refreshable as sdk_refreshable
from alibabacloud_credentials.utils import auth_util as sdk_env_snapshot

from consumer import config as settings
from consumer.cams.client import Credentials, StaticCredentials
from consumer.config import AccountConfig
from consumer.credentials import (
    CREDENTIAL_SOURCES,
    DEFAULT_ACCOUNT,
    DEFAULT_CHAIN,
    ChainCredentials,
    CredentialsError,
    build_providers,
    credentials_source,
    default_chain,
    provider_for,
    scrub,
)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
ROLE_ARN = "acs:ram::1234567890123456:role/chatapp-consumer"
OIDC_PROVIDER_ARN = "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c0ffee"
SESSION_NAME = "chatapp-consumer-test"
JWT_1 = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6MSJ9.c2lnbmF0dXJlLW9uZQ"
JWT_2 = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6MiJ9.c2lnbmF0dXJlLXR3bw"
ISOLATION = {
    "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
    "ALIBABA_CLOUD_CLI_PROFILE_DISABLED": "true",
}
HAS_CREDENTIALS_FIELD = "credentials" in {f.name for f in dataclasses.fields(AccountConfig)}


@dataclasses.dataclass(frozen=True)
class _ChainAccount:
    """Stands in for AccountConfig until it has its ``credentials`` field (see the wiring notes)."""

    name: str
    access_key_id: str | None = None
    access_key_secret: str | None = dataclasses.field(default=None, repr=False)
    security_token: str | None = dataclasses.field(default=None, repr=False)
    rate_limit_per_second: float = 10.0
    rate_limit_burst: int = 1
    credentials: str = "static"


def account(name: str, key_id: str | None = None, secret: str | None = None, token: str | None = None, credentials: str | None = None) -> Any:
    if credentials is None:
        return AccountConfig(name, key_id, secret, token)
    if HAS_CREDENTIALS_FIELD:
        return AccountConfig(name, key_id, secret, token, credentials=credentials)  # type: ignore[call-arg]
    return _ChainAccount(name, key_id, secret, token, credentials=credentials)


def no_chain() -> Any:
    raise AssertionError("the credential chain must not be built for static keys")


# -- the SDK's environment -------------------------------------------------------------------------
@pytest.fixture
def sdk_env(tmp_path: Path) -> Iterator[Callable[..., None]]:
    """``sdk_env(NAME=value, ...)``: the process environment as the SDK will see it (ALIBABA_CLOUD_*
    cleared, then ISOLATION and the given variables), re-read by the SDK; everything restored after."""
    with mock.patch.dict(os.environ):

        def apply(**variables: str) -> None:
            for name in [n for n in os.environ if n.startswith("ALIBABA_CLOUD_")]:
                del os.environ[name]
            os.environ.update(ISOLATION)
            os.environ["ALIBABA_CLOUD_CREDENTIALS_FILE"] = str(tmp_path / "no-credentials.ini")
            os.environ.update(variables)
            importlib.reload(sdk_env_snapshot)

        apply()
        try:
            yield apply
        finally:
            pass
    importlib.reload(sdk_env_snapshot)


class LibraryClock:
    """Stands in for the ``time`` module of the SDK's refreshable cache: its now is ``self.now``."""

    mktime = staticmethod(time.mktime)

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def localtime(self, secs: float | None = None) -> time.struct_time:
        return time.localtime(self.now if secs is None else secs)


class ManualClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- a fake STS on loopback --------------------------------------------------------------------------
class FakeSts:
    """Answers AssumeRoleWithOIDC from ``self.replies`` (status, body), recording every query."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.replies: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()
        sts = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query, keep_blank_values=True).items()}
                with sts.lock:
                    sts.requests.append(query)
                    status, body = sts.replies.pop(0) if sts.replies else (500, {"Code": "InternalError", "Message": "no reply queued"})
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="fake-sts", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()

    def credentials(self, key_id: str, secret: str, token: str, expires_at: float) -> None:
        self.replies.append(
            (
                200,
                {
                    "RequestId": "3D57EAD2-8723-1F26-B69C-F8707D8B565D",
                    "AssumedRoleUser": {"Arn": f"{ROLE_ARN}/{SESSION_NAME}", "AssumedRoleId": "30081280744271****:" + SESSION_NAME},
                    "Credentials": {
                        "AccessKeyId": key_id,
                        "AccessKeySecret": secret,
                        "SecurityToken": token,
                        "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at)),
                    },
                },
            )
        )


@pytest.fixture
def fake_sts() -> Iterator[FakeSts]:
    sts = FakeSts()
    try:
        yield sts
    finally:
        sts.stop()


@pytest.fixture
def rrsa(sdk_env: Callable[..., None], fake_sts: FakeSts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The environment ack-pod-identity injects for RRSA, a token file, the SDK's chain pointed at
    the fake STS (2 s HTTP timeouts) and the SDK's clock under the test's control."""
    token_file = tmp_path / "token"
    token_file.write_text(JWT_1)
    sdk_env(
        ALIBABA_CLOUD_ROLE_ARN=ROLE_ARN,
        ALIBABA_CLOUD_OIDC_PROVIDER_ARN=OIDC_PROVIDER_ARN,
        ALIBABA_CLOUD_OIDC_TOKEN_FILE=str(token_file),
        ALIBABA_CLOUD_ROLE_SESSION_NAME=SESSION_NAME,
    )
    monkeypatch.setattr(
        sdk_default,
        "OIDCRoleArnCredentialsProvider",
        functools.partial(OIDCRoleArnCredentialsProvider, sts_endpoint=fake_sts.url, http_options=HttpOptions(connect_timeout=2000, read_timeout=2000)),
    )
    library_clock = LibraryClock()
    monkeypatch.setattr(sdk_refreshable, "time", library_clock)
    return SimpleNamespace(sts=fake_sts, token_file=token_file, library_clock=library_clock)


# -- a scripted chain -------------------------------------------------------------------------------
class ScriptedChain:
    """A stand-in for the SDK client: ``get_credential`` returns (or raises) ``self.answer``."""

    def __init__(self, answer: Any, delay_s: float = 0.0) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self.calls = 0
        self.lock = threading.Lock()

    def get_credential(self) -> Any:
        with self.lock:
            self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def model(key_id: str = "STS.key-1", secret: str = "sts-secret-1", token: str | None = "sts-token-1") -> CredentialModel:
    return CredentialModel(access_key_id=key_id, access_key_secret=secret, security_token=token, type="default", provider_name="default/test")


# == static keys ===================================================================================
def test_static_keys_give_static_credentials_and_never_build_the_chain() -> None:
    provider = provider_for(account("shop", "LTAI5tStaticKeyId", "static-secret-123"), chain_factory=no_chain)
    assert provider == StaticCredentials("LTAI5tStaticKeyId", "static-secret-123", None)
    assert provider.get() is provider
    sts = provider_for(account("shop", "STS.StaticId", "sts-secret-123", "sts-token-123"), chain_factory=no_chain)
    creds = sts.get()
    assert (creds.access_key_id, creds.access_key_secret, creds.security_token) == ("STS.StaticId", "sts-secret-123", "sts-token-123")


def test_static_keys_sign_as_build_credentials_always_did() -> None:
    """The same credentials as app.build_credentials made before the chain existed."""
    for acc in (account(DEFAULT_ACCOUNT, "LTAI5tA", "secret-a"), account("b", "STS.B", "secret-b", "token-b"), account("c", "LTAI5tC", "secret-c", "")):
        before = StaticCredentials(acc.access_key_id or "", acc.access_key_secret or "", acc.security_token)
        now = provider_for(acc, chain_factory=no_chain).get()
        assert (now.access_key_id, now.access_key_secret, now.security_token or None) == (
            before.access_key_id,
            before.access_key_secret,
            before.security_token or None,
        )
        assert isinstance(now, StaticCredentials)


def test_which_source_each_account_gets() -> None:
    assert credentials_source(account("a", "id", "secret")) == "static"
    assert credentials_source(account(DEFAULT_ACCOUNT)) == DEFAULT_CHAIN  # the default account without keys
    assert credentials_source(account("k8s", credentials=DEFAULT_CHAIN)) == DEFAULT_CHAIN
    assert credentials_source(account(DEFAULT_ACCOUNT, credentials=DEFAULT_CHAIN)) == DEFAULT_CHAIN
    assert CREDENTIAL_SOURCES == ("static", "default-chain")
    assert DEFAULT_ACCOUNT == settings.DEFAULT_ACCOUNT
    assert getattr(settings, "CREDENTIAL_SOURCES", CREDENTIAL_SOURCES) == CREDENTIAL_SOURCES


@pytest.mark.parametrize(
    ("acc", "expected"),
    [
        (account("shop"), "account 'shop': needs access_key_id and access_key_secret, or credentials = \"default-chain\""),
        (account("shop", "LTAI5tOnlyId"), "account 'shop': access_key_id and access_key_secret must be set together"),
        (account(DEFAULT_ACCOUNT, None, "lonely-secret-value"), "account 'default': access_key_id and access_key_secret must be set together"),
        (
            account("k8s", "LTAI5tX", "chain-and-secret", credentials=DEFAULT_CHAIN),
            "account 'k8s': credentials = \"default-chain\" takes no access_key_id, access_key_secret or security_token",
        ),
        (account("k8s", credentials="oidc"), "account 'k8s': credentials must be one of static, default-chain (got 'oidc')"),
    ],
)
def test_unusable_accounts_are_clear_errors(acc: Any, expected: str) -> None:
    with pytest.raises(CredentialsError) as caught:
        provider_for(acc, chain_factory=no_chain)
    assert str(caught.value) == expected
    assert caught.value.account == acc.name
    assert "lonely-secret-value" not in str(caught.value) and "chain-and-secret" not in str(caught.value)


# == the real default chain, from the environment ================================================
def test_default_account_without_keys_reads_access_keys_from_the_environment(sdk_env: Callable[..., None]) -> None:
    sdk_env(ALIBABA_CLOUD_ACCESS_KEY_ID="LTAI5tFromEnvironment", ALIBABA_CLOUD_ACCESS_KEY_SECRET="secret-from-environment")
    provider = provider_for(account(DEFAULT_ACCOUNT))
    assert isinstance(provider, ChainCredentials)
    creds = provider.get()
    assert creds == Credentials("LTAI5tFromEnvironment", "secret-from-environment", None)
    assert provider.source == "default/env"
    assert provider.get() is creds


def test_chain_passes_an_sts_token_from_the_environment(sdk_env: Callable[..., None]) -> None:
    sdk_env(
        ALIBABA_CLOUD_ACCESS_KEY_ID="STS.NFromEnvironment",
        ALIBABA_CLOUD_ACCESS_KEY_SECRET="sts-secret-env",
        ALIBABA_CLOUD_SECURITY_TOKEN="CAIS.token+from/env==",
    )
    creds = provider_for(account("k8s", credentials=DEFAULT_CHAIN)).get()
    assert creds == Credentials("STS.NFromEnvironment", "sts-secret-env", "CAIS.token+from/env==")


def test_chain_in_a_fresh_process_reads_the_environment(tmp_path: Path) -> None:
    """As in production: the SDK imported by a process whose environment already holds the keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    env.update(
        ISOLATION,
        HOME=str(tmp_path),
        ALIBABA_CLOUD_CREDENTIALS_FILE=str(tmp_path / "none.ini"),
        ALIBABA_CLOUD_ACCESS_KEY_ID="STS.NFreshProcess",
        ALIBABA_CLOUD_ACCESS_KEY_SECRET="fresh-secret",
        ALIBABA_CLOUD_SECURITY_TOKEN="fresh-token",
    )
    script = textwrap.dedent("""
        from consumer.config import AccountConfig
        from consumer.credentials import provider_for
        provider = provider_for(AccountConfig("default", None))
        creds = provider.get()
        print(type(provider).__name__, provider.source, creds.access_key_id, creds.access_key_secret == "fresh-secret", creds.security_token == "fresh-token")
    """)
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ChainCredentials", "default/env", "STS.NFreshProcess", "True", "True"]


def test_empty_chain_is_a_clear_error_naming_the_account(sdk_env: Callable[..., None]) -> None:
    provider = provider_for(account(DEFAULT_ACCOUNT))
    with pytest.raises(CredentialsError) as caught:
        provider.get()
    text = str(caught.value)
    assert text.startswith("account 'default': the Alibaba Cloud default credential chain gave no credentials: CredentialException: ")
    assert "EnvironmentVariableCredentialsProvider: Environment variable accessKeyId cannot be empty" in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# == OIDC / RRSA through the real chain, against a fake STS ============================================
def test_rrsa_oidc_through_the_chain_sends_the_token_and_refreshes_on_expiry(rrsa: SimpleNamespace) -> None:
    sts, lib = rrsa.sts, rrsa.library_clock
    first_expiry = lib.now + 3600
    sts.credentials("STS.NRrsaOne", "rrsa-secret-one", "rrsa-token-one", first_expiry)
    clock = ManualClock()
    provider = ChainCredentials(DEFAULT_ACCOUNT, default_chain, refresh_s=30, clock=clock)

    first = provider.get()
    assert first == Credentials("STS.NRrsaOne", "rrsa-secret-one", "rrsa-token-one")
    assert provider.source == "default/oidc_role_arn"
    assert len(sts.requests) == 1
    sent = sts.requests[0]
    assert sent["Action"] == "AssumeRoleWithOIDC"
    assert sent["OIDCToken"] == JWT_1  # the token file's content
    assert (sent["RoleArn"], sent["OIDCProviderArn"], sent["RoleSessionName"], sent["DurationSeconds"]) == (ROLE_ARN, OIDC_PROVIDER_ARN, SESSION_NAME, "3600")
    assert "ECS" not in repr(provider) and "rrsa-secret-one" not in repr(provider)

    for _ in range(100):  # the hot path: no STS call, the same object
        assert provider.get() is first
    clock.now += 31  # our refresh interval passed; the SDK's credentials are still fresh
    assert provider.get() is first
    assert len(sts.requests) == 1

    rrsa.token_file.write_text(JWT_2)  # the kubelet rotated the projected token
    sts.credentials("STS.NRrsaTwo", "rrsa-secret-two", "rrsa-token-two", first_expiry + 3600)
    lib.now = first_expiry - 15 * 60 + 1  # the SDK refreshes 15 minutes before expiry
    assert provider.get() is first  # we have not asked the SDK again yet
    clock.now += 31
    second = provider.get()
    assert second == Credentials("STS.NRrsaTwo", "rrsa-secret-two", "rrsa-token-two")
    assert len(sts.requests) == 2
    assert sts.requests[1]["OIDCToken"] == JWT_2  # read again from the file
    clock.now += 31
    assert provider.get() is second
    assert len(sts.requests) == 2


def test_rrsa_sts_refusal_is_clear_and_never_leaks_the_oidc_token(rrsa: SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    rrsa.sts.replies.append((400, {"RequestId": "6A8C-11", "Code": "AuthenticationFail.OIDCToken.Expired", "Message": "The OIDCToken is expired."}))
    clock = ManualClock()
    provider = ChainCredentials("k8s", default_chain, retry_s=1.0, clock=clock)
    with caplog.at_level(logging.DEBUG), pytest.raises(CredentialsError) as caught:
        provider.get()
    text = str(caught.value)
    assert text.startswith("account 'k8s': the Alibaba Cloud default credential chain gave no credentials: CredentialException: ")
    assert "http_code: 400" in text and "AuthenticationFail.OIDCToken.Expired" in text
    assert JWT_1 not in text
    assert len(rrsa.sts.requests) == 1

    with pytest.raises(CredentialsError):  # remembered for retry_s: STS is not asked again at once
        provider.get()
    assert len(rrsa.sts.requests) == 1
    clock.now += 1.5
    rrsa.library_clock.now += 2
    rrsa.sts.credentials("STS.NRecovered", "recovered-secret", "recovered-token", rrsa.library_clock.now + 3600)
    assert provider.get().access_key_id == "STS.NRecovered"
    assert len(rrsa.sts.requests) == 2
    assert all(JWT_1 not in r.getMessage() and r.exc_info is None for r in caplog.records)
    assert any("OIDCToken=***" in r.getMessage() for r in caplog.records if r.name == "urllib3.connectionpool")


def test_unreachable_sts_error_masks_the_token_in_the_url(rrsa: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The SDK's connection error quotes the request URL, OIDCToken included; so does its logger."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(
        sdk_default,
        "OIDCRoleArnCredentialsProvider",
        functools.partial(OIDCRoleArnCredentialsProvider, sts_endpoint=closed, http_options=HttpOptions(connect_timeout=2000, read_timeout=2000)),
    )
    provider = ChainCredentials("k8s", default_chain)
    with caplog.at_level(logging.DEBUG), pytest.raises(CredentialsError) as caught:
        provider.get()
    text = str(caught.value)
    assert "AssumeRoleWithOIDC" in text and "OIDCToken=***" in text
    assert JWT_1 not in text
    sdk_records = [r for r in caplog.records if r.name == "credentials"]
    assert sdk_records, "the SDK logs refresh failures"
    assert not [h for h in logging.getLogger("credentials").handlers if type(h) is logging.StreamHandler]
    for record in caplog.records:
        assert JWT_1 not in record.getMessage()
        assert record.exc_info is None


# == caching, refresh, errors (scripted chain) ======================================================
def test_get_is_answered_from_memory_until_refresh_s() -> None:
    chain = ScriptedChain(model())
    clock = ManualClock()
    provider = ChainCredentials("a", lambda: chain, refresh_s=30, clock=clock)
    first = provider.get()
    for _ in range(1000):
        assert provider.get() is first
    assert chain.calls == 1
    clock.now += 29.9
    assert provider.get() is first and chain.calls == 1
    clock.now += 0.2
    assert provider.get() is first and chain.calls == 2  # asked again: unchanged, same object
    chain.answer = model("STS.key-2", "sts-secret-2", "sts-token-2")
    clock.now += 30
    assert provider.get() == Credentials("STS.key-2", "sts-secret-2", "sts-token-2")
    assert chain.calls == 3


def test_errors_are_remembered_for_retry_s_then_retried() -> None:
    chain = ScriptedChain(CredentialException('error retrieving credentials result: {"AccessKeySecret": "leaked-secret-1", "SecurityToken": "leaked-token-1"}'))
    clock = ManualClock()
    provider = ChainCredentials("acct", lambda: chain, retry_s=2, clock=clock)
    for _ in range(50):
        with pytest.raises(CredentialsError) as caught:
            provider.get()
    assert chain.calls == 1
    text = str(caught.value)
    assert text.startswith("account 'acct': ")
    assert "leaked-secret-1" not in text and "leaked-token-1" not in text
    assert '"AccessKeySecret": ***' in text
    clock.now += 2
    chain.answer = model()
    assert provider.get() == Credentials("STS.key-1", "sts-secret-1", "sts-token-1")
    assert chain.calls == 2


def test_a_failed_refresh_drops_the_old_credentials_and_masks_them() -> None:
    chain = ScriptedChain(model("STS.old", "old-secret-value", "old-token-value"))
    clock = ManualClock()
    provider = ChainCredentials("acct", lambda: chain, refresh_s=10, retry_s=1, clock=clock)
    provider.get()
    chain.answer = RuntimeError("refresh failed; last value was old-secret-value / old-token-value")
    clock.now += 10
    with pytest.raises(CredentialsError) as caught:
        provider.get()
    assert "old-secret-value" not in str(caught.value) and "old-token-value" not in str(caught.value)
    assert "RuntimeError: refresh failed; last value was *** / ***" in str(caught.value)


def test_a_credential_without_secret_is_an_error() -> None:
    chain = ScriptedChain(CredentialModel(access_key_id="STS.half", access_key_secret=None, provider_name="default/odd"))
    with pytest.raises(CredentialsError, match=r"^account 'x': .*no access key id or secret \(provider 'default/odd'\)"):
        ChainCredentials("x", lambda: chain).get()


def test_a_chain_that_cannot_be_built_fails_at_provider_for() -> None:
    def broken() -> Any:
        raise ValueError("session duration should be in the range of 900s - max session duration")

    with pytest.raises(CredentialsError, match=r"^account 'default': cannot set up the Alibaba Cloud default credential chain: ValueError: session duration"):
        provider_for(account(DEFAULT_ACCOUNT), chain_factory=broken)


def test_chain_accounts_share_one_sdk_client() -> None:
    built: list[ScriptedChain] = []

    def factory() -> ScriptedChain:
        built.append(ScriptedChain(model()))
        return built[-1]

    providers = build_providers(
        {
            "static": account("static", "LTAI5tS", "s-secret"),
            DEFAULT_ACCOUNT: account(DEFAULT_ACCOUNT),
            "k8s": account("k8s", credentials=DEFAULT_CHAIN),
        },
        chain_factory=factory,
    )
    assert isinstance(providers["static"], StaticCredentials)
    assert providers[DEFAULT_ACCOUNT].get() == providers["k8s"].get()
    assert len(built) == 1 and built[0].calls == 2


class GatedChain(ScriptedChain):
    """``get_credential`` blocks from its second call until ``gate`` is set (at most 10 s)."""

    def __init__(self, answer: Any) -> None:
        super().__init__(answer)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def get_credential(self) -> Any:
        with self.lock:
            self.calls += 1
            calls = self.calls
        if calls > 1:
            self.entered.set()
            assert self.gate.wait(timeout=10)
        return self.answer


def test_while_one_thread_asks_the_sdk_the_others_keep_the_current_credentials() -> None:
    chain = GatedChain(model())
    clock = ManualClock()
    provider = ChainCredentials("busy", lambda: chain, refresh_s=30, clock=clock)
    current = provider.get()
    clock.now += 31
    refresher = threading.Thread(target=provider.get, name="refresher", daemon=True)
    refresher.start()
    try:
        assert chain.entered.wait(timeout=5)  # the refresher is inside the SDK, holding the lock
        started = time.monotonic()
        for _ in range(100):
            assert provider.get() is current
        assert time.monotonic() - started < 1.0
    finally:
        chain.gate.set()
        refresher.join(timeout=5)
    assert not refresher.is_alive()
    assert chain.calls == 2


def test_many_threads_without_credentials_yet_ask_the_sdk_once() -> None:
    chain = ScriptedChain(model(), delay_s=0.2)
    provider = ChainCredentials("busy", lambda: chain)
    barrier = threading.Barrier(8)
    got: list[Credentials] = []
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            barrier.wait(timeout=5)
            got.append(provider.get())
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=caller, name=f"caller-{i}", daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive()
    assert not errors
    assert chain.calls == 1
    assert len(got) == 8 and all(c is got[0] for c in got)


def test_a_caller_waiting_for_first_credentials_gives_up_after_wait_s() -> None:
    chain = GatedChain(model())
    chain.calls = 1  # the first call already blocks
    provider = ChainCredentials("slow", lambda: chain, wait_s=0.2)
    first = threading.Thread(target=provider.get, name="first", daemon=True)
    first.start()
    try:
        assert chain.entered.wait(timeout=5)
        with pytest.raises(CredentialsError, match=r"^account 'slow': timed out after 0.2s waiting for the Alibaba Cloud default credential chain$"):
            provider.get()
    finally:
        chain.gate.set()
        first.join(timeout=5)
    assert not first.is_alive()


def test_concurrent_callers_under_refresh_see_no_errors() -> None:
    chain = ScriptedChain(model(), delay_s=0.02)
    provider = ChainCredentials("busy", lambda: chain, refresh_s=0.05)
    errors: list[BaseException] = []
    stop = threading.Event()
    calls_made = [0] * 8

    def caller(i: int) -> None:
        while not stop.is_set():
            try:
                assert provider.get().access_key_id == "STS.key-1"
            except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
                errors.append(exc)
                return
            calls_made[i] += 1
            time.sleep(0.001)

    threads = [threading.Thread(target=caller, args=(i,), name=f"caller-{i}", daemon=True) for i in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(0.6)  # the scenario: the callers hammer for 0.6 s
    stop.set()
    for t in threads:
        t.join(timeout=5)
        assert not t.is_alive()
    elapsed = time.monotonic() - started
    assert not errors
    assert min(calls_made) > 0
    assert 2 <= chain.calls <= elapsed / 0.05 + 2  # at most one SDK call per refresh interval


# == nothing secret in repr, str or errors ===========================================================
def test_repr_and_str_never_show_secrets() -> None:
    chain = ScriptedChain(model("STS.shown-key", "hidden-secret-9", "hidden-token-9"))
    provider = ChainCredentials("acct", lambda: chain)
    assert "hidden" not in repr(provider)
    creds = provider.get()
    for text in (repr(provider), str(provider), repr(creds), str(creds)):
        assert "STS.shown-key" in text
        assert "hidden-secret-9" not in text and "hidden-token-9" not in text
    static = provider_for(account("s", "LTAI5tShown", "hidden-static-secret", "hidden-static-token"))
    assert "hidden" not in repr(static) + str(static)
    assert "hidden" not in repr(account("s", "LTAI5tShown", "hidden-static-secret", "hidden-static-token"))


def test_scrub_masks_secret_looking_pairs_and_known_values() -> None:
    text = (
        "GET /?Action=AssumeRoleWithOIDC&OIDCToken=abc.def.ghi&RoleArn=acs:ram::1:role/r "
        '{"AccessKeySecret": "s3cr3t", "SecurityToken": "tok"} access_key_secret=plain '
        "'security_token': 'py-repr' password: hunter2 literal-known-value"
    )
    out = scrub(text, ["literal-known-value"])
    for secret in ("abc.def.ghi", "s3cr3t", '"tok"', "plain", "py-repr", "hunter2", "literal-known-value"):
        assert secret not in out
    assert "Action=AssumeRoleWithOIDC" in out and "RoleArn=acs:ram::1:role/r" in out
    assert "EnvironmentVariableCredentialsProvider: Environment variable accessKeyId cannot be empty" == scrub(
        "EnvironmentVariableCredentialsProvider: Environment variable accessKeyId cannot be empty"
    )
