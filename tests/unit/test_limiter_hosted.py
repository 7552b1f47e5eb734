"""The limiter a supervisor hosts for its workers: one budget for all of them, over a real Unix
socket, with the metrics hooks in the worker and a fallback share when the host is gone."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from consumer.limiter import RESERVE_AHEAD_S, AccountLimit, InProcessLimiter, fallback_limit
from consumer.limiter.hosted import HostedLimiter, LimiterHost
from consumer.worker_link import WorkerLink


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def granted(self, account: str) -> None:
        self.events.append(("granted", account))

    def denied(self, account: str, wait_s: float) -> None:
        self.events.append(("denied", account))

    def rate_changed(self, account: str, rate: float) -> None:
        self.events.append(("rate", account, rate))

    def backend_error(self, account: str, exc: BaseException) -> None:
        self.events.append(("error", account))

    def fallback_changed(self, active: bool) -> None:
        self.events.append(("fallback", active))


def worker_limiter(host: LimiterHost, observer: Recorder | None = None, share: int = 2, clock=None) -> HostedLimiter:
    fallback = InProcessLimiter({}, fallback_limit(AccountLimit(10), share), safety_margin=0.0, **({"clock": clock} if clock else {}))
    return HostedLimiter(host.address, host.authkey, fallback, observer)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def host(clock: FakeClock) -> LimiterHost:
    return LimiterHost(InProcessLimiter({}, AccountLimit(10), safety_margin=0.0, clock=clock)).start()


def test_two_workers_draw_on_one_budget(host: LimiterHost, clock: FakeClock) -> None:
    a, b = worker_limiter(host), worker_limiter(host)
    assert a.acquire("acc", "a/1") == 0.0
    assert b.acquire("acc", "b/1") == pytest.approx(0.1), "the second worker waits for the first one's slot"
    # a second of asks every millisecond, in turns: the pair gets the account's 10 calls, not 20
    granted = 1
    for step in range(1, 1000):
        clock.now += 0.001
        worker = (a, b)[step % 2]
        granted += worker.acquire("acc", f"{step}") == 0.0
    assert granted == 10


def test_separate_limiters_would_each_take_the_full_budget(clock: FakeClock) -> None:
    """The counterpart of the test above: what the host prevents."""
    a, b = (InProcessLimiter({}, AccountLimit(10), safety_margin=0.0, clock=clock) for _ in range(2))
    assert a.acquire("acc") == 0.0
    assert b.acquire("acc") == 0.0


def test_metrics_hooks_run_in_the_worker(host: LimiterHost) -> None:
    seen = Recorder()
    worker = worker_limiter(host, seen)
    worker.acquire("acc", "t1")
    worker.acquire("acc", "t2")
    worker.throttled("acc")
    worker.throttled("acc")
    assert seen.events[:3] == [("rate", "acc", 10.0), ("granted", "acc"), ("denied", "acc")]
    rates = [e[2] for e in seen.events if e[0] == "rate"]
    assert rates[0] == 10.0 and rates[1] < 10.0, "the host's slow-down reaches the worker's gauge"
    assert all(x != y for x, y in zip(rates, rates[1:])), "a rate is reported when it changes, not on every call"
    assert worker.effective_rate("acc") == rates[-1]
    assert worker.healthy()


def test_refund_frees_the_slot_at_the_host(clock: FakeClock) -> None:
    """A throttled call leaves the shared window: with a burst of 10 spent, the window is full
    for a second; one worker's refund lets the other worker's call go at once."""
    host = LimiterHost(InProcessLimiter({}, AccountLimit(10, burst=10), safety_margin=0.0, clock=clock)).start()
    a, b = worker_limiter(host), worker_limiter(host)
    for i in range(10):
        assert a.acquire("acc", f"a/{i}") == 0.0
    clock.now += 0.5
    assert b.acquire("acc", "b/1") > 0.0, "the window holds 10 grants"
    a.refund("acc", "a/9")
    assert b.acquire("acc", "b/1") == 0.0


def test_workers_reserve_slots_at_the_host(host: LimiterHost) -> None:
    """A reservation is one round trip to the host: successive slots whichever worker asks, the
    rate and the answer's way back with it, the hooks run in the worker."""
    seen = Recorder()
    a, b = worker_limiter(host, seen), worker_limiter(host)
    slots = round(RESERVE_AHEAD_S / 0.1) + 1  # 0.0 .. RESERVE_AHEAD_S, every 0.1 s
    answers = [(a, b)[k % 2].reserve("acc", f"t{k}") for k in range(slots + 1)]
    assert [r.wait_s for r in answers if r.reserved] == pytest.approx([k * 0.1 for k in range(slots)])
    assert answers[-1][:4] == (False, pytest.approx(0.1), 10.0, 0.0), "past the horizon: ask again"
    assert all(r.answered_at is not None and r.late_s == 0.0 for r in answers), "slots count from the host's decision"
    assert seen.events[:2] == [("rate", "acc", 10.0), ("granted", "acc")]
    asked_by_a = answers[::2]
    assert seen.events.count(("granted", "acc")) == sum(r.reserved for r in asked_by_a)
    assert seen.events.count(("denied", "acc")) == sum(not r.reserved for r in asked_by_a)


