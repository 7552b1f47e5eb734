"""consumer.scheduler.FairScheduler: round-robin between keys, urgent first, retries, top-up."""

from __future__ import annotations

import random

from consumer.models import Batch, BatchKey
from consumer.scheduler import FairScheduler
from tests.fixtures.builders import make_batch, make_key, slice_sizes

NOW = 1_767_225_600.0  # epoch seconds: urgency compares ``now`` with expires_at (epoch ms)


def key(name: str, account: str = "default") -> BatchKey:
    return make_key(template_code=name, account=account)


def full(k: BatchKey, size: int = 10, expires: int | None = None) -> Batch:
    return make_batch(size, key=k, expires=[expires])


def drain(scheduler: FairScheduler, account: str = "default", now: float = NOW) -> list[Batch]:
    out = []
    while (batch := scheduler.pop(account, now)) is not None:
        out.append(batch)
    return out


def drain_everything(scheduler: FairScheduler, accounts: tuple[str, ...]) -> list[Batch]:
    """Pop every batch of ``accounts``, delayed ones included (far in the future)."""
    out: list[Batch] = []
    for account in accounts:
        out += drain(scheduler, account, NOW + 1e6)
    return out


# -- basics ----------------------------------------------------------------------------------------


def test_empty_scheduler() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    assert s.pop("default", NOW) is None
    assert s.ready_accounts(NOW) == []
    assert s.until_next_retry(NOW) is None
    assert len(s) == 0 and s.buffered_recipients == 0


def test_push_then_pop_counts() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    batch = full(key("a"), 7)
    s.push(batch)
    assert len(s) == 1 and s.buffered_recipients == 7
    assert s.ready_accounts(NOW) == ["default"]
    assert s.pop("default", NOW) is batch
    assert len(s) == 0 and s.buffered_recipients == 0
    assert s.ready_accounts(NOW) == []


def test_one_key_is_fifo() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    batches = [full(key("a")) for _ in range(5)]
    for b in batches:
        s.push(b)
    assert drain(s) == batches


# -- fairness ----------------------------------------------------------------------------------------


def test_round_robin_across_keys() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    a, b, c = key("a"), key("b"), key("c")
    for _ in range(3):
        for k in (a, b, c):
            s.push(full(k))
    assert [x.key.template_code for x in drain(s)] == ["a", "b", "c"] * 3


def test_campaign_of_1000_batches_does_not_starve_three_other_keys() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    campaign = key("campaign")
    others = [key("otp"), key("shipping"), key("welcome")]
    for _ in range(1000):
        s.push(full(campaign))
    for k in others:
        for _ in range(30):
            s.push(full(k))
    K = 4  # keys waiting
    last_served: dict[BatchKey, int] = {k: -1 for k in others}
    remaining = {k: 30 for k in others}
    pops = 0
    while any(remaining.values()):
        batch = s.pop("default", NOW)
        assert batch is not None
        if batch.key in remaining:
            # a waiting key is served within K pops of its previous service (or of the start)
            assert pops - last_served[batch.key] <= K
            last_served[batch.key] = pops
            remaining[batch.key] -= 1
        pops += 1
        for k in others:
            if remaining[k]:
                assert pops - last_served[k] <= K, f"{k.template_code} starved for {pops - last_served[k]} pops"
    assert pops <= 30 * K
    assert len(s) == 1000 - (pops - 90)
    assert s.buffered_recipients == 10 * len(s)


def test_key_arriving_behind_a_campaign_is_served_within_k_pops() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    campaign = key("campaign")
    for _ in range(1000):
        s.push(full(campaign))
    rng = random.Random(7)
    late_keys = [key("x"), key("y"), key("z")]
    pops_since_push: dict[int, int] = {}
    for step in range(300):
        if step % 5 == 0:
            b = full(rng.choice(late_keys))
            s.push(b)
            pops_since_push[id(b)] = 0
        batch = s.pop("default", NOW)
        assert batch is not None
        pops_since_push.pop(id(batch), None)
        for ident in pops_since_push:
            pops_since_push[ident] += 1
        # one late batch every 5 pops never queues up: each is served within K = 4 pops
        assert all(n < 4 for n in pops_since_push.values())


def test_accounts_are_independent() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    a1, a2 = key("t", account="acc1"), key("t", account="acc2")
    for _ in range(3):
        s.push(full(a1))
    s.push(full(a2, 4))
    assert sorted(s.ready_accounts(NOW)) == ["acc1", "acc2"]
    assert [b.key for b in drain(s, "acc1")] == [a1] * 3
    assert s.pop("acc1", NOW) is None
    assert s.ready_accounts(NOW) == ["acc2"]
    assert len(s) == 1 and s.buffered_recipients == 4
    assert s.pop("acc2", NOW).key == a2
    assert s.pop("nobody", NOW) is None


