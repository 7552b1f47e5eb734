"""Where each CAMS account's credentials come from: its own keys, or the Alibaba Cloud default chain.

``provider_for(account)`` picks one ``CredentialsProvider`` per account:

* ``access_key_id`` + ``access_key_secret`` (optionally ``security_token``): ``StaticCredentials``,
  exactly as before;
* ``credentials = "default-chain"``, or the ``default`` account without keys: ``ChainCredentials``
  over ``alibabacloud_credentials.client.Client()``, the SDK's default chain: environment variables
  (``ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``_SECRET`` / ``ALIBABA_CLOUD_SECURITY_TOKEN``), OIDC role
  (Kubernetes RRSA: ``ALIBABA_CLOUD_ROLE_ARN`` + ``ALIBABA_CLOUD_OIDC_PROVIDER_ARN`` +
  ``ALIBABA_CLOUD_OIDC_TOKEN_FILE``), the CLI profile (``~/.aliyun/config.json``), the credentials
  file (``~/.alibabacloud/credentials.ini``), the ECS RAM role (instance metadata) and
  ``ALIBABA_CLOUD_CREDENTIALS_URI``, in that order. The SDK reads those variables once, when it is
  imported.

The SDK refreshes STS credentials itself (an OIDC role 15 minutes before they expire).
``ChainCredentials.get`` runs before every API call, so it asks the SDK at most every
``refresh_s`` seconds and hands out the same ``Credentials`` object in between; while one thread
asks, the others keep the credentials they have. A failure becomes a ``CredentialsError`` that names
the account and carries no secret; it is remembered for ``retry_s`` seconds so that callers do not
hammer STS or the metadata service.

The SDK logs refresh failures with the STS request URL, which holds the OIDC token, on its own
``credentials`` logger (to three private stderr handlers, besides propagating), and urllib3 logs the
same URL at DEBUG. ``guard_sdk_logs`` (run whenever a chain provider is made) puts a filter on both
loggers that masks secrets and turns tracebacks into one masked line, and removes the SDK's private
stderr handlers, so its records reach the service's own log handlers once, masked.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, quote_plus

from consumer.cams.client import Credentials, CredentialsProvider, StaticCredentials

if TYPE_CHECKING:
    from consumer.config import AccountConfig

log = logging.getLogger("consumer.credentials")

DEFAULT_ACCOUNT = "default"
STATIC = "static"
DEFAULT_CHAIN = "default-chain"
CREDENTIAL_SOURCES = (STATIC, DEFAULT_CHAIN)
DEFAULT_REFRESH_S = 30.0
DEFAULT_RETRY_S = 1.0
DEFAULT_WAIT_S = 30.0
GUARDED_LOGGERS = ("credentials", "urllib3.connectionpool")  # the SDK's logger; urllib3 logs request URLs
_MAX_REASON = 1000
_MASK = "***"
_SECRET_ENV = ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN")
_TOKEN_FILE_ENV = "ALIBABA_CLOUD_OIDC_TOKEN_FILE"
# name: value, name=value, "name": "value" where the name says secret/token/password/signature
_SECRET_PAIR = re.compile(
    r"""(?P<key>["']?[\w.-]*(?:secret|token|password|passwd|signature)[\w.-]*["']?\s*[:=]\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s&,;)}\]"']+)""",
    re.IGNORECASE,
)


class CredentialsError(Exception):
    """An account has no usable credentials. The message names the account and holds no secret."""

    def __init__(self, account: str, reason: str):
        super().__init__(f"account {account!r}: {reason}")
        self.account = account
        self.reason = reason


class ChainClient(Protocol):
    """What ``ChainCredentials`` needs of ``alibabacloud_credentials.client.Client``."""

    def get_credential(self) -> Any: ...  # a CredentialModel: access_key_id, access_key_secret, security_token


ChainFactory = Callable[[], ChainClient]


def default_chain() -> ChainClient:
    """The SDK's default credential chain (imported here: static-key deployments never load it)."""
    from alibabacloud_credentials.client import Client

    return Client()


