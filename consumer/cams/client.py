"""The SendChatappMassMessage call over httpx, put on the wire as the official SDK's default call.

What travels: ``POST /`` with an empty body, every parameter in the query string (form-encoded
like the SDK: ``urlencode``, space as ``+``, in the SDK's alphabetical order), headers ``host``,
``x-acs-version``, ``x-acs-action``, ``user-agent`` (ours), ``x-acs-date``,
``x-acs-signature-nonce``, ``accept``, ``x-acs-content-sha256`` and, with STS,
``x-acs-accesskey-id`` and ``x-acs-security-token`` - all of them signed (ACS3-HMAC-SHA256, see
``signing``) - plus ``authorization``. The SDK also signs ``x-acs-credentials-provider`` (which of
its credential classes produced the keys): that header is SDK telemetry and is not sent.

A 1,000-recipient query is far longer than httpx's 64 KiB URL limit, so the request URL carries
only ``/`` and the query travels in httpcore's ``target`` request extension (the exact request
target bytes).

``CamsClient.send`` never raises for HTTP or network failures: every call ends in a ``CallResult``
classified by ``errors.classify``; calls without a usable answer get the ``Chatapp.*`` codes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import uuid4

import httpx

from consumer.cams import signing
from consumer.cams.errors import CODE_BAD_RESPONSE, CODE_CONNECTION_ERROR, CODE_TIMEOUT, Outcome, classify
from consumer.cams.payload import build_query
from consumer.models import BatchKey, Recipient

ACTION = "SendChatappMassMessage"
VERSION = "2020-06-06"
USER_AGENT = "chatapp-consumer/0.1.0 (httpx)"
_METHOD = "POST"
_PATH = "/"
_WRITTEN_EVENT = "send_request_headers.complete"
"""httpcore's trace event (``http11.`` or ``http2.`` before it) once the request is on the wire."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """An AccessKey pair, plus the token for STS credentials. The repr shows the key id only."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)


class CredentialsProvider(Protocol):
    """Hands out the credentials to sign the next call with (refreshing them when it must)."""

    def get(self) -> Credentials: ...


@dataclass(frozen=True, slots=True)
class StaticCredentials(Credentials):
    """Credentials that never change: their own provider."""

    def get(self) -> Credentials:
        return self


@dataclass(frozen=True, slots=True)
class CallResult:
    """What one API call came to: its classified outcome and what the response said."""

    outcome: Outcome
    code: str
    message: str | None
    api_request_id: str | None
    group_message_id: str | None
    http_status: int | None
    retry_after_s: float | None
    latency_s: float
    written_after_s: float | None = None
    """Seconds from the start of the call until the request was on the wire (handed to the
    socket); None when it never was or nobody measured it."""


def build_http_client(timeout_connect: float = 5, timeout_read: float = 10, max_connections: int = 20) -> httpx.Client:
    """A keep-alive httpx client with the SDK's default timeouts (5 s connect, 10 s read)."""
    return httpx.Client(
        timeout=httpx.Timeout(connect=timeout_connect, read=timeout_read, write=timeout_read, pool=timeout_connect),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )


MAX_ANSWER_CHARS = 1000
"""The most of any text field of CAMS's answer the service keeps (it travels in every result)."""


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:MAX_ANSWER_CHARS]


def _field(body: dict[str, Any], name: str) -> Any:
    """A response field, under its name or, as the SDK also accepts, its lower-camel-case name."""
    value = body.get(name)
    return value if value is not None else body.get(name[0].lower() + name[1:])


