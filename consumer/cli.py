"""``chatapp-consumer``: run the service and the operators' tools.

    run           consume, batch, send, reply: the service
    receipts      receive CAMS's delivery receipts and publish them joined to their requests
    produce       send requests from a JSON-lines file to the topic
    check-config  print the effective configuration (secrets redacted) and test connectivity
    replay-dlq    re-inject dead-lettered messages into the request topic after a fix

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


def _load(env=None) -> settings.Config | None:
    try:
        return settings.load(env)
    except settings.ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    config = _load()
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

    return produce(config, args.file, args.bootstrap_servers)


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
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)
