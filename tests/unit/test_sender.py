"""consumer.sender.Sender with fakes: what each CAMS outcome does to a batch and its requests."""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from consumer.batching import Batcher
from consumer.cams.client import CallResult, StaticCredentials
from consumer.cams.errors import Outcome
from consumer.credentials import CredentialsError
from consumer.ledger import DONE, IN_FLIGHT, InMemoryLedger
from consumer.limiter import RESERVE_AHEAD_S, AccountLimit, InProcessLimiter, Reservation
from consumer.limiter.lateness import MISSED_SLOT_S
from consumer.metrics import Metrics
from consumer.models import Batch, BatchKey, SendRequest, SendResult, Settled, Slice, Status
from consumer.receipts.recorder import NoJoin, task_key
from consumer.routing import SendPolicy
from consumer.sender import CREDENTIALS_UNAVAILABLE, EXPIRED_CODE, Sender
from tests.fixtures.builders import make_batch, make_key, make_request
from tests.fixtures.clock import FakeClock
from tests.fixtures.observed import observed

WAIT = 5.0  # generous upper bound for anything that should happen promptly
OWNER = "test-host:1"


def ok(group: str = "GM-1", api: str = "REQ-1") -> CallResult:
    return CallResult(Outcome.OK, "OK", None, api, group, 200, None, 0.001)


def answer(outcome: Outcome, code: str, message: str | None = None, retry_after_s: float | None = None, status: int = 400) -> CallResult:
    return CallResult(outcome, code, message or f"{code} message", "REQ-x", None, status, retry_after_s, 0.001)


Script = Callable[[int, BatchKey, list[dict[str, Any]]], CallResult]


class FakeCams:
    """Records every call (key and recipient numbers) and answers from ``script``."""

    def __init__(self, script: Script | list[CallResult], events: list[tuple] | None = None) -> None:
        self._script = script
        self._lock = threading.Lock()
        self.calls: list[tuple[BatchKey, list[str]]] = []
        self.call_times: list[float] = []
        self.started: queue.Queue[int] = queue.Queue()
        self.gate: threading.Event | None = None
        self.written_at_once = True  # False: the request never reaches the wire before the answer
        self.write_delay_s: dict[int, float] = {}  # per call (its index): held this long before it is written
        self.events = events if events is not None else []

    def prepare(self, credentials, key: BatchKey, recipients: list[dict[str, Any]]) -> tuple:
        return credentials, key, recipients

    def execute(self, prepared: tuple, on_written: Callable[[], None] | None = None) -> CallResult:
        with self._lock:
            delay = self.write_delay_s.get(len(self.calls), 0.0)
        time.sleep(delay)
        if on_written is not None and self.written_at_once:
            on_written()
        return self.send(*prepared)

    def send(self, credentials, key: BatchKey, recipients: list[dict[str, Any]]) -> CallResult:
        assert credentials.access_key_id == "LTAI-test"
        numbers = [r["to"] for r in recipients]
        with self._lock:
            n = len(self.calls)
            self.calls.append((key, numbers))
            self.call_times.append(time.monotonic())
            self.events.append(("call", tuple(numbers)))
        self.started.put(n)
        if self.gate is not None:
            assert self.gate.wait(WAIT), "test never opened the gate"
        if callable(self._script):
            return self._script(n, key, recipients)
        return self._script[min(n, len(self._script) - 1)]


class SpyLimiter(InProcessLimiter):
    def __init__(self, limit: AccountLimit = AccountLimit(1000.0, burst=1000), answer_after_s: float = 0.0) -> None:
        super().__init__({}, limit, safety_margin=0.0)
        self.answer_after_s = answer_after_s  # a limiter far away (a slow Redis): each ask takes this long
        self.hold_s = 0.0  # > 0: every slot is reserved this far ahead
        self.asks = 0
        self.asking = 0
        self.most_asking = 0  # asks in flight at once, at most
        self.throttles: list[tuple[str, float | None]] = []
        self.tickets: list[str] = []
        self.late: list[tuple[str, str, float]] = []
        self.refunds: list[tuple[str, str]] = []
        self.busy_until = 0.0  # monotonic: until then other instances hold the budget (every acquire waits)

    def reserve(self, account: str, ticket: str | None = None, ahead_s: float = RESERVE_AHEAD_S) -> Reservation:
        with self._lock:
            self.asks += 1
            self.asking += 1
            self.most_asking = max(self.most_asking, self.asking)
        try:
            time.sleep(self.answer_after_s)
            busy = self.busy_until - time.monotonic()
            if busy > 0:
                return Reservation(False, busy, self.effective_rate(account))
            reservation = super().reserve(account, ticket, ahead_s)
            if reservation.reserved and ticket is not None:
                self.tickets.append(ticket)
            return reservation._replace(wait_s=self.hold_s) if reservation.reserved and self.hold_s else reservation
        finally:
            with self._lock:
                self.asking -= 1

    def arrived_late(self, account: str, ticket: str, late_s: float) -> None:
        self.late.append((account, ticket, late_s))
        super().arrived_late(account, ticket, late_s)

    def refund(self, account: str, ticket: str) -> None:
        self.refunds.append((account, ticket))
        super().refund(account, ticket)

    def throttled(self, account: str, retry_after_s: float | None = None) -> None:
        self.throttles.append((account, retry_after_s))
        super().throttled(account, retry_after_s)