def credentials_source(account: AccountConfig) -> str:
    """``static`` or ``default-chain``: what the account asks for, the keyless default account
    meaning the chain. Raises CredentialsError for a contradictory or incomplete account."""
    name = account.name
    source = getattr(account, "credentials", None) or STATIC
    has_key_material = bool(account.access_key_id or account.access_key_secret or account.security_token)
    if source not in CREDENTIAL_SOURCES:
        raise CredentialsError(name, f"credentials must be one of {', '.join(CREDENTIAL_SOURCES)} (got {source!r})")
    if source == DEFAULT_CHAIN:
        if has_key_material:
            raise CredentialsError(name, f'credentials = "{DEFAULT_CHAIN}" takes no access_key_id, access_key_secret or security_token')
        return DEFAULT_CHAIN
    if account.access_key_id and account.access_key_secret:
        return STATIC
    if has_key_material:
        raise CredentialsError(name, "access_key_id and access_key_secret must be set together")
    if name == DEFAULT_ACCOUNT:
        return DEFAULT_CHAIN
    raise CredentialsError(name, f'needs access_key_id and access_key_secret, or credentials = "{DEFAULT_CHAIN}"')


def provider_for(account: AccountConfig, *, chain_factory: ChainFactory | None = None) -> CredentialsProvider:
    """The provider that signs ``account``'s calls: its static keys, or the default credential chain
    (built by ``chain_factory``, default ``alibabacloud_credentials.client.Client()``)."""
    if credentials_source(account) == STATIC:
        return StaticCredentials(account.access_key_id or "", account.access_key_secret or "", account.security_token or None)
    return ChainCredentials(account.name, chain_factory or default_chain)


def build_providers(accounts: Mapping[str, AccountConfig], *, chain_factory: ChainFactory | None = None) -> dict[str, CredentialsProvider]:
    """One provider per account; the accounts on the default chain share one SDK client (the chain
    resolves one identity per process, and each client would start its own refresh machinery)."""
    factory = chain_factory or default_chain
    shared: list[ChainClient] = []

    def once() -> ChainClient:
        if not shared:
            shared.append(factory())
        return shared[0]

    return {name: provider_for(account, chain_factory=once) for name, account in accounts.items()}


