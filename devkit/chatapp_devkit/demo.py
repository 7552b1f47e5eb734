"""The embedded default: the whole service on this machine, nothing real sent.

Starts librdkafka's mock cluster and the local CAMS endpoint in their own processes, produces
sample traffic (several templates and languages, plus a few bad messages to show the DLQ and
REJECTED paths), runs the service against them with a progress line each second, then reads the
reply and dead-letter topics back and prints the results and a metrics summary.

Delivery receipts too: the endpoint pushes them (Sent, Delivered, Read for half, Failed for
numbers its rules name) to the receiver the service hosts in its own process (no Redis: the join
is in its memory, decision 0032); once every receipt is pushed, the status topic is read back and
printed as the delivery funnel.
"""

from __future__ import annotations

import collections
import io
import os
import socket
import sys
import time
from collections.abc import Mapping
from typing import NamedTuple, TextIO

from confluent_kafka import Consumer, Producer
from fastavro import schemaless_reader

from consumer import config as settings
from consumer.app import Service
from consumer.codec import RESULT_SCHEMA, PlainAvroCodec
from consumer.kafka import produce_waiting
from consumer.kafka.clientlog import logged

from .local_cams import LocalCams
from .mockcluster import MockCluster
from .samples import request_record, sample_records

DEMO_KEY_ID = "LTAI_DEMO_LOCAL_ONLY"
DEMO_SECRET = "demo-secret-local-only"
DEMO_TOKEN = "demo-receipts-token-local-only"
PARTITIONS = 8
FAST = {"fetch.wait.max.ms": "10"}
RECEIPTS = {
    "delays_ms": {"Sent": 50, "Delivered": 150, "Read": 300, "Failed": 100},
    "flush_interval_ms": 100,
    "max_per_post": 500,
    "push_concurrency": 2,
    "read_rate": 0.5,
    "duplicate_rate": 0.05,
    "failures": [{"regex": r"\d*13", "code": "131050"}, {"regex": r"\d*7", "code": "131026"}],
}
"""What the endpoint pushes: Read for half the delivered, Failed for numbers ending in 13 (opted out
of marketing) or 7 (not on WhatsApp), a twentieth of reports pushed twice."""


def _bad_messages(codec: PlainAvroCodec) -> list[bytes]:
    invalid = request_record("bad-number", "welcome", "en", ["not-a-phone"])
    too_short = request_record("bad-fallback", "welcome", "en", ["8613911112222"], fallback_duration_s=5)
    return [b"\x00garbage", b"not avro at all", codec.encode_request(invalid), codec.encode_request(too_short)]


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer(logged({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True}))
    for i, value in enumerate(values):
        produce_waiting(producer, topic, value, key=str(i).encode())
    if producer.flush(30) != 0:
        raise RuntimeError("could not produce the sample traffic")


