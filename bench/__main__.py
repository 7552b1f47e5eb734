"""``python -m bench [--quick] [--json PATH] [--profile] [--only NAMES] [--service-env K=V] [--bootstrap-servers HOST:PORT]``."""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from . import accounts, receipts, report, scenarios
from .launch import CpuAccount, Infra, wait_quiet

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
"""A full run's figures replace the table in it (``report.write_figures``)."""
BUDGET_S = {True: 115.0, False: 570.0}  # under the 2 / 10 minute limits, start-up and teardown included
SCENARIOS = ("saturation", "saturation3", "pipeline", "latency", "memory", "baseline", "accounts", "receipts")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller backlogs and shorter windows (< 2 minutes)")
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json", help="where to write the results (default %(default)s)")
    parser.add_argument("--profile", action="store_true", help="also run the pipeline scenario once more under py-spy and summarise it")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for every service process (e.g. CHATAPP_RATE_LIMIT_SAFETY_MARGIN=0.01)",
    )
    parser.add_argument(
        "--bootstrap-servers",
        default=None,
        metavar="HOST:PORT",
        help="run against this Kafka cluster (topics created there with AdminClient, named bench.<run>.*) instead of the mock broker",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        metavar="S",
        help="before each scenario, wait up to S s for other processes to use < 0.25 core (default 15, quick 3)",
    )
    args = parser.parse_args(argv)
    if args.quiet_wait is None:
        args.quiet_wait = 3.0 if args.quick else 15.0
    args.only = {s for s in args.only.split(",") if s}
    unknown = args.only - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    for item in args.service_env:
        if "=" not in item:
            parser.error(f"--service-env expects NAME=VALUE, got {item!r}")
    return args


def service_margin(extra_env: dict[str, str]) -> float | None:
    """The safety margin the service ran with: --service-env, else the service's default."""
    if "CHATAPP_RATE_LIMIT_SAFETY_MARGIN" in extra_env:
        return float(extra_env["CHATAPP_RATE_LIMIT_SAFETY_MARGIN"])
    try:
        from consumer.settings import SETTINGS

        return float(next(s.default for s in SETTINGS if s.name == "rate_limit_safety_margin"))
    except (ImportError, StopIteration, TypeError, ValueError):
        return None


