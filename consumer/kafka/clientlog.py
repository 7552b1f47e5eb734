"""librdkafka's own log lines, through the service's logging: every client the Kafka port builds
logs to ``LIBRDKAFKA`` (never raw ``%3|...`` lines on stderr), which holds back repeats
(``repeats.Repeats``: a broker that cannot be reached is one line every ``REPEAT_S`` seconds,
not one per retry). librdkafka's errors are mostly transient (it retries by itself): they are
logged as warnings."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..repeats import Repeats

REPEAT_S = 10.0
LIBRDKAFKA = logging.getLogger("consumer.librdkafka")


class _Transient(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


LIBRDKAFKA.addFilter(_Transient())
LIBRDKAFKA.addFilter(Repeats(REPEAT_S))


def logged(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` of a client that logs through ``LIBRDKAFKA``."""
    return {**options, "logger": LIBRDKAFKA}
