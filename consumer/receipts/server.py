"""The HTTP side of the receiver: ``POST /chatapp/status/<token>`` on its own port.

The token (``CHATAPP_RECEIPTS_TOKEN``) is compared in constant time; a wrong or missing one is
401 before the body is read. A body without ``Content-Length`` is 411, one larger than
``CHATAPP_RECEIPTS_MAX_BODY_BYTES`` 413 (not read: the connection is closed). Each handler
thread hands the body to ``Receiver.push`` and answers what it says: 200 with CAMS's usual
``{"code": 0, "msg": "success"}``, else the status and a short JSON reason.
"""

from __future__ import annotations

import hmac
import json
import logging
from http.server import BaseHTTPRequestHandler

from ..metrics import ServerThread
from .metrics import ReceiptMetrics
from .receiver import Receiver

log = logging.getLogger("consumer.receipts")

PATH_PREFIX = "/chatapp/status/"
READ_TIMEOUT_S = 60.0
"""The socket timeout of a connection: a push (or an idle kept-alive connection) silent this long is closed."""
REASONS = {200: "success", 400: "malformed receipts", 401: "unauthorized", 404: "not found", 405: "method not allowed",
           411: "length required", 413: "too large", 503: "not taken, push again"}  # fmt: skip


class ReceiptsServer(ServerThread):
    def __init__(self, host: str, port: int, token: str, receiver: Receiver, metrics: ReceiptMetrics, max_body_bytes: int):
        expected = token.encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = READ_TIMEOUT_S  # a client that stops sending mid-body does not hold its thread for ever

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                status = self._refusal()
                if status is not None:  # the body is not read: the connection cannot carry another request
                    self.close_connection = True
                    return self._answer(status)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    status = receiver.push(body)
                except Exception:
                    log.exception("receipts push failed")
                    metrics.errors.labels("internal").inc()
                    status = 503
                self._answer(status)

            def _refusal(self) -> int | None:
                """The answer to a push refused before its body is read, or None."""
                if not self.path.startswith(PATH_PREFIX):
                    return 404
                given = self.path[len(PATH_PREFIX) :].split("?", 1)[0].encode()
                if not hmac.compare_digest(given, expected):
                    return 401
                length = self.headers.get("Content-Length")
                if length is None or not length.isdigit():
                    metrics.malformed.labels("no-length").inc()
                    return 411
                if int(length) > max_body_bytes:
                    metrics.malformed.labels("too-large").inc()
                    return 413
                return None

            def do_GET(self) -> None:  # noqa: N802
                self._answer(405 if self.path.startswith(PATH_PREFIX) else 404)

            def _answer(self, status: int) -> None:
                metrics.pushes.labels(str(status)).inc()
                body = json.dumps({"code": 0 if status == 200 else status, "msg": REASONS.get(status, "error")}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # no line per request (and no token in a log)
                pass

        super().__init__(host, port, Handler, "receipts-http")
