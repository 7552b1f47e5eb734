"""One-token mutation testing of the pure cores, in a copy of the checkout (the worktree is never touched).

    python scripts/mutate.py                      # every core, every mutant
    python scripts/mutate.py consumer/completion.py --jobs 2
    python scripts/mutate.py --list consumer/batching.py   # the mutants, not run

Each mutant changes one token of one line (a comparison, an arithmetic or boolean operator, a
constant, break/continue, min/max, a ``not`` dropped, ``is``/``in`` negated); a mutant that does not
compile is not counted. The module's own unit tests run first (``-x``); a mutant they miss is run
again against the wider unit tests that drive the module (sender, scheduler, pipeline). A mutant
is killed when a test fails (or it hangs past the timeout). Survivors are printed as a diff-like
line; the score is killed / (killed + survived). docs/testing.md lists the survivors and why none
changes an outcome. A line ending in ``# pragma: no mutate`` is skipped.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
U = "tests/unit/"
WIDE = [U + "test_sender.py", U + "test_scheduler.py", U + "test_pipeline.py"]
CORES: dict[str, tuple[list[str], list[str]]] = {
    # module: (its own tests, run first; the wider tests a survivor is run against)
    "consumer/completion.py": ([U + "test_completion.py"], WIDE),
    "consumer/batching.py": ([U + "test_batching.py", U + "test_completion.py"], WIDE),
    "consumer/offsets.py": ([U + "test_offsets.py"], WIDE),
    "consumer/finished.py": ([U + "test_finished.py"], WIDE),
    "consumer/routing.py": ([U + "test_routing.py"], WIDE),
    "consumer/inflight.py": ([U + "test_inflight.py"], WIDE),
    "consumer/admission.py": ([U + "test_admission.py"], WIDE),
    "consumer/bisection.py": ([U + "test_bisection.py"], WIDE),
    "devkit/chatapp_devkit/local_cams/receipt_plan.py": ([U + "test_local_cams_receipt_plan.py"], []),
    "consumer/limiter/gcra.py": ([U + "test_limiter_gcra.py"], [U + "test_limiter_hosted.py", U + "test_limiter_lateness.py", U + "test_sender.py"]),
}
OPS = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "==", "+": "-", "-": "+", "*": "/", "/": "*", "//": "/", "%": "//", "+=": "-=", "-=": "+="}
NAMES = {"and": "or", "or": "and", "True": "False", "False": "True", "break": "continue", "continue": "break", "min": "max", "max": "min"}


@dataclass(frozen=True)
class Mutant:
    path: str
    line: int
    col: int
    old: str
    new: str
    source: str  # the whole mutated module

    def describe(self) -> str:
        return f"{self.path}:{self.line}: {self.old!r} -> {self.new!r}"


def mutants(path: str) -> list[Mutant]:
    text = (ROOT / path).read_text()
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    found: list[Mutant] = []
    for i, tok in enumerate(tokens):
        row, col = tok.start
        if row > len(lines) or lines[row - 1].rstrip().endswith("# pragma: no mutate"):
            continue
        prev = tokens[i - 1].string if i else ""
        nxt = tokens[i + 1].string if i + 1 < len(tokens) else ""
        new = None
        if tok.type == tokenize.OP and tok.string in OPS:
            new = OPS[tok.string]
        elif tok.type == tokenize.NAME and tok.string in NAMES:
            new = NAMES[tok.string]
        elif tok.type == tokenize.NAME and tok.string == "is" and nxt != "not":
            new = "is not"
        elif tok.type == tokenize.NAME and tok.string == "in" and prev != "not":
            new = "not in"
        elif tok.type == tokenize.NAME and tok.string == "not" and prev != "is" and nxt != "in":
            new = ""
        elif tok.type == tokenize.NUMBER and tok.string.isdigit():
            new = str(int(tok.string) + 1)
        elif tok.type == tokenize.NUMBER:
            try:
                new = repr(float(tok.string.replace("_", "")) * 2) if float(tok.string.replace("_", "")) else "1.0"
            except ValueError:
                continue
        if new is None:
            continue
        at = starts[row - 1] + col
        source = text[:at] + new + text[at + len(tok.string) :]
        try:
            compile(source, path, "exec")
        except SyntaxError:
            continue
        found.append(Mutant(path, row, col, tok.string, new, source))
    return found


def sandbox() -> Path:
    """A copy of what the tests import: the service, the devkit, the tests, the project file."""
    where = Path(tempfile.mkdtemp(prefix="mutate-"))
    for name in ("consumer", "devkit", "tests", "bench"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, where / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", where / "pyproject.toml")
    return where


def run_tests(where: Path, tests: list[str], timeout_s: float) -> bool:
    """True when the tests pass."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-o", f"timeout={timeout_s:g}", *tests]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    try:
        done = subprocess.run(command, cwd=where, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout_s * 3)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: every core)")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--timeout", type=float, default=30.0, help="per test, seconds (a hanging mutant is killed)")
    parser.add_argument("--list", action="store_true", help="print the mutants, do not run them")
    args = parser.parse_args()
    modules = args.modules or list(CORES)
    todo = [m for module in modules for m in mutants(module)]
    if args.list:
        for m in todo:
            print(m.describe())
        print(f"{len(todo)} mutants")
        return 0
    boxes = [sandbox() for _ in range(args.jobs)]
    for box in boxes:  # the unmutated code passes, and the sandbox's code is what the tests import
        probe = subprocess.run([sys.executable, "-c", "import consumer; print(consumer.__file__)"], cwd=box, capture_output=True, text=True)
        assert probe.stdout.strip().startswith(str(box)), probe.stdout + probe.stderr
    free = list(boxes)
    survived: list[Mutant] = []
    started = time.monotonic()

    def one(m: Mutant) -> bool:
        box = free.pop()
        try:
            target = box / m.path
            original = target.read_text()
            target.write_text(m.source)
            try:
                own, wide = CORES.get(m.path, (WIDE, []))
                alive = run_tests(box, own, args.timeout) and (not wide or run_tests(box, wide, args.timeout))
            finally:
                target.write_text(original)
            return alive
        finally:
            free.append(box)

    with ThreadPoolExecutor(args.jobs) as pool:
        for m, alive in zip(todo, pool.map(one, todo)):
            if alive:
                survived.append(m)
                print(f"SURVIVED {m.describe()}    {m.source.splitlines()[m.line - 1].strip()}", flush=True)
    for box in boxes:
        shutil.rmtree(box, ignore_errors=True)
    killed = len(todo) - len(survived)
    by_module = {module: sum(1 for m in todo if m.path == module) for module in modules}
    for module in modules:
        s = sum(1 for m in survived if m.path == module)
        print(f"{module}: {by_module[module] - s}/{by_module[module]} killed")
    print(f"score: {killed}/{len(todo)} killed ({100 * killed / max(1, len(todo)):.1f} %), {len(survived)} survived, {time.monotonic() - started:.0f} s")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