def _retry_after(value: str | None) -> float | None:
    """A positive, finite ``x-acs-retry-after`` in seconds; anything else means no hint."""
    try:
        seconds = float(value or "nan")
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def _json_object(content: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(content)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _result(response: httpx.Response, latency_s: float, written_after_s: float | None) -> CallResult:
    status = response.status_code
    retry_after_s = _retry_after(response.headers.get("x-acs-retry-after"))
    body = _json_object(response.content) or {}
    code = _field(body, "Code")
    if isinstance(code, str) and code:
        code = code[:MAX_ANSWER_CHARS]
        message = _text(_field(body, "Message"))
    else:
        code = CODE_BAD_RESPONSE
        message = f"HTTP {status}: {response.text[:200]!r}"
    return CallResult(
        outcome=classify(status, code, retry_after_s=retry_after_s),
        code=code,
        message=message,
        api_request_id=_text(_field(body, "RequestId") or response.headers.get("x-acs-request-id")),
        group_message_id=_text(_field(body, "GroupMessageId")),
        http_status=status,
        retry_after_s=retry_after_s,
        latency_s=latency_s,
        written_after_s=written_after_s,
    )


def _failure(code: str, exc: Exception, latency_s: float, written_after_s: float | None) -> CallResult:
    return CallResult(
        outcome=classify(None, code),
        code=code,
        message=f"{type(exc).__name__}: {exc}",
        api_request_id=None,
        group_message_id=None,
        http_status=None,
        retry_after_s=None,
        latency_s=latency_s,
        written_after_s=written_after_s,
    )


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """A signed call ready to send: its headers and its request target (path and query)."""

    headers: dict[str, str] = field(repr=False)
    target: bytes = field(repr=False)


class CamsClient:
    """Sends SendChatappMassMessage calls to one endpoint (``https://cams.<region>.aliyuncs.com``)."""

    def __init__(
        self,
        endpoint: str,
        http: httpx.Client,
        *,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = lambda: uuid4().hex,
    ) -> None:
        url = httpx.URL(endpoint)
        if url.scheme not in ("http", "https") or not url.host or url.path not in ("", "/") or url.query:
            raise ValueError(f"endpoint must be http(s)://host[:port], got {endpoint!r}")
        self._url = url.copy_with(path=_PATH)
        self._host = url.netloc.decode("ascii")
        self._http = http
        self._clock = clock
        self._nonce = nonce

    def _signed_headers(self, credentials: Credentials, query: str) -> dict[str, str]:
        """The headers of one call with ``query`` (canonical), signed (fresh date and nonce each time)."""
        headers = {
            "host": self._host,
            "x-acs-version": VERSION,
            "x-acs-action": ACTION,
            "user-agent": USER_AGENT,
            "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock())),
            "x-acs-signature-nonce": self._nonce(),
            "accept": "application/json",
        }
        if credentials.security_token:
            headers["x-acs-accesskey-id"] = credentials.access_key_id
            headers["x-acs-security-token"] = credentials.security_token
        return signing.sign_headers(_METHOD, _PATH, query, headers, b"", credentials.access_key_id, credentials.access_key_secret)

    def prepare(self, credentials: Credentials, key: BatchKey, recipients: list[Recipient]) -> PreparedCall:
        """Build and sign one call for ``recipients`` (1..1000): the CPU work, done before the
        rate-limit token is taken so the call leaves as soon as it is granted."""
        query = signing.canonical_query(build_query(key, recipients))
        # the SDK's form encoding (urlencode) is the canonical one with "+" for a space: both keep
        # only A-Za-z0-9-_.~ and take the parameters in alphabetical order (a "+" is sent as %2B)
        return PreparedCall(self._signed_headers(credentials, query), f"{_PATH}?{query.replace('%20', '+')}".encode("ascii"))

    def send(self, credentials: Credentials, key: BatchKey, recipients: list[Recipient]) -> CallResult:
        """Prepare and execute one call. Never raises for HTTP/network errors."""
        return self.execute(self.prepare(credentials, key, recipients))

    def execute(self, call: PreparedCall, on_written: Callable[[], None] | None = None) -> CallResult:
        """Put a prepared call on the wire. Never raises for HTTP/network errors.

        The result says when the request was written (httpcore's ``trace`` extension: the
        request line and headers handed to the socket; the body is empty), so the sender can
        tell how long after its rate-limit grant the call can have reached CAMS without counting
        the time CAMS took to answer; ``on_written`` hears of that moment as it happens."""
        started = time.monotonic()
        written: list[float] = []

        def trace(event: str, info: dict[str, Any]) -> None:
            if event.endswith(_WRITTEN_EVENT):
                written.append(time.monotonic() - started)
                if on_written is not None:
                    on_written()

        def written_after() -> float | None:
            return written[-1] if written else None

        try:
            response = self._http.post(self._url, headers=call.headers, extensions={"target": call.target, "trace": trace})
        except httpx.TimeoutException as exc:
            return _failure(CODE_TIMEOUT, exc, time.monotonic() - started, written_after())
        except httpx.DecodingError as exc:
            return _failure(CODE_BAD_RESPONSE, exc, time.monotonic() - started, written_after())
        except httpx.RequestError as exc:
            return _failure(CODE_CONNECTION_ERROR, exc, time.monotonic() - started, written_after())
        return _result(response, time.monotonic() - started, written_after())