class SpyLedger(InMemoryLedger):
    def __init__(self, events: list[tuple]) -> None:
        super().__init__(3600)
        self.events = events
        self.task_ids: list[str | None] = []

    def mark_in_flight(self, requests, owner: str, task_id: str | None = None) -> None:
        requests = list(requests)
        self.events.append(("in_flight", tuple(r.request_id for r in requests), owner))
        self.task_ids.append(task_id)
        super().mark_in_flight(requests, owner, task_id)

    def mark_done(self, settled) -> None:
        settled = list(settled)
        self.events.append(("done", tuple(r.request_id for group in settled for r in group.requests)))
        super().mark_done(settled)


class Harness:
    def __init__(
        self,
        cams: FakeCams,
        *,
        concurrency: int = 4,
        max_attempts: int = 3,
        throttle_max_retries: int = 5,
        throttle_tolerance: int = 0,
        max_recipients: int = 1000,
        credentials: Any = None,
        limiter: SpyLimiter | None = None,
        join: NoJoin | None = None,
    ) -> None:
        self.cams = cams
        self.limiter = limiter or SpyLimiter()
        self.ledger = SpyLedger(cams.events)
        self.metrics = Metrics()
        self.results: queue.Queue[tuple[SendRequest, SendResult]] = queue.Queue()
        self.deliveries = 0
        self.sender = Sender(
            cams,
            {"default": credentials or StaticCredentials("LTAI-test", "secret")},
            self.limiter,
            self.ledger,
            SendPolicy(
                max_attempts,
                backoff_ms=1,
                backoff_max_ms=2,
                throttle_max_retries=throttle_max_retries,
                throttle_tolerance=throttle_tolerance,
            ),
            observed(self.metrics),
            self._on_results,
            concurrency,
            OWNER,
            max_recipients,
            join=join,
        )

    def _on_results(self, finished: list[Settled]) -> None:
        self.deliveries += 1
        for group in finished:
            for request in group.requests:
                self.results.put((request, group.result(request)))

    def collect(self, count: int) -> dict[str, SendResult]:
        out: dict[str, SendResult] = {}
        for _ in range(count):
            request, result = self.results.get(timeout=WAIT)
            assert request.request_id == result.request_id
            assert result.request_id not in out, f"{result.request_id} reported twice"
            out[result.request_id] = result
        return out

    def wait_idle(self) -> None:
        """Wait until no call is in flight (``busy_with`` is the Sender's public view of that)."""
        deadline = time.monotonic() + WAIT
        while self.sender.busy_with(lambda piece: True):
            assert time.monotonic() < deadline, "a call stayed in flight"
            time.sleep(0.002)

    def assert_no_more_results(self) -> None:
        """Nothing else is reported: no call in flight and no result within 0.1 s (retries here
        back off 1-2 ms, so a pending retry would report well within that)."""
        self.wait_idle()
        with pytest.raises(queue.Empty):
            extra = self.results.get(timeout=0.1)
            pytest.fail(f"unexpected extra result {extra[1]}")
        self.wait_idle()

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def calls_per_second(self) -> float:
        times = self.cams.call_times
        return (len(times) - 1) / (times[-1] - times[0])


@pytest.fixture
def harnesses() -> Iterator[list[Harness]]:
    made: list[Harness] = []
    yield made
    for h in made:
        if h.cams.gate is not None:
            h.cams.gate.set()
        h.sender.stop(timeout=WAIT)


@pytest.fixture
def start(harnesses: list[Harness]) -> Callable[..., Harness]:
    def _start(script: Script | list[CallResult], **kw: Any) -> Harness:
        h = Harness(FakeCams(script), **kw)
        harnesses.append(h)
        h.sender.start()
        return h

    return _start


def ids(batch: Batch) -> list[str]:
    return [s.request.request_id for s in batch.slices]


def numbers_of(batch: Batch, index: int) -> set[str]:
    return {r["to"] for r in batch.slices[index].recipients}


# -- OK ------------------------------------------------------------------------------------------


def test_ok_reports_every_request_sent(start) -> None:
    h = start([ok("GM-7", "REQ-7")])
    batch = make_batch(2, 3)
    h.sender.submit(batch)
    results = h.collect(2)
    assert set(results) == set(ids(batch))
    for piece in batch.slices:
        r = results[piece.request.request_id]
        assert (r.status, r.code, r.attempts) == (Status.SENT, "OK", 1)
        assert (r.group_message_id, r.api_request_id, r.batch_id) == ("GM-7", "REQ-7", batch.batch_id)
        assert r.recipients == len(piece.recipients)
    assert len(h.cams.calls) == 1 and h.sender.calls == 1
    key, numbers = h.cams.calls[0]
    assert key == batch.key
    assert numbers == [r["to"] for s in batch.slices for r in s.recipients]
    h.assert_no_more_results()
    assert h.metric("chatapp_api_calls_total", account="default", code="OK") == 1
    assert h.metric("chatapp_api_recipients_total", account="default") == 5