def tree_fingerprint() -> dict[str, Any]:
    """Which service code was measured: a hash of consumer/ (it changes while others work)."""
    root = Path(__file__).resolve().parents[1] / "consumer"
    digest = hashlib.sha256()
    newest = 0.0
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
        newest = max(newest, path.stat().st_mtime)
    return {"sha256": digest.hexdigest()[:16], "newest_file": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(newest))}


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    run_id = time.strftime("%H%M%S") + secrets.token_hex(2)
    logdir = RESULTS / "logs" / run_id
    logdir.mkdir(parents=True, exist_ok=True)

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    def wanted(name: str) -> bool:
        return not args.only or name in args.only

    infra = Infra(args.bootstrap_servers)
    ctx = scenarios.Context(infra, args.quick, run_id, logdir, started + BUDGET_S[args.quick], prefix=f"b{run_id}", say=say,
                            extra_env=dict(item.split("=", 1) for item in args.service_env))  # fmt: skip
    sizes = ctx.sizes
    outcomes: dict[str, dict[str, Any]] = {}
    interrupted = False
    load_before = os.getloadavg()
    tree_before = tree_fingerprint()

    def run(name: str, fn: Any, *fn_args: Any, min_left: float = 10.0) -> None:
        if time.monotonic() > ctx.deadline - min_left:
            say(f"{name}: skipped, out of the run's time budget")
            outcomes[name] = {"rows": [], "details": {}, "problems": [f"{name}: skipped (time budget)"], "skipped": True}
            return
        quiet = wait_quiet(infra, min(args.quiet_wait, max(0.0, ctx.deadline - min_left - time.monotonic() - 5)))
        if quiet["waited_s"] >= 1:
            say(f"{name}: waited {quiet['waited_s']:.0f} s for other work on the machine to calm down (others {quiet['other_cores']:.2f} cores)")
        t0 = time.monotonic()
        cpu = CpuAccount(infra)
        try:
            outcomes[name] = fn(ctx, *fn_args)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 (one scenario failing must not hide the others' figures)
            say(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            outcomes[name] = {
                "rows": [],
                "details": {"traceback": traceback.format_exc()},
                "problems": [f"{name}: {type(exc).__name__}: {exc}"[:500]],
                "error": True,
            }
        outcomes[name]["quiet_wait"] = quiet
        outcomes[name]["seconds"] = time.monotonic() - t0
        outcomes[name]["loadavg_after"] = os.getloadavg()
        used = outcomes[name]["cpu"] = cpu.since_start()
        if used["other_cores"] > 0.25:
            outcomes[name].setdefault("problems", []).append(
                f"{name}: other work on the machine used {used['other_cores']:.2f} of {os.cpu_count()} cores meanwhile: its figures are disturbed"
            )
        say(f"{name}: done in {outcomes[name]['seconds']:.1f} s (bench {used['bench_cores']:.2f} cores, others {used['other_cores']:.2f})")

    try:
        broker = f"the cluster at {args.bootstrap_servers}" if args.bootstrap_servers else "the mock broker"
        say(f"run {run_id} ({'quick' if args.quick else 'full'}): on {broker}; starting the local CAMS endpoint")
        infra.start()
        need = max([n for name, n in (("saturation", sizes.saturation), ("saturation3", sizes.saturation3), ("pipeline", sizes.pipeline),
                                      ("memory", sizes.memory), ("baseline", sizes.baseline)) if wanted(name) or (name == "pipeline" and args.profile)], default=0)  # fmt: skip
        say(f"encoding {need:,} sample requests once")
        ctx.encode(need)
        if wanted("saturation"):
            run("saturation", scenarios.saturation, 1, min_left=30)
        if wanted("saturation3"):
            run("saturation3", scenarios.saturation, 3, min_left=30)
        if wanted("pipeline"):
            run("pipeline", scenarios.pipeline, min_left=30)
        if wanted("latency"):
            run("latency", scenarios.latency, min_left=sizes.latency_s + 10)
            if sizes.latency_mixed:
                run("latency_mixed", scenarios.latency, True, min_left=sizes.latency_s + 10)
        if wanted("memory"):
            run("memory", scenarios.memory, min_left=sizes.memory_window_s + 15)
        if wanted("baseline"):
            sat = outcomes.get("saturation", {}).get("rate")
            run("baseline", scenarios.baseline, sat, min_left=sizes.baseline / 10 + 10)
        if wanted("accounts"):
            run("accounts", accounts.accounts, min_left=60)
        if wanted("receipts"):
            run("receipts", receipts.receipts, min_left=30)
        if args.profile:
            run("pipeline_profiled", scenarios.pipeline, True, min_left=20)
    except KeyboardInterrupt:
        say("interrupted: stopping everything")
        interrupted = True
    finally:
        infra.close()

    rows = [row for outcome in outcomes.values() for row in outcome.get("rows", [])]
    problems = [p for outcome in outcomes.values() for p in outcome.get("problems", [])]
    elapsed = time.monotonic() - started
    print()
    tree = tree_fingerprint()
    if tree != tree_before:
        problems.append(f"consumer/ changed during the run ({tree_before['sha256']} -> {tree['sha256']}): scenarios measured different code")
    print(f"chatapp-consumer bench, {'quick' if args.quick else 'full'} mode, run {run_id}, {elapsed:.0f} s, "
          f"{os.cpu_count()} CPUs, load {load_before[0]:.2f} before / {os.getloadavg()[0]:.2f} after; "
          f"consumer/ {tree['sha256']} (newest file {tree['newest_file']})")  # fmt: skip
    report.table(rows, sys.stdout)
    if not args.quick and not args.only and not interrupted and not args.service_env and not args.bootstrap_servers:
        report.write_figures(DOCS, rows, f"Run {run_id}, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, {elapsed:.0f} s, "
                             f"load {load_before[0]:.2f} before; {len(problems)} problems seen (bench/results/latest.json).")  # fmt: skip
        say(f"figures written to {DOCS.relative_to(DOCS.parents[1])}")
    margin = service_margin(ctx.extra_env)
    if margin is not None:
        print(
            f"(rate_limit_safety_margin {margin:g}: the service's limiter itself allows at most 1/{1 + margin:g} = "
            f"{1 / (1 + margin):.3f} of {scenarios.BUDGET:,} recipients/s)"
        )
    if problems:
        print("\nproblems seen:")
        for p in problems:
            print(f"  - {p}")
    profile = outcomes.get("pipeline_profiled", {}).get("details", {}).get("profile")
    if profile:
        threads = ", ".join(f"{k} {v['share']:.0%}" for k, v in profile["threads"].items() if v["share"] >= 0.01)
        print(
            f"\npy-spy --gil, pipeline scenario: {profile['samples']} samples in {profile['seconds']:.1f} s "
            f"(GIL held {profile['gil_held_share']:.0%} of the time); by thread: {threads}"
        )
        print("by deepest consumer/ frame (its own time plus the library calls it makes):")
        for item in profile["consumer_self"][:15]:
            print(f"  {item['share']:6.1%}  {item['function']}")
        print("inclusive (on the stack):")
        roots = ("<module> ", "main (", "cmd_run (", "Service.run (")
        for item in [i for i in profile["consumer_inclusive"] if not i["function"].startswith(roots)][:12]:
            print(f"  {item['share']:6.1%}  {item['function']}")
    payload = {
        "run_id": run_id,
        "consumer_tree": tree,
        "rate_limit_safety_margin": margin,
        "mode": "quick" if args.quick else "full",
        "seconds": elapsed,
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "service_env": ctx.extra_env,
        "bootstrap_servers": args.bootstrap_servers or "mock",
        "logs": str(logdir),
        "rows": rows,
        "problems": problems,
        "interrupted": interrupted,
        "scenarios": outcomes,
    }
    report.write_json(args.json, payload)
    print(f"\nJSON: {args.json}   logs: {logdir}")
    if interrupted:
        return 130
    return 1 if any(o.get("error") for o in outcomes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
