"""consumer.batching: requests grouped by BatchKey, whole when they fit, with an injected clock."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.batching import Batcher, addresses, new_batch_id, recipients_of, split, without
from consumer.models import Batch, BatchKey, SendRequest, Slice
from consumer.scheduler import FairScheduler
from tests.fixtures.builders import avro_recipient, make_batch, make_key, make_request, slice_sizes
from tests.fixtures.clock import FakeClock

# -- construction -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 1001])
def test_max_recipients_must_be_1_to_1000(bad: int) -> None:
    with pytest.raises(ValueError, match="1..1000"):
        Batcher(bad, 0.1)


def test_batch_ids_are_unique() -> None:
    ids = {new_batch_id() for _ in range(1000)}
    assert len(ids) == 1000


# -- filling --------------------------------------------------------------------------------------


def test_fills_to_max_recipients_exactly() -> None:
    batcher = Batcher(10, 1.0, clock=FakeClock())
    assert batcher.add(make_request(3)) == []
    assert batcher.add(make_request(3)) == []
    assert batcher.add(make_request(3)) == []
    assert batcher.buffered_recipients == 9
    ready = batcher.add(make_request(1))
    assert len(ready) == 1
    assert ready[0].recipient_count == 10
    assert slice_sizes(ready[0]) == [3, 3, 3, 1]
    assert len(batcher) == 0
    assert batcher.buffered_recipients == 0


def test_request_of_exactly_max_recipients_is_one_full_batch_and_not_copied() -> None:
    batcher = Batcher(1000, 1.0, clock=FakeClock())
    request = make_request(1000)
    ready = batcher.add(request)
    assert [b.recipient_count for b in ready] == [1000]
    assert ready[0].slices[0].recipients is request.recipients  # whole request, no slicing
    assert request.parts == 1
    assert len(batcher) == 0


def test_never_splits_a_request_that_fits_closes_the_open_batch_first() -> None:
    batcher = Batcher(10, 1.0, clock=FakeClock())
    batcher.add(make_request(8))
    big = make_request(3)
    ready = batcher.add(big)
    assert [b.recipient_count for b in ready] == [8]
    assert big.parts == 1
    assert len(batcher) == 1
    assert batcher.buffered_recipients == 3
    rest = batcher.flush()
    assert slice_sizes(rest[0]) == [3]
    assert rest[0].slices[0].request is big


def test_request_of_max_size_behind_an_open_batch_closes_it_and_fills_its_own() -> None:
    batcher = Batcher(10, 1.0, clock=FakeClock())
    first = batcher.add(make_request(4))
    assert first == []
    request = make_request(10)
    ready = batcher.add(request)
    assert [b.recipient_count for b in ready] == [4, 10]  # oldest first
    assert request.parts == 1
    assert len(batcher) == 0
    assert batcher.buffered_recipients == 0


def test_request_larger_than_max_is_split_into_room_then_full_batches() -> None:
    batcher = Batcher(10, 1.0, clock=FakeClock())
    batcher.add(make_request(4))
    big = make_request(25)
    ready = batcher.add(big)
    assert [b.recipient_count for b in ready] == [10, 10]
    assert slice_sizes(ready[0]) == [4, 6]  # the open batch's room first
    assert slice_sizes(ready[1]) == [10]
    assert big.parts == 3
    assert batcher.buffered_recipients == 9
    (tail,) = batcher.flush()
    assert slice_sizes(tail) == [9]
    # the slices cover the request's recipients exactly once, in order
    pieces = [ready[0].slices[1], ready[1].slices[0], tail.slices[0]]
    assert all(p.request is big for p in pieces)
    assert [r for p in pieces for r in p.recipients] == big.recipients


def test_request_multiple_of_max_leaves_nothing_open() -> None:
    batcher = Batcher(5, 1.0, clock=FakeClock())
    request = make_request(15)
    ready = batcher.add(request)
    assert [b.recipient_count for b in ready] == [5, 5, 5]
    assert request.parts == 3
    assert len(batcher) == 0
    assert batcher.buffered_recipients == 0


def test_oversized_request_split_batches_have_distinct_ids() -> None:
    batcher = Batcher(3, 1.0, clock=FakeClock())
    ready = batcher.add(make_request(10))
    ready += batcher.flush()
    assert len({b.batch_id for b in ready}) == len(ready) == 4


# -- keys -----------------------------------------------------------------------------------------

_DIFFERENT: dict[str, Any] = {
    "account": "other",
    "channel_type": "viber",
    "template_code": "tpl-2",
    "template_name": "welcome",
    "language": "es",
    "from_number": "8613877779999",
    "fallback_id": "fb-1",
    "fallback_content": "hello",
    "fallback_rule": "undelivered",
    "fallback_duration_s": 120,
    "task_id": "task-1",
    "cust_space_id": "space-1",
    "label": "transaction",
    "tag": "tag-1",
    "ttl_s": 60,
}


def test_every_batch_key_field_is_covered() -> None:
    assert set(_DIFFERENT) == set(BatchKey._fields)


@pytest.mark.parametrize("field", BatchKey._fields)
def test_keys_that_differ_in_one_field_never_mix(field: str) -> None:
    base = make_key()
    other = make_key(**{field: _DIFFERENT[field]})
    assert base != other
    batcher = Batcher(10, 1.0, clock=FakeClock())
    assert batcher.add(make_request(2, base)) == []
    assert batcher.add(make_request(2, other)) == []
    assert len(batcher) == 2
    batches = batcher.flush()
    assert {b.key for b in batches} == {base, other}
    for batch in batches:
        assert all(s.request.key == batch.key for s in batch.slices)


def test_equal_keys_share_a_batch() -> None:
    batcher = Batcher(10, 1.0, clock=FakeClock())
    batcher.add(make_request(2, make_key()))
    batcher.add(make_request(2, make_key()))
    assert len(batcher) == 1


def test_a_full_batch_of_one_key_leaves_other_keys_open() -> None:
    batcher = Batcher(4, 1.0, clock=FakeClock())
    a, b = make_key(language="en"), make_key(language="fr")
    batcher.add(make_request(1, b))
    ready = batcher.add(make_request(4, a))
    assert [x.key for x in ready] == [a]
    assert len(batcher) == 1
    assert batcher.buffered_recipients == 1


# -- linger ---------------------------------------------------------------------------------------


def test_nothing_open_means_nothing_due_and_no_deadline() -> None:
    batcher = Batcher(10, 0.2, clock=FakeClock())
    assert batcher.due() == []
    assert batcher.until_next() is None


def test_linger_due_and_until_next_follow_creation_order() -> None:
    clock = FakeClock(0.0)  # binary-exact steps: deadlines compare exactly
    batcher = Batcher(10, 0.5, clock=clock)
    a, b = make_key(language="a"), make_key(language="b")
    batcher.add(make_request(1, a))
    clock.advance(0.125)
    batcher.add(make_request(1, b))
    batcher.add(make_request(1, a))  # joining does not reset a's deadline
    assert batcher.until_next() == 0.375
    assert batcher.due() == []
    clock.advance(0.25)
    assert batcher.due() == []
    clock.advance(0.125)  # exactly a's deadline
    due = batcher.due()
    assert [x.key for x in due] == [a]
    assert due[0].recipient_count == 2
    assert batcher.buffered_recipients == 1
    assert batcher.until_next() == 0.125
    clock.advance(1.0)
    assert batcher.until_next() == 0.0  # overdue: never negative
    assert [x.key for x in batcher.due()] == [b]
    assert batcher.until_next() is None
    assert batcher.buffered_recipients == 0


def test_many_overdue_batches_come_out_oldest_first() -> None:
    clock = FakeClock()
    batcher = Batcher(10, 0.1, clock=clock)
    keys = [make_key(language=f"l{i}") for i in range(5)]
    for key in keys:
        batcher.add(make_request(1, key))
        clock.advance(0.01)
    clock.advance(1.0)
    assert [b.key for b in batcher.due()] == keys
    assert len(batcher) == 0


def test_reopened_key_gets_a_new_deadline_behind_older_batches() -> None:
    clock = FakeClock(0.0)  # binary-exact steps: deadlines compare exactly
    batcher = Batcher(2, 1.0, clock=clock)
    a, b = make_key(language="a"), make_key(language="b")
    batcher.add(make_request(1, a))
    clock.advance(0.25)
    batcher.add(make_request(1, b))
    clock.advance(0.25)
    assert len(batcher.add(make_request(1, a))) == 1  # a fills up and closes
    batcher.add(make_request(1, a))  # a reopens at t=0.5
    assert batcher.until_next() == 0.75  # b (t=0.25) is now the oldest
    clock.advance(0.75)
    assert [x.key for x in batcher.due()] == [b]
    assert batcher.until_next() == 0.25
    clock.advance(0.25)
    assert [x.key for x in batcher.due()] == [a]


def test_zero_linger_is_due_at_once() -> None:
    batcher = Batcher(10, 0.0, clock=FakeClock())
    batcher.add(make_request(1))
    assert batcher.until_next() == 0.0
    assert len(batcher.due()) == 1


def test_batch_created_at_comes_from_the_clock() -> None:
    clock = FakeClock(42.0)
    batcher = Batcher(10, 1.0, clock=clock)
    batcher.add(make_request(1))
    assert batcher.flush()[0].created_at == 42.0


# -- flush / bookkeeping ----------------------------------------------------------------------------


def test_flush_closes_everything_and_resets_bookkeeping() -> None:
    batcher = Batcher(10, 1.0, clock=FakeClock())
    batcher.add(make_request(3, make_key(language="a")))
    batcher.add(make_request(4, make_key(language="b")))
    assert batcher.buffered_recipients == 7
    flushed = batcher.flush()
    assert recipients_of(flushed) == 7
    assert len(batcher) == 0
    assert batcher.buffered_recipients == 0
    assert batcher.flush() == []
    assert batcher.until_next() is None


def test_buffered_recipients_always_equals_open_batches_recipients() -> None:
    clock = FakeClock()
    batcher = Batcher(7, 0.05, clock=clock)
    keys = [make_key(language=x) for x in "abc"]
    out: list[Batch] = []
    added = 0
    for i in range(200):
        size = (i * 5) % 17 + 1  # some larger than 7
        added += size
        out += batcher.add(make_request(size, keys[i % 3]))
        if i % 13 == 0:
            clock.advance(0.03)
            out += batcher.due()
        assert batcher.buffered_recipients == added - recipients_of(out)
        assert all(b.recipient_count <= 7 for b in out)
    out += batcher.flush()
    assert recipients_of(out) == added
    assert all(b.recipient_count == sum(slice_sizes(b)) for b in out)


# -- split / without -----------------------------------------------------------------------------


def test_split_halves_by_slices() -> None:
    batch = make_batch(1, 2, 3, 4, 5)
    batch.created_at = 7.5
    halves = split(batch)
    assert [slice_sizes(h) for h in halves] == [[1, 2], [3, 4, 5]]
    assert [h.recipient_count for h in halves] == [3, 12]
    assert all(h.key == batch.key and h.created_at == 7.5 for h in halves)
    assert len({batch.batch_id, *(h.batch_id for h in halves)}) == 3
    assert [s.request for h in halves for s in h.slices] == [s.request for s in batch.slices]


def test_split_of_two_slices_gives_one_each() -> None:
    halves = split(make_batch(4, 6))
    assert [slice_sizes(h) for h in halves] == [[4], [6]]


def test_split_of_a_single_slice_is_empty() -> None:
    assert split(make_batch(10)) == []
    assert split(Batch("empty", make_key())) == []


def test_without_drops_selected_slices_and_recounts() -> None:
    batch = make_batch(1, 2, 3)
    drop_id = batch.slices[1].request.request_id
    rest, removed = without(batch, lambda s: s.request.request_id == drop_id)
    assert rest is batch
    assert slice_sizes(rest) == [1, 3]
    assert rest.recipient_count == 4
    assert [s.request.request_id for s in removed] == [drop_id]


def test_without_nothing_selected_returns_batch_unchanged() -> None:
    batch = make_batch(1, 2)
    rest, removed = without(batch, lambda s: False)
    assert rest is batch and removed == []
    assert batch.recipient_count == 3


def test_without_everything_selected_returns_none() -> None:
    batch = make_batch(1, 2)
    rest, removed = without(batch, lambda s: True)
    assert rest is None
    assert [len(s.recipients) for s in removed] == [1, 2]


def test_earliest_expiry_ignores_requests_without_deadline() -> None:
    assert make_batch(1, 1, expires=[None, None]).earliest_expiry_ms is None
    assert make_batch(1, 1, 1, expires=[None, 900, 500]).earliest_expiry_ms == 500


# -- one address once per call (issue 18, point 7) ----------------------------------------------------


def to_request(*numbers: str, key: BatchKey | None = None) -> SendRequest:
    request = make_request(len(numbers), key)
    request.recipients = [avro_recipient(n) for n in numbers]
    return request


def numbers_of(batch: Batch) -> list[str]:
    return [r["to"] for s in batch.slices for r in s.recipients]


def assert_no_address_twice(batches: list[Batch]) -> None:
    for batch in batches:
        found = addresses(batch.key, [r for s in batch.slices for r in s.recipients])
        assert len(found) == len(set(found)) and set(found) == batch.addresses, numbers_of(batch)


def test_one_number_with_and_without_plus_goes_into_two_calls() -> None:
    clock = FakeClock()
    batcher = Batcher(1000, 1.0, clock=clock)
    first, second = to_request("+8613933330003"), to_request("8613933330003")
    assert batcher.add(first) == [] and batcher.add(second) == []
    assert batcher.buffered_recipients == 2
    clock.advance(1.0)
    [batch] = batcher.due()
    assert [s.request for s in batch.slices] == [first]
    assert batcher.buffered_recipients == 1  # the second waits in a batch of its own
    clock.advance(1.0)
    [later] = batcher.due()
    assert [s.request for s in later.slices] == [second]
    assert batcher.buffered_recipients == 0


def test_a_waiting_request_joins_the_next_batch_when_the_open_one_fills() -> None:
    batcher = Batcher(3, 1.0, clock=FakeClock())
    waiting = to_request("8613900000001")
    batcher.add(to_request("8613900000001", "8613900000002"))
    batcher.add(waiting)
    [full] = batcher.add(to_request("8613900000003"))
    assert numbers_of(full) == ["8613900000001", "8613900000002", "8613900000003"]
    [rest] = batcher.flush()
    assert [s.request for s in rest.slices] == [waiting]


def test_requests_sent_twice_make_two_full_calls_not_many_small_ones() -> None:
    batcher = Batcher(100, 1.0, clock=FakeClock())
    out: list[Batch] = []
    for i in range(100):
        number = f"86139{i:08d}"
        out += batcher.add(to_request(number))
        out += batcher.add(to_request("+" + number))
    out += batcher.flush()
    assert [b.recipient_count for b in out] == [100, 100]
    assert_no_address_twice(out)


def test_a_number_repeated_many_times_goes_once_per_call_and_nothing_is_lost() -> None:
    clock = FakeClock()
    batcher = Batcher(7, 0.05, clock=clock)
    out: list[Batch] = []
    added = 0
    for i in range(300):
        numbers = [f"86139{(i * 7 + j) % 23:08d}" for j in range(i % 4 + 1)]  # few distinct numbers: many repeats
        added += len(numbers)
        out += batcher.add(to_request(*numbers))
        if i % 11 == 0:
            clock.advance(0.03)
            out += batcher.due()
        assert batcher.buffered_recipients == added - recipients_of(out)
    out += batcher.flush()
    assert recipients_of(out) == added and batcher.buffered_recipients == 0
    assert_no_address_twice(out)


def test_plus_is_part_of_the_address_on_non_phone_channels() -> None:
    key = make_key(channel_type="messenger")
    batcher = Batcher(1000, 1.0, clock=FakeClock())
    batcher.add(to_request("+user", key=key))
    batcher.add(to_request("user", key=key))
    [batch] = batcher.flush()
    assert numbers_of(batch) == ["+user", "user"]


def test_split_and_without_keep_the_addresses() -> None:
    batch = make_batch(1, 2, 3)
    halves = split(batch)
    assert_no_address_twice(halves)
    rest, _ = without(batch, lambda s: len(s.recipients) == 2)
    assert_no_address_twice([rest])


def test_the_scheduler_never_tops_a_waiting_batch_up_with_one_of_its_numbers() -> None:
    batcher = Batcher(1000, 1.0, clock=FakeClock())
    batcher.add(to_request("+8613933330003", "8613900000001"))
    batcher.add(to_request("8613900000002"))
    batcher.add(to_request("8613933330003"))
    batcher.add(to_request("8613900000003"))  # joins the first batch: no number of it there
    first, second = batcher.flush()
    scheduler = FairScheduler()
    scheduler.push(first)
    scheduler.push(second)  # a fresh batch of a key with a waiting one tops that one up, when it can
    calls = [scheduler.pop("default", 0.0) for _ in range(2)]
    assert [numbers_of(b) for b in calls] == [["+8613933330003", "8613900000001", "8613900000002", "8613900000003"], ["8613933330003"]]
    assert_no_address_twice(calls)


def test_the_scheduler_tops_up_with_the_slices_before_a_repeat_and_moves_their_addresses() -> None:
    key = make_key()
    tail = make_batch(1, key=key)
    fresh = make_batch(2, key=key)
    fresh.slices.append(Slice(to_request(numbers_of(tail)[0]), [avro_recipient(numbers_of(tail)[0])]))
    fresh.recipient_count += 1
    fresh.addresses.update(addresses(key, fresh.slices[-1].recipients))
    scheduler = FairScheduler()
    scheduler.push(tail)
    scheduler.push(fresh)
    calls = [scheduler.pop("default", 0.0) for _ in range(2)]
    assert [b.recipient_count for b in calls] == [3, 1]
    assert_no_address_twice(calls)


# -- bytes: a call's size is bounded ------------------------------------------------------------


def sized(count: int, size_bytes: int, key: BatchKey | None = None) -> SendRequest:
    request = make_request(count, key)
    request.size_bytes = size_bytes
    return request


def test_a_batch_closes_before_a_request_would_pass_its_bytes() -> None:
    batcher = Batcher(1000, 1.0, clock=FakeClock(), max_bytes=1000)
    key = make_key()
    assert batcher.add(sized(1, 400, key)) == []
    assert batcher.add(sized(1, 400, key)) == []  # the one-recipient fast path: 800 <= 1000
    [closed] = batcher.add(sized(1, 400, key))  # 1,200 would pass it
    assert (closed.recipient_count, closed.size_bytes) == (2, 800)
    [closed] = batcher.add(sized(3, 900, key))  # the slow path too: 400 + 900
    assert (closed.recipient_count, closed.size_bytes) == (1, 400)
    [alone] = batcher.add(sized(2, 5000, key))  # larger than a call may be: alone, not refused
    assert (slice_sizes(alone), alone.size_bytes) == ([3], 900)
    [alone] = batcher.flush()
    assert (slice_sizes(alone), alone.size_bytes) == ([2], 5000)


def test_split_and_without_keep_the_bytes_of_what_they_hold() -> None:
    key = make_key()
    batch = Batch(new_batch_id(), key)
    for size in (100, 200, 300, 400):
        request = sized(1, size, key)
        batch.slices.append(Slice(request, request.recipients))
    first, second = split(batch)
    assert (first.size_bytes, second.size_bytes) == (300, 700)
    rest, removed = without(second, lambda s: s.request.size_bytes == 300)
    assert rest is not None and rest.size_bytes == 400 and len(removed) == 1


def test_the_scheduler_tops_up_a_waiting_batch_only_within_its_bytes() -> None:
    key = make_key()
    scheduler = FairScheduler(1000, max_bytes=1000)
    batcher = Batcher(1000, 0.0, clock=FakeClock(), max_bytes=1000)
    batcher.add(sized(1, 600, key))
    [first] = batcher.flush()
    batcher.add(sized(1, 300, key))
    batcher.add(sized(1, 300, key))
    [second] = batcher.flush()
    scheduler.push(first)
    scheduler.push(second)  # one 300-byte slice fits the first, the other does not
    popped = [scheduler.pop(key.account, 0.0, contended=False) for _ in range(2)]
    assert [(b.recipient_count, b.size_bytes) for b in popped] == [(2, 900), (1, 300)]


def test_parts_is_the_number_of_slices_that_carry_the_request_on_every_path() -> None:
    """``parts`` is what Completion waits for: a request on the one-recipient fast path is in one
    slice, a split one in as many as carry it (a wrong count leaves a request without a result)."""
    batcher = Batcher(5, 1.0, clock=FakeClock())
    first, fast, other, split = make_request(2), make_request(1), make_request(1), make_request(9)
    fast.parts = other.parts = 7  # stale, as after an earlier placement: the batcher sets it
    batches = batcher.add(first) + batcher.add(fast) + batcher.add(other) + batcher.add(split) + batcher.flush()
    carried = {id(r): sum(1 for b in batches for s in b.slices if s.request is r) for r in (first, fast, other, split)}
    assert [r.parts for r in (first, fast, other, split)] == [carried[id(r)] for r in (first, fast, other, split)] == [1, 1, 1, 3]


def test_max_recipients_bounds_are_one_and_a_thousand() -> None:
    for allowed in (1, 1000):
        assert Batcher(allowed, 1.0, clock=FakeClock()).max_recipients == allowed
    for refused in (0, 1001):
        with pytest.raises(ValueError):
            Batcher(refused, 1.0, clock=FakeClock())