def test_request_split_over_batches_is_reported_once_when_all_parts_are_sent(start) -> None:
    h = start(lambda n, key, recipients: ok(f"GM-{len(recipients)}-{n}"), max_recipients=2)
    batcher = Batcher(2, 1.0, clock=FakeClock())
    request = make_request(5)
    batches = batcher.add(request) + batcher.flush()
    assert request.parts == 3
    for b in batches:
        h.sender.submit(b)
    (result,) = h.collect(1).values()
    assert result.status is Status.SENT
    assert result.recipients == 5
    assert result.attempts == 3
    assert len(result.group_message_id.split(",")) == 3
    assert sorted(n for _, numbers in h.cams.calls for n in numbers) == sorted(r["to"] for r in request.recipients)
    h.assert_no_more_results()


# -- throttling -----------------------------------------------------------------------------------


def test_throttled_batch_is_retried_and_not_counted_as_a_failure(start) -> None:
    throttled = answer(Outcome.THROTTLED, "Throttling.User", retry_after_s=0.01, status=429)
    # more throttles than max_attempts: throttling must not use up the failure budget
    h = start([throttled, throttled, throttled, ok()], max_attempts=2)
    batch = make_batch(1, 1)
    h.sender.submit(batch)
    results = h.collect(2)
    assert all(r.status is Status.SENT for r in results.values())
    assert all(r.attempts == 4 for r in results.values())
    assert len(h.cams.calls) == 4 and h.sender.calls == 4  # every attempt counts (the collector's pacing)
    assert h.limiter.throttles == [("default", 0.01)] * 3
    assert batch.throttles == 3 and batch.failures == 0
    assert h.metric("chatapp_api_retries_total", account="default", reason="throttled") == 3
    assert h.metric("chatapp_api_retries_total", account="default", reason="transient") == 0
    h.assert_no_more_results()


def test_throttled_without_retry_after_is_retried_at_once(start) -> None:
    h = start([answer(Outcome.THROTTLED, "System.LimitControl"), ok()])
    h.sender.submit(make_batch(1))
    (result,) = h.collect(1).values()
    assert result.status is Status.SENT
    assert h.limiter.throttles == [("default", None)]
    assert h.limiter.refunds == [("default", h.limiter.tickets[0])], "the throttled grant leaves the window"
    assert len(set(h.limiter.tickets)) == 2 and all(t.startswith(OWNER + "/") for t in h.limiter.tickets)


def test_a_call_slower_than_usual_is_reported_late_under_its_grant_before_its_answer(start) -> None:
    """Told as the request goes out: the slot sharing its window may be decided before CAMS answers."""
    slow_call = 12
    h = start([ok()], concurrency=1)
    h.cams.write_delay_s[slow_call] = 0.08
    for _ in range(slow_call):
        h.sender.submit(make_batch(1))
        h.collect(1)
    h.cams.gate = threading.Event()  # the slow call's answer is held back
    h.sender.submit(make_batch(1))
    while h.cams.started.get(timeout=WAIT) != slow_call:
        pass
    late = [entry for entry in h.limiter.late if entry[1] == h.limiter.tickets[slow_call]]
    assert len(late) == 1 and 0.06 < late[0][2] < 0.2, h.limiter.late
    h.cams.gate.set()
    h.collect(1)
    assert all(entry[2] < 0.05 for entry in h.limiter.late if entry not in late), "only the slow call is late"
    assert h.metric("chatapp_limiter_late_arrival_seconds_count", account="default") == len(h.limiter.late)


def test_a_limiter_failing_to_hear_of_a_late_call_does_not_send_it_again(start) -> None:
    """The request is out when its lateness is told: whatever goes wrong there, the call stands."""

    class Failing(SpyLimiter):
        def arrived_late(self, account: str, ticket: str, late_s: float) -> None:
            raise RuntimeError("limiter bug")

    h = start([ok()], concurrency=1, limiter=Failing())
    h.cams.write_delay_s[0] = 0.05  # late enough to be told
    h.sender.submit(make_batch(1))
    assert [r.status for r in h.collect(1).values()] == [Status.SENT]
    h.wait_idle()
    assert len(h.cams.calls) == 1, "sent once"


def test_a_slow_answer_to_a_request_written_on_time_is_not_late(start) -> None:
    """What counts is when the request went out (CAMS counts a call when it arrives), not when
    the answer came back: a slow answer must not cost the budget."""
    slow_call = 12

    def script(n: int, key: BatchKey, recipients: list[dict[str, Any]]) -> CallResult:
        time.sleep(0.08 if n == slow_call else 0.0)
        return dataclasses.replace(ok(), written_after_s=0.0005)

    h = start(script, concurrency=1)
    for _ in range(slow_call + 1):
        h.sender.submit(make_batch(1))
        h.collect(1)
    assert len(h.limiter.tickets) == slow_call + 1
    assert all(ticket != h.limiter.tickets[slow_call] for _, ticket, _ in h.limiter.late), h.limiter.late