def test_same_key_fields_in_different_accounts_never_top_up_each_other() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    s.push(full(key("t", account="acc1"), 2))
    s.push(full(key("t", account="acc2"), 2))
    assert len(s) == 2
    assert [b.recipient_count for b in drain(s, "acc1")] == [2]


# -- urgency ---------------------------------------------------------------------------------------


def test_urgent_batch_goes_first() -> None:
    s = FairScheduler(10, urgent_window_s=2.0, wall_clock=lambda: NOW)
    for name in ("a", "b", "c"):
        s.push(full(key(name)))
    urgent = full(key("d"), expires=int((NOW + 1.0) * 1000))
    s.push(urgent)
    assert s.pop("default", NOW) is urgent


def test_not_yet_urgent_batch_waits_its_turn() -> None:
    s = FairScheduler(10, urgent_window_s=2.0, wall_clock=lambda: NOW)
    first = full(key("a"))
    s.push(first)
    s.push(full(key("b"), expires=int((NOW + 2.5) * 1000)))
    assert s.pop("default", NOW) is first


def test_urgent_window_edge_is_inclusive() -> None:
    s = FairScheduler(10, urgent_window_s=2.0, wall_clock=lambda: NOW)
    s.push(full(key("a")))
    edge = full(key("b"), expires=int((NOW + 2.0) * 1000))
    s.push(edge)
    assert s.pop("default", NOW) is edge


def test_earliest_expiry_first_among_urgent_batches() -> None:
    s = FairScheduler(10, urgent_window_s=2.0, wall_clock=lambda: NOW)
    later = full(key("a"), expires=int((NOW + 1.5) * 1000))
    sooner = full(key("b"), expires=int((NOW + 0.5) * 1000))
    already = full(key("c"), expires=int((NOW - 3.0) * 1000))
    for b in (later, sooner, already):
        s.push(b)
    assert [s.pop("default", NOW) for _ in range(3)] == [already, sooner, later]


def test_urgent_batch_behind_a_backlog_of_its_own_key_goes_first() -> None:
    """Documented order: a batch holding a request within the urgent window goes first."""
    s = FairScheduler(10, urgent_window_s=2.0, wall_clock=lambda: NOW)
    k = key("campaign")
    for _ in range(50):
        s.push(full(k))
    urgent = full(k, expires=int((NOW + 1.0) * 1000))
    s.push(urgent)
    popped = s.pop("default", NOW)
    assert popped is urgent, "the urgent batch waits behind 50 batches of the same key"


def test_batch_urgent_because_of_one_of_its_requests() -> None:
    s = FairScheduler(10, urgent_window_s=2.0, wall_clock=lambda: NOW)
    s.push(full(key("a")))
    mixed = make_batch(2, 2, key=key("b"), expires=[None, int((NOW + 1) * 1000)])
    s.push(mixed)
    assert s.pop("default", NOW) is mixed


# -- delayed retries -------------------------------------------------------------------------------


def test_delayed_retry_is_held_until_not_before() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    retry = full(key("a"))
    retry.attempts = 1
    s.push(retry, not_before=NOW + 1.0)
    assert len(s) == 1 and s.buffered_recipients == 10
    assert s.ready_accounts(NOW) == []
    assert s.pop("default", NOW + 0.999) is None
    assert s.until_next_retry(NOW) == 1.0
    assert s.until_next_retry(NOW + 5) == 0.0
    assert s.ready_accounts(NOW + 1.0) == ["default"]
    assert s.pop("default", NOW + 1.0) is retry
    assert s.until_next_retry(NOW + 1.0) is None
    assert len(s) == 0 and s.buffered_recipients == 0


def test_released_retry_goes_to_the_front_of_its_key_and_of_the_round() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    a, b = key("a"), key("b")
    fresh_a = [full(a) for _ in range(3)]
    fresh_b = [full(b) for _ in range(3)]
    for x, y in zip(fresh_a, fresh_b):
        s.push(x)
        s.push(y)
    retry = full(b)
    retry.attempts = 2
    s.push(retry, not_before=NOW + 0.5)
    assert s.pop("default", NOW) is fresh_a[0]
    order = drain(s, now=NOW + 0.5)
    assert order[0] is retry
    # the retry used key b's turn: the round continues with a, and b's own queue is unchanged
    assert order[1:] == [fresh_a[1], fresh_b[0], fresh_a[2], fresh_b[1], fresh_b[2]]


