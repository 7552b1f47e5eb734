"""The devkit's helper processes (broker, CAMS endpoint): ``consumer.childproc`` with the devkit
importable in the child too, installed or not (``python -m chatapp_devkit.…`` from a checkout)."""

from __future__ import annotations

import os
from pathlib import Path

from consumer.childproc import child_env as _service_child_env
from consumer.childproc import read_ready_line, stop_process

DEVKIT_ROOT = Path(__file__).resolve().parent.parent

__all__ = ["DEVKIT_ROOT", "child_env", "read_ready_line", "stop_process"]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the service's and the devkit's source roots on PYTHONPATH."""
    env = _service_child_env(extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(DEVKIT_ROOT), env.get("PYTHONPATH")]))
    return env