def test_a_worker_too_late_for_its_slot_gives_it_back_and_asks_again(start) -> None:
    """Lateness is told as the request is written; past half the horizon that comes too late for
    the slot sharing its window, so the call does not go out on the slot it missed."""

    class HeldUp(SpyLimiter):
        def reserve(self, account: str, ticket: str | None = None, ahead_s: float = RESERVE_AHEAD_S) -> Reservation:
            reservation = super().reserve(account, ticket, ahead_s)
            if self.asks == 1:  # the first answer is held up on its way back (a starved machine)
                decided = time.monotonic()
                time.sleep(MISSED_SLOT_S + 0.1)
                return reservation._replace(answered_at=decided)
            return reservation

    h = start([ok()], concurrency=1, limiter=HeldUp())
    h.sender.submit(make_batch(1))
    assert [r.status for r in h.collect(1).values()] == [Status.SENT]
    h.wait_idle()
    assert h.limiter.refunds == [("default", h.limiter.tickets[0])], "the missed slot is given back"
    assert h.limiter.asks == 2 and len(h.cams.calls) == 1, "asked again, sent once"
    assert all(late < MISSED_SLOT_S for _, _, late in h.limiter.late), h.limiter.late
    assert h.metric("chatapp_limiter_missed_slots_total", account="default") == 1


def test_a_lone_throttle_is_retried_without_slowing_the_limiter(start) -> None:
    throttled = answer(Outcome.THROTTLED, "System.LimitControl")
    h = start([throttled, ok(), throttled, ok()], throttle_tolerance=1)
    h.sender.submit(make_batch(1))
    assert h.collect(1).popitem()[1].status is Status.SENT
    assert h.limiter.throttles == []  # one throttle within the window: jitter
    h.sender.submit(make_batch(1))
    assert h.collect(1).popitem()[1].status is Status.SENT
    assert h.limiter.throttles == [("default", None)]  # the second within 2 s: slow down
    assert h.metric("chatapp_api_retries_total", account="default", reason="throttled") == 2


def test_throttled_beyond_the_limit_fails(start) -> None:
    h = start([answer(Outcome.THROTTLED, "System.LimitControl")], throttle_max_retries=2)
    h.sender.submit(make_batch(1))
    (result,) = h.collect(1).values()
    assert result.status is Status.FAILED
    assert result.code == "System.LimitControl"
    assert result.attempts == 3
    assert len(h.cams.calls) == 3
    assert len(h.limiter.throttles) == 2
    h.assert_no_more_results()


# -- transient --------------------------------------------------------------------------------------


def test_transient_failure_then_success(start) -> None:
    h = start([answer(Outcome.TRANSIENT, "ServiceUnavailable", status=503), ok()])
    h.sender.submit(make_batch(2))
    (result,) = h.collect(1).values()
    assert (result.status, result.attempts) == (Status.SENT, 2)
    assert h.metric("chatapp_api_retries_total", account="default", reason="transient") == 1
    assert h.limiter.throttles == []


def test_transient_failures_up_to_max_attempts_then_failed(start) -> None:
    h = start([answer(Outcome.TRANSIENT, "Chatapp.Timeout", "ReadTimeout: timed out", status=0)], max_attempts=3)
    batch = make_batch(1, 2)
    h.sender.submit(batch)
    results = h.collect(2)
    for r in results.values():
        assert r.status is Status.FAILED
        assert r.code == "Chatapp.Timeout"
        assert r.message == "ReadTimeout: timed out"
        assert r.attempts == 3
    assert len(h.cams.calls) == 3
    assert h.metric("chatapp_api_retries_total", account="default", reason="transient") == 2
    h.assert_no_more_results()


def test_single_attempt_policy_never_retries(start) -> None:
    h = start([answer(Outcome.TRANSIENT, "InternalError", status=500)], max_attempts=1)
    h.sender.submit(make_batch(1))
    assert h.collect(1).popitem()[1].status is Status.FAILED
    assert len(h.cams.calls) == 1


# -- invalid request: split ---------------------------------------------------------------------


def test_invalid_request_splits_until_the_offending_request_fails_and_others_are_sent(start) -> None:
    batch = make_batch(1, 2, 1, 3)
    bad_numbers = numbers_of(batch, 2)
    bad_id = batch.slices[2].request.request_id

    def script(n: int, key: BatchKey, recipients: list[dict[str, Any]]) -> CallResult:
        if bad_numbers & {r["to"] for r in recipients}:
            return answer(Outcome.INVALID_REQUEST, "InvalidParameter.SenderList", "bad param")
        return ok(f"GM-{n}")

    h = start(script)
    h.sender.submit(batch)
    results = h.collect(4)
    assert results[bad_id].status is Status.FAILED
    assert results[bad_id].code == "InvalidParameter.SenderList"
    assert results[bad_id].message == "bad param"
    assert results[bad_id].attempts == 3  # whole batch, its half, itself
    good = [i for i in ids(batch) if i != bad_id]
    assert all(results[i].status is Status.SENT for i in good)
    # calls: all 4, [0,1] and [2,3] (any order), [2] and [3]: 5 in all, the bad one in 3 of them
    assert len(h.cams.calls) == 5
    assert sum(1 for _, numbers in h.cams.calls if bad_numbers & set(numbers)) == 3
    sent_numbers = [n for _, numbers in h.cams.calls for n in numbers if not bad_numbers & set(numbers)]
    assert sorted(sent_numbers) == sorted(n for i in (0, 1, 3) for n in numbers_of(batch, i))
    assert h.metric("chatapp_api_retries_total", account="default", reason="split") == 2
    h.assert_no_more_results()


