"""The local CAMS endpoint's delivery receipts over real loopback HTTP: the endpoint in its own
process takes signed calls and pushes ChatAppStatus arrays to a receiver in this test, which
records every POST. Judged from what the receiver got, checked against the endpoint's
``/_admin/receipts`` record (what it says it planned, lost, duplicated, retried).
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chatapp_devkit.local_cams import LocalCams, LocalCamsServer
from chatapp_devkit.processes import child_env

from consumer.cams.client import CamsClient, StaticCredentials, build_http_client
from tests.fixtures.builders import avro_recipient, make_key
from tests.fixtures.cams import FROM, TEST_KEY_ID, TEST_SECRET, call, number, send_query
from tests.fixtures.receipt_receiver import DROP, TOKEN, ReceiptReceiver
from tests.fixtures.service import wait_for

pytestmark = pytest.mark.timeout(180)

FAST = {"delays_ms": {"Sent": 50, "Delivered": 150, "Read": 300, "Failed": 100}, "flush_interval_ms": 100}
WAIT_S = 60.0

StartCams = Callable[..., LocalCams]


@pytest.fixture
def start_cams(receipt_receiver: ReceiptReceiver) -> Iterator[StartCams]:
    """Start the endpoint (no rate limit) pushing to ``receipt_receiver`` with these receipt settings."""
    started: list[LocalCams] = []

    def start(**receipts: Any) -> LocalCams:
        cams = LocalCams.start({TEST_KEY_ID: TEST_SECRET}, rate_limit=0, timeout=15.0, receipts={"callback_url": receipt_receiver.url, **receipts})
        started.append(cams)
        return cams

    yield start
    for cams in started:
        cams.stop(timeout=10.0)


def accept(cams: LocalCams, recipients: int, first: int = 0, **params: Any) -> float:
    """One accepted call; answers when it was sent."""
    sent_at = time.time()
    response = call(cams.url, send_query(recipients=recipients, first=first, **params))
    assert response.status_code == 200 and response.json()["Code"] == "OK", response.text
    return sent_at


def settled(cams: LocalCams, planned: int) -> Callable[[], bool]:
    """True once at least ``planned`` reports are planned and none is waiting to be pushed."""

    def check() -> bool:
        stats = cams.receipts(limit=0)["stats"]
        return bool(stats["planned"] >= planned and stats["pending"] == 0)

    return check


def within(observed: int, trials: int, share: float) -> bool:
    """``observed`` of ``trials`` draws at ``share`` lie within 5 standard deviations (+1)."""
    return abs(observed - trials * share) <= 5 * math.sqrt(trials * share * (1 - share)) + 1


def by_recipient(reports: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for report in reports:
        grouped[report["To"]].append(report)
    return grouped


def test_accepted_recipients_get_sent_then_delivered_then_read_for_a_share_in_arrays(start_cams: StartCams, receipt_receiver: ReceiptReceiver) -> None:
    cams = start_cams(**FAST, max_per_post=25, read_rate=0.4, failures=[{"regex": r"\d*7", "code": "131026"}])
    started = accept(cams, 300, TaskId="task-A")
    accept(cams, 200, first=300)  # no TaskId: CAMS fills in the MessageId
    rejected = call(cams.url, send_query(recipients=50, first=1000), secret="wrong-secret")
    assert rejected.status_code == 400
    failing = {number(k) for k in range(500) if number(k).endswith("7")}
    expected = 2 * 500 - len(failing)  # Sent + Delivered, or Failed alone (Read counted below)
    assert wait_for(settled(cams, expected), WAIT_S), cams.receipts(limit=0)["stats"]

    posts = receipt_receiver.posts
    assert all(post.path == f"/chatapp/status/{TOKEN}" and post.status == 200 for post in posts)
    assert all(isinstance(post.body, list) and 1 <= len(post.body) <= 25 for post in posts)
    assert max(len(post.body) for post in posts) == 25, "reports are batched, up to max_per_post a POST"
    reports = receipt_receiver.accepted_reports()
    grouped = by_recipient(reports)
    assert set(grouped) == {number(k) for k in range(500)}, "every accepted recipient, none of the rejected call"
    reads = 0
    for to, mine in grouped.items():
        statuses = [report["Status"] for report in mine]
        assert len({report["MessageId"] for report in mine}) == 1
        task_id = "task-A" if int(to[5:]) < 300 else mine[0]["MessageId"]
        assert all(report["TaskId"] == task_id and report["From"] == FROM and report["TemplateCode"] == "T_OK" for report in mine)
        assert all(report["Timestamp"] >= int(started * 1000) for report in mine)
        if to in failing:
            [failed] = mine
            assert statuses == ["Failed"] and failed["ErrorCode"] == "131026"
            assert failed["ErrorDescription"] == "131026:Receiver is incapable of receiving this message(Message Undeliverable.)"
            continue
        assert statuses in (["Sent", "Delivered"], ["Sent", "Delivered", "Read"]), (to, statuses)
        assert [report["Timestamp"] for report in mine] == sorted(report["Timestamp"] for report in mine)
        assert all(report["ConversationType"] == "marketing" and report["ConversationId"] for report in mine)
        reads += len(statuses) == 3
    assert within(reads, 500 - len(failing), 0.4), reads
    assert len({mine[0]["MessageId"] for mine in grouped.values()}) == 500, "MessageId unique per recipient message"

    record = cams.receipts()
    stats = record["stats"]
    assert stats["planned"] == stats["reports_acknowledged"] == len(reports) == expected + reads
    assert stats["posts"] == stats["posts_acknowledged"] == len(posts) and stats["retried"] == stats["posts_failed"] == 0
    assert stats["acknowledged_by_status"] == dict(Counter(report["Status"] for report in reports))
    logged = Counter((entry["MessageId"], entry["TaskId"], entry["To"], entry["Status"]) for entry in record["log"] if entry["fate"] == "acknowledged")
    assert logged == Counter((r["MessageId"], r["TaskId"], r["To"], r["Status"]) for r in reports)


def test_off_without_a_callback_url_then_on_at_run_time(local_cams: LocalCams, receipt_receiver: ReceiptReceiver) -> None:
    assert local_cams.receipts()["settings"]["callback_url"] is None
    response = call(local_cams.url, send_query(recipients=20))
    assert response.json()["Code"] == "OK"
    assert local_cams.receipts()["stats"]["planned"] == 0, "no callback URL: nothing planned"
    settings = local_cams.set_receipts(callback_url=receipt_receiver.url, **FAST)
    assert settings["callback_url"] == receipt_receiver.url
    response = call(local_cams.url, send_query(recipients=20, first=100))
    assert response.json()["Code"] == "OK"
    assert wait_for(settled(local_cams, 40), WAIT_S)
    assert {report["To"] for report in receipt_receiver.accepted_reports()} == {number(100 + k) for k in range(20)}


def test_losses_duplicates_and_reordering_at_their_shares(start_cams: StartCams, receipt_receiver: ReceiptReceiver) -> None:
    cams = start_cams(**FAST, max_per_post=200, read_rate=0, loss_rate=0.1, duplicate_rate=0.2, duplicate_after_ms=300, reorder_rate=0.3)
    for first in (0, 1000, 2000):
        accept(cams, 1000, first=first, TaskId=f"task-{first}")
    reports = 2 * 3000
    assert wait_for(settled(cams, reports), WAIT_S), cams.receipts(limit=0)["stats"]

    record = cams.receipts()
    lost = {(entry["MessageId"], entry["Status"]) for entry in record["log"] if entry["fate"] == "lost"}
    assert record["stats"]["dropped_by_loss"] == len(lost) and within(len(lost), reports, 0.1), len(lost)
    received = receipt_receiver.accepted_reports()
    copies = Counter((report["MessageId"], report["Status"]) for report in received)
    assert not lost & set(copies), "a lost report never arrives"
    assert len(copies) + len(lost) == reports, "every other report arrives"
    twice = {key for key, count in copies.items() if count == 2}
    assert set(copies.values()) <= {1, 2} and within(len(twice), len(copies), 0.2), len(twice)
    assert twice == {(entry["MessageId"], entry["Status"]) for entry in record["log"] if entry["copy"] == 2}
    assert record["stats"]["duplicates"] == len(twice)

    first_seen: dict[str, dict[str, int]] = defaultdict(dict)
    stamps: dict[str, dict[str, int]] = defaultdict(dict)
    for position, report in enumerate(received):
        first_seen[report["MessageId"]].setdefault(report["Status"], position)
        stamps[report["MessageId"]][report["Status"]] = report["Timestamp"]
    both = [mid for mid, seen in first_seen.items() if len(seen) == 2]
    reordered = sum(first_seen[mid]["Delivered"] < first_seen[mid]["Sent"] for mid in both)
    assert within(reordered, len(both), 0.3), (reordered, len(both))
    assert all(stamps[mid]["Sent"] < stamps[mid]["Delivered"] for mid in both), "Timestamps keep the true order"


@pytest.mark.parametrize("failure", [500, 503, DROP], ids=["500", "503", "closed-without-answer"])
def test_a_failed_push_is_repeated_whole_after_the_retry_delays(start_cams: StartCams, receipt_receiver: ReceiptReceiver, failure: int) -> None:
    receipt_receiver.fail_next(2, failure)
    cams = start_cams(delays_ms={"Sent": 0, "Delivered": 0}, flush_interval_ms=300, read_rate=0, retry_delays_s=[0.2, 0.4, 5])
    accept(cams, 5)
    assert wait_for(settled(cams, 10), WAIT_S)
    posts = receipt_receiver.posts
    assert [post.status for post in posts] == [failure, failure, 200]
    assert posts[0].body == posts[1].body == posts[2].body and len(posts[0].body) == 10
    assert posts[1].at - posts[0].at >= 0.2 and posts[2].at - posts[1].at >= 0.4
    record = cams.receipts()
    stats = record["stats"]
    assert (stats["posts"], stats["posts_failed"], stats["retried"], stats["posts_acknowledged"]) == (3, 2, 2, 1)
    assert stats["reports_pushed"] == 30 and stats["reports_acknowledged"] == 10 and stats["abandoned"] == 0
    assert [entry["attempts"] for entry in record["log"]] == [3] * 10


def test_a_receiver_that_is_down_gets_everything_once_it_is_up(start_cams: StartCams, receipt_receiver: ReceiptReceiver) -> None:
    receipt_receiver.down()
    cams = start_cams(**FAST, read_rate=0, retry_delays_s=[0.3] * 20)
    accept(cams, 50)
    assert wait_for(lambda: cams.receipts(limit=0)["stats"]["posts_failed"] >= 2, WAIT_S), "pushes are refused while it is down"
    receipt_receiver.up()
    assert wait_for(settled(cams, 100), WAIT_S), cams.receipts(limit=0)["stats"]
    received = Counter((report["MessageId"], report["Status"]) for report in receipt_receiver.accepted_reports())
    assert len(received) == 100 and set(received.values()) == {1}
    stats = cams.receipts(limit=0)["stats"]
    assert stats["reports_acknowledged"] == 100 and stats["abandoned"] == 0 and stats["retried"] >= 2


def test_retries_are_bounded_then_the_reports_are_abandoned(start_cams: StartCams, receipt_receiver: ReceiptReceiver) -> None:
    receipt_receiver.fail_next(10**6)
    cams = start_cams(delays_ms={"Sent": 0, "Delivered": 0}, flush_interval_ms=200, read_rate=0, retry_delays_s=[0.1, 0.1])
    accept(cams, 3)
    assert wait_for(lambda: cams.receipts(limit=0)["stats"]["abandoned"] == 6, WAIT_S), cams.receipts(limit=0)["stats"]
    assert wait_for(settled(cams, 6), WAIT_S)
    assert [post.status for post in receipt_receiver.posts] == [500, 500, 500], "one push and two retries"
    log = cams.receipts()["log"]
    assert [(entry["fate"], entry["attempts"]) for entry in log] == [("abandoned", 3)] * 6


def test_settings_are_checked_and_reset_restores_the_starting_ones(start_cams: StartCams, receipt_receiver: ReceiptReceiver) -> None:
    cams = start_cams(**FAST, read_rate=0)
    for bad in ({"read_rate": 2}, {"failures": [{"regex": ".*", "code": "999"}]}, {"callback_url": "ftp://x"}, {"nope": 1}):
        with pytest.raises(ValueError):
            cams.set_receipts(**bad)
    cams.set_receipts(read_rate=1.0, max_per_post=1)
    accept(cams, 2)
    assert wait_for(settled(cams, 6), WAIT_S)
    assert all(len(post.body) == 1 for post in receipt_receiver.posts)
    cams.reset()
    after = cams.receipts()
    assert after["settings"]["read_rate"] == 0 and after["settings"]["callback_url"] == receipt_receiver.url
    assert after["stats"]["planned"] == 0 and after["log"] == []


def test_stops_promptly_with_reports_pending(start_cams: StartCams) -> None:
    cams = start_cams(delays_ms={"Sent": 600_000})
    accept(cams, 1000)
    assert wait_for(lambda: cams.receipts(limit=0)["stats"]["planned"] > 0, WAIT_S)
    began = time.monotonic()
    assert cams.stop(timeout=10.0) == 0
    assert time.monotonic() - began < 8.0, "the pushing thread does not hold the process"


def test_bad_receipt_options_stop_the_endpoint_with_a_message() -> None:
    args = [sys.executable, "-m", "chatapp_devkit.local_cams", "--receipts", '{"read_rate": 2}']
    result = subprocess.run(args, capture_output=True, text=True, timeout=30, env=child_env())
    assert result.returncode == 2 and "read_rate" in result.stderr
    args = [sys.executable, "-m", "chatapp_devkit.local_cams", "--receipts-url", "nowhere"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=30, env=child_env())
    assert result.returncode == 2 and "callback_url" in result.stderr


def test_concurrent_pushes_to_a_slow_receiver(start_cams: StartCams, receipt_receiver: ReceiptReceiver) -> None:
    receipt_receiver.delay_s = 0.3
    cams = start_cams(delays_ms={"Sent": 0, "Delivered": 0}, read_rate=0, max_per_post=10, push_concurrency=4)
    accept(cams, 40)
    assert wait_for(settled(cams, 80), WAIT_S), cams.receipts(limit=0)["stats"]
    assert receipt_receiver.most_at_once >= 2, "more than one POST under way at once"
    received = Counter((report["MessageId"], report["Status"]) for report in receipt_receiver.accepted_reports())
    assert len(received) == 80 and set(received.values()) == {1}
    assert cams.receipts(limit=0)["stats"]["posts"] == 8


def test_a_push_unanswered_within_the_timeout_counts_as_failed(start_cams: StartCams, receipt_receiver: ReceiptReceiver) -> None:
    """The receiver answers 200, but after the push timeout: each attempt fails, so the same array
    reaches it once per attempt (what CAMS's repeats look like), then the reports are abandoned."""
    receipt_receiver.delay_s = 0.8
    cams = start_cams(delays_ms={"Sent": 0, "Delivered": 0}, read_rate=0, push_timeout_s=0.2, retry_delays_s=[0.1, 0.1])
    accept(cams, 2)
    assert wait_for(lambda: cams.receipts(limit=0)["stats"]["abandoned"] == 4, WAIT_S), cams.receipts(limit=0)["stats"]
    assert wait_for(lambda: len(receipt_receiver.posts) == 3, WAIT_S)
    posts = receipt_receiver.posts
    assert [post.status for post in posts] == [200] * 3 and posts[0].body == posts[1].body == posts[2].body
    assert cams.receipts(limit=0)["stats"]["posts_failed"] == 3


def test_the_in_process_endpoint_pushes_too(receipt_receiver: ReceiptReceiver) -> None:
    with LocalCamsServer({TEST_KEY_ID: TEST_SECRET}, rate_limit=0, receipts={"callback_url": receipt_receiver.url, **FAST, "read_rate": 0}) as cams:
        response = call(cams.url, send_query(recipients=5, TaskId="in-process"))
        assert response.json()["Code"] == "OK"
        assert wait_for(lambda: cams.receipts(limit=0)["stats"]["reports_acknowledged"] == 10, WAIT_S)
        assert {(r["TaskId"], r["Status"]) for r in receipt_receiver.accepted_reports()} == {("in-process", "Sent"), ("in-process", "Delivered")}
        assert cams.set_receipts(read_rate=1.0)["read_rate"] == 1.0


def test_receipts_of_a_call_made_by_the_services_cams_client(start_cams: StartCams, receipt_receiver: ReceiptReceiver) -> None:
    """The service's own client (what the sender puts on the wire): the receipts carry its TaskId,
    From and TemplateCode, and one report per status for each of its recipients."""
    cams = start_cams(**FAST, read_rate=0)
    key = make_key(task_id="svc-task-1")
    numbers = [number(k) for k in range(30)]
    with build_http_client() as http:
        result = CamsClient(cams.url, http).send(StaticCredentials(TEST_KEY_ID, TEST_SECRET), key, [avro_recipient(to) for to in numbers])
    assert result.code == "OK", result
    assert wait_for(settled(cams, 60), WAIT_S)
    reports = receipt_receiver.accepted_reports()
    assert sorted((r["To"], r["Status"]) for r in reports) == sorted((to, status) for to in numbers for status in ("Sent", "Delivered"))
    assert {(r["TaskId"], r["From"], r["TemplateCode"]) for r in reports} == {("svc-task-1", key.from_number, key.template_code)}