def test_delayed_retries_release_in_not_before_order() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    k = key("a")
    late, early = full(k), full(k)
    late.attempts = early.attempts = 1
    s.push(late, not_before=NOW + 2)
    s.push(early, not_before=NOW + 1)
    assert s.until_next_retry(NOW) == 1.0
    assert s.pop("default", NOW + 1) is early
    assert s.pop("default", NOW + 1) is None
    assert s.pop("default", NOW + 2) is late


def test_until_next_retry_is_the_earliest_over_accounts() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    s.push(full(key("a", account="x")), not_before=NOW + 3)
    s.push(full(key("a", account="y")), not_before=NOW + 1)
    assert s.until_next_retry(NOW) == 1.0


# -- top-up ----------------------------------------------------------------------------------------


def test_fresh_batch_tops_up_the_waiting_batch_of_its_key() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    k = key("a")
    tail = make_batch(5, key=k)
    s.push(tail)
    incoming = make_batch(3, 4, key=k)
    s.push(incoming)
    assert slice_sizes(tail) == [5, 3]
    assert tail.recipient_count == 8
    assert slice_sizes(incoming) == [4]
    assert incoming.recipient_count == 4
    assert len(s) == 2 and s.buffered_recipients == 12
    assert drain(s) == [tail, incoming]


def test_fully_absorbed_batch_is_not_queued() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    k = key("a")
    tail = make_batch(5, key=k)
    s.push(tail)
    s.push(make_batch(2, 3, key=k))
    assert slice_sizes(tail) == [5, 2, 3]
    assert len(s) == 1 and s.buffered_recipients == 10
    assert drain(s) == [tail]
    assert len(s) == 0 and s.buffered_recipients == 0


def test_top_up_moves_whole_slices_only_and_keeps_their_order() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    k = key("a")
    tail = make_batch(5, key=k)
    s.push(tail)
    incoming = make_batch(6, 1, key=k)
    s.push(incoming)
    assert slice_sizes(tail) == [5]  # 6 does not fit; 1 would, but stays behind it
    assert slice_sizes(incoming) == [6, 1]
    assert len(s) == 2 and s.buffered_recipients == 12


def test_full_tail_takes_nothing() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    k = key("a")
    s.push(full(k))
    s.push(make_batch(1, key=k))
    assert [b.recipient_count for b in drain(s)] == [10, 1]


def test_top_up_only_into_the_last_waiting_batch() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    k = key("a")
    first, second = make_batch(4, key=k), make_batch(9, key=k)
    s.push(first)
    s.push(second)  # 9 does not fit in first's room of 6
    s.push(make_batch(3, key=k))  # room 1 in second, none taken; first is not the tail
    assert [slice_sizes(b) for b in drain(s)] == [[4], [9], [3]]


def test_retry_batches_are_never_topped_up() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    k = key("a")
    retry = make_batch(2, key=k)
    retry.attempts = 1
    s.push(retry, not_before=NOW)  # released at once, to the front
    assert s.ready_accounts(NOW) == ["default"]
    fresh = make_batch(2, key=k)
    s.push(fresh)
    assert slice_sizes(retry) == [2]
    assert drain(s) == [retry, fresh]


def test_retry_or_split_half_pushed_without_delay_is_never_merged() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    k = key("a")
    tail = make_batch(2, key=k)
    s.push(tail)
    half = make_batch(3, key=k)
    half.attempts = 1  # split halves inherit the attempts of the batch they came from
    s.push(half)
    assert slice_sizes(tail) == [2]
    assert slice_sizes(half) == [3]
    assert len(s) == 2
    another = make_batch(1, key=k)
    s.push(another)  # the tail is now the half: fresh batches do not join it either
    assert slice_sizes(half) == [3]
    assert drain(s) == [tail, half, another]


def test_top_up_respects_the_scheduler_max() -> None:
    s = FairScheduler(max_recipients=1000)
    k = key("a")
    s.push(make_batch(600, key=k))
    s.push(make_batch(300, 100, 1, key=k))
    assert [b.recipient_count for b in drain(s)] == [1000, 1]


def test_different_keys_never_top_up() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    s.push(make_batch(2, key=key("a")))
    s.push(make_batch(2, key=key("b")))
    assert len(s) == 2


# -- remove ----------------------------------------------------------------------------------------