def test_an_answer_naming_the_offending_number_fails_its_request_without_bisection(start) -> None:
    batch = make_batch(1, 2, 1, 3)
    bad_numbers = numbers_of(batch, 2)
    bad_id = batch.slices[2].request.request_id
    named = sorted(bad_numbers)[0]

    def script(n: int, key: BatchKey, recipients: list[dict[str, Any]]) -> CallResult:
        if bad_numbers & {r["to"] for r in recipients}:
            return answer(Outcome.INVALID_REQUEST, "InvalidParameter", f"Specified parameter SenderList.To +{named} is not valid.")
        return ok(f"GM-{n}")

    h = start(script)
    h.sender.submit(batch)
    results = h.collect(4)
    assert (results[bad_id].status, results[bad_id].code, results[bad_id].attempts) == (Status.FAILED, "InvalidParameter", 1)
    assert all(results[i].status is Status.SENT for i in ids(batch) if i != bad_id)
    assert len(h.cams.calls) == 2  # the whole batch, then the rest whole
    assert h.metric("chatapp_api_retries_total", account="default", reason="named") == 1
    assert h.metric("chatapp_bisection_calls_total", account="default") == 0
    h.assert_no_more_results()


def test_past_its_share_bisection_waits_while_other_traffic_of_the_account_goes_first(start) -> None:
    from consumer.bisection import BURST, SHARE

    # every batch of one template holds one bad request; another template's batches are clean
    refused = [make_batch(*([1] * 64)) for _ in range(4)]
    bad = {sorted(numbers_of(b, 5))[0] for b in refused}
    offenders = sorted(b.slices[5].request.request_id for b in refused)
    clean_key = make_key(template_code="clean")
    clean = [make_batch(*([1] * 10), key=clean_key) for _ in range(40)]

    def script(n: int, key: BatchKey, recipients: list[dict[str, Any]]) -> CallResult:
        if bad & {r["to"] for r in recipients}:
            return answer(Outcome.INVALID_REQUEST, "InvalidParameter", "Specified parameter SenderList is not valid.")
        return ok(f"GM-{n}")

    h = start(script)
    for b in refused + clean:
        h.sender.submit(b)
    results = h.collect(4 * 64 + 40 * 10)
    # nothing fails for the budget: the offenders alone, everything else sent
    assert sorted(r for r, v in results.items() if v.status is Status.FAILED) == offenders
    # until the clean traffic is done, halves took about their share of the calls (plus those in flight)
    keys = [key for key, _ in h.cams.calls]
    last_clean = max(i for i, key in enumerate(keys) if key == clean_key)
    halves_before = sum(1 for key in keys[: last_clean + 1] if key != clean_key) - len(refused)
    assert halves_before <= BURST + SHARE * (last_clean + 1) + 2 * 8
    assert h.metric("chatapp_bisection_deferred_total", account="default") >= 1
    h.assert_no_more_results()


def test_invalid_request_of_a_single_request_batch_fails_without_split(start) -> None:
    h = start([answer(Outcome.INVALID_REQUEST, "MissingParameter")])
    h.sender.submit(make_batch(5))
    (result,) = h.collect(1).values()
    assert (result.status, result.code, result.attempts) == (Status.FAILED, "MissingParameter", 1)
    assert len(h.cams.calls) == 1


# -- permanent ------------------------------------------------------------------------------------


def test_permanent_error_fails_every_request_with_the_code(start) -> None:
    h = start([answer(Outcome.PERMANENT, "Ram.PermissionDeny", "You are not authorized", status=403)])
    batch = make_batch(1, 1, 1)
    h.sender.submit(batch)
    results = h.collect(3)
    for r in results.values():
        assert (r.status, r.code, r.message, r.attempts) == (Status.FAILED, "Ram.PermissionDeny", "You are not authorized", 1)
        assert r.api_request_id == "REQ-x"
    assert len(h.cams.calls) == 1  # never retried
    h.assert_no_more_results()


def test_a_crash_while_sending_fails_the_batch_instead_of_losing_it(start) -> None:
    def script(n, key, recipients):
        raise RuntimeError("boom")

    h = start(script)
    h.sender.submit(make_batch(1, 1))
    results = h.collect(2)
    assert all(r.status is Status.FAILED and r.code == "Chatapp.InternalError" for r in results.values())
    h.wait_idle()


