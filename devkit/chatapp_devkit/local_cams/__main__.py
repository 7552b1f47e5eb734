"""``python -m chatapp_devkit.local_cams``: serve the local CAMS endpoint until SIGTERM/SIGINT.

Prints one JSON line ``{"url": "http://HOST:PORT"}`` on stdout once listening; exits 0 on a signal.
``--account ACCESS_KEY_ID:SECRET[:SECURITY_TOKEN]`` may repeat (a token makes it an STS account).
``--receipts-url URL`` turns on the delivery-receipt push to that callback URL; ``--receipts JSON``
sets any other receipt setting (``ReceiptSettings``; also ``POST /_admin/receipts`` at run time).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import Any

from chatapp_devkit.local_cams.auth import Account
from chatapp_devkit.local_cams.server import LocalCamsServer


def _account(value: str) -> tuple[str, Account]:
    access_key_id, sep, rest = value.partition(":")
    if not (access_key_id and sep and rest):
        raise argparse.ArgumentTypeError("expected ACCESS_KEY_ID:SECRET[:SECURITY_TOKEN]")
    secret, _, token = rest.partition(":")
    return access_key_id, Account(secret, token or None)


def _receipts(value: str) -> dict[str, Any]:
    try:
        settings = json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a JSON object of receipt settings") from None
    if not isinstance(settings, dict):
        raise argparse.ArgumentTypeError("expected a JSON object of receipt settings")
    return settings


def main(argv: list[str] | None = None, prog: str = "python -m chatapp_devkit.local_cams") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account", type=_account, action="append", default=[], metavar="ACCESS_KEY_ID:SECRET")
    parser.add_argument("--rate-limit", type=int, default=10, help="accepted calls per second per key, 0 = unlimited")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")
    parser.add_argument("--receipts-url", metavar="URL", help="push delivery receipts (ChatAppStatus) to this callback URL")
    parser.add_argument("--receipts", type=_receipts, default={}, metavar="JSON", help="receipt settings, e.g. '{\"read_rate\": 0.5}'")
    args = parser.parse_args(argv)
    receipts = {**args.receipts, **({"callback_url": args.receipts_url} if args.receipts_url else {})}

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server = LocalCamsServer(
            dict(args.account), host=args.host, port=args.port,
            rate_limit=args.rate_limit, latency_ms=args.latency_ms, seed=args.seed, receipts=receipts,
        ).start()  # fmt: skip
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps({"url": server.url}), flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
