"""consumer.completion: slice outcomes fan in to one SendResult per request, in Settled groups."""

from __future__ import annotations

import threading

from consumer.batching import Batcher
from consumer.completion import Completion, combine
from consumer.models import SendRequest, SendResult, Settled, Slice, SliceOutcome, Status
from tests.fixtures.builders import make_request
from tests.fixtures.clock import FakeClock

AT = 1_767_225_600_123  # when the slice's call finished (ms)


def sent(gid: str | None = "G1", attempts: int = 1, api: str | None = "R1", batch: str | None = "b-1") -> SliceOutcome:
    return SliceOutcome(Status.SENT, "OK", None, attempts, gid, api, batch)


def failed(code: str = "Invalid.Param", attempts: int = 1, batch: str | None = "b-9") -> SliceOutcome:
    return SliceOutcome(Status.FAILED, code, f"{code} happened", attempts, None, "R-fail", batch)


def slice_done(completion: Completion, piece: Slice, outcome: SliceOutcome, at: int) -> SendResult | None:
    """The result a batch of this one slice finished, or None."""
    settled = completion.batch_done([piece], outcome, at)
    assert len(settled) <= 1
    return settled[0].result(piece.request) if settled else None


def split_request(size: int, max_recipients: int) -> tuple[SendRequest, list[Slice]]:
    """A request cut into slices by the real Batcher (so ``parts`` is what production sets)."""
    batcher = Batcher(max_recipients, 1.0, clock=FakeClock())
    request = make_request(size)
    batches = batcher.add(request) + batcher.flush()
    slices = [s for b in batches for s in b.slices]
    assert len(slices) == request.parts
    return request, slices


def test_single_slice_request_finishes_at_once() -> None:
    completion = Completion()
    request = make_request(3)
    result = slice_done(completion, Slice(request, request.recipients), sent("G7", 2, "R7", "b-7"), AT)
    assert result is not None
    assert result.request_id == request.request_id
    assert result.status is Status.SENT
    assert result.code == "OK"
    assert result.recipients == 3
    assert result.attempts == 2
    assert (result.group_message_id, result.api_request_id, result.batch_id) == ("G7", "R7", "b-7")
    assert result.completed_at_ms == AT


def test_single_slice_failure_keeps_code_and_message() -> None:
    request = make_request(1)
    result = slice_done(Completion(), Slice(request, request.recipients), failed("Ram.PermissionDeny"), AT)
    assert result.status is Status.FAILED
    assert result.code == "Ram.PermissionDeny"
    assert result.message == "Ram.PermissionDeny happened"


def test_multi_slice_waits_for_every_slice_then_all_sent() -> None:
    completion = Completion()
    request, slices = split_request(25, 10)
    assert request.parts == 3
    assert slice_done(completion, slices[0], sent("G1", 1, "R1", "b-1"), AT) is None
    assert slice_done(completion, slices[1], sent("G2", 2, "R2", "b-2"), AT) is None
    result = slice_done(completion, slices[2], sent("G3", 1, "R3", "b-3"), AT)
    assert result is not None
    assert result.status is Status.SENT
    assert result.recipients == 25  # the whole request, not the last slice
    assert result.attempts == 4  # summed over slices
    assert result.group_message_id == "G1,G2,G3"
    assert result.batch_id == "b-1,b-2,b-3"
    assert result.api_request_id == "R3"  # the last call's


def test_multi_slice_first_failure_wins() -> None:
    completion = Completion()
    request, slices = split_request(30, 10)
    slice_done(completion, slices[0], sent("G1"), AT)
    slice_done(completion, slices[1], failed("First.Failure"), AT)
    result = slice_done(completion, slices[2], failed("Second.Failure"), AT)
    assert result.status is Status.FAILED
    assert result.code == "First.Failure"
    assert result.message == "First.Failure happened"
    assert result.group_message_id == "G1"  # the part that did go out is still reported


def test_multi_slice_expired_part_makes_the_request_not_sent() -> None:
    completion = Completion()
    request, slices = split_request(20, 10)
    slice_done(completion, slices[0], SliceOutcome(Status.EXPIRED, "Chatapp.Expired", "late", 0), AT)
    result = slice_done(completion, slices[1], sent("G2"), AT)
    assert result.status is Status.EXPIRED
    assert result.code == "Chatapp.Expired"


def test_combine_without_group_ids_gives_none() -> None:
    combined = combine([sent(None, batch=None), sent(None, batch=None)])
    assert combined.group_message_id is None
    assert combined.batch_id is None
    assert combined.status is Status.SENT


def test_combine_of_one_outcome_is_that_outcome() -> None:
    outcome = failed()
    assert combine([outcome]) is outcome


def test_two_requests_in_flight_are_kept_apart() -> None:
    completion = Completion()
    r1, s1 = split_request(4, 2)
    r2, s2 = split_request(4, 2)
    assert slice_done(completion, s1[0], sent("A1"), AT) is None
    assert slice_done(completion, s2[0], failed("X"), AT) is None
    done1 = slice_done(completion, s1[1], sent("A2"), AT)
    done2 = slice_done(completion, s2[1], sent("B2"), AT)
    assert (done1.request_id, done1.status, done1.group_message_id) == (r1.request_id, Status.SENT, "A1,A2")
    assert (done2.request_id, done2.status, done2.code) == (r2.request_id, Status.FAILED, "X")