class FailingCredentials:
    """A provider whose first ``failures`` calls find no credentials (STS down)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def get(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise CredentialsError("default", "the STS endpoint did not answer")
        return StaticCredentials("LTAI-test", "secret")


def test_missing_credentials_are_retried_like_a_timeout(start) -> None:
    h = start([ok()], credentials=FailingCredentials(1))
    h.sender.submit(make_batch(1))
    (result,) = h.collect(1).values()
    assert (result.status, result.attempts) == (Status.SENT, 2)
    assert len(h.cams.calls) == 1


def test_credentials_unavailable_for_every_attempt_fails_without_a_call(start) -> None:
    h = start([ok()], credentials=FailingCredentials(100), max_attempts=2)
    h.sender.submit(make_batch(1, 1))
    results = h.collect(2)
    for r in results.values():
        assert (r.status, r.code, r.attempts) == (Status.FAILED, CREDENTIALS_UNAVAILABLE, 2)
        assert "secret" not in (r.message or "")
    assert h.cams.calls == []
    h.assert_no_more_results()


# -- expiry ---------------------------------------------------------------------------------------


def now_ms() -> int:
    return int(time.time() * 1000)


def test_expired_requests_are_not_sent(start) -> None:
    h = start([ok()])
    batch = make_batch(2, 1, expires=[now_ms() - 1, now_ms() - 60_000])
    h.sender.submit(batch)
    results = h.collect(2)
    for r in results.values():
        assert (r.status, r.code, r.attempts) == (Status.EXPIRED, EXPIRED_CODE, 0)
    assert h.cams.calls == []
    h.assert_no_more_results()
    assert all(e.state == DONE for e in h.ledger.lookup([s.request for s in batch.slices]))


def test_only_the_expired_requests_of_a_batch_are_dropped(start) -> None:
    h = start([ok()])
    batch = make_batch(2, 3, 1, expires=[None, now_ms() - 1, now_ms() + 600_000])
    live = numbers_of(batch, 0) | numbers_of(batch, 2)
    request_ids = ids(batch)  # before sending: the sender takes expired slices out of the batch
    h.sender.submit(batch)
    results = h.collect(3)
    statuses = [results[i].status for i in request_ids]
    assert statuses == [Status.SENT, Status.EXPIRED, Status.SENT]
    assert len(h.cams.calls) == 1
    assert set(h.cams.calls[0][1]) == live


def test_a_crash_after_the_expired_requests_were_taken_out_still_answers_them(start) -> None:
    def script(n, key, recipients):
        raise RuntimeError("boom")

    h = start(script)
    batch = make_batch(1, 1, expires=[now_ms() - 1, None])
    request_ids = ids(batch)
    h.sender.submit(batch)
    results = h.collect(2)
    assert [(results[i].status, results[i].code) for i in request_ids] == [(Status.EXPIRED, EXPIRED_CODE), (Status.FAILED, "Chatapp.InternalError")]
    h.assert_no_more_results()


def test_nearly_expired_request_is_sent_before_an_older_backlog(start) -> None:
    """The urgent window (2 s) must work with the Sender's own clock."""
    h = start([ok()], concurrency=1)
    h.cams.gate = threading.Event()
    blocker = make_batch(1, key=make_key(template_code="blocker"))
    h.sender.submit(blocker)
    assert h.cams.started.get(timeout=WAIT) == 0  # the only worker is busy
    backlog = make_batch(1, key=make_key(template_code="backlog"))
    urgent = make_batch(1, key=make_key(template_code="otp"), expires=[now_ms() + 1500])
    h.sender.submit(backlog)
    h.sender.submit(urgent)
    h.cams.gate.set()
    h.collect(3)
    order = [key.template_code for key, _ in h.cams.calls]
    assert order == ["blocker", "otp", "backlog"]


def test_a_young_partial_batch_keeps_filling_while_other_instances_hold_the_budget(start) -> None:
    """This instance's gate is empty, but its last call had to wait for the shared budget: a
    young partial batch stays in the scheduler and fills up instead of taking a slot alone."""
    h = start([ok()], concurrency=1, max_recipients=2)
    h.limiter.busy_until = time.monotonic() + 0.1
    h.sender.submit(make_batch(1, key=make_key(template_code="first")))
    h.collect(1)  # sent after waiting for the budget; the gate is empty again
    h.sender.submit(make_batch(1, key=make_key(template_code="second")))
    time.sleep(0.1)  # time enough for a dispatcher that does not wait to send it alone
    h.sender.submit(make_batch(1, key=make_key(template_code="second")))
    h.collect(2)
    assert [len(numbers) for key, numbers in h.cams.calls if key.template_code == "second"] == [2], h.cams.calls


def test_a_young_partial_batch_goes_at_once_when_the_budget_is_idle(start) -> None:
    h = start([ok()], concurrency=1, max_recipients=2)
    h.sender.submit(make_batch(1, key=make_key(template_code="first")))
    h.collect(1)
    started = time.monotonic()
    h.sender.submit(make_batch(1, key=make_key(template_code="second")))
    h.collect(1)
    assert time.monotonic() - started < 0.5, "latency first while nothing waits for the budget"


# -- the token path -------------------------------------------------------------------------------