class ChainCredentials:
    """A CredentialsProvider over the SDK's credential chain, cheap enough to call before every call.

    ``get()`` answers from memory until ``refresh_s`` has passed, then asks the SDK again (which
    refreshes STS credentials itself) and keeps the same ``Credentials`` object if nothing changed.
    Thread-safe: one thread asks the SDK at a time; the others keep the credentials they have, or,
    having none yet, wait up to ``wait_s``. A failure raises ``CredentialsError`` and is answered
    from memory for ``retry_s`` seconds before the SDK is asked again.
    """

    def __init__(
        self,
        account: str,
        chain_factory: ChainFactory = default_chain,
        *,
        refresh_s: float = DEFAULT_REFRESH_S,
        retry_s: float = DEFAULT_RETRY_S,
        wait_s: float = DEFAULT_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if refresh_s <= 0 or retry_s < 0 or wait_s <= 0:
            raise ValueError("refresh_s and wait_s must be positive, retry_s not negative")
        self.account = account
        self.source: str | None = None  # the SDK's provider name, e.g. "default/oidc_role_arn"
        self._refresh_s = refresh_s
        self._retry_s = retry_s
        self._wait_s = wait_s
        self._clock = clock
        self._lock = threading.Lock()
        # (credentials, error, due): one tuple, so a reader without the lock sees a consistent state
        self._state: tuple[Credentials | None, CredentialsError | None, float] = (None, None, float("-inf"))
        guard_sdk_logs()
        try:
            self._client = chain_factory()
        except Exception as exc:  # noqa: BLE001 (any failure of the SDK becomes a CredentialsError)
            raise CredentialsError(account, _reason("cannot set up the Alibaba Cloud default credential chain", exc)) from None

    def __repr__(self) -> str:
        current = self._state[0]
        key_id = current.access_key_id if current is not None else None
        return f"ChainCredentials(account={self.account!r}, source={self.source!r}, access_key_id={key_id!r})"

    def get(self) -> Credentials:
        current, error, due = self._state
        if self._clock() < due:
            return _answer(current, error)
        if not self._lock.acquire(blocking=False):
            if current is not None:  # another thread is asking the SDK: keep using what we have
                return current
            if not self._lock.acquire(timeout=self._wait_s):
                raise CredentialsError(self.account, f"timed out after {self._wait_s:g}s waiting for the Alibaba Cloud default credential chain")
        try:
            current, error, due = self._state
            if self._clock() < due:  # another thread has just asked
                return _answer(current, error)
            return self._refresh(current)
        finally:
            self._lock.release()

    def _refresh(self, previous: Credentials | None) -> Credentials:
        try:
            model = self._client.get_credential()
            fresh = _credentials(model)
        except Exception as exc:  # noqa: BLE001 (any failure of the SDK becomes a CredentialsError)
            error = CredentialsError(self.account, _reason("the Alibaba Cloud default credential chain gave no credentials", exc, previous))
            if self._state[1] is None:
                log.warning("%s", error)
            self._state = (None, error, self._clock() + self._retry_s)
            raise CredentialsError(error.account, error.reason) from None
        if previous is not None and fresh == previous:
            fresh = previous  # unchanged: hand out the same object
        else:
            self.source = _text(getattr(model, "provider_name", None))
            log.info("account %r: credentials from %s (access key id %s)", self.account, self.source or "the default chain", fresh.access_key_id)
        self._state = (fresh, None, self._clock() + self._refresh_s)
        return fresh


def _answer(current: Credentials | None, error: CredentialsError | None) -> Credentials:
    if current is not None:
        return current
    assert error is not None
    raise CredentialsError(error.account, error.reason)  # a fresh exception: no growing traceback


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _credentials(model: Any) -> Credentials:
    key_id = _text(getattr(model, "access_key_id", None))
    secret = _text(getattr(model, "access_key_secret", None))
    if key_id is None or secret is None:
        raise ValueError(f"the chain returned no access key id or secret (provider {getattr(model, 'provider_name', None)!r})")
    return Credentials(key_id, secret, _text(getattr(model, "security_token", None)))


def _known_secrets(previous: Credentials | None) -> list[str]:
    values = [os.environ.get(name, "") for name in _SECRET_ENV]
    if previous is not None:
        values += [previous.access_key_secret, previous.security_token or ""]
    token_file = os.environ.get(_TOKEN_FILE_ENV)
    if token_file:
        try:
            with open(token_file, encoding="utf-8", errors="replace") as f:
                values.append(f.read(65536).strip())
        except OSError:
            pass
    return [v for v in values if len(v) >= 6]


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given secrets (also URL-encoded) and every secret-looking name=value masked."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        for form in {secret, quote_plus(secret), quote(secret, safe="")}:
            text = text.replace(form, _MASK)
    return _SECRET_PAIR.sub(lambda m: m.group("key") + _MASK, text)


def _reason(what: str, exc: BaseException, previous: Credentials | None = None) -> str:
    detail = " ".join(scrub(str(exc), _known_secrets(previous)).split())
    if len(detail) > _MAX_REASON:
        detail = detail[:_MAX_REASON] + " ..."
    return f"{what}: {type(exc).__name__}: {detail}" if detail else f"{what}: {type(exc).__name__}"


class _SdkLogScrubber(logging.Filter):
    """Masks secrets in the SDK's log records and replaces their tracebacks with one scrubbed line."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _known_secrets(None)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 (a malformed record: keep its template only)
            message = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message = f"{message} ({type(exc).__name__}: {exc})"
        record.msg = " ".join(scrub(message, secrets).split())
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


_SCRUBBER = _SdkLogScrubber()


def guard_sdk_logs() -> None:
    """Mask secrets in the SDK's and urllib3's log records; drop the SDK's private stderr handlers
    (plain ``StreamHandler``s it adds on import). Idempotent."""
    for name in GUARDED_LOGGERS:
        logger = logging.getLogger(name)
        if _SCRUBBER not in logger.filters:
            logger.addFilter(_SCRUBBER)
    sdk = logging.getLogger(GUARDED_LOGGERS[0])
    for handler in list(sdk.handlers):
        if type(handler) is logging.StreamHandler:
            sdk.removeHandler(handler)
