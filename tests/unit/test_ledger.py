"""consumer.fingerprint, and consumer.ledger: the in-memory ledger with an injected clock (no Redis: RedisLedger on a live server
is tested in tests/integration/test_ledger_redis.py), and RedisLedger with no server to reach."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import time

import pytest

from consumer.codec import PlainAvroCodec
from consumer.fingerprint import fingerprint
from consumer.ledger import CLAIMED, InMemoryLedger, LedgerEntry, in_flight_at
from consumer.ledger_redis import RedisLedger
from consumer.limiter import connect
from consumer.models import SendRequest
from tests.fixtures.builders import RICH, avro_recipient, random_record, req, result, settled
from tests.fixtures.clock import FakeClock
from tests.fixtures.ledger_contract import (  # noqa: F401 (collected here, with this module's ledger)
    test_a_request_twice_in_one_claim_is_claimed_once,
    test_claim_is_won_once_and_the_loser_sees_the_winner,
    test_ids_are_scoped_by_account,
    test_in_flight_then_done_keeps_the_fingerprint_and_the_mark_its_calls_task_id,
    test_release_drops_a_claim_and_orphans_a_mark_in_flight,
    test_stored_result_round_trips_equal,
    test_take_over_replaces_only_the_entry_it_was_given,
)

RETENTION = 3600


def wall_clock() -> FakeClock:
    return FakeClock(1_767_225_600.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fingerprint_tells_content_apart_and_ignores_key_order() -> None:
    a = req("x")
    assert fingerprint(a) == fingerprint(req("x"))
    assert fingerprint(a) != fingerprint(req("x", numbers=("8613900000002",)))
    assert fingerprint(a) != fingerprint(req("x", account="other"))
    assert fingerprint(a) != fingerprint(req("x", template="goodbye"))
    swapped = req("x")
    swapped.recipients = [{"to": "1", "template_params": {"a": "1", "b": "2"}}]
    same = req("x")
    same.recipients = [{"template_params": {"b": "2", "a": "1"}, "to": "1"}]
    assert fingerprint(swapped) == fingerprint(same)


def earlier_fingerprint(request: SendRequest) -> str:
    """The fingerprint as it was worked out before it was made faster (issue 19): marks left in a
    shared Redis ledger by earlier versions must still match the requests they were written for."""
    content = json.dumps([list(request.key), request.recipients], sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.blake2b(content.encode(), digest_size=16).hexdigest()


def test_fingerprint_is_the_one_earlier_versions_stored() -> None:
    codec, rng = PlainAvroCodec(), random.Random(19)
    requests = [codec.decode_request(codec.encode_request(random_record(rng, i))) for i in range(300)]
    escapes = avro_recipient('+86 "139"\\\n\u2028\x00', recipient_type="ü✓🚀", template_params={"z": "1", "a": '"', "é": "\t"}, payload=["", "\x7f"])
    usual = avro_recipient('"\\é\n', template_params={'\u2028"': "\\\x1f✓"})  # the shape fingerprint() writes itself, escapes in it
    odd = [
        {"to": "1", "template_params": {"a": "1"}},
        avro_recipient("1", template_params={"n": 1}),
        avro_recipient("1", payload=("p",)),
        avro_recipient("1", tag=None),
    ]
    for recipients in ([RICH], [escapes, RICH], [avro_recipient("1"), avro_recipient("1")], [usual], [usual, escapes, avro_recipient("2")], odd):
        requests.append(req("rich"))
        requests[-1].recipients = recipients
    assert len({fingerprint(r) for r in requests}) == len(requests)
    for request in requests:
        request.fingerprint = None
        assert fingerprint(request) == earlier_fingerprint(request)


# -- the contract both ledgers keep (tests/fixtures/ledger_contract.py), on the in-memory one --------


@pytest.fixture
def ledger():
    return InMemoryLedger(RETENTION)


# -- InMemoryLedger -------------------------------------------------------------------------------


def test_in_memory_entries_expire_after_retention() -> None:
    clock = wall_clock()
    ledger = InMemoryLedger(RETENTION, clock=clock)
    ledger.mark_done(settled(req("a"), result("a")))
    clock.now += RETENTION + 1
    assert ledger.lookup([req("a")]) == [None]


def test_in_memory_oldest_entries_go_beyond_max_entries() -> None:
    clock = wall_clock()
    ledger = InMemoryLedger(RETENTION, clock=clock, max_entries=3)
    for i in range(5):
        ledger.claim([req(f"r{i}")], "me")
        clock.now += 1
    assert [e is not None for e in ledger.lookup([req(f"r{i}") for i in range(5)])] == [False, False, True, True, True]


def test_in_memory_a_done_mark_moves_the_id_to_the_newest_end() -> None:
    ledger = InMemoryLedger(RETENTION, clock=wall_clock(), max_entries=3)
    ledger.claim([req("a"), req("b"), req("c")], "me")
    ledger.mark_done(settled(req("a"), result("a")))
    ledger.claim([req("d")], "me")
    assert [e is not None for e in ledger.lookup([req(i) for i in "abcd"])] == [True, False, True, True]  # b was the oldest mark


# -- RedisLedger without a server (the server's tests: tests/integration/test_ledger_redis.py) -------


def test_redis_down_with_the_service_client_never_raises() -> None:
    down = connect(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    ledger = RedisLedger(down, RETENTION, key_prefix="chatapp:ledger:")
    started = time.monotonic()
    assert ledger.claim([req("a")], "me") == [None], "claimed: sent without de-duplication"
    ledger.mark_done(settled(req("a"), result("a")))
    ledger.release([req("a")], "me")
    assert ledger.take_over(req("a"), LedgerEntry(CLAIMED, "x", 0.0, token=b"x"), "me")
    assert not ledger.healthy()
    assert time.monotonic() - started < 5
    down.close()


def test_redis_marks_are_written_as_one_value_each_would_be(monkeypatch) -> None:
    """The marks of a claim (one JSON head for them all) are byte for byte what ``_value`` writes,
    whatever the owner's name holds."""
    monkeypatch.setattr(time, "time", lambda: 1_767_225_600.125)
    requests = [req("a"), req("b", numbers=("8613900000002", "8613900000003"))]
    for owner in ("host:1:abc", 'ü "quoted" \\ name'):
        marks = RedisLedger._marks(requests, CLAIMED, owner)
        assert marks == [RedisLedger._value(r, CLAIMED, owner) for r in requests]
        assert [json.loads(m)["f"] for m in marks] == [fingerprint(r) for r in requests]


def test_a_released_mark_is_named_as_released_not_by_an_empty_owner() -> None:
    assert in_flight_at("host-1:42") == "was in flight at host-1:42 when it stopped"
    assert in_flight_at("") == "was in flight at an instance that released it when stopping"
