"""``chatapp-devkit``: the service on this machine with nothing real behind it.

    demo             the whole service in process on the embedded broker and the local CAMS
                     endpoint, with sample traffic; prints the results and a metrics summary
    mock-broker      the embedded Kafka broker on its own (librdkafka's mock cluster)
    local-cams       the local CAMS endpoint on its own
    produce-samples  send N generated sample requests to the request topic

``mock-broker`` and ``local-cams`` take the options of ``python -m chatapp_devkit.mockcluster``
and ``python -m chatapp_devkit.local_cams`` (``chatapp-devkit mock-broker --help``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from consumer import config as settings
from consumer import logs

PASS_THROUGH = ("mock-broker", "local-cams")


def _load() -> settings.Config | None:
    try:
        return settings.load()
    except settings.ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return None


def cmd_demo(args: argparse.Namespace) -> int:
    if _load() is None:
        return 2
    logs.setup("WARNING", "text")
    from .demo import run_demo

    outcome = run_demo(requests=args.requests)
    if outcome.close_abandoned:  # the consumer's close hung: finalisation would wait for it again
        logging.shutdown()
        sys.stdout.flush()
        os._exit(outcome.code)
    return outcome.code


def cmd_produce_samples(args: argparse.Namespace) -> int:
    config = _load()
    if config is None:
        return 2
    from consumer.tools import produce_records

    from .samples import sample_records

    records = ((f"sample {i}", record) for i, record in enumerate(sample_records(args.count)))
    return produce_records(config, records, args.count, args.bootstrap_servers)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="chatapp-devkit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run on the embedded broker and local CAMS endpoint with sample traffic")
    demo.add_argument("--requests", type=int, default=20_000)
    demo.set_defaults(func=cmd_demo)
    sub.add_parser("mock-broker", help="the embedded Kafka broker (= python -m chatapp_devkit.mockcluster)", add_help=False)
    sub.add_parser("local-cams", help="the local CAMS endpoint (= python -m chatapp_devkit.local_cams)", add_help=False)
    produce = sub.add_parser("produce-samples", help="send N generated sample requests to the request topic")
    produce.add_argument("count", type=int, metavar="N")
    produce.add_argument("--bootstrap-servers", help="overrides CHATAPP_KAFKA_BOOTSTRAP_SERVERS")
    produce.set_defaults(func=cmd_produce_samples)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "mock-broker":
        from . import mockcluster

        mockcluster.main(argv[1:], prog="chatapp-devkit mock-broker")  # leaves with os._exit
        return 0
    if argv and argv[0] == "local-cams":
        from .local_cams.__main__ import main as local_cams

        return local_cams(argv[1:], prog="chatapp-devkit local-cams")
    args = parser().parse_args(argv)
    return args.func(args)