def test_forget_drops_partial_outcomes() -> None:
    completion = Completion()
    request, slices = split_request(20, 10)
    assert slice_done(completion, slices[0], failed("Old.Failure"), AT) is None
    completion.forget(request)
    # the request is sent again from scratch: the old failure no longer counts
    assert slice_done(completion, slices[0], sent("N1"), AT) is None
    result = slice_done(completion, slices[1], sent("N2"), AT)
    assert result.status is Status.SENT
    assert result.group_message_id == "N1,N2"


def test_forget_of_unknown_request_is_harmless() -> None:
    Completion().forget(make_request(1))


def test_a_settled_result_counts_all_recipients_of_the_request() -> None:
    request = make_request(7)
    assert Settled(sent(), AT, [request]).result(request).recipients == 7


def test_concurrent_slices_finish_each_request_exactly_once() -> None:
    completion = Completion()
    pairs = [split_request(40, 4) for _ in range(50)]  # 10 slices each
    results = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(index: int) -> None:
        start.wait()
        for _, slices in pairs:
            for piece in slices[index::8]:
                result = slice_done(completion, piece, sent(f"G{index}"), AT)
                if result is not None:
                    with lock:
                        results.append(result)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(r.request_id for r in results) == sorted(r.request_id for r, _ in pairs)
    assert all(r.attempts == 10 for r in results)


def test_a_batch_settles_its_whole_requests_as_one_group_and_a_split_request_alone() -> None:
    completion = Completion()
    whole = [make_request(2) for _ in range(3)]
    request, slices = split_request(20, 10)
    settled = completion.batch_done([Slice(r, r.recipients) for r in whole] + [slices[0]], sent("G1"), AT)
    assert [(g.outcome, g.requests) for g in settled] == [(sent("G1"), whole)]  # the split one waits for its other slice
    settled = completion.batch_done([slices[1]], failed("X"), AT + 5)
    assert len(settled) == 1 and settled[0].requests == [request] and settled[0].completed_at_ms == AT + 5
    assert settled[0].outcome.status is Status.FAILED and settled[0].outcome.group_message_id == "G1"
    assert settled[0].result(request).request_id == request.request_id


def test_a_split_slice_behind_whole_requests_in_one_batch_still_counts() -> None:
    """The batcher's normal layout: whole requests first, then the first slice of a request too
    large for the room left. Every slice of the batch is recorded, not only those before the
    first whole request: the split request finishes when its last slice does."""
    batcher = Batcher(10, 1.0, clock=FakeClock())
    whole = make_request(3)
    split = make_request(12)
    batches = batcher.add(whole) + batcher.add(split) + batcher.flush()
    assert [[(s.request, len(s.recipients)) for s in b.slices] for b in batches] == [[(whole, 3), (split, 7)], [(split, 5)]]
    completion = Completion()
    first = completion.batch_done(batches[0].slices, sent("G1", batch="b-1"), AT)
    assert [g.requests for g in first] == [[whole]]
    last = completion.batch_done(batches[1].slices, sent("G2", batch="b-2"), AT + 1)
    assert [g.requests for g in last] == [[split]]
    assert last[0].result(split).group_message_id == "G1,G2" and last[0].outcome.attempts == 2


def test_every_split_request_in_a_batch_is_recorded_when_an_earlier_one_is_not_done() -> None:
    """A batch holding the last slice of one split request and the first of another, settled
    before the first request's other slice: the second request's slice still counts."""
    batcher = Batcher(10, 1.0, clock=FakeClock())
    a = make_request(15)
    b = make_request(15)
    batches = batcher.add(a) + batcher.add(b) + batcher.flush()
    assert [[(s.request, len(s.recipients)) for s in x.slices] for x in batches] == [[(a, 10)], [(a, 5), (b, 5)], [(b, 10)]]
    completion = Completion()
    assert completion.batch_done(batches[1].slices, sent("G2"), AT) == []  # a waits for its first slice
    assert [g.requests for g in completion.batch_done(batches[2].slices, sent("G3"), AT)] == [[b]]
    assert [g.requests for g in completion.batch_done(batches[0].slices, sent("G1"), AT)] == [[a]]


def test_every_request_the_batcher_places_is_settled_exactly_once() -> None:
    """Batcher and Completion together, on a random mix (one-recipient requests on the fast path,
    requests that close a batch, requests split across batches), batches settled in random order:
    each request gets one result, carrying all its recipients."""
    import random

    rng = random.Random(7)
    batcher = Batcher(10, 1.0, clock=FakeClock())
    requests = [make_request(rng.choice([1, 1, 1, 2, 4, 9, 10, 11, 23])) for _ in range(300)]
    batches = [b for r in requests for b in batcher.add(r)] + batcher.flush()
    rng.shuffle(batches)
    completion = Completion()
    settled = [r for b in batches for g in completion.batch_done(b.slices, sent(batch=b.batch_id), AT) for r in g.requests]
    assert sorted(id(r) for r in settled) == sorted(id(r) for r in requests)
    for request in requests:
        assert request.parts == sum(1 for b in batches for s in b.slices if s.request is request)


def test_now_ms_is_the_wall_clock_in_milliseconds() -> None:
    """What a result's completed_at_ms says."""
    import time

    from consumer.completion import now_ms

    before = int(time.time() * 1000)
    stamp = now_ms()
    assert before <= stamp <= int(time.time() * 1000)
