"""HTTP/1.1 front of the local CAMS endpoint and ``LocalCamsServer``, the endpoint run in this process.

Threaded (one daemon thread per connection), keep-alive, Nagle off, request lines up to 4 MiB
(a 1,000-recipient SenderList in the query is over 100 KB; the stdlib stops at 64 KiB).
``POST /`` (or GET) is the CAMS RPC call; ``/_admin/...`` is the control API (see ``admin``).
"""

from __future__ import annotations

import io
import json
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from chatapp_devkit.local_cams.admin import ROUTES
from chatapp_devkit.local_cams.auth import Account, SignedRequest
from chatapp_devkit.local_cams.backend import Backend
from chatapp_devkit.local_cams.faults import Faults
from chatapp_devkit.local_cams.params import parse_query
from chatapp_devkit.local_cams.receipt_settings import ReceiptSettings

MAX_REQUEST_LINE = 4 * 1024 * 1024
MAX_BODY = 1024 * 1024
IDLE_TIMEOUT_S = 300.0


class _HTTPServer(ThreadingHTTPServer):
    """Keeps the backend, a stop event that wakes delayed answers, and the open connections."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], backend: Backend) -> None:
        self.backend = backend
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # HTTPServer's would resolve the host's FQDN
        self.server_name, self.server_port = self.server_address[:2]  # type: ignore[assignment]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut every open connection so idle keep-alive threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not self.stopping.is_set():
            super().handle_error(request, client_address)


# Linux's SO_TIMESTAMPNS (asm-generic; the socket module does not name it): recvmsg then carries
# the kernel's receive time of the data it returns, as a struct timespec
_SO_TIMESTAMPNS = 35 if sys.platform == "linux" else None
_TIMESPEC = struct.Struct("@qq")


class _ArrivalStampingReader(io.RawIOBase):
    """The connection's raw reads, remembering when the kernel received the data of the latest
    one (``time.time()`` at the read where the kernel gives no stamp).

    The kernel turns receive stamps on asynchronously once the first socket of the system asks
    for them, so the first reads after the endpoint starts may fall back to the read's time.

    A call arrives when its request line (a 1,000-recipient call's query is 100 KB of it, and the
    account's key follows in the headers) has reached this host, not when a thread of this
    process gets round to reading it: on a busy machine that can be tens of milliseconds later,
    and the rate window would count calls the client spaced correctly as bunched together."""

    def __init__(self, connection: socket.socket) -> None:
        super().__init__()
        self._connection = connection
        self._stamped = _SO_TIMESTAMPNS is not None
        if _SO_TIMESTAMPNS is not None:
            try:
                connection.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            except OSError:
                self._stamped = False
        self.received_at = time.time()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._stamped:
            count, ancillary, _flags, _address = self._connection.recvmsg_into([buffer], socket.CMSG_SPACE(_TIMESPEC.size))
        else:
            count, ancillary = self._connection.recv_into(buffer), []
        self.received_at = time.time()
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                self.received_at = seconds + nanoseconds / 1e9
        return count


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    rbufsize = 256 * 1024  # a 100 KB request line in a few recv calls
    timeout = IDLE_TIMEOUT_S
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self._arrivals = _ArrivalStampingReader(self.connection)
        self.rfile = io.BufferedReader(self._arrivals, self.rbufsize)

    def handle_one_request(self) -> None:
        """The stdlib's loop step with a longer request line, the arrival time, and quiet disconnects."""
        try:
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
            received_at = self._arrivals.received_at  # the read that brought the line's last bytes
            if not self.raw_requestline:
                self.close_connection = True
                return
            if len(self.raw_requestline) > MAX_REQUEST_LINE:
                self.requestline = self.request_version = self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if self.parse_request():
                self._dispatch(received_at)
                self.wfile.flush()
        except (TimeoutError, ConnectionError):
            self.close_connection = True

    def _dispatch(self, received_at: float) -> None:
        path, _, raw_query = self.path.partition("?")
        body = self._read_body()
        if body is None:
            return
        if path == "/" and self.command in ("POST", "GET"):
            self._api(path, raw_query, body, received_at)
        elif path.startswith("/_admin/"):
            self._admin(path, raw_query, body)
        else:
            self._send_json(404, {"Code": "InvalidAction.NotFound", "Message": f"{self.command} {path} is not served."})

    def _read_body(self) -> bytes | None:
        """The Content-Length body; None after answering 411/413 (chunked or oversized bodies)."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send_json(411, {"Code": "MissingContentLength", "Message": "Send a Content-Length body."})
            return None
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._send_json(413, {"Code": "RequestTooLarge", "Message": f"Bodies are limited to {MAX_BODY} bytes."})
            return None
        return self.rfile.read(length) if length else b""

    def _api(self, path: str, raw_query: str, body: bytes, received_at: float) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = SignedRequest(self.command, path, parse_query(raw_query), headers, body)
        outcome = self.server.backend.handle(request, received_at)
        if outcome.delay_s and self.server.stopping.wait(outcome.delay_s):
            self.close_connection = True
            return
        if outcome.status is None or outcome.body is None:
            self.close_connection = True  # injected drop: no answer at all
            return
        self._send_json(outcome.status, outcome.body)

    def _admin(self, path: str, raw_query: str, body: bytes) -> None:
        route = ROUTES.get((self.command, path))
        if route is None:
            self._send_json(404, {"Code": "NotFound", "Message": f"{self.command} {path} is not an admin route."})
            return
        try:
            payload = json.loads(body) if body else None
            result = route(self.server.backend, parse_query(raw_query), payload)
        except (ValueError, TypeError) as exc:
            self._send_json(400, {"Code": "InvalidParameter", "Message": str(exc)})
            return
        self._send_json(200, result)

    def _send_json(self, status: int, payload: Any) -> None:
        """Status line, headers and body in one write (no Nagle/delayed-ACK stall on keep-alive)."""
        data = json.dumps(payload).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "Content-Type: application/json;charset=utf-8\r\n"
            f"Content-Length: {len(data)}\r\n" + ("Connection: close\r\n" if self.close_connection else "") + "\r\n"
        )
        self.wfile.write(head.encode("latin-1") + data)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the ledger records every call."""


class LocalCamsServer:
    """The local CAMS endpoint served from a thread of this process (unit tests, the embedded demo).

    Control methods match ``LocalCams`` (the subprocess variant): ``set_faults``, ``calls``,
    ``stats``, ``reset``, ``add_account``, ``set_receipts``, ``receipts``.
    """

    def __init__(
        self,
        accounts: Mapping[str, str | Account] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: int = 10,
        latency_ms: float = 0.0,
        seed: int = 0,
        receipts: Mapping[str, Any] | None = None,
    ) -> None:
        """``receipts``: ``ReceiptSettings`` changes (e.g. ``{"callback_url": ...}``; ValueError when invalid)."""
        faults = Faults().updated({"rate_limit": rate_limit, "latency_ms": latency_ms, "seed": seed})
        self.backend = Backend(accounts or {}, faults, ReceiptSettings().updated(receipts or {}))
        self._address = (host, port)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("LocalCamsServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        if self._httpd is None:
            self._httpd = _HTTPServer(self._address, self.backend)
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                            name="local-cams", daemon=True)  # fmt: skip
            self._thread.start()
            self.backend.receipts.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, wake delayed answers, close connections; idempotent."""
        httpd, thread, self._httpd, self._thread = self._httpd, self._thread, None, None
        if httpd is None or thread is None:
            return
        httpd.stopping.set()
        self.backend.receipts.stop(timeout)
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        thread.join(timeout)

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        return self.backend.set_faults(**changes).to_json()

    def calls(self, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        return self.backend.ledger.calls_json(since, limit)

    def stats(self) -> dict[str, Any]:
        return self.backend.ledger.stats()

    def set_receipts(self, **changes: Any) -> dict[str, Any]:
        return self.backend.receipts.set(**changes).to_json()

    def receipts(self, since: int = 0, limit: int | None = None) -> dict[str, Any]:
        return self.backend.receipts.snapshot(since, limit)

    def reset(self) -> None:
        self.backend.reset()

    def add_account(self, access_key_id: str, secret: str, security_token: str | None = None) -> None:
        self.backend.add_account(access_key_id, secret, security_token)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