HOST_PROCESS = textwrap.dedent(
    """
    import sys, time
    from consumer.limiter import AccountLimit, InProcessLimiter
    from consumer.limiter.hosted import LimiterHost
    host = LimiterHost(InProcessLimiter({}, AccountLimit(10))).start()
    print(host.address, host.authkey.hex(), flush=True)
    time.sleep(60)
    """
)


def test_a_worker_whose_host_died_falls_back_to_its_share(caplog: pytest.LogCaptureFixture, clock: FakeClock) -> None:
    process = subprocess.Popen([sys.executable, "-c", HOST_PROCESS], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        address, key = process.stdout.readline().split()  # type: ignore[union-attr]
        seen = Recorder()
        fallback = InProcessLimiter({}, fallback_limit(AccountLimit(10), 2), safety_margin=0.0, clock=clock)
        worker = HostedLimiter(address, bytes.fromhex(key), fallback, seen)
        assert worker.acquire("acc", "t0") == 0.0 and worker.healthy()
    finally:
        process.kill()
        process.wait(10)
    with caplog.at_level(logging.WARNING, logger="consumer.limiter"):
        assert worker.acquire("acc", "t1") == 0.0, "the fallback grants"
        assert worker.acquire("acc", "t2") == pytest.approx(0.2), "at floor(10 / 2) = 5 calls/s"
        worker.refund("acc", "t1")
        assert worker.reserve("acc", "t3")[:4] == (True, pytest.approx(0.2), 5.0, 0.0), "the fallback reserves too"
        worker.throttled("acc")
    assert not worker.healthy()
    assert seen.events.count(("fallback", True)) == 1
    assert len([r for r in caplog.records if "stopped answering" in r.getMessage()]) == 1


def test_a_worker_cannot_start_without_its_host(tmp_path) -> None:
    address = str(tmp_path / "state.sock")  # nothing listens there
    with pytest.raises(OSError):
        HostedLimiter(address, b"key", InProcessLimiter({}, AccountLimit(5)))


def test_the_link_travels_through_the_environment() -> None:
    for address in ("\0chatapp-consumer-1-ab", "/tmp/chatapp-consumer-x/state.sock"):
        link = WorkerLink(1, 3, os.getppid(), address, b"\x01\xff")
        assert "\0" not in "".join(link.env().values()), "an environment variable cannot hold a NUL"
        assert WorkerLink.from_env(link.env()) == link
    assert WorkerLink.from_env({}) is None
    assert not link.orphaned()
    assert WorkerLink(0, 2, os.getpid()).orphaned(), "this process is not its own parent"
