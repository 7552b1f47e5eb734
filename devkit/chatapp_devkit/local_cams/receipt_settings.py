"""Settings of the endpoint's delivery-receipt push (``ChatAppStatus`` over HTTP), their validation,
and the WhatsApp error codes a Failed receipt can carry.

Off by default: with no ``callback_url`` nothing is planned or pushed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from chatapp_devkit.local_cams.checks import apply_changes, count, number

STATUSES = ("Sent", "Delivered", "Read", "Failed")

# WhatsApp Cloud API codes CAMS passes through in ErrorCode; ErrorDescription is "<code>:<text>"
# as in Alibaba's ChatAppStatus example (131026).
ERROR_CODES: dict[str, str] = {
    "131026": "Receiver is incapable of receiving this message(Message Undeliverable.)",
    "131047": "Re-engagement message(More than 24 hours have passed since the recipient last replied.)",
    "131049": "This message was not delivered to maintain healthy ecosystem engagement.",
    "131050": "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business.",
    "131051": "Unsupported message type",
    "131000": "Something went wrong",
    "130472": "User's number is part of an experiment",
    "132001": "Template name does not exist in the translation",
}


@dataclass(frozen=True, slots=True)
class FailureRule:
    """Recipients whose ``To`` fully matches ``regex`` get one Failed receipt with ``code``."""

    regex: str
    code: str
    description: str

    def to_json(self) -> dict[str, str]:
        return {"regex": self.regex, "code": self.code, "description": self.description}


@dataclass(frozen=True, slots=True)
class ReceiptSettings:
    """Run-time settings, changed by partial updates (``ReceiptSettings.updated``).

    After a call is accepted each recipient gets Sent, then Delivered, then Read for ``read_rate``
    of them, ``delays_ms[status]`` (+ up to ``jitter_ms``) after acceptance; a recipient matching a
    ``failures`` rule gets only Failed. Reports due are pushed as JSON arrays of at most
    ``max_per_post``, a partial array once its oldest report has waited ``flush_interval_ms``.
    ``loss_rate`` of reports are never pushed, ``duplicate_rate`` are pushed twice (the copy
    ``duplicate_after_ms`` later), ``reorder_rate`` of recipients get their statuses pushed in
    reverse order (Timestamps keep the true order). A push answered other than 2xx, refused or
    unanswered within ``push_timeout_s`` is repeated after each of ``retry_delays_s`` in turn,
    then abandoned; ``push_concurrency`` POSTs may be under way at once (more than one lets a
    recipient's statuses overtake each other). At most ``max_pending`` reports wait (more are dropped and counted); the
    admin log keeps the latest ``log_limit`` settled reports. ``seed`` seeds the draws.
    """

    callback_url: str | None = None
    max_per_post: int = 100
    flush_interval_ms: float = 200.0
    delays_ms: dict[str, float] = field(default_factory=lambda: {"Sent": 100.0, "Delivered": 300.0, "Read": 1000.0, "Failed": 200.0})
    jitter_ms: float = 0.0
    read_rate: float = 0.5
    failures: list[FailureRule] = field(default_factory=list)
    loss_rate: float = 0.0
    duplicate_rate: float = 0.0
    duplicate_after_ms: float = 1000.0
    reorder_rate: float = 0.0
    retry_delays_s: list[float] = field(default_factory=lambda: [1.0, 5.0, 10.0])
    push_timeout_s: float = 3.0
    push_concurrency: int = 1
    conversation_type: str = "marketing"
    max_pending: int = 1_000_000
    log_limit: int = 100_000
    seed: int = 0

    def updated(self, changes: Mapping[str, Any]) -> ReceiptSettings:
        """A copy with ``changes`` applied; ValueError names the first bad field."""
        return apply_changes(self, changes, _VALIDATORS, "receipt settings")

    def to_json(self) -> dict[str, Any]:
        settings = asdict(self)
        settings["failures"] = [rule.to_json() for rule in self.failures]
        return settings

    def failure_for(self, to: str) -> FailureRule | None:
        """The first rule ``to`` fully matches."""
        return next((rule for rule in self.failures if re.fullmatch(rule.regex, to)), None)


def _callback_url(value: Any) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s)://HOST[:PORT]/PATH URL or null, got {value!r}")
    return str(value)


def _positive(value: Any) -> int:
    if count(value) < 1:
        raise ValueError(f"expected an integer >= 1, got {value!r}")
    return int(value)


def _delays(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not set(value) <= set(STATUSES):
        raise ValueError(f"expected an object with keys from {list(STATUSES)}")
    return {**ReceiptSettings().delays_ms, **{status: number(0)(delay) for status, delay in value.items()}}


def _rule(value: Any) -> FailureRule:
    if not isinstance(value, dict) or not isinstance(value.get("regex"), str) or not isinstance(value.get("code"), str):
        raise ValueError('each failure rule is {"regex": str, "code": str, "description"?: str}')
    re.compile(value["regex"])
    description = value.get("description", ERROR_CODES.get(value["code"]))
    if not isinstance(description, str):
        raise ValueError(f"code {value['code']!r} is not one of {sorted(ERROR_CODES)}: give a description")
    return FailureRule(value["regex"], value["code"], description)


def _failures(value: Any) -> list[FailureRule]:
    if not isinstance(value, list):
        raise ValueError("expected a list of failure rules")
    return [_rule(rule) for rule in value]


def _retry_delays(value: Any) -> list[float]:
    if not isinstance(value, list) or len(value) > 20:
        raise ValueError("expected a list of at most 20 delays in seconds")
    return [number(0)(delay) for delay in value]


def _concurrency(value: Any) -> int:
    if not 1 <= count(value) <= 32:
        raise ValueError(f"expected an integer in 1..32, got {value!r}")
    return int(value)


def _conversation_type(value: Any) -> str:
    if value not in ("service", "utility", "marketing", "authentication"):
        raise ValueError(f"expected service, utility, marketing or authentication, got {value!r}")
    return str(value)


_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "callback_url": _callback_url,
    "max_per_post": _positive,
    "flush_interval_ms": number(0),
    "delays_ms": _delays,
    "jitter_ms": number(0),
    "read_rate": number(0, 1),
    "failures": _failures,
    "loss_rate": number(0, 1),
    "duplicate_rate": number(0, 1),
    "duplicate_after_ms": number(0),
    "reorder_rate": number(0, 1),
    "retry_delays_s": _retry_delays,
    "push_timeout_s": number(0.001),
    "push_concurrency": _concurrency,
    "conversation_type": _conversation_type,
    "max_pending": _positive,
    "log_limit": count,
    "seed": count,
}
