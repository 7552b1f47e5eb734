"""The pure parts of taking over a dead receiver's claims: marks (where the status topic ended),
where to start reading, and the identity read back from a status value (against fastavro)."""

from __future__ import annotations

import io

from fastavro import schemaless_writer

from consumer.receipts.encode import STATUS_SCHEMA, StatusEncoder, status_identity
from consumer.receipts.parse import Receipt, seen_key, status_record
from consumer.receipts.recover import Recovery, earliest, log_mark, read_mark


def test_a_mark_round_trips_and_the_earliest_covers_every_mark() -> None:
    assert log_mark({1: 40, 0: 12}) == "0:12,1:40" and read_mark("0:12,1:40") == {0: 12, 1: 40}
    assert read_mark("") == {} and read_mark("0:x") == {}, "unreadable: no partition named, read all"
    assert earliest(["0:12,1:40", "0:20,1:30"]) == {0: 12, 1: 30}
    assert earliest(["0:12,1:40", "0:20"]) == {0: 12}, "a partition one mark does not name is read from its beginning"
    assert earliest([]) == {}


def _receipt(message_id: str, to: str, status: str) -> Receipt:
    return Receipt(message_id, to, status, "t-1", 1_700_000_000_000, "131026" if status == "FAILED" else None, "x" * 300, None, None, None)


def test_the_identity_is_read_back_from_the_value_as_written_by_fastavro_and_by_hand() -> None:
    for item in (_receipt("m-1", "+8613900000001", "READ"), _receipt("é" * 70, "8613900000002", "FAILED")):
        record = status_record(item, None, 1_700_000_001_000)
        by_hand = StatusEncoder("s").encode(record)
        buffer = io.BytesIO()
        schemaless_writer(buffer, STATUS_SCHEMA, record)
        assert status_identity(by_hand) == status_identity(buffer.getvalue()) == (item.message_id, item.to, item.status)
        assert seen_key(*status_identity(by_hand)) == item.seen_key  # type: ignore[arg-type]
        wire = StatusEncoder("s", lambda subject, schema: 7)
        assert status_identity(wire.encode(record), wire.header_bytes) == (item.message_id, item.to, item.status)


class _Topic:
    """The status topic as a list of values per partition (what ``TopicScan.values`` reads)."""

    def __init__(self, partitions: dict[int, list[bytes]]):
        self.partitions = partitions
        self.asked: list[dict[int, int]] = []

    def values(self, starts, timeout_s):
        self.asked.append(dict(starts))
        for partition, values in self.partitions.items():
            yield from values[starts.get(partition, 0) :]


def test_recovery_finds_the_claimed_statuses_past_the_marks_and_nothing_else() -> None:
    encode = StatusEncoder("s").encode
    ours = [_receipt(f"m-{i}", f"86139{i:08d}", "DELIVERED") for i in range(4)]
    topic = _Topic(
        {0: [encode(status_record(ours[0], None, 1)), b"\x02garbage", encode(status_record(ours[1], None, 1))], 1: [encode(status_record(ours[2], None, 1))]}
    )
    recovery = Recovery(topic, 0, 5.0)
    stale = {item.seen_key: "0:1,1:0" for item in ours}
    assert recovery.published(stale) == {ours[1].seen_key, ours[2].seen_key}, "m-0 is before the mark: not its claim's; m-3 never written"
    assert topic.asked == [{0: 1, 1: 0}]
