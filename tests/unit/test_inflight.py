"""consumer.inflight: the book of requests on their way, their followers, the buffer counters
and the back-pressure decision."""

from __future__ import annotations

from consumer.backpressure import BufferBound
from consumer.inflight import InFlightBook
from consumer.models import BatchKey, SendRequest, Settled, SliceOutcome, Source, Status

KEY = BatchKey("default", "whatsapp", "t", None, "en", "8613800000000", None, None, None, None, None, None, None, None, None)


def make_request(recipients: int, request_id: str = "r") -> SendRequest:
    return SendRequest(request_id, KEY, [{"to": f"86139{i:08d}"} for i in range(recipients)], None)


def _source(partition: int, offset: int = 0) -> Source:
    return Source("requests", partition, offset, 0)


def test_a_finished_group_unbooks_its_requests_and_answers_their_followers() -> None:
    book = InFlightBook(BufferBound(100, 0, 10), 1 << 20)
    request = make_request(3, "r1")
    request.size_bytes = 40
    book.hold(request)
    book.follow("r1", _source(1, 7))
    book.follow("r1", _source(2, 9))
    assert (book.recipients, book.bytes, book.pending("r1")) == (3, 40, request)
    copies = book.finished(Settled(SliceOutcome(Status.SENT, "OK", None), 1, [request]), 0.0)
    assert [(c.requests[0].request_id, c.requests[0].source.partition) for c in copies] == [("r1", 1), ("r1", 2)]
    assert (book.recipients, book.bytes, book.pending("r1")) == (0, 0, None)
    assert book.finished(Settled(SliceOutcome(Status.SENT, "OK", None), 1, [request]), 0.0) == []  # followers answered once


def test_an_abandoned_request_is_replaced_by_a_follower_on_a_partition_still_kept() -> None:
    book = InFlightBook(BufferBound(100, 0, 10), 1 << 20)
    first = make_request(1, "a")
    first.source = _source(0)
    other = make_request(2, "b")
    other.source = _source(0, 1)
    book.hold(first, [_source(0, 5), _source(1, 3), _source(1, 4)])
    book.hold(other)
    replacements, released = book.abandoned([first, other], kept=lambda source: source.partition == 1)
    assert [(r.request_id, r.source.offset, [f.offset for f in followers]) for r, followers in replacements] == [("a", 3, [4])]
    assert [r.request_id for r in released] == ["b"]
    assert book.recipients == 0  # unbooked: the caller holds the replacement (Pipeline.hold)
    ((replacement, followers),) = replacements
    book.hold(replacement, followers)
    assert book.recipients == 1
    copies = book.finished(Settled(SliceOutcome(Status.SENT, "OK", None), 1, [replacement]), 0.0)
    assert [c.requests[0].source.offset for c in copies] == [4]  # the other kept follower still gets the answer


def test_pressure_pauses_at_the_bounds_and_resumes_below_three_quarters() -> None:
    book = InFlightBook(BufferBound(8, 0, 1), 1000)
    requests = [make_request(2, f"r{i}") for i in range(4)]
    for request in requests[:3]:
        book.hold(request)
    assert book.pressure(0.0, 0) is None
    book.hold(requests[3])
    assert book.pressure(0.0, 0) is True and book.paused
    assert book.pressure(0.0, 0) is None  # already paused
    book.finished(Settled(SliceOutcome(Status.SENT, "OK", None), 1, requests[:1]), 0.0)
    assert book.pressure(0.0, 0) is None  # 6 of 8: not below three quarters
    book.finished(Settled(SliceOutcome(Status.SENT, "OK", None), 1, requests[1:2]), 0.0)
    assert book.pressure(0.0, 0) is False and not book.paused
    assert book.pressure(0.0, 1000) is True  # bytes held elsewhere (records answered at intake) count too


def test_a_request_without_followers_finishes_while_another_has_some() -> None:
    book = InFlightBook(BufferBound(100, 0, 10), 1 << 20)
    followed, alone = make_request(1, "f"), make_request(1, "a")
    book.hold(followed, [_source(1, 7)])
    book.hold(alone)
    assert book.finished(Settled(SliceOutcome(Status.SENT, "OK", None), 1, [alone]), 0.0) == []
    copies = book.finished(Settled(SliceOutcome(Status.SENT, "OK", None), 1, [followed]), 0.0)
    assert [(c.requests[0].request_id, c.requests[0].source.offset) for c in copies] == [("f", 7)]


def test_abandoned_requests_release_their_bytes_and_fetching_resumes() -> None:
    book = InFlightBook(BufferBound(100, 0, 10), 100)
    kept, dropped = make_request(1, "k"), make_request(1, "d")
    kept.size_bytes, dropped.size_bytes = 60, 50
    dropped.source = _source(3)
    book.hold(kept)
    book.hold(dropped)
    assert book.pressure(0.0, 0) is True  # 110 of 100 bytes
    assert book.abandoned([dropped], kept=lambda source: False) == ([], [dropped])
    assert (book.recipients, book.bytes) == (1, 60)
    assert book.pressure(0.0, 0) is False  # 60 bytes: below three quarters of 100


def test_pressure_on_bytes_pauses_at_the_bound_and_resumes_only_below_three_quarters() -> None:
    book = InFlightBook(BufferBound(100, 0, 10), 100)
    request = make_request(1, "r")
    request.size_bytes = 50
    book.hold(request)
    assert book.pressure(0.0, 49) is None  # 99 of 100 bytes
    assert book.pressure(0.0, 50) is True  # 100: at the bound
    assert book.pressure(0.0, 25) is None  # 75: three quarters exactly, not below
    assert book.pressure(0.0, 24) is False  # 74
