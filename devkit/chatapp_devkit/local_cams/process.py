"""``LocalCams``: the local CAMS endpoint in its own process, controlled over its ``/_admin/`` API."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from typing import Any, Self

import httpx

from chatapp_devkit.local_cams.auth import Account
from chatapp_devkit.processes import child_env, read_ready_line, stop_process


def _account_arg(access_key_id: str, account: str | Account) -> str:
    if isinstance(account, str):
        return f"{access_key_id}:{account}"
    token = f":{account.security_token}" if account.security_token else ""
    return f"{access_key_id}:{account.secret}{token}"


class LocalCams:
    """A ``python -m chatapp_devkit.local_cams`` subprocess; same control methods as ``LocalCamsServer``."""

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
        receipts: Mapping[str, Any] | None = None,
    ) -> LocalCams:
        """Spawn the endpoint on a free port and wait up to ``timeout`` s for its URL; ``receipts``:
        receipt settings (``{"callback_url": ...}`` turns the push on)."""
        args = [sys.executable, "-m", "chatapp_devkit.local_cams", "--host", host, "--port", "0",
                "--rate-limit", str(rate_limit), "--latency-ms", str(latency_ms), "--seed", str(seed)]  # fmt: skip
        if receipts:
            args += ["--receipts", json.dumps(dict(receipts))]
        for access_key_id, account in (accounts or {}).items():
            args += ["--account", _account_arg(access_key_id, account)]
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=child_env())
        try:
            url = json.loads(read_ready_line(process, timeout, "local CAMS"))["url"]
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

    def set_receipts(self, **changes: Any) -> dict[str, Any]:
        """Partial update of the receipt settings (ValueError when invalid); answers the new settings."""
        result: dict[str, Any] = self._call("POST", "/_admin/receipts", json=changes)
        return result

    def receipts(self, since: int = 0, limit: int | None = None) -> dict[str, Any]:
        """The receipt push's settings, ``stats`` (counts) and ``log`` of settled reports from ``since``."""
        params = {"since": since} if limit is None else {"since": since, "limit": limit}
        result: dict[str, Any] = self._call("GET", "/_admin/receipts", params=params)
        return result

    def reset(self) -> None:
        self._call("POST", "/_admin/reset")

    def add_account(self, access_key_id: str, secret: str, security_token: str | None = None) -> None:
        body = {"access_key_id": access_key_id, "secret": secret, "security_token": security_token}
        self._call("POST", "/_admin/accounts", json=body)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; answers the exit code. Idempotent."""
        self._admin.close()
        return stop_process(self.process, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
