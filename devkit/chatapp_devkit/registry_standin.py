"""A Confluent Schema Registry stand-in: real HTTP on loopback, state in memory.

It serves the part of the REST API that confluent-kafka's ``SchemaRegistryClient`` (and its
Avro serializer and deserializer) use for Avro, with the registry's response shapes and error
codes:

- ``POST /subjects/{subject}/versions``: register; the same schema gets the same global id
  (in any subject) and the same version (in one subject); returns ``{"id": N}``;
- ``POST /subjects/{subject}``: look a schema up in a subject;
- ``GET /schemas/ids/{id}`` (``?subject=`` and other query parameters are ignored),
  ``GET /schemas/types``, ``GET /subjects``, ``GET /subjects/{subject}/versions``,
  ``GET /subjects/{subject}/versions/{version|latest}``, ``GET /config``.

Errors are 404 with ``{"error_code": 40401 (subject) | 40402 (version) | 40403 (schema), ...}``
and 422 with 42201 (invalid schema) or 42202 (invalid version), as the registry answers. No
compatibility checks, no deletes, no auth. Avro schemas are validated with fastavro; JSON and
PROTOBUF schemas are stored as given.

In a test: ``with RegistryStandIn() as registry: ... registry.url``. As its own process:
``python -m chatapp_devkit.registry_standin --port 0`` prints ``{"url": ...}`` on one line and serves
until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

from fastavro import parse_schema

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
SCHEMA_TYPES = ("AVRO", "JSON", "PROTOBUF")


class RegistryError(Exception):
    """An error answer: HTTP status, the registry's ``error_code`` and a message."""

    def __init__(self, status: int, error_code: int, message: str):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


