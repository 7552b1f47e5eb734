"""Logging set-up: JSON lines (containers) or readable text (a terminal), phone numbers masked.

Every record passes ``mask``: digit runs that look like phone numbers keep their first 4 and
last 2 digits (``8613****21``); Kafka offsets (``@123``, ``offset 123``) are left alone. Secrets never reach a log line: the config's repr hides them and
nothing logs credentials.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

PHONE_RUN = re.compile(r"(?<![\w@-])(?<!offset )(\+?\d{4})(\d{2,9})(\d{2})(?![\w-])")


def mask(text: str) -> str:
    return PHONE_RUN.sub(lambda m: m.group(1) + "*" * len(m.group(2)) + m.group(3), text)


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": mask(record.getMessage()),
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        for key in ("request_id", "batch_id", "account"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = mask(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        where = "%(name)s" if worker is None else f"%(name)s[worker {worker}]"
        super().__init__(f"%(asctime)s %(levelname)-7s {where}: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


def setup(level: str = "INFO", fmt: str = "auto", stream=None, worker: int | None = None) -> None:
    """Log to ``stream`` (stderr); a worker process's lines name its index (``worker``)."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(worker) if fmt == "json" else TextFormatter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
