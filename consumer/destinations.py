"""Where a request's ``reply-to`` header may send its result: pure checks, no Kafka client.

By default only the configured reply topic: any producer can set the header, and an unchecked
one could write into another team's topic, the request topic, the dead-letter topic or Kafka's
own ``__consumer_offsets``, or name a topic that never accepts a record. ``reply_to_pattern``
(a regular expression the whole name must match) allows more; even then a name must be a legal
Kafka topic name, not internal (``__``), and not one of the service's input topics.
"""

from __future__ import annotations

import re

LEGAL_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
MAX_REMEMBERED = 10_000


class ReplyDestinations:
    def __init__(self, reply_topic: str, pattern: str | None, forbidden: tuple[str, ...] = ()):
        self.reply_topic = reply_topic
        self._pattern = re.compile(pattern) if pattern else None
        self._forbidden = frozenset(forbidden)
        self._verdicts: dict[str, bool] = {}

    def allowed(self, topic: str) -> bool:
        """May a result go to ``topic``? (Verdicts are remembered: a few names recur.)"""
        if topic == self.reply_topic:
            return True
        if len(topic) > 249:
            return False
        verdict = self._verdicts.get(topic)
        if verdict is None:
            if len(self._verdicts) >= MAX_REMEMBERED:
                self._verdicts.clear()
            verdict = self._verdicts[topic] = self._judge(topic)
        return verdict

    def _judge(self, topic: str) -> bool:
        return (
            self._pattern is not None
            and LEGAL_TOPIC.fullmatch(topic) is not None
            and topic not in (".", "..")
            and not topic.startswith("__")
            and topic not in self._forbidden
            and self._pattern.fullmatch(topic) is not None
        )
