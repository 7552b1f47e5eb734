"""consumer.admission: the decision for a request taken in, and the waiting room."""

from __future__ import annotations

import pytest

from consumer.admission import Action, Policy, WaitingRoom, decide, wants_evidence
from consumer.fingerprint import fingerprint
from consumer.ledger import CLAIMED, DONE, IN_FLIGHT, LedgerEntry
from consumer.models import Source
from tests.fixtures.builders import req, result
from tests.fixtures.clock import FakeClock

NOW = 1_767_225_600.0
POLICY = Policy("me", "resend", 60)


def entry(state: str, owner: str | None = "other", age_s: float = 1.0, request=None, **fields) -> LedgerEntry:
    return LedgerEntry(state, owner, NOW - age_s, fields.pop("result", None), fingerprint(request or req("a")), **fields)


def test_a_request_just_claimed_is_sent_unless_expired() -> None:
    assert decide(req("a"), None, None, POLICY, NOW) is Action.SEND
    late = req("a")
    late.expires_at_ms = int(NOW * 1000) - 1
    assert decide(late, None, None, POLICY, NOW) is Action.EXPIRE


def test_a_copy_of_a_request_on_its_way_here_follows_it() -> None:
    assert decide(req("a"), entry(CLAIMED, "me"), req("a"), POLICY, NOW) is Action.FOLLOW


def test_other_content_under_an_id_on_its_way_here_is_reused() -> None:
    assert decide(req("a", numbers=("2",)), entry(CLAIMED, "me"), req("a"), POLICY, NOW) is Action.REUSED


def test_another_accounts_request_with_the_id_on_its_way_here_waits_for_it() -> None:
    assert decide(req("a", account="two"), None, req("a"), POLICY, NOW) is Action.WAIT


def test_done_is_answered_with_its_result() -> None:
    assert decide(req("a"), entry(DONE, None, 3600, result=result("a")), None, POLICY, NOW) is Action.ANSWER


@pytest.mark.parametrize("state", [CLAIMED, IN_FLIGHT, DONE])
def test_an_id_used_before_for_other_content_is_reused(state: str) -> None:
    other = req("a", numbers=("8613900000009",))
    assert decide(other, entry(state, result=result("a")), None, POLICY, NOW) is Action.REUSED


@pytest.mark.parametrize("state", [CLAIMED, IN_FLIGHT])
def test_a_fresh_mark_of_another_instance_is_waited_for(state: str) -> None:
    assert decide(req("a"), entry(state, age_s=59), None, POLICY, NOW) is Action.WAIT


def test_a_stale_claim_is_taken_over_whatever_the_policy() -> None:
    for policy in ("resend", "fail"):
        assert decide(req("a"), entry(CLAIMED, age_s=61), None, POLICY._replace(inflight_policy=policy), NOW) is Action.TAKE_OVER


def test_a_stale_mark_in_flight_follows_the_policy() -> None:
    stale = entry(IN_FLIGHT, age_s=61)
    assert decide(req("a"), stale, None, POLICY, NOW) is Action.RESEND
    assert decide(req("a"), stale, None, POLICY._replace(inflight_policy="fail"), NOW) is Action.FAIL


RECEIPTS = POLICY._replace(inflight_policy="receipts", receipts_wait_s=30)


def test_under_receipts_a_stale_mark_in_flight_is_settled_by_a_receipt_for_its_call() -> None:
    stale = entry(IN_FLIGHT, age_s=61, task_id="t1")
    assert wants_evidence(stale, RECEIPTS, NOW)
    assert decide(req("a"), stale, None, RECEIPTS, NOW, receipted=True) is Action.SETTLE


def test_under_receipts_without_a_receipt_it_waits_then_is_resent() -> None:
    assert decide(req("a"), entry(IN_FLIGHT, age_s=61, task_id="t1"), None, RECEIPTS, NOW) is Action.WAIT
    assert decide(req("a"), entry(IN_FLIGHT, age_s=90, task_id="t1"), None, RECEIPTS, NOW) is Action.WAIT
    assert decide(req("a"), entry(IN_FLIGHT, age_s=91, task_id="t1"), None, RECEIPTS, NOW) is Action.RESEND
    assert decide(req("a"), entry(IN_FLIGHT, age_s=91, task_id="t1"), None, RECEIPTS, NOW, receipted=True) is Action.SETTLE, "a late receipt still counts"


