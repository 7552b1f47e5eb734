"""The project lints clean under its rule set and is formatted (pyproject.toml [tool.ruff])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATHS = ["consumer", "devkit", "tests", "bench", "scripts"]


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruff", *args, *PATHS], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ruff_finds_nothing() -> None:
    run = _ruff("check")
    assert run.returncode == 0, run.stdout + run.stderr


def test_everything_is_formatted() -> None:
    run = _ruff("format", "--check")
    assert run.returncode == 0, run.stdout + run.stderr
