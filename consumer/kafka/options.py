"""Does librdkafka take a configuration? Asked by building a client from it, contacting nothing."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer

_SILENT = logging.getLogger("consumer.kafka.options-check")
"""Where the trial clients' librdkafka lines go (``debug`` makes them many): nowhere."""
_SILENT.addHandler(logging.NullHandler())
_SILENT.propagate = False


def refusal(role: str, options: Mapping[str, Any]) -> str | None:
    """librdkafka's reason for refusing ``options`` for a ``consumer`` or ``producer`` (None when
    it takes them). ``bootstrap.servers`` is left out, so no broker is contacted."""
    build = Consumer if role == "consumer" else Producer
    quiet = {name: value for name, value in options.items() if name != "bootstrap.servers"} | {"logger": _SILENT}
    try:
        build(quiet).close()
    except KafkaException as exc:
        return str(exc.args[0].str())
    return None
