"""consumer.bisection: which requests a refusal names, and the share of calls bisection may take."""

from __future__ import annotations

from consumer.bisection import BisectionBudget, named_offenders
from consumer.models import Batch, BatchKey, SendRequest, Slice

KEY = BatchKey("default", "whatsapp", "t", None, "en", "8613800000000", None, None, None, None, None, None, None, None, None)


def _batch(*numbers: str) -> Batch:
    slices = []
    for i, number in enumerate(numbers):
        request = SendRequest(f"r{i}", KEY, [{"to": number}], None)
        slices.append(Slice(request, request.recipients))
    return Batch("b", KEY, slices, len(slices))


def test_named_offenders_are_the_slices_whose_number_the_message_names() -> None:
    batch = _batch("8613900000001", "+8613900000002", "8613900000003")
    assert [s.request.request_id for s in named_offenders(batch, "Specified parameter To 8613900000002 is not valid.")] == ["r1"]
    assert [s.request.request_id for s in named_offenders(batch, "bad: +8613900000003")] == ["r2"]
    assert named_offenders(batch, "Specified parameter SenderList is not valid.") == []
    assert named_offenders(batch, None) == []
    # naming all of them tells nothing a whole failure would not
    assert named_offenders(batch, "8613900000001 8613900000002 8613900000003") == []
    assert named_offenders(_batch("8613900000001"), "8613900000001") == []


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bisection_is_within_its_share_of_the_calls_over_the_window() -> None:
    clock = Clock()
    budget = BisectionBudget(share=0.2, burst=4, window_s=10.0, clock=clock)
    for _ in range(5):
        assert budget.within_share("a")  # 4 bisection calls of 4 calls: 4 < 4 + 0.2 x 4
        budget.called("a", bisection=True)
    assert not budget.within_share("a")  # 5 of 5: 5 < 4 + 0.2 x 5 is false
    for _ in range(20):
        budget.called("a", bisection=False)
    for _ in range(5):
        assert budget.within_share("a")  # up to 9 of 29: 9 < 4 + 0.2 x 29
        budget.called("a", bisection=True)
    assert not budget.within_share("a")  # 10 of 30
    assert budget.within_share("b")  # accounts are apart
    clock.now = 11.0  # the window moved on
    assert budget.within_share("a")


def test_in_a_batch_of_two_the_named_one_is_the_offender() -> None:
    batch = _batch("8613900000001", "8613900000002")
    assert [s.request.request_id for s in named_offenders(batch, "To 8613900000002 is not valid.")] == ["r1"]


def test_numbers_of_six_digits_or_more_are_named_shorter_ones_are_not_told_from_other_numbers() -> None:
    batch = _batch("123456", "12345", "8613900000003")
    assert [s.request.request_id for s in named_offenders(batch, "To 123456 is not valid.")] == ["r0"]
    assert named_offenders(batch, "To 12345 is not valid.") == []  # too short to be sure it is a recipient


def test_a_call_exactly_a_window_old_still_counts() -> None:
    clock = Clock()
    budget = BisectionBudget(share=0.0, burst=1, window_s=10.0, clock=clock)
    budget.called("a", bisection=True)
    clock.now = 10.0
    assert not budget.within_share("a")  # the window is the last 10 s, both ends included
    clock.now = 10.5
    assert budget.within_share("a")
