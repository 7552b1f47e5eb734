"""The service's own Kafka types: what it reads and what it hears of what it wrote. No client here.

``Record`` is a message read from the request topic with the headers the service acts on
already parsed (``correlation-id``, ``reply-to``); ``DeliveredRecord`` is what a delivery report
tells of a record produced (its topic, key and value: librdkafka does not carry headers into
it). Delivery errors stay opaque objects: ``client.too_large`` and ``str`` are all the pipeline
asks of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

TP = tuple[str, int]
Headers = list[tuple[str, bytes]]
"""Headers the service writes."""
ReceivedHeaders = list[tuple[str, bytes | None]]
"""Headers as a record read carries them: a header's value may be null."""
DLQ_HEADER_PREFIX = "chatapp.dlq."
"""The headers a dead letter carries the reason and the source position in."""
MAX_CORRELATION_BYTES = 1024
"""A ``correlation-id`` header longer than this is cut to it when read (it is echoed on results)."""
MAX_REPLY_TO_CHARS = 250
"""A ``reply-to`` header is read up to here (a legal topic name has at most 249 characters)."""


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: ReceivedHeaders | None
    """Every header as the producer sent it (a dead letter echoes them)."""
    correlation_id: bytes | None = None
    reply_to: str | None = None


class DeliveredRecord(Protocol):
    def topic(self) -> str: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...


DeliveryCallback = Callable[[object | None, DeliveredRecord], None]
"""``(error or None, record)``: called once for every record produced."""


class Unsent(NamedTuple):
    """A record ``produce`` refused before it was queued, shaped as a delivery report's record."""

    topic_name: str
    value_bytes: bytes
    key_bytes: bytes | None

    def topic(self) -> str:
        return self.topic_name

    def value(self) -> bytes:
        return self.value_bytes

    def key(self) -> bytes | None:
        return self.key_bytes


class Fenced(Exception):
    """Exactly-once mode: the producer can no longer write (another process took over its
    transactional id, or a fatal error): nothing more may be committed; the process must stop."""


def parsed_headers(headers: ReceivedHeaders | None) -> tuple[bytes | None, str | None]:
    """(correlation id, reply-to) of a message's headers, each cut to its bound."""
    correlation = reply_to = None
    if headers:
        for name, value in headers:
            if name == "correlation-id" and value is not None:
                correlation = value[:MAX_CORRELATION_BYTES]
            elif name == "reply-to" and value:
                reply_to = value[:MAX_REPLY_TO_CHARS].decode("utf-8", "replace")
    return correlation, reply_to