def test_remove_by_predicate_keeps_counts_right() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    ka, kb = key("a", account="acc1"), key("b", account="acc2")
    mixed = make_batch(3, 4, key=ka)
    mixed.slices[1].request.source = mixed.slices[1].request.source._replace(partition=1)
    only_revoked = make_batch(5, key=ka)
    only_revoked.slices[0].request.source = only_revoked.slices[0].request.source._replace(partition=1)
    s.push(mixed)
    s.push(only_revoked)  # 5 does not fit in mixed's room of 3
    delayed = make_batch(2, 6, key=kb)
    delayed.attempts = 1
    delayed.slices[0].request.source = delayed.slices[0].request.source._replace(partition=1)
    s.push(delayed, not_before=NOW + 10)
    kept = make_batch(1, key=kb)
    s.push(kept)
    assert len(s) == 4 and s.buffered_recipients == 21

    removed = s.remove(lambda piece: piece.request.source.partition == 1)

    assert sorted(len(p.recipients) for p in removed) == [2, 4, 5]
    assert len(s) == 3
    assert s.buffered_recipients == 3 + 6 + 1
    assert [slice_sizes(b) for b in drain(s, "acc1")] == [[3]]
    assert [slice_sizes(b) for b in drain(s, "acc2", NOW + 10)] == [[6], [1]]  # released retry first
    assert len(s) == 0 and s.buffered_recipients == 0


def test_remove_everything_empties_the_scheduler() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    for name in "abc":
        s.push(full(key(name)))
    s.push(full(key("d")), not_before=NOW + 5)
    removed = s.remove(lambda piece: True)
    assert len(removed) == 4
    assert len(s) == 0 and s.buffered_recipients == 0
    assert s.ready_accounts(NOW + 10) == []
    assert s.until_next_retry(NOW) is None


def test_remove_nothing_changes_nothing() -> None:
    s = FairScheduler(10, wall_clock=lambda: NOW)
    batches = [full(key(name)) for name in "ab"]
    for b in batches:
        s.push(b)
    assert s.remove(lambda piece: False) == []
    assert len(s) == 2 and s.buffered_recipients == 20
    assert drain(s) == batches


def test_random_operations_keep_len_and_buffered_recipients_consistent() -> None:
    for seed in range(10):
        rng = random.Random(seed)
        s = FairScheduler(10, wall_clock=lambda: NOW)
        keys = [key(n, account=a) for n in "abc" for a in ("x", "y")]
        now = NOW
        pushed = popped = removed = 0
        for _ in range(400):
            op = rng.random()
            if op < 0.5:
                sizes = [rng.randint(1, 3) for _ in range(rng.randint(1, 3))]  # at most 9 recipients
                b = make_batch(*sizes, key=rng.choice(keys))
                pushed += b.recipient_count
                if rng.random() < 0.2:
                    b.attempts = 1
                    s.push(b, not_before=now + rng.random())
                else:
                    s.push(b)
            elif op < 0.9:
                account = rng.choice(("x", "y"))
                b = s.pop(account, now)
                if b is not None:
                    assert b.key.account == account
                    assert 0 < b.recipient_count <= 10
                    assert b.recipient_count == sum(slice_sizes(b))
                    popped += b.recipient_count
            else:
                target = rng.randrange(3)
                gone = s.remove(lambda piece, target=target: piece.request.source.offset % 3 == target)
                removed += sum(len(p.recipients) for p in gone)
            now += rng.random() * 0.3
            assert s.buffered_recipients == pushed - popped - removed
        # what is left comes out whole, and accounts for every count
        waiting = len(s)
        rest = drain_everything(s, ("x", "y"))
        assert len(rest) == waiting
        assert all(b.recipient_count == sum(slice_sizes(b)) > 0 for b in rest)
        assert sum(b.recipient_count for b in rest) == pushed - popped - removed
        assert len(s) == 0 and s.buffered_recipients == 0


def test_a_young_partial_batch_lets_full_batches_go_first_until_it_has_waited() -> None:
    s = FairScheduler(10, partial_wait_s=1.0, wall_clock=lambda: NOW)
    partial = make_batch(3, key=key("small"))
    partial.ready_at = NOW
    s.push(partial)
    complete = full(key("big"))
    complete.ready_at = NOW
    s.push(complete)
    assert s.pop("default", NOW + 0.5) is complete
    later = full(key("big"))
    later.ready_at = NOW + 0.5
    s.push(later)
    assert s.pop("default", NOW + 1.0) is partial, "after partial_wait_s the partial batch takes its turn"
    assert s.pop("default", NOW + 1.0) is later
