"""``chatapp-consumer``: run the service and the operators' tools.

    run           consume, batch, send, reply: the service
    receipts      receive CAMS's delivery receipts and publish them joined to their requests
    produce       send requests from a JSON-lines file to the topic
    check-config  print the effective configuration (secrets redacted) and test connectivity
    replay-dlq    re-inject dead-lettered messages into the request topic after a fix
    results       print the results the service writes (or, --dlq, its dead letters) as they come
    topics        describe the request, reply and dead-letter topics, or create the missing ones

The demo, the embedded broker, the local CAMS endpoint and sample traffic are the devkit's
(``chatapp-devkit``, devkit/ in the repository), which this package never imports;
``demo`` here only points there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from . import config as settings
from . import logs


def _load(env=None, warn: bool = True) -> settings.Config | None:
    """The configuration, or None after one line per problem; ``warn``: print its warnings too
    (``run`` logs them instead, once logging is set up)."""
    try:
        config = settings.load(env)
    except settings.ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return None
    logs.setup(config.log_level, config.log_format)  # every command's library lines (librdkafka's) formatted
    for warning in config.warnings if warn else ():
        print(f"config warning: {warning}", file=sys.stderr)
    return config


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(warn=False)
    if config is None:
        return 2
    if config.kafka_bootstrap_servers is None:
        print("config error: CHATAPP_KAFKA_BOOTSTRAP_SERVERS: not set (`chatapp-devkit demo` runs on an embedded broker)", file=sys.stderr)
        return 2
    from .app import Service, build_credentials
    from .credentials import CredentialsError
    from .worker_link import WorkerLink
    from .workers import Supervisor

    worker = WorkerLink.from_env(os.environ)
    logs.setup(config.log_level, config.log_format, worker=None if worker is None else worker.index)
    for warning in config.warnings if worker is None else ():  # a supervisor's workers share its environment: said once
        logging.getLogger("consumer.config").warning("config: %s", warning)
    try:
        if config.workers > 1:
            build_credentials(config)  # a missing credential stops the start-up here, not in N workers
            return Supervisor(config).run()
        service = Service(config, worker=worker)
    except CredentialsError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if worker is None:
        return _leave(service.run(), service.close_abandoned)

    def stop_when_orphaned() -> None:  # the supervisor is gone: drain and stop
        if worker.orphaned():
            service.request_stop()

    return _leave(service.run(on_tick=stop_when_orphaned), service.close_abandoned)


def _leave(code: int, close_abandoned: bool) -> int:
    """``code``; when the consumer's close hung (see ``kafka.CLOSE_TIMEOUT_S``), exit with it
    at once: the interpreter's finalisation would wait for that close again."""
    if close_abandoned:
        logging.shutdown()
        os._exit(code)
    return code


def cmd_receipts(args: argparse.Namespace) -> int:
    config = _load()
    if config is None:
        return 2
    missing = [
        f"{name}: not set ({why})"
        for name, value, why in (
            ("CHATAPP_KAFKA_BOOTSTRAP_SERVERS", config.kafka_bootstrap_servers, "the statuses are published to Kafka"),
            ("CHATAPP_RECEIPTS_TOKEN", config.receipts_token, "the secret segment of the callback URL"),
            ("CHATAPP_REDIS_URL", config.redis_url, "the join and the receipts seen are shared through Redis; without Redis, `run` hosts the receiver"),
        )
        if not value
    ]
    for problem in missing:
        print(f"config error: {problem}", file=sys.stderr)
    if missing:
        return 2
    from .receipts.app import ReceiptsApp, build_stores

    logs.setup(config.log_level, config.log_format)
    return ReceiptsApp(config, build_stores(config)).run()


DEMO_MOVED = "the demo is the devkit's: pip install -e ./devkit (from a checkout), then chatapp-devkit demo"


def cmd_demo(args: argparse.Namespace) -> int:
    print(DEMO_MOVED, file=sys.stderr)
    return 2


def cmd_produce(args: argparse.Namespace) -> int:
    config = _load()
    if config is None:
        return 2
    from .tools import produce

    return produce(config, args.file, args.bootstrap_servers, validate=not args.no_validate)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load()
    if config is None:
        return 2
    print(json.dumps(config.redacted(), indent=2, default=str))
    if args.no_connect:
        return 0
    from .tools import check_connectivity

    return check_connectivity(config)


def cmd_replay_dlq(args: argparse.Namespace) -> int:
    config = _load()
    if config is None:
        return 2
    from .kafka.replay import replay_dlq

    return replay_dlq(config, args.max, args.dry_run, args.timeout, args.to)


