"""bench.receipts' traffic: every report a push of at most 100 carries is one the join knows."""

from __future__ import annotations

from collections import Counter

import orjson

from bench.receipts import PER_POST, _reports
from consumer.receipts.parse import parse_push


def test_the_pushes_carry_three_statuses_of_every_recipient_and_the_join_knows_each() -> None:
    calls, bodies = _reports("r", 2_500, 1_700_000_000_000)
    assert [len(call.entries) for call in calls] == [1000, 1000, 500]
    receipts = [item for body in bodies for item in parse_push(body)[0]]
    assert all(len(orjson.loads(body)) <= PER_POST for body in bodies) and len(receipts) == 7_500
    assert Counter(item.status for item in receipts) == {"SENT": 2_500, "DELIVERED": 2_500, "READ": 2_500}
    known = {(call.task_id, number) for call in calls for number in call.entries}
    assert {(item.task_id, item.number) for item in receipts} == known
    assert len({item.seen_key for item in receipts}) == 7_500, "no report repeats another: each is published"
