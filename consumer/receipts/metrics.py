"""The receiver's Prometheus catalogue (prefix ``chatapp_receipts_``). Labels hold statuses,
HTTP codes and reasons: never a number, a MessageId or a request id."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STATUSES = ("SENT", "DELIVERED", "READ", "FAILED", "DELETED", "SUBSCRIBED", "UNSUBSCRIBED", "UNKNOWN")
MALFORMED = ("not-json", "not-an-array", "report", "too-large", "no-length")
ANSWERS = ("200", "400", "401", "404", "405", "411", "413", "503")
ERRORS = ("redis", "publish", "mark-done", "recover", "late", "internal")
SINCE_SEND_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400)


class ReceiptMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self.pushes = Counter("chatapp_receipts_pushes", "Receipt pushes (HTTP POSTs) answered, by HTTP status.", ["code"], registry=r)
        self.received = Counter("chatapp_receipts_received", "Reports read from pushes, by status.", ["status"], registry=r)
        self.published = Counter(
            "chatapp_receipts_published",
            "Statuses published to the status topic (acknowledged by the broker), by status and join (matched: a request claims it; unmatched: request_id null).",
            ["status", "join"],
            registry=r,
        )
        self.duplicates = Counter("chatapp_receipts_duplicates", "Reports dropped as repeats of one already published.", registry=r)
        self.recovered = Counter(
            "chatapp_receipts_recovered",
            "Reports a dead receiver's claim held that were found already published on the status topic (not published again).",
            registry=r,
        )
        self.busy = Counter("chatapp_receipts_busy", "Reports another push held unpublished (answered 503: CAMS pushes them again).", registry=r)
        self.malformed = Counter(
            "chatapp_receipts_malformed", "Malformed pushes (answered 400/411/413) and reports (skipped), by reason.", ["reason"], registry=r
        )
        self.errors = Counter(
            "chatapp_receipts_errors",
            "Receiver errors (Redis, publishing, marking done, reading back a dead receiver's statuses, claims too old to publish, internal), by kind.",
            ["kind"],
            registry=r,
        )
        self.since_send = Histogram(
            "chatapp_receipts_since_send_seconds",
            "From the call's acceptance to a matched receipt's Timestamp, by status (DELIVERED, READ, FAILED).",
            ["status"],
            buckets=SINCE_SEND_BUCKETS,
            registry=r,
        )
        self.up = Gauge("chatapp_receipts_up", "1 while the receipts receiver runs.", registry=r)
        for status in STATUSES:
            self.received.labels(status)
            for join in ("matched", "unmatched"):
                self.published.labels(status, join)
        for reason in MALFORMED:
            self.malformed.labels(reason)
        for code in ANSWERS:
            self.pushes.labels(code)
        for kind in ERRORS:
            self.errors.labels(kind)
        for status in ("DELIVERED", "READ", "FAILED"):
            self.since_send.labels(status)

    def render(self) -> bytes:
        return generate_latest(self.registry)