def cmd_results(args: argparse.Namespace) -> int:
    config = _load()
    if config is None:
        return 2
    if config.kafka_bootstrap_servers is None:
        print("config error: CHATAPP_KAFKA_BOOTSTRAP_SERVERS: not set", file=sys.stderr)
        return 2
    from .results import STATUSES, follow_results

    statuses = {s.strip() if args.dlq else s.strip().upper() for s in (args.status or "").split(",") if s.strip()}
    if not args.dlq and statuses - STATUSES:
        print(f"results: --status {','.join(sorted(statuses - STATUSES))}: give one or more of {', '.join(sorted(STATUSES))}", file=sys.stderr)
        return 2
    return follow_results(config, args.dlq, args.from_beginning, args.request_id, statuses, args.table, args.max, args.timeout)


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def cmd_topics(args: argparse.Namespace) -> int:
    config = _load()
    if config is None:
        return 2
    from . import topics_tool

    if args.action == "create":
        return topics_tool.create(config, args.partitions, args.replication_factor, args.dry_run, args.bootstrap_servers)
    return topics_tool.describe(config, args.bootstrap_servers)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="chatapp-consumer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the service (configuration from the environment and CHATAPP_CONFIG)")
    run.set_defaults(func=cmd_run)
    receipts = sub.add_parser("receipts", help="receive CAMS's delivery receipts at /chatapp/status/<token> and publish them to the status topic")
    receipts.set_defaults(func=cmd_receipts)
    demo = sub.add_parser("demo", help="moved: chatapp-devkit demo (prints where to find it)")
    demo.add_argument("--requests", type=int, help=argparse.SUPPRESS)
    demo.set_defaults(func=cmd_demo)
    produce = sub.add_parser("produce", help="send requests to the request topic (sample traffic: chatapp-devkit produce-samples)")
    produce.add_argument("--file", required=True, help="JSON lines, one SendRequest record per line ('-' = stdin)")
    produce.add_argument("--bootstrap-servers", help="overrides CHATAPP_KAFKA_BOOTSTRAP_SERVERS")
    produce.add_argument("--no-validate", action="store_true", help="send requests the service would reject (they come back REJECTED)")
    produce.set_defaults(func=cmd_produce)
    check = sub.add_parser("check-config", help="print the effective configuration and test connectivity")
    check.add_argument("--no-connect", action="store_true", help="only print the configuration")
    check.set_defaults(func=cmd_check_config)
    replay = sub.add_parser("replay-dlq", help="re-inject dead-lettered messages into the request topic")
    replay.add_argument("--max", type=int, default=None, help="stop after this many messages")
    replay.add_argument("--dry-run", action="store_true", help="count and show, do not produce or commit")
    replay.add_argument("--timeout", type=float, default=10.0, help="stop after this many idle seconds")
    replay.add_argument("--to", default=None, metavar="TOPIC", help="write the copies here instead of the request topic")
    replay.set_defaults(func=cmd_replay_dlq)
    results = sub.add_parser("results", help="print results (or dead letters) as they come; the counts by status on exit")
    results.add_argument("--dlq", action="store_true", help="the dead-letter topic instead of the reply topic")
    results.add_argument("--from-beginning", action="store_true", help="what the topic holds too (default: only what comes from now on)")
    results.add_argument("--request-id", help="only this request's records")
    results.add_argument("--status", help="only these statuses, e.g. FAILED,REJECTED (with --dlq: reasons, e.g. not-avro)")
    results.add_argument("--table", action="store_true", help="aligned columns instead of JSON lines")
    results.add_argument("--max", type=int, default=None, help="stop after this many records")
    results.add_argument("--timeout", type=float, default=None, help="stop after this many seconds without a record")
    results.set_defaults(func=cmd_results)
    topics = sub.add_parser("topics", help="describe the request, reply and DLQ topics, or create the missing ones (docs/operations.md)")
    topics.add_argument("action", choices=("describe", "create"))
    topics.add_argument("--partitions", type=_at_least_one, default=12, help="of the request and reply topics (create; the DLQ gets 1)")
    topics.add_argument("--replication-factor", type=_at_least_one, default=3, help="of every topic (create)")
    topics.add_argument("--dry-run", action="store_true", help="print the kafka-topics.sh lines instead of creating (create)")
    topics.add_argument("--bootstrap-servers", help="overrides CHATAPP_KAFKA_BOOTSTRAP_SERVERS")
    topics.set_defaults(func=cmd_topics)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)
