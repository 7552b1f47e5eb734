"""``LocalCams``: the local CAMS endpoint in its own process, controlled over its ``/_admin/`` API."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import httpx

from consumer.local_cams.auth import Account

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _account_arg(access_key_id: str, account: str | Account) -> str:
    if isinstance(account, str):
        return f"{access_key_id}:{account}"
    token = f":{account.security_token}" if account.security_token else ""
    return f"{access_key_id}:{account.secret}{token}"


def _read_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The first stdout line of ``process``; TimeoutError / RuntimeError when it does not come."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in line:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"local CAMS printed no URL within {timeout} s")
            if selector.select(left):
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError(f"local CAMS exited ({process.poll()}) before printing its URL")
                line += chunk
    return line.split(b"\n", 1)[0]


class LocalCams:
    """A ``python -m consumer.local_cams`` subprocess; same control methods as ``LocalCamsServer``."""

    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process = process
        self.url = url
        self._admin = httpx.Client(base_url=url, timeout=10.0)

    @classmethod
    def start(
        cls,
        accounts: Mapping[str, str | Account] | None = None,
        rate_limit: int = 10,
        latency_ms: float = 0.0,
        timeout: float = 10.0,
        *,
        host: str = "127.0.0.1",
        seed: int = 0,
    ) -> LocalCams:
        """Spawn the endpoint on a free port and wait up to ``timeout`` s for its URL."""
        args = [sys.executable, "-m", "consumer.local_cams", "--host", host, "--port", "0",
                "--rate-limit", str(rate_limit), "--latency-ms", str(latency_ms), "--seed", str(seed)]  # fmt: skip
        for access_key_id, account in (accounts or {}).items():
            args += ["--account", _account_arg(access_key_id, account)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env)
        try:
            url = json.loads(_read_line(process, timeout))["url"]
        except BaseException:
            process.kill()
            process.wait(timeout)
            assert process.stdout is not None
            process.stdout.close()
            raise
        return cls(process, url)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._admin.request(method, path, **kwargs)
        if response.status_code == 400:
            raise ValueError(response.json()["Message"])
        response.raise_for_status()
        return response.json()

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Partial update of the fault settings (ValueError when invalid); answers the new settings."""
        result: dict[str, Any] = self._call("POST", "/_admin/faults", json=changes)
        return result

    def calls(self, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        params = {"since": since} if limit is None else {"since": since, "limit": limit}
        result: list[dict[str, Any]] = self._call("GET", "/_admin/calls", params=params)
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_admin/stats")
        return result

    def reset(self) -> None:
        self._call("POST", "/_admin/reset")

    def add_account(self, access_key_id: str, secret: str, security_token: str | None = None) -> None:
        body = {"access_key_id": access_key_id, "secret": secret, "security_token": security_token}
        self._call("POST", "/_admin/accounts", json=body)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; answers the exit code. Idempotent."""
        self._admin.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