def _read_back(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list:
    consumer = Consumer(logged({"bootstrap.servers": bootstrap, "group.id": f"demo-reader-{time.time_ns()}", "auto.offset.reset": "earliest", **FAST}))
    consumer.subscribe([topic])
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        out += [m for m in consumer.consume(1000, 0.2) if m.error() is None]
    consumer.close()
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _funnel(say, topic: str, statuses: list, endpoint: dict, duplicates: float, recipients: int) -> None:
    """The delivery funnel from the status topic's records, beside the endpoint's own count."""
    from consumer.receipts.encode import STATUS_SCHEMA

    count: collections.Counter[str] = collections.Counter()
    failed: collections.Counter[str] = collections.Counter()
    matched = 0
    for message in statuses:
        record = schemaless_reader(io.BytesIO(message.value()), STATUS_SCHEMA, None)
        assert isinstance(record, dict), "a SendStatus is a record"
        count[record["status"]] += 1
        matched += record["request_id"] is not None
        if record["status"] == "FAILED":
            failed[record["error_code"]] += 1

    def share(n: int, of: int) -> str:
        return f"{n:,} ({100 * n / max(of, 1):.0f} %)"

    say(f"delivery funnel read back from {topic} (one SendStatus per receipt status, {share(matched, len(statuses))} joined to their request_id):")
    say(
        f"  sent {share(count['SENT'], recipients)} -> delivered {share(count['DELIVERED'], recipients)} -> read {share(count['READ'], recipients)} of {recipients:,} recipients"
    )
    say(f"  failed {count['FAILED']:,}: " + ", ".join(f"{code} x{n:,}" for code, n in failed.most_common()))
    by_status = ", ".join(f"{status} {n:,}" for status, n in sorted(endpoint["acknowledged_by_status"].items()))
    say(
        f"receipts by the local endpoint's own record: {endpoint['reports_acknowledged']:,} pushed and acknowledged ({by_status}), {endpoint['duplicates']:,} of them repeats"
    )
    say(f"repeats dropped by the receiver (its metrics): {int(duplicates):,}")


def _total(service: Service, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for family in service.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


class DemoOutcome(NamedTuple):
    code: int
    """0 when every sample request was SENT."""
    close_abandoned: bool
    """The service's consumer did not close in time (the caller should exit without finalisation)."""


def run_demo(env: Mapping[str, str] | None = None, requests: int = 20_000, out: TextIO = sys.stdout) -> DemoOutcome:
    say = lambda text="": print(text, file=out, flush=True)  # noqa: E731
    say("chatapp-devkit demo: embedded Kafka (librdkafka mock cluster) + local CAMS endpoint.")
    say("NOTHING REAL IS SENT: no Kafka cluster, no Alibaba Cloud account, no phone is involved.")
    env = dict(os.environ if env is None else env)
    base = settings.load(env)
    codec = PlainAvroCodec()
    topics = {base.request_topic: PARTITIONS, base.reply_topic: PARTITIONS, base.dlq_topic: 1, base.status_topic: PARTITIONS}
    receipts_port = _free_port()
    receipts = {**RECEIPTS, "callback_url": f"http://127.0.0.1:{receipts_port}/chatapp/status/{DEMO_TOKEN}"}
    rate = int(base.rate_limit_per_second)
    with MockCluster.start(topics=topics) as cluster, LocalCams.start(accounts={DEMO_KEY_ID: DEMO_SECRET}, rate_limit=rate, receipts=receipts) as cams:
        config = settings.load(
            {
                **env,
                "CHATAPP_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
                "CHATAPP_CAMS_ENDPOINT": cams.url,
                "ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_KEY_ID,
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_SECRET,
                "CHATAPP_KAFKA_CONSUMER_OPT_FETCH_WAIT_MAX_MS": "10",
                "CHATAPP_METRICS_PORT": env.get("CHATAPP_METRICS_PORT", "0"),
                # receipts: the join in memory, the receiver hosted by this process on the endpoint's callback URL
                "CHATAPP_RECEIPTS_JOIN": "on",
                "CHATAPP_RECEIPTS_TOKEN": DEMO_TOKEN,
                "CHATAPP_RECEIPTS_HOST": "127.0.0.1",
                "CHATAPP_RECEIPTS_PORT": str(receipts_port),
            }
        )
        bad = _bad_messages(codec)
        values = [codec.encode_request(r) for r in sample_records(requests)] + bad
        say(f"producing {requests:,} requests over 5 templates x 2 languages, plus {len(bad)} bad messages ...")
        _produce(cluster.bootstrap_servers, config.request_topic, values)
        expected_results = requests + 2  # the two invalid requests get REJECTED results; 2 go to the DLQ
        service = Service(config)
        started = time.monotonic()
        last = [started]
        asked = [started]
        sent_at: list[float] = []  # when every result was in (the receipts' last pushes come after)

        def receipts_pushed(now: float) -> bool:
            """Every receipt of the accepted calls pushed and acknowledged (asked twice a second)."""
            if now - asked[0] < 0.5:
                return False
            asked[0] = now
            stats = cams.receipts(limit=0)["stats"]
            return bool(stats["pending"] == 0 and stats["planned"] > 0)

        def tick() -> None:
            now = time.monotonic()
            published = _total(service, "chatapp_results_total")
            if now - last[0] >= 1.0:
                last[0] = now
                say(
                    f"  {now - started:5.1f}s  results {int(published):>6,}/{expected_results:,}  "
                    f"API calls {int(_total(service, 'chatapp_api_calls_total'))}  buffered {int(_total(service, 'chatapp_buffered_recipients')):,}  "
                    f"receipts {int(_total(service, 'chatapp_receipts_published_total')):,}"
                )
            if published >= expected_results and _total(service, "chatapp_dlq_records_total") >= 2:
                sent_at[:] = sent_at or [now]
                if receipts_pushed(now):
                    service.request_stop()
            elif now - started > 300:
                say("demo: giving up after 300 s")
                service.request_stop()

        service.run(install_signals=True, on_tick=tick)
        elapsed = (sent_at[0] if sent_at else time.monotonic()) - started
        results = _read_back(cluster.bootstrap_servers, config.reply_topic, expected_results)
        dlq = _read_back(cluster.bootstrap_servers, config.dlq_topic, 2)
        statuses: collections.Counter[str] = collections.Counter()
        for message in results:
            record = schemaless_reader(io.BytesIO(message.value()), RESULT_SCHEMA, None)
            assert isinstance(record, dict), "a SendResult is a record"
            statuses[record["status"]] += 1
        stats = cams.stats()
        calls_ok = _total(service, "chatapp_api_calls_total", code="OK")
        sent_recipients = _total(service, "chatapp_api_recipients_total")
        say()
        by_count = dict(statuses.most_common())  # most first: the same line whatever order the results came back in
        say(f"results read back from {config.reply_topic}: {by_count}  ({len(results):,} records)")
        say(
            f"dead letters read back from {config.dlq_topic}: {len(dlq)} ({', '.join(sorted({dict(m.headers())['chatapp.dlq.reason'].decode() for m in dlq}))})"
        )
        say(
            f"API calls by the service's metrics: {int(calls_ok)} accepted carrying {int(sent_recipients):,} recipients "
            f"(mean {sent_recipients / max(calls_ok, 1):,.0f} per call, cap 1,000)"
        )
        say(
            f"API calls by the local endpoint's own record: {stats['accepted_calls']} accepted carrying {stats['recipients_accepted']:,} recipients, "
            f"max {stats['max_accepted_1s']} in any 1 s window (limit {int(config.rate_limit_per_second)})"
        )
        say(f"wall time {elapsed:.1f}s: {stats['recipients_accepted'] / elapsed:,.0f} recipients/s accepted by the endpoint")
        say("(the broker and the endpoint are processes on this machine: nothing left it)")
        say()
        record = cams.receipts()
        expected_statuses = len({(e["MessageId"], e["Status"]) for e in record["log"] if e["fate"] == "acknowledged"})
        statuses_read = _read_back(cluster.bootstrap_servers, config.status_topic, expected_statuses)
        _funnel(say, config.status_topic, statuses_read, record["stats"], _total(service, "chatapp_receipts_duplicates_total"), stats["recipients_accepted"])
        return DemoOutcome(0 if statuses.get("SENT", 0) == requests else 1, service.close_abandoned)
