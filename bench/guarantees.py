"""``python -m bench.guarantees [--bootstrap-servers HOST:PORT] [--only NAMES] [--requests N]``: the
delivery guarantees checked with real processes, on the mock broker (default) or a real cluster.

| scenario       | guarantee       | what happens                                                                   |
|----------------|-----------------|--------------------------------------------------------------------------------|
| `scale`        | at-least-once   | 1 instance on a backlog; 2 more join at a quarter of it (1 → 3); one of the three gets SIGTERM at half (3 → 2) |
| `kill`         | at-least-once   | 3 instances; 4 SIGKILLs spread over the backlog, each killed instance restarted at once under its instance id |
| `exactly-once` | exactly-once    | the same kills in `CHATAPP_PROCESSING_GUARANTEE=exactly-once`                  |

Judged from independent records only: the result topic read from the start by a
``read_committed`` reader (requests answered, requests answered more than once), and the local
CAMS endpoint's log of every call (recipients received more than once). Recipients received twice
are allowed only for the calls in flight at a kill: at most ``(send_concurrency + 2) × batch size``
a kill. Expected: `scale` 0 repeated results and 0 received twice; `kill` some repeated results (what
finished since the last commit) and received twice within the bound; `exactly-once` 0 repeated
results on a real broker (the mock applies no transactional offset commit and hides no aborted
record: there it shows only that nothing is lost). The instances share a Redis ledger and limiter
(``redis://127.0.0.1:6379/15``, keys under ``bench:<run>:``, deleted afterwards).
"""

from __future__ import annotations

import argparse
import collections
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from . import report
from .kafkaio import FAST_FETCH, produce_backlog
from .launch import Infra, Service, service_env
from .scenarios import REDIS_URL, _clean_redis, _row

SCENARIOS = ("scale", "kill", "exactly-once")
PARTITIONS = 12
BATCH = 100
CONCURRENCY = 4
KILLS = 4
REAL_SESSION_TIMEOUT_MS = 6000
"""A real broker refuses sessions under its ``group.min.session.timeout.ms`` (6 s by default)."""
RESULTS = Path(__file__).resolve().parent / "results"


class ResultCounter:
    """The result topic from the start, as a ``read_committed`` reader sees it: results per request id."""

    def __init__(self, bootstrap: str, topic: str):
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"guarantees-{uuid.uuid4().hex}", "isolation.level": "read_committed",
                                   "enable.auto.commit": False, "log_level": 0, **FAST_FETCH})  # fmt: skip
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        self.counts: collections.Counter[bytes | None] = collections.Counter()

    def poll(self, seconds: float = 0.2) -> None:
        for m in self._consumer.consume(10_000, seconds):
            if m.error() is None:
                self.counts[m.key()] += 1

    def wait(self, answered: int, timeout: float, alive: Callable[[], None]) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.counts) < answered and time.monotonic() < deadline:
            alive()
            self.poll()
        return len(self.counts) >= answered

    def settle(self, quiet_s: float = 3.0, timeout: float = 30.0) -> None:
        """Read until nothing new came for ``quiet_s`` (results repeated behind the last new one)."""
        deadline = time.monotonic() + timeout
        last, seen = time.monotonic(), sum(self.counts.values())
        while time.monotonic() - last < quiet_s and time.monotonic() < deadline:
            self.poll()
            if sum(self.counts.values()) != seen:
                last, seen = time.monotonic(), sum(self.counts.values())

    def close(self) -> None:
        self._consumer.close()


class Run:
    def __init__(self, infra: Infra, run_id: str, logdir: Path, say: Callable[[str], None]):
        self.infra, self.run_id, self.logdir, self.say = infra, run_id, logdir, say

    def service(self, scenario: str, instance: str, topics: tuple[str, str, str], restart: int, **settings: Any) -> Service:
        assert self.infra.cams is not None
        if self.infra.real:
            settings.setdefault("session_timeout_ms", REAL_SESSION_TIMEOUT_MS)
        env = service_env(self.infra.bootstrap, self.infra.cams.url, topics, group_id=f"guarantees-{self.run_id}-{scenario}", instance_id=instance,
                          redis_url=REDIS_URL, redis_key_prefix=f"bench:{self.run_id}:", batch_max_recipients=BATCH,
                          send_concurrency=CONCURRENCY, commit_interval_ms=500, **settings)  # fmt: skip
        return Service(env, self.logdir / f"{scenario}-{instance}-{restart}.log")