def test_a_slow_limiter_gets_overlapping_asks_and_the_account_keeps_its_rate(start) -> None:
    """Each ask takes 100 ms (a limiter far away): one ask at a time would allow 10 calls/s.
    The account's asks overlap as much as the round trip needs and each call costs one ask."""
    limiter = SpyLimiter(AccountLimit(40.0), answer_after_s=0.1)
    h = start([ok()], concurrency=16, max_recipients=1, limiter=limiter)
    for _ in range(80):
        h.sender.submit(make_batch(1))
    h.collect(80)
    assert limiter.most_asking >= 3, "asks overlap"
    assert limiter.asks == 80, "one ask per call: the slot is reserved, not asked for again"
    assert h.calls_per_second() >= 25.0, f"{h.calls_per_second():.1f} calls/s of 40"


def test_a_fast_limiter_is_asked_in_turn(start) -> None:
    """An answer at once: the next ticket asks once the one before holds its slot (first come,
    first served, no asks racing for one slot)."""
    limiter = SpyLimiter(AccountLimit(50.0))
    h = start([ok()], concurrency=8, max_recipients=1, limiter=limiter)
    for _ in range(20):
        h.sender.submit(make_batch(1))
    h.collect(20)
    assert limiter.most_asking == 1
    assert h.calls_per_second() >= 40.0, f"{h.calls_per_second():.1f} calls/s of 50"


def test_stopping_refunds_a_slot_held_for_a_call_that_will_not_be_made(start) -> None:
    h = start([ok()], concurrency=2, max_recipients=1)
    h.limiter.hold_s = 30.0  # every slot lies far ahead
    h.sender.submit(make_batch(1))
    deadline = time.monotonic() + WAIT
    while not h.limiter.tickets:
        assert time.monotonic() < deadline, "no slot was reserved"
        time.sleep(0.002)
    started = time.monotonic()
    h.sender.stop(timeout=WAIT)
    assert time.monotonic() - started < 1.0, "a worker sleeping until its slot wakes up to stop"
    assert h.cams.calls == []
    assert h.limiter.refunds == [("default", h.limiter.tickets[0])], "the slot is given back"


# -- quiet time (when the main loop may collect garbage) -------------------------------------------


def test_quiet_for_is_the_time_until_a_waiting_call_is_due_and_infinite_once_it_is_on_the_wire(start) -> None:
    h = start([ok()], concurrency=1)
    h.cams.gate = threading.Event()
    assert h.sender.quiet_for(time.monotonic()) == math.inf, "nothing waits: any time is quiet"
    h.limiter.busy_until = time.monotonic() + 0.3
    h.sender.submit(make_batch(1))
    deadline = time.monotonic() + WAIT
    while h.sender.quiet_for(time.monotonic()) == math.inf:
        assert time.monotonic() < deadline, "the waiting call never showed"
        time.sleep(0.002)
    quiet = h.sender.quiet_for(time.monotonic())
    assert 0.0 < quiet <= 0.3, "due at the slot the limiter named"
    assert h.cams.started.get(timeout=WAIT) == 0  # granted and written; the answer is held back
    assert h.sender.quiet_for(time.monotonic()) == math.inf, "on the wire: the answer can wait"
    h.cams.gate.set()
    h.collect(1)


def test_a_granted_call_not_yet_on_the_wire_is_due_at_once(start) -> None:
    h = start([ok()], concurrency=1)
    h.cams.gate = threading.Event()
    h.cams.written_at_once = False
    h.sender.submit(make_batch(1))
    assert h.cams.started.get(timeout=WAIT) == 0
    assert h.sender.quiet_for(time.monotonic()) <= 0.0
    h.cams.gate.set()
    h.collect(1)
    h.wait_idle()
    assert h.sender.quiet_for(time.monotonic()) == math.inf, "its entry goes with the call"


# -- ledger ---------------------------------------------------------------------------------------


def test_ledger_marks_in_flight_before_the_call_and_done_after(start) -> None:
    h = start([ok("GM-9")])
    h.cams.gate = threading.Event()
    batch = make_batch(1, 2)
    request_ids = tuple(ids(batch))
    h.sender.submit(batch)
    h.cams.started.get(timeout=WAIT)
    during = h.ledger.lookup([s.request for s in batch.slices])
    assert [(e.state, e.owner) for e in during] == [(IN_FLIGHT, OWNER)] * len(request_ids)
    h.cams.gate.set()
    results = h.collect(2)  # the ledger is marked done before results are handed over
    numbers = tuple(r["to"] for s in batch.slices for r in s.recipients)
    assert h.cams.events == [("in_flight", request_ids, OWNER), ("call", numbers), ("done", request_ids)]
    after = h.ledger.lookup([s.request for s in batch.slices])
    for i, entry in zip(request_ids, after):
        assert entry.state == DONE
        assert entry.result == results[i]


def test_retries_mark_in_flight_only_once(start) -> None:
    h = start([answer(Outcome.TRANSIENT, "ServiceUnavailable", status=503), ok()])
    batch = make_batch(1)
    h.sender.submit(batch)
    h.collect(1)
    kinds = [e[0] for e in h.cams.events]
    assert kinds == ["in_flight", "call", "call", "done"]


