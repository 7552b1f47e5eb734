"""py-spy on a service process: record while a scenario runs, then summarise the hot spots.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``). The summary
counts, per function, the samples it is on the stack (inclusive) and the samples where it is
the deepest ``consumer/`` frame (what that code costs, library calls it makes included).
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Recorder:
    def __init__(self, pid: int, out: Path, rate: int = 100, gil: bool = False):
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy not installed: .venv/bin/pip install py-spy")
        self.out = out
        self.rate = rate
        argv = [exe, "record", "--pid", str(pid), "--output", str(out), "--format", "raw", "--rate", str(rate), "--threads"]
        if gil:
            argv.append("--gil")
        self._log = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 (closed by stop)
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)

    def stop(self, timeout: float = 30.0) -> Path | None:
        """SIGINT (py-spy writes its output and exits), SIGKILL after ``timeout`` s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.out if self.out.exists() else None


def _parse(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    return m.group("func"), m.group("file")


def _is_consumer(file: str) -> bool:
    return file.startswith("consumer/") or "/consumer/" in file


def _short(file: str) -> str:
    """``consumer/app.py`` for project files, the path under site-packages or the stdlib otherwise."""
    if "/consumer/" in file:
        return "consumer/" + file.split("/consumer/", 1)[1]
    for marker in ("/site-packages/", "/lib/python3.11/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def summarize(path: Path, top: int = 25) -> dict[str, Any]:
    total = 0
    by_thread: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    own_consumer: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        thread = frames[0] if frames and frames[0].startswith(("thread", "process")) else "?"
        body = frames[1:] if thread != "?" else frames
        by_thread[_thread_role(thread)] += count
        seen: set[str] = set()
        deepest_consumer = None
        for frame in body:
            func, file = _parse(frame)
            name = f"{func} ({_short(file)})"
            if name not in seen:
                inclusive[name] += count
                seen.add(name)
            if _is_consumer(file):
                deepest_consumer = name
        if body:
            func, file = _parse(body[-1])
            leaf[f"{func} ({_short(file)})"] += count
        own_consumer[deepest_consumer or "(no consumer/ frame)"] += count

    def table(counter: collections.Counter[str], only_consumer: bool = False) -> list[dict[str, Any]]:
        rows = []
        for name, n in counter.most_common():
            if only_consumer and "(consumer/" not in name:
                continue
            rows.append({"function": name, "samples": n, "share": n / total if total else 0.0})
            if len(rows) >= top:
                break
        return rows

    return {
        "samples": total,
        "threads": {k: {"samples": v, "share": v / total if total else 0.0} for k, v in by_thread.most_common()},
        "consumer_inclusive": table(inclusive, only_consumer=True),
        "consumer_self": table(own_consumer),
        "leaf": table(leaf),
    }


def _thread_role(thread: str) -> str:
    """``thread (1234): sender_3`` -> ``sender_*``: py-spy names threads by id and name."""
    name = thread.split(": ", 1)[1] if ": " in thread else thread
    return re.sub(r"_\d+$", "_*", name)
