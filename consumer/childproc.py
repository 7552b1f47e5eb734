"""Helper processes the project starts (embedded broker, local CAMS endpoint, benchmark services):
their environment, the one line each prints when it is ready, and how they are stopped."""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the project on PYTHONPATH (``consumer`` importable uninstalled)."""
    path = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def read_ready_line(process: subprocess.Popen[bytes], timeout: float, what: str) -> bytes:
    """The first stdout line of ``process``; RuntimeError when it exits or ``timeout`` passes first."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = b""
    while b"\n" not in line:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise RuntimeError(f"{what} printed no ready line within {timeout} s")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise RuntimeError(f"{what} exited ({process.poll()}) before its ready line")
        line += chunk
    return line.split(b"\n", 1)[0]


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL; closes its pipes; returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()
    return process.returncode
