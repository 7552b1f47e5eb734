"""The main thread's CPU per request, in process: intake (decode, validate, claim, admit, batch)
and results (publish, delivery reports, offsets), as ``Pipeline`` does them in the service.

    python -m bench.hotpath [--requests 20000] [--rounds 5] [--redis]

Sample requests (the benchmark's: one recipient, 10 batch keys) go through a ``Pipeline`` wired
as app.py wires it, over an in-memory Kafka port (no librdkafka) and a sender that finishes
every batch at once (its ledger marks are timed apart: the sender's thread makes them), with the
collector paced as in the service (``gcpacing``, collections timed in the phase that runs them). Each
round takes new request ids; the figure per phase is the lowest of the rounds, in thread CPU
time, so a busy machine disturbs it little (wall-clock ratios on a shared machine are noise).
``--redis`` uses the Redis ledger (db 15 at 127.0.0.1:6379) instead of the in-memory one.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import queue
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from chatapp_devkit.samples import sample_records

from consumer import gcpacing
from consumer.admission import Policy
from consumer.backpressure import BufferBound
from consumer.batching import Batcher
from consumer.codec import PlainAvroCodec
from consumer.completion import now_ms
from consumer.destinations import ReplyDestinations
from consumer.events import Events
from consumer.inflight import InFlightBook
from consumer.intake import Intake
from consumer.kafka import TP, DeliveryCallback, Headers, Record
from consumer.ledger import InMemoryLedger, Ledger
from consumer.ledger_redis import RedisLedger
from consumer.metrics import Metrics
from consumer.models import Batch, Settled, SliceOutcome, Status
from consumer.observers import subscribe_logs, subscribe_metrics
from consumer.offsets import OffsetTracker
from consumer.pipeline import CONSUME_BATCH, Pipeline
from consumer.reply import Replies
from consumer.validate import Validator

TOPIC, REPLIES, DLQ = "requests", "results", "dlq"
PARTITIONS = 32


class _Delivered:
    __slots__ = ("_topic", "_key", "_value")

    def __init__(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._topic, self._key, self._value = topic, key, value

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value


class _Port:
    """The Kafka port's surface the main loop uses: every record produced is acknowledged by
    the next ``serve_deliveries`` (librdkafka's own cost is not measured)."""

    def __init__(self) -> None:
        self._pending: list[tuple[str, bytes, Any, DeliveryCallback]] = []
        self.produced = 0

    def produce(self, topic: str, value: bytes, key: bytes | str | None, headers: Headers | None, on_delivery: DeliveryCallback) -> None:
        self._pending.append((topic, value, key, on_delivery))

    def serve_deliveries(self, timeout: float = 0.0) -> int:
        pending, self._pending = self._pending, []
        for topic, value, key, callback in pending:
            callback(None, _Delivered(topic, key.encode() if isinstance(key, str) else key, value))
        self.produced += len(pending)
        return len(pending)

    def commit(self, positions: Mapping[TP, tuple[int, str | None]], asynchronous: bool) -> None:
        pass

    def pause(self, partitions: Iterable[TP]) -> None:
        pass

    def resume(self, partitions: Iterable[TP]) -> None:
        pass

    def positions(self, partitions: Iterable[TP]) -> dict[TP, tuple[int, int]]:
        return {}


class _Sender:
    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.calls = 0

    def submit(self, batch: Batch, not_before: float = 0.0) -> None:
        self.batches.append(batch)
        self.calls += 1

    def quiet_for(self, now: float) -> float:
        return math.inf  # no call waits for a rate-limit slot: a backlog drained as fast as it goes


def _records(codec: PlainAvroCodec, count: int, prefix: str) -> list[Record]:
    out = []
    for i, record in enumerate(sample_records(count, prefix=prefix)):
        partition = i % PARTITIONS
        out.append(Record(TOPIC, partition, i // PARTITIONS, 1_000, None, codec.encode_request(record), None))
    out.sort(key=lambda r: r.partition)  # a consume returns runs of one partition
    return out


def _timed(work: Callable[[], object]) -> float:
    start = time.thread_time()
    work()
    return time.thread_time() - start


def measure(count: int, rounds: int, ledger: Ledger) -> dict[str, float]:
    """µs per request of each phase: the lowest over ``rounds`` rounds of ``count`` requests."""
    codec = PlainAvroCodec()
    events = Events()
    subscribe_metrics(events, Metrics())
    subscribe_logs(events, logging.getLogger("bench.hotpath"))
    tracker = OffsetTracker()
    port = _Port()
    sender = _Sender()
    finished: queue.SimpleQueue[list[Settled]] = queue.SimpleQueue()
    intake = Intake(codec.decode_request, Validator({"default"}).problems, ReplyDestinations(REPLIES, None, (TOPIC, DLQ)), tracker.partition)
    replies = Replies(port, codec, REPLIES, DLQ, events, tracker.finish)  # type: ignore[arg-type]
    book = InFlightBook(BufferBound(10 * count, 0, 1000), 1 << 40)
    pipeline = Pipeline(port, intake, book, Batcher(1000, 0.0), sender, replies, tracker, ledger,  # type: ignore[arg-type]
                        Policy("bench", "resend", 60), events, 3600.0, finished)  # fmt: skip
    outcome = SliceOutcome(Status.SENT, "OK", None, 1, "group-1", "api-1")
    best: dict[str, float] = {}
    backlogs = [_records(codec, count, f"r{k}-{time.time_ns()}") for k in range(rounds)]  # made first: not measured
    for k, records in enumerate(backlogs):
        tracker.assign([(TOPIC, p) for p in range(PARTITIONS)])
        chunks = [records[i : i + CONSUME_BATCH] for i in range(0, len(records), CONSUME_BATCH)]
        times = {"intake": 0.0, "results": 0.0, "sender: ledger marks": 0.0}
        for chunk in chunks:
            times["intake"] += _timed(lambda chunk=chunk: pipeline.take_in(chunk))  # type: ignore[misc]
            times["results"] += _timed(pipeline.step)  # hands the batches (due at once: no linger) to the sender
            batches, sender.batches = sender.batches, []
            settled = [Settled(outcome, now_ms(), [s.request for s in batch.slices]) for batch in batches]

            def marks(batches: list[Batch] = batches, settled: list[Settled] = settled) -> None:
                for batch in batches:
                    ledger.mark_in_flight([s.request for s in batch.slices], "bench")
                ledger.mark_done(settled)

            times["sender: ledger marks"] += _timed(marks)
            finished.put(settled)
            times["results"] += _timed(pipeline.step)  # publishes the results, serves their delivery reports
        assert port.produced == count * (k + 1), f"{port.produced} results for {count * (k + 1)} requests"
        assert book.recipients == 0, "every request answered"
        tracker.revoke([(TOPIC, p) for p in range(PARTITIONS)])
        for phase, seconds in times.items():
            best[phase] = min(best.get(phase, float("inf")), seconds * 1e6 / count)
    best["main thread (intake + results)"] = best["intake"] + best["results"]
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", action="store_true", help="the Redis ledger (db 15) instead of the in-memory one")
    args = parser.parse_args(argv)
    if args.redis:
        import redis

        ledger: Ledger = RedisLedger(redis.Redis.from_url("redis://127.0.0.1:6379/15"), 600, key_prefix="bench-hotpath:ledger:")
    else:
        ledger = InMemoryLedger(3600, max_entries=10 * args.requests * args.rounds)
    gc.collect()
    gc.freeze()
    gcpacing.install()  # as the service does (runtime.tune_interpreter): the pipeline paces the collector
    figures = measure(args.requests, args.rounds, ledger)
    print(f"{args.requests:,} requests × {args.rounds} rounds, thread CPU µs per request (lowest round):")
    for phase, us in figures.items():
        print(f"  {phase:32s} {us:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