class TaskIds(NoJoin):
    """The recorder's TaskIds (``task_key``) without its thread and store."""

    def key_for(self, batch: Batch) -> BatchKey:
        return task_key(batch)


def test_in_flight_marks_keep_the_calls_task_id_and_a_retry_keeps_both(start) -> None:
    h = start([answer(Outcome.TRANSIENT, "ServiceUnavailable", status=503), ok()], join=TaskIds())
    h.cams.gate = threading.Event()
    batch = make_batch(1, 2)
    h.sender.submit(batch)
    h.cams.started.get(timeout=WAIT)
    assert batch.task_id is not None
    assert [e.task_id for e in h.ledger.lookup([s.request for s in batch.slices])] == [batch.task_id] * 2
    h.cams.gate.set()
    h.collect(2)
    assert [e[0] for e in h.cams.events] == ["in_flight", "call", "call", "done"]
    assert [key.task_id for key, _ in h.cams.calls] == [batch.task_id] * 2


def test_no_task_id_is_kept_for_a_producers_own_or_a_request_split_over_calls(start) -> None:
    h = start([ok(), ok()], join=TaskIds())
    h.sender.submit(make_batch(1, key=make_key()._replace(task_id="producers-task")))
    h.collect(1)
    split_request = make_request(2, make_key())
    h.sender.submit(Batch("b-part", split_request.key, [Slice(split_request, split_request.recipients[:1])], 1))
    h.collect(1)
    assert h.ledger.task_ids == [None, None]


# -- concurrency / stop / abandon -----------------------------------------------------------------


def test_stop_waits_for_calls_in_flight_and_still_reports_them(start) -> None:
    h = start([ok()])
    h.cams.gate = threading.Event()
    batch = make_batch(1)
    h.sender.submit(batch)
    h.cams.started.get(timeout=WAIT)
    stopped = threading.Event()
    stopper = threading.Thread(target=lambda: (h.sender.stop(timeout=WAIT), stopped.set()))
    stopper.start()
    assert not stopped.wait(0.2), "stop() returned while a call was in flight"
    assert h.results.empty()
    h.cams.gate.set()
    assert stopped.wait(WAIT)
    stopper.join(WAIT)
    (request, result) = h.results.get_nowait()  # reported before stop() returned
    assert result.status is Status.SENT and request is batch.slices[0].request
    assert not h.sender.busy_with(lambda piece: True)


def test_nothing_is_dispatched_after_stop(start) -> None:
    h = start([ok()])
    h.sender.stop(timeout=WAIT)
    h.sender.submit(make_batch(1))
    time.sleep(0.05)  # the scenario: nothing may happen in this time (no event to wait for)
    assert h.cams.calls == []


def test_concurrency_bounds_calls_in_flight(start) -> None:
    h = start([ok()], concurrency=2)
    h.cams.gate = threading.Event()
    for i in range(5):
        h.sender.submit(make_batch(1, key=make_key(template_code=f"t{i}")))
    h.cams.started.get(timeout=WAIT)
    h.cams.started.get(timeout=WAIT)
    with pytest.raises(queue.Empty):
        h.cams.started.get(timeout=0.1)
    assert h.metric("chatapp_inflight_calls") == 2
    h.cams.gate.set()
    h.collect(5)  # the gauge goes down before results are handed over
    assert len(h.cams.calls) == 5
    assert h.metric("chatapp_inflight_calls") == 0


def test_abandon_takes_queued_slices_out(start) -> None:
    h = start([ok()], concurrency=1)
    h.cams.gate = threading.Event()
    h.sender.submit(make_batch(1, key=make_key(template_code="first")))
    h.cams.started.get(timeout=WAIT)
    queued = make_batch(2, 3, key=make_key(template_code="second"))
    revoked = queued.slices[1].request
    revoked.source = revoked.source._replace(partition=9)
    h.sender.submit(queued)
    removed = h.sender.abandon(lambda piece: piece.request.source.partition == 9)
    assert [p.request for p in removed] == [revoked]
    h.cams.gate.set()
    results = h.collect(2)
    assert revoked.request_id not in results
    h.assert_no_more_results()
    second_calls = [set(numbers) for key, numbers in h.cams.calls if key.template_code == "second"]
    assert second_calls == [numbers_of(queued, 0)]


def test_many_batches_over_many_keys_all_finish_exactly_once(start) -> None:
    h = start(lambda n, key, recipients: ok(f"GM-{n}") if n % 7 else answer(Outcome.TRANSIENT, "ServiceUnavailable", status=503), concurrency=8, max_attempts=5)
    submitted: list[str] = []
    for i in range(60):
        batch = make_batch(1, 2, key=make_key(template_code=f"t{i % 6}"))
        submitted += ids(batch)
        h.sender.submit(batch)
    results = h.collect(len(submitted))
    assert set(results) == set(submitted)
    assert all(r.status is Status.SENT for r in results.values())
    h.assert_no_more_results()


def test_slices_are_the_requests_own_objects() -> None:
    # guard for the helpers above: a batch's slices carry the request they belong to
    batch = make_batch(2, 1)
    assert all(isinstance(s, Slice) and s.recipients is s.request.recipients for s in batch.slices)