def test_under_receipts_a_mark_without_a_task_id_is_resent_at_once() -> None:
    stale = entry(IN_FLIGHT, age_s=61)
    assert not wants_evidence(stale, RECEIPTS, NOW)
    assert decide(req("a"), stale, None, RECEIPTS, NOW) is Action.RESEND


def test_evidence_is_wanted_only_for_a_stale_mark_in_flight_with_a_task_id_under_receipts() -> None:
    assert not wants_evidence(None, RECEIPTS, NOW)
    assert not wants_evidence(entry(IN_FLIGHT, age_s=59, task_id="t1"), RECEIPTS, NOW), "its owner lives"
    assert not wants_evidence(entry(CLAIMED, age_s=61, task_id="t1"), RECEIPTS, NOW)
    assert not wants_evidence(entry(IN_FLIGHT, age_s=61, task_id="t1"), POLICY, NOW)
    assert decide(req("a"), entry(IN_FLIGHT, age_s=59, task_id="t1"), None, RECEIPTS, NOW, receipted=True) is Action.WAIT, "a live owner's call is its own"


def test_under_receipts_an_orphaned_mark_of_this_instance_is_settled_or_resent_at_once() -> None:
    orphan = entry(IN_FLIGHT, "", age_s=NOW, task_id="t1")  # released: no owner, written at 0
    assert decide(req("a"), orphan, None, RECEIPTS, NOW, receipted=True) is Action.SETTLE
    assert decide(req("a"), orphan, None, RECEIPTS, NOW) is Action.RESEND


def test_a_mark_of_this_instance_for_a_request_it_no_longer_holds_is_stale() -> None:
    assert decide(req("a"), entry(CLAIMED, "me", age_s=0), None, POLICY, NOW) is Action.TAKE_OVER
    assert decide(req("a"), entry(IN_FLIGHT, "me", age_s=0), None, POLICY, NOW) is Action.RESEND


def test_an_entry_of_old_without_a_fingerprint_is_trusted() -> None:
    assert decide(req("a"), entry(DONE, None, result=result("a"))._replace(fingerprint=None), None, POLICY, NOW) is Action.ANSWER


def test_waiting_room_gives_requests_back_after_their_pause_and_drops_revoked_ones() -> None:
    clock = FakeClock()
    room = WaitingRoom(every_s=0.5, clock=clock)
    kept, revoked = req("a"), req("b")
    revoked.source = Source("t", 1, 0, 0)
    room.hold(kept)
    room.hold(revoked)
    assert room.due() == [] and len(room) == 2
    assert room.drop(lambda s: s.partition == 1) == 1
    clock.advance(0.5)
    assert room.due() == [kept] and len(room) == 0


def test_a_request_expiring_at_this_very_millisecond_is_expired() -> None:
    request = req("a")
    request.expires_at_ms = int(NOW * 1000)
    assert decide(request, None, None, POLICY, NOW) is Action.EXPIRE
    request.expires_at_ms = int(NOW * 1000) + 1
    assert decide(request, None, None, POLICY, NOW) is Action.SEND


def test_done_without_a_result_is_taken_over_not_answered() -> None:
    assert decide(req("a"), entry(DONE, None, 3600), None, POLICY, NOW) is Action.TAKE_OVER
    assert decide(req("a"), entry(DONE, "other", 1), None, POLICY, NOW) is Action.TAKE_OVER  # nothing to wait for


@pytest.mark.parametrize("state", [CLAIMED, IN_FLIGHT])
def test_a_mark_exactly_as_old_as_the_stale_bound_is_still_waited_for(state: str) -> None:
    assert decide(req("a"), entry(state, age_s=60), None, POLICY, NOW) is Action.WAIT
