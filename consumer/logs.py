"""Logging set-up: JSON lines (containers) or readable text (a terminal), every field scrubbed.

Every field of every line (the message, the exception text, every extra field) passes
``scrub``: credentials in URLs are hidden (``consumer.redact``) and phone numbers masked.

The mask's rule: a phone number is 7 or more digits once the separators people write between
groups are removed, that is a plain digit run (``8613812345678``, also inside an identifier:
``req-8613812345678``, ``id_8613812345678``) or groups of at most 5 digits joined by a space, a
dash, a dot or parentheses (``+86 139 0000 0001``, ``+1 (415) 555-2671``). Its digits are
replaced by ``*`` but for the first 4 and the last 2 (the first 2 and the last 2 below 10
digits), the separators kept: ``8613*******78``. Left alone: runs of fewer than 7 digits
(partitions, counts, ports, retry numbers), dates (``2026-01-01``), IPv4 addresses, decimal
numbers with at most 5 digits before the point (``0.20``, ``12.5``), Kafka offsets (``@123``,
``offset 123``), UUIDs and the service's batch ids (``b-4f2a1c-1234567``). Longer digit runs (epoch
milliseconds, numbers of 16 digits and more) are masked like phone numbers.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from .redact import redact_text

MIN_DIGITS = 7
"""Fewer digits than this are never a phone number."""
_NOT_A_PHONE = (
    r"\d{4}-\d\d-\d\d(?!\d)"  # a date
    r"|(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])"  # an IPv4 address
    r"|(?<![\d.+])\d{1,5}\.\d+(?![\d.])"  # a decimal number
)
_UUID = r"\b[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\b"
_GROUP = rf"(?!{_NOT_A_PHONE})\d{{1,5}}(?!\d)"
_SEPARATOR = r"(?:[ .-]|\)[ .-]?|[ .-]?\()"
PHONE = re.compile(
    rf"(?P<skip>{_NOT_A_PHONE}|(?:offset |@)\d+|\bb-[0-9a-f]{{6}}-\d+|{_UUID})"  # left alone
    rf"|{_GROUP}(?:{_SEPARATOR}{_GROUP})+"  # groups with separators
    r"|\d+"  # a plain run
)
"""What the mask looks at: the ``skip`` group is left alone, any other match is masked when it
holds ``MIN_DIGITS`` digits or more."""
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
"""Attributes every LogRecord has: anything else on a record is an extra field."""


def _masked(match: re.Match[str]) -> str:
    text = match.group()
    digits = sum(c.isdigit() for c in text)
    if match.group("skip") or digits < MIN_DIGITS:
        return text
    head, tail = (4, 2) if digits >= 10 else (2, 2)
    seen, out = 0, []
    for char in text:
        if char.isdigit():
            seen += 1
            char = char if seen <= head or seen > digits - tail else "*"
        out.append(char)
    return "".join(out)


def mask(text: str) -> str:
    """``text`` with its phone numbers masked (see the module's rule)."""
    return PHONE.sub(_masked, text)


def scrub(text: str) -> str:
    """``text`` fit for a log line: credentials in URLs hidden, phone numbers masked."""
    return mask(redact_text(text))


def _scrubbed_field(value: Any) -> Any:
    """An extra field's value for a JSON line: scrubbed text, or the value itself (None, a
    boolean, a number) when scrubbing leaves it unchanged."""
    if value is None or isinstance(value, bool):
        return value
    text = value if isinstance(value, str) else str(value)
    clean = scrub(text)
    return value if isinstance(value, (int, float)) and clean == text else clean


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = _scrubbed_field(value)
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = scrub(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        where = "%(name)s" if worker is None else f"%(name)s[worker {worker}]"
        super().__init__(f"%(asctime)s %(levelname)-7s {where}: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


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
