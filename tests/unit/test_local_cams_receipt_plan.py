"""The local CAMS endpoint's receipt schedule, pure: which reports a call produces and when, how
due reports are cut into POSTs, when failed pushes are retried, and which settings are refused."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from chatapp_devkit.local_cams.receipt_plan import Batcher, Planned, Planner, message_id, retry_time
from chatapp_devkit.local_cams.receipt_pusher import ReceiptPusher, ReceiptRecord
from chatapp_devkit.local_cams.receipt_settings import ReceiptSettings

PARAMS = {"From": "8613877770000", "TemplateCode": "T_OK", "Language": "en", "TaskId": "task-7"}
T0 = 1_800_000_000.0


def numbers(count: int) -> list[str]:
    return [f"86138{k:08d}" for k in range(count)]


def settings(**changes: object) -> ReceiptSettings:
    return ReceiptSettings().updated({"callback_url": "http://127.0.0.1:1/chatapp/status/t", **changes})


def within(observed: int, trials: int, share: float) -> bool:
    """``observed`` successes of ``trials`` draws at ``share`` lie within 5 standard deviations."""
    return abs(observed - trials * share) <= 5 * math.sqrt(trials * share * (1 - share)) + 1


def test_each_recipient_gets_sent_then_delivered_and_read_for_the_share() -> None:
    plan = Planner(settings(read_rate=0.3, delays_ms={"Sent": 100, "Delivered": 300, "Read": 1000})).plan(PARAMS, numbers(2000), T0, 0)
    assert not plan.lost
    by_message: dict[str, list[Planned]] = {}
    for planned in plan.planned:
        by_message.setdefault(planned.report["MessageId"], []).append(planned)
    assert len(by_message) == 2000, "one MessageId per recipient, shared by its statuses"
    reads = 0
    for reports in by_message.values():
        statuses = [planned.report["Status"] for planned in reports]
        assert statuses in (["Sent", "Delivered"], ["Sent", "Delivered", "Read"])
        reads += len(statuses) == 3
        assert [planned.due for planned in reports] == [T0 + 0.1, T0 + 0.3, T0 + 1.0][: len(reports)]
        assert [planned.report["Timestamp"] for planned in reports] == [int(planned.due * 1000) for planned in reports]
        assert {planned.report["To"] for planned in reports} == {reports[0].report["To"]}
    assert within(reads, 2000, 0.3), reads


def test_reports_carry_the_fields_cams_pushes() -> None:
    [sent, delivered] = Planner(settings(read_rate=0)).plan(PARAMS, ["8613800000001"], T0, 41).planned
    assert sent.report == {
        "Status": "Sent",
        "StatusDescription": "The message was sent.",
        "MsgFrameType": "template",
        "Type": "TEMPLATE",
        "TaskId": "task-7",
        "From": "8613877770000",
        "To": "8613800000001",
        "Timestamp": int((T0 + 0.1) * 1000),
        "OriginPhoneNumber": "8613877770000",
        "Language": "en",
        "MessageId": message_id(T0, 41),
        "TemplateCode": "T_OK",
        "ConversationId": sent.report["ConversationId"],
        "ConversationType": "marketing",
    }
    assert delivered.report["ConversationId"] == sent.report["ConversationId"] and len(sent.report["ConversationId"]) == 16


def test_without_a_task_id_the_task_id_is_the_message_id() -> None:
    params = {key: value for key, value in PARAMS.items() if key != "TaskId"}
    plan = Planner(settings()).plan(params, numbers(3), T0, 0)
    assert all(planned.report["TaskId"] == planned.report["MessageId"] for planned in plan.planned)


def test_message_ids_are_unique_across_calls_and_24_digits() -> None:
    planner = Planner(settings(read_rate=0))
    ids = {planned.report["MessageId"] for start in (0, 1000) for planned in planner.plan(PARAMS, numbers(1000), T0, start).planned}
    assert len(ids) == 2000 and all(len(mid) == 24 and mid.isdigit() for mid in ids)
    sents = [p.report for p in planner.plan(PARAMS, numbers(3), T0, 500).planned if p.report["Status"] == "Sent"]
    assert [report["MessageId"] for report in sents] == [message_id(T0, 500 + k) for k in range(3)]
    assert message_id(T0, 500) == f"{int(T0 * 1000)}00000000500"


def test_numbers_matching_a_rule_get_one_failed_report_with_the_code() -> None:
    rules = [{"regex": r".*99", "code": "131026"}, {"regex": r"\d*8", "code": "131050"}, {"regex": ".*7", "code": "X1", "description": "custom"}]
    plan = Planner(settings(failures=rules)).plan(PARAMS, numbers(200), T0, 0)
    failed = {planned.report["To"]: planned.report for planned in plan.planned if planned.report["Status"] == "Failed"}
    assert sorted(failed) == sorted(n for n in numbers(200) if n.endswith(("99", "8", "7")))
    for to, report in failed.items():
        assert [p.report["Status"] for p in plan.planned if p.report["To"] == to] == ["Failed"], "Failed alone: no Sent"
        code = "131026" if to.endswith("99") else "131050" if to.endswith("8") else "X1"
        assert report["ErrorCode"] == code
        assert report["ErrorDescription"].startswith(f"{code}:") and len(report["ErrorDescription"]) > len(code) + 1
        assert "ConversationId" not in report
    assert failed["8613800000199"]["ErrorDescription"] == "131026:Receiver is incapable of receiving this message(Message Undeliverable.)"


def test_losses_and_duplicates_at_their_shares() -> None:
    plan = Planner(settings(read_rate=0, loss_rate=0.1, duplicate_rate=0.2, duplicate_after_ms=500)).plan(PARAMS, numbers(3000), T0, 0)
    reports = 2 * 3000
    assert within(len(plan.lost), reports, 0.1), len(plan.lost)
    copies = Counter((p.report["MessageId"], p.report["Status"]) for p in plan.planned)
    assert not set(copies) & {(r["MessageId"], r["Status"]) for r in plan.lost}, "a lost report is not pushed at all"
    assert len(copies) + len(plan.lost) == reports
    assert within(sum(count == 2 for count in copies.values()), len(copies), 0.2)
    firsts = {(p.report["MessageId"], p.report["Status"]): p.due for p in plan.planned if p.copy == 1}
    seconds = [p for p in plan.planned if p.copy == 2]
    assert len(firsts) == len(copies) and len(seconds) == sum(count == 2 for count in copies.values())
    for planned in seconds:
        assert planned.due == pytest.approx(firsts[(planned.report["MessageId"], planned.report["Status"])] + 0.5, abs=1e-6)


def test_reordered_recipients_get_later_statuses_pushed_first_with_true_timestamps() -> None:
    plan = Planner(settings(read_rate=0.5, reorder_rate=0.25)).plan(PARAMS, numbers(2000), T0, 0)
    by_message: dict[str, list[Planned]] = {}
    for planned in plan.planned:
        by_message.setdefault(planned.report["MessageId"], []).append(planned)
    reversed_count = two_reversed = 0
    for reports in by_message.values():
        assert [p.report["Status"] for p in reports] in (["Sent", "Delivered"], ["Sent", "Delivered", "Read"]), "reordering drops nothing"
        assert [p.report["Timestamp"] for p in reports] == sorted(p.report["Timestamp"] for p in reports)
        dues = [p.due for p in reports]
        assert dues in (sorted(dues), sorted(dues, reverse=True))
        reversed_count += dues == sorted(dues, reverse=True)
        two_reversed += len(dues) == 2 and dues[0] > dues[1]
    assert within(reversed_count, 2000, 0.25), reversed_count
    assert two_reversed > 100, "recipients without Read are reordered too"


def test_jitter_never_makes_a_later_status_happen_earlier() -> None:
    plan = Planner(settings(read_rate=1.0, jitter_ms=5000, delays_ms={"Sent": 0, "Delivered": 1, "Read": 2})).plan(PARAMS, numbers(500), T0, 0)
    by_message: dict[str, list[int]] = {}
    for planned in plan.planned:
        by_message.setdefault(planned.report["MessageId"], []).append(planned.report["Timestamp"])
    assert all(stamps == sorted(stamps) for stamps in by_message.values())
    assert all(int(T0 * 1000) <= stamp <= int(T0 * 1000) + 2 + 5000 for stamps in by_message.values() for stamp in stamps), "jitter adds 0..jitter_ms"
    assert any(len(set(stamps)) == 3 for stamps in by_message.values())


def test_the_same_seed_plans_the_same_reports() -> None:
    options = {"read_rate": 0.5, "loss_rate": 0.1, "duplicate_rate": 0.1, "reorder_rate": 0.1, "jitter_ms": 50, "seed": 7}
    first, second = (Planner(settings(**options)).plan(PARAMS, numbers(300), T0, 0) for _ in range(2))
    assert first == second


def planned(due: float, to: str = "1") -> Planned:
    return Planned(due, 1, {"To": to, "due": due})


def test_a_full_post_goes_at_once_and_a_partial_one_after_the_flush_interval() -> None:
    batcher = Batcher()
    for k in range(7):
        batcher.add(planned(10.0 + k * 0.001, str(k)))
    assert batcher.take(9.99, 3, 0.2) == [], "nothing is due yet"
    assert batcher.next_time(0.2) == 10.0
    assert [p.report["To"] for p in batcher.take(10.01, 3, 0.2)] == ["0", "1", "2"]
    assert [p.report["To"] for p in batcher.take(10.01, 3, 0.2)] == ["3", "4", "5"]
    assert batcher.take(10.01, 3, 0.2) == [], "one report due: it waits for more or for the flush interval"
    assert batcher.next_time(0.2) == pytest.approx(10.006 + 0.2)
    assert [p.report["To"] for p in batcher.take(10.207, 3, 0.2)] == ["6"]
    assert len(batcher) == 0 and batcher.next_time(0.2) is None


def test_reports_leave_in_due_order_whatever_order_they_were_added() -> None:
    batcher = Batcher()
    for label, due in (("a", 3.0), ("b", 1.0), ("c", 2.0), ("d", 1.0), ("e", 1.0)):
        batcher.add(planned(due, label))
    assert len(batcher) == 5
    assert [p.report["To"] for p in batcher.take(5.0, 10, 0.0)] == ["b", "d", "e", "c", "a"], "ties in the order added"


def test_the_edges_are_inclusive() -> None:
    """Due at ``now`` counts as due; exactly ``max_per_post`` due fills a POST; a partial one goes
    exactly ``flush_s`` after its oldest report was due."""
    batcher = Batcher()
    for label, due in (("a", 10.0), ("b", 10.0), ("c", 10.5), ("d", 12.0)):
        batcher.add(planned(due, label))
    assert [p.report["To"] for p in batcher.take(10.0, 2, 5.0)] == ["a", "b"]
    assert batcher.take(10.5, 2, 0.25) == [] and len(batcher) == 2, "c is due, alone, not yet flushed; d waits"
    assert batcher.next_time(0.25) == 10.75, "the sooner of c's flush and d's due"
    assert batcher.next_time(5.0) == 12.0
    assert [p.report["To"] for p in batcher.take(10.75, 2, 0.25)] == ["c"]


def test_retries_follow_the_delays_then_stop() -> None:
    delays = [1.0, 5.0, 10.0]
    assert [retry_time(attempts, 100.0, delays) for attempts in (1, 2, 3, 4)] == [101.0, 105.0, 110.0, None]
    assert retry_time(1, 100.0, []) is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"callback_url": "ftp://x/y"}, "callback_url"),
        ({"callback_url": "not a url"}, "callback_url"),
        ({"max_per_post": 0}, "max_per_post"),
        ({"read_rate": 1.5}, "read_rate"),
        ({"loss_rate": -0.1}, "loss_rate"),
        ({"delays_ms": {"Seen": 1}}, "delays_ms"),
        ({"failures": [{"regex": "(", "code": "131026"}]}, "failures"),
        ({"failures": [{"regex": ".*", "code": "999999"}]}, "failures"),
        ({"retry_delays_s": [1] * 21}, "retry_delays_s"),
        ({"conversation_type": "spam"}, "conversation_type"),
        ({"push_timeout_s": 0}, "push_timeout_s"),
        ({"callbackUrl": "http://x/"}, "unknown"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ReceiptSettings().updated(changes)


def test_off_by_default_and_a_partial_delay_update_keeps_the_others() -> None:
    assert ReceiptSettings().callback_url is None
    updated = ReceiptSettings().updated({"delays_ms": {"Read": 5000}})
    assert updated.delays_ms == {**ReceiptSettings().delays_ms, "Read": 5000.0}


def test_pending_reports_are_bounded_and_the_log_keeps_the_latest() -> None:
    """The pusher's bounds, its thread not started: calls beyond ``max_pending`` recipients waiting
    are dropped and counted; the log keeps ``log_limit`` entries and keeps counting indexes."""
    pusher = ReceiptPusher(settings(max_pending=100, log_limit=3, loss_rate=1.0))
    pusher.submit(PARAMS, numbers(60), T0)
    pusher.submit(PARAMS, numbers(60), T0)
    stats = pusher.snapshot()["stats"]
    assert (stats["pending"], stats["overflow_recipients"]) == (60, 60)
    pusher.set(callback_url=None)
    pusher.submit(PARAMS, numbers(10), T0)
    assert pusher.snapshot()["stats"]["pending"] == 60, "no callback URL: nothing queued"
    record = ReceiptRecord()
    for k in range(5):
        record.settle("lost", {"MessageId": str(k), "TaskId": "t", "To": "1", "Status": "Sent", "Timestamp": 0}, 1, 0, limit=3)
    assert [entry["index"] for entry in record.entries(0, None)] == [2, 3, 4]
    assert [entry["index"] for entry in record.entries(3, 1)] == [3]
    assert record.entries(5, None) == []