@dataclass
class _Stored:
    schema_id: int
    schema: str
    schema_type: str
    references: list[dict[str, Any]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": self.schema}
        if self.schema_type != "AVRO":  # the registry leaves schemaType out for Avro
            out["schemaType"] = self.schema_type
        if self.references:
            out["references"] = self.references
        return out


class RegistryState:
    """Schemas by global id and subjects as lists of ids (version n = item n-1). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[int, _Stored] = {}
        self._by_key: dict[str, int] = {}
        self._subjects: dict[str, list[int]] = {}

    @staticmethod
    def _parsed(body: Any) -> tuple[str, str, list[dict[str, Any]], str]:
        """(schema text, type, references, identity key) of a register or lookup body."""
        if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
            raise RegistryError(422, 42201, "Invalid schema: the body needs a 'schema' string")
        text, schema_type = body["schema"], body.get("schemaType") or "AVRO"
        references = body.get("references") or []
        if schema_type not in SCHEMA_TYPES:
            raise RegistryError(422, 42201, f"Invalid schema type {schema_type!r}")
        key = text
        if schema_type == "AVRO":
            try:
                loaded = json.loads(text)
                if not references:
                    parse_schema(loaded)
            except Exception as exc:
                raise RegistryError(422, 42201, f"Invalid schema: {exc}"[:300]) from exc
            key = json.dumps(loaded, sort_keys=True, separators=(",", ":"))  # field order is kept
        return text, schema_type, references, json.dumps([schema_type, key, references], sort_keys=True)

    def register(self, subject: str, body: Any) -> int:
        text, schema_type, references, key = self._parsed(body)
        with self._lock:
            schema_id = self._by_key.get(key)
            if schema_id is None:
                schema_id = len(self._by_id) + 1
                self._by_id[schema_id] = _Stored(schema_id, text, schema_type, references)
                self._by_key[key] = schema_id
            versions = self._subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id

    def lookup(self, subject: str, body: Any) -> dict[str, Any]:
        key = self._parsed(body)[3]
        with self._lock:
            versions = self._subject(subject)
            schema_id = self._by_key.get(key)
            if schema_id is None or schema_id not in versions:
                raise RegistryError(404, 40403, "Schema not found")
            return self._version_body(subject, versions.index(schema_id) + 1)

    def schema(self, schema_id: int) -> dict[str, Any]:
        with self._lock:
            stored = self._by_id.get(schema_id)
            if stored is None:
                raise RegistryError(404, 40403, f"Schema {schema_id} not found")
            return stored.body()

    def subjects(self) -> list[str]:
        with self._lock:
            return sorted(self._subjects)

    def versions(self, subject: str) -> list[int]:
        with self._lock:
            return list(range(1, len(self._subject(subject)) + 1))

    def version(self, subject: str, version: str) -> dict[str, Any]:
        with self._lock:
            count = len(self._subject(subject))
            if version in ("latest", "-1"):
                number = count
            else:
                try:
                    number = int(version)
                except ValueError:
                    raise RegistryError(422, 42202, f"The specified version '{version}' is not a valid version id") from None
                if number < 1:
                    raise RegistryError(422, 42202, f"The specified version '{version}' is not a valid version id")
            if not 1 <= number <= count:
                raise RegistryError(404, 40402, f"Version {version} not found.")
            return self._version_body(subject, number)

    def _subject(self, subject: str) -> list[int]:
        versions = self._subjects.get(subject)
        if versions is None:
            raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
        return versions

    def _version_body(self, subject: str, number: int) -> dict[str, Any]:
        stored = self._by_id[self._subjects[subject][number - 1]]
        return {"subject": subject, "version": number, "id": stored.schema_id, **stored.body()}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read .requests instead
        pass

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        self.server.requests.append((method, path))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(400, {"error_code": 400, "message": "Unrecognized request body: not JSON"})
            return
        try:
            status, payload = 200, self._route(method, [unquote(p) for p in path.strip("/").split("/")], body)
        except RegistryError as exc:
            status, payload = exc.status, {"error_code": exc.error_code, "message": exc.message}
        self._send(status, payload)

    def _route(self, method: str, parts: list[str], body: Any) -> Any:
        state = self.server.state
        match method, parts:
            case "GET", ["schemas", "types"]:
                return list(SCHEMA_TYPES)
            case "GET", ["schemas", "ids", schema_id]:
                if not schema_id.isdigit():
                    raise RegistryError(404, 40403, f"Schema {schema_id} not found")
                return state.schema(int(schema_id))
            case "GET", ["subjects"]:
                return state.subjects()
            case "GET", ["subjects", subject, "versions"]:
                return state.versions(subject)
            case "GET", ["subjects", subject, "versions", version]:
                return state.version(subject, version)
            case "POST", ["subjects", subject, "versions"]:
                return {"id": state.register(subject, body)}
            case "POST", ["subjects", subject]:
                return state.lookup(subject, body)
            case "GET", ["config"]:
                return {"compatibilityLevel": "BACKWARD"}
        raise RegistryError(404, 404, f"HTTP 404 Not Found: {method} /{'/'.join(parts)}")

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: RegistryState):
        super().__init__(address, _Handler)
        self.state = state
        self.requests: list[tuple[str, str]] = []


class RegistryStandIn:
    """The stand-in served from a thread: ``start()``, ``url``, ``stop()``, or ``with``.

    ``state`` holds the schemas (register directly with ``state.register(subject, {"schema": ...})``
    if HTTP is not the point); ``requests`` lists every (method, path) served, in order.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.state = RegistryState()
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self._server = _Server(self._address, self.state)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="registry-standin", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the registry stand-in is not started")
        host, port = self._server.server_address[:2]
        assert isinstance(host, str), "an AF_INET server's address is (host, port)"
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[tuple[str, str]]:
        return list(self._server.requests) if self._server is not None else []

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(5)
            self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start() if self._server is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatapp_devkit.registry_standin", description="Schema Registry stand-in on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (the URL is printed)")
    args = parser.parse_args(argv)
    registry = RegistryStandIn(args.host, args.port).start()
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(json.dumps({"url": registry.url}), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        registry.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
