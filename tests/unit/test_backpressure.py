"""BufferBound: the back-pressure bound follows the rate a process actually sends at."""

from __future__ import annotations

from consumer.backpressure import BATCHES_PER_KEY, MIN_SPAN_S, RATE_WINDOW_S, BufferBound


def test_the_cap_until_the_rate_is_known() -> None:
    bound = BufferBound(cap=50_000, seconds=5.0, batch_recipients=1000)
    assert bound.limit(0.0) == 50_000, "no results yet"
    bound.finished(1000, "k", 0.0)
    assert bound.limit(MIN_SPAN_S / 2) == 50_000, "half a second of results says little"


def test_a_share_of_the_budget_holds_seconds_of_its_own_rate() -> None:
    bound = BufferBound(cap=50_000, seconds=5.0, batch_recipients=1000)
    for k in range(11):  # one instance of three: 1,000 recipients every 0.3 s, 3,333/s, over 2 keys
        bound.finished(1000, k % 2, k * 0.3)
    assert bound.limit(3.0) == 5 * 11_000 // 3


def test_many_keys_keep_a_few_full_batches_each_above_the_rate_bound() -> None:
    bound = BufferBound(cap=50_000, seconds=5.0, batch_recipients=1000)
    for k in range(11):  # the same 3,333/s spread over 10 keys: 16,666 would leave about one and a half batches per key
        bound.finished(1000, f"template-{k % 10}", k * 0.3)
    assert bound.limit(3.0) == 10 * BATCHES_PER_KEY * 1000
    for k in range(11, 40):  # later on, two keys only
        bound.finished(1000, k % 2, k * 0.3)
    # 16 batches finished in the last 4.8 s (7.2 .. 11.7): 3,333/s, 16,666 above the 2 keys' 6,000
    assert bound.limit(12.0) == 16_666, "keys not sent for RATE_WINDOW_S no longer count"


def test_the_whole_budget_keeps_the_cap_and_a_trickle_keeps_the_floor_of_its_key() -> None:
    whole = BufferBound(cap=50_000, seconds=5.0, batch_recipients=1000)
    for k in range(31):  # 10,000/s
        whole.finished(1000, "k", k * 0.1)
    assert whole.limit(3.0) == 50_000
    trickle = BufferBound(cap=50_000, seconds=5.0, batch_recipients=1000)
    trickle.finished(10, "k", 0.0)
    assert trickle.limit(2.0) == BATCHES_PER_KEY * 1000


def test_old_results_leave_the_rate_and_an_idle_process_gets_the_cap_back() -> None:
    bound = BufferBound(cap=50_000, seconds=5.0, batch_recipients=1000)
    for k in range(31):
        bound.finished(100, "k", k * 0.1)  # 3,100 in 3 s
    assert bound.limit(3.0) == 5_166
    assert bound.limit(3.0 + RATE_WINDOW_S + 0.1) == 50_000, "nothing finished lately: a new backlog may fill the cap"


def test_zero_seconds_is_the_plain_cap_and_the_floor_never_exceeds_it() -> None:
    off = BufferBound(cap=50_000, seconds=0.0, batch_recipients=1000)
    for k in range(31):
        off.finished(10, "k", k * 0.1)
    assert off.limit(3.0) == 50_000
    small = BufferBound(cap=2_000, seconds=5.0, batch_recipients=1000)
    for k in range(31):
        small.finished(1, "k", k * 0.1)
    assert small.limit(3.0) == 2_000
    crowded = BufferBound(cap=50_000, seconds=5.0, batch_recipients=1000)
    for k in range(31):
        crowded.finished(10, k, k * 0.1)  # 31 keys: 93 batches' floor, more than the cap
    assert crowded.limit(3.0) == 50_000