def scenario(run: Run, name: str, requests: int, values: list[bytes]) -> dict[str, Any]:
    """One scenario (see the module's table); its row, details and problems."""
    exactly_once = name == "exactly-once"
    settings = {"processing_guarantee": "exactly-once"} if exactly_once else {}
    topics = run.infra.topics(f"{run.run_id}.guarantees-{name}", PARTITIONS)
    cams = run.infra.endpoint(rate_limit=10)
    run.infra.gather_new_groups(False)
    produce_backlog(run.infra.bootstrap, topics[0], values, PARTITIONS)
    reader = ResultCounter(run.infra.bootstrap, topics[1])
    services: dict[str, Service] = {}
    restarts = collections.Counter[str]()
    events: list[str] = []
    started = time.monotonic()

    def start(instance: str) -> None:
        services[instance] = run.service(name, instance, topics, restarts[instance], **settings)
        restarts[instance] += 1

    def alive() -> None:
        for s in services.values():
            if s.returncode is None:
                s.check_alive()

    try:
        if name == "scale":
            start("i0")
            steps = [
                (requests // 4, "scale out 1 -> 3", lambda: (start("i1"), start("i2"))),
                (requests // 2, "SIGTERM i1 (3 -> 2)", lambda: services["i1"].stop(60)),
            ]
        else:
            for k in range(3):
                start(f"i{k}")
            steps = []
            for n in range(KILLS):
                victim = f"i{n % 3}"

                def kill(victim: str = victim) -> None:
                    services[victim].kill()
                    start(victim)  # the same instance id: in exactly-once mode it fences its predecessor's transaction

                steps.append((requests * (n + 2) // (KILLS + 3), f"SIGKILL {victim} and restart it", kill))
        for at, what, act in steps:
            if not reader.wait(at, timeout=max(60.0, requests / 500), alive=alive):
                raise TimeoutError(f"{name}: only {len(reader.counts)} of {at} requests answered before '{what}'")
            events.append(f"{time.monotonic() - started:.1f}s at {len(reader.counts)} answered: {what}")
            run.say(f"{name}: {events[-1]}")
            act()
        reader.wait(requests, timeout=max(120.0, requests / 200), alive=alive)
        reader.settle()
    finally:
        codes = {instance: s.stop(60) for instance, s in services.items()}
        reader.close()
    answered = len(reader.counts)
    repeated = sum(1 for n in reader.counts.values() if n > 1)
    stats = cams.stats()
    twice = stats["duplicate_recipients_accepted"]
    kills = 0 if name == "scale" else KILLS
    bound = kills * (CONCURRENCY + 2) * BATCH
    problems: list[str] = []
    if answered != requests:
        problems.append(f"{name}: {answered} of {requests} requests answered")
    if twice > bound:
        problems.append(f"{name}: {twice} recipients received twice, over the bound of the calls in flight at the kills ({bound})")
    judged = name == "scale" or (exactly_once and run.infra.real)  # the mock neither commits offsets in a transaction nor hides an aborted one
    repeat_ok = repeated == 0 or not judged
    if not repeat_ok:
        problems.append(f"{name}: {repeated} requests answered more than once (read_committed)")
    exits = {i: c for i, c in codes.items() if c not in (0, None, -9)}
    if exits:
        problems.append(f"{name}: exit codes {exits}")
    target = "0" if judged else "info (mock)" if exactly_once else "info"
    row = _row(f"{name}: repeated results / recipients received twice (bound {bound})", float(repeated), f"{repeated} / {twice}", target,
               repeat_ok and twice <= bound if judged else None)  # fmt: skip
    details = {"requests": requests, "answered": answered, "repeated": repeated, "received_twice": twice, "bound": bound, "events": events,
               "exit_codes": codes, "calls": stats["calls"], "seconds": time.monotonic() - started}  # fmt: skip
    return {"rows": [row], "details": details, "problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.guarantees", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", default=None, metavar="HOST:PORT", help="a real cluster (default: the mock broker)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--requests", type=int, default=10_000, help="requests per scenario (default %(default)s)")
    parser.add_argument("--json", type=Path, default=RESULTS / "guarantees.json")
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    import redis
    from chatapp_devkit.samples import sample_records

    from consumer.codec import PlainAvroCodec

    began = time.monotonic()
    run_id = time.strftime("%H%M%S") + secrets.token_hex(2)
    logdir = RESULTS / "logs" / f"guarantees-{run_id}"
    logdir.mkdir(parents=True, exist_ok=True)

    def say(text: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {text}", file=sys.stderr, flush=True)

    codec = PlainAvroCodec()
    redis_client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    redis_client.ping()
    infra = Infra(args.bootstrap_servers).start()
    outcomes: dict[str, dict[str, Any]] = {}
    try:
        for name in only:
            say(f"{name}: {args.requests:,} requests on {args.bootstrap_servers or 'the mock broker'}")
            prefix = f"g{run_id}{name[:4]}"
            values = [codec.encode_request(r) for r in sample_records(args.requests, prefix=prefix)]
            try:
                outcomes[name] = scenario(Run(infra, run_id, logdir, say), name, args.requests, values)
            finally:
                _clean_redis(redis_client, f"bench:{run_id}:", prefix)
    finally:
        infra.close()
    rows = [row for o in outcomes.values() for row in o["rows"]]
    problems = [p for o in outcomes.values() for p in o["problems"]]
    print(f"chatapp-consumer guarantees, run {run_id}, {args.requests:,} requests a scenario, on {args.bootstrap_servers or 'the mock broker'}")
    report.table(rows, sys.stdout)
    for p in problems:
        print(f"  - {p}")
    report.write_json(args.json, {"run_id": run_id, "bootstrap_servers": args.bootstrap_servers or "mock", "scenarios": outcomes, "problems": problems})
    print(f"\nJSON: {args.json}   logs: {logdir}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
