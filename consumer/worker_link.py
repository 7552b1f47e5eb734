"""What a worker process is told by its supervisor (``workers.py``), through its environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

ENV_INDEX = "CHATAPP_WORKER"
ENV_COUNT = "CHATAPP_WORKER_COUNT"
ENV_PARENT = "CHATAPP_WORKER_PARENT"
ENV_LIMITER = "CHATAPP_WORKER_LIMITER"
ENV_LIMITER_KEY = "CHATAPP_WORKER_LIMITER_KEY"


@dataclass(frozen=True)
class WorkerLink:
    """What a worker is told by its supervisor: variables the supervisor sets, not settings."""

    index: int
    count: int
    parent_pid: int
    limiter_address: str | None = None
    """Where the supervisor serves the limiter (None: the workers use Redis's)."""
    limiter_key: bytes | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerLink | None:
        if ENV_INDEX not in env:
            return None
        key, address = env.get(ENV_LIMITER_KEY), env.get(ENV_LIMITER)
        if address and address.startswith("@"):  # an abstract socket's leading NUL cannot travel in the environment
            address = "\0" + address[1:]
        return cls(int(env[ENV_INDEX]), int(env[ENV_COUNT]), int(env[ENV_PARENT]), address or None, bytes.fromhex(key) if key else None)

    def env(self) -> dict[str, str]:
        env = {ENV_INDEX: str(self.index), ENV_COUNT: str(self.count), ENV_PARENT: str(self.parent_pid)}
        if self.limiter_address and self.limiter_key:
            env[ENV_LIMITER] = "@" + self.limiter_address[1:] if self.limiter_address.startswith("\0") else self.limiter_address
            env[ENV_LIMITER_KEY] = self.limiter_key.hex()
        return env

    def orphaned(self) -> bool:
        """The supervisor is gone (the worker was handed to another parent)."""
        return os.getppid() != self.parent_pid
