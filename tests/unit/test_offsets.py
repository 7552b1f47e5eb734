"""consumer.offsets: the committable position never passes an unfinished offset."""

from __future__ import annotations

import random

import pytest

from consumer.finished import decode
from consumer.offsets import OffsetTracker, PartitionOffsets


def positions(commits: dict) -> dict:
    """The positions of ``OffsetTracker.to_commit``'s (position, metadata) pairs."""
    return {tp: position for tp, (position, _) in commits.items()}


TP = ("chatapp.send-requests", 0)
TP1 = ("chatapp.send-requests", 1)


def tracked(*offsets: int) -> PartitionOffsets:
    state = PartitionOffsets()
    for offset in offsets:
        state.track(offset)
    return state


def test_new_partition_has_no_position_and_is_not_dirty() -> None:
    state = PartitionOffsets()
    assert state.position is None
    assert state.unfinished == 0
    assert not state.dirty()


def test_position_is_lowest_unfinished_offset() -> None:
    state = tracked(10, 11, 12)
    assert state.position == 10
    assert state.unfinished == 3


def test_in_order_finishes_advance_one_at_a_time_then_past_the_last() -> None:
    state = tracked(10, 11, 12)
    state.finish(10)
    assert state.position == 11
    state.finish(11)
    assert state.position == 12
    state.finish(12)
    assert state.position == 13
    assert state.unfinished == 0


def test_out_of_order_finish_does_not_move_past_unfinished_offset() -> None:
    state = tracked(0, 1, 2, 3)
    state.finish(2)
    state.finish(3)
    assert state.position == 0
    state.finish(1)
    assert state.position == 0
    assert state.unfinished == 4  # nothing leaves the queue before offset 0 finishes
    state.finish(0)
    assert state.position == 4
    assert state.unfinished == 0


def test_finishing_the_head_skips_over_already_finished_offsets_only() -> None:
    state = tracked(0, 1, 2, 3, 4)
    state.finish(1)
    state.finish(2)
    state.finish(4)
    state.finish(0)
    assert state.position == 3
    assert state.unfinished == 2  # 3 and the already finished 4 behind it
    state.finish(3)
    assert state.position == 5


def test_gaps_in_offsets_of_a_compacted_topic() -> None:
    state = tracked(5, 9, 12)
    assert state.position == 5
    state.finish(9)
    assert state.position == 5
    state.finish(5)
    assert state.position == 12  # jumps the absent 6..8 and the finished 9, stops at unfinished 12
    state.finish(12)
    assert state.position == 13  # one past the highest seen


def test_gap_after_everything_finished_then_track_more() -> None:
    state = tracked(5)
    state.finish(5)
    assert state.position == 6
    state.track(20)
    assert state.position == 20
    state.finish(20)
    assert state.position == 21


def test_offsets_must_increase() -> None:
    state = tracked(5, 9)
    with pytest.raises(ValueError, match="offsets must increase"):
        state.track(7)
    with pytest.raises(ValueError, match="offsets must increase"):
        state.track(9)
    state.track(10)  # strictly greater is fine
    assert state.position == 5


def test_offsets_must_increase_even_after_everything_finished() -> None:
    state = tracked(3)
    state.finish(3)
    with pytest.raises(ValueError):
        state.track(3)


def test_dirty_until_committed_then_dirty_again_when_position_moves() -> None:
    state = tracked(0, 1)
    assert state.dirty()  # position 0 was never committed
    state.committed(0)
    assert not state.dirty()
    state.finish(1)  # out of order: the position stays 0, what is finished above it changed
    assert state.dirty()
    assert decode(0, state.metadata()) == {1}
    state.committed(0)
    assert not state.dirty()
    state.finish(0)
    assert state.position == 2
    assert state.dirty()
    state.committed(2)
    assert not state.dirty()


def test_a_partition_assigned_with_finished_offsets_skips_them_and_moves_past() -> None:
    from consumer.offsets import OffsetTracker

    tracker = OffsetTracker()
    tracker.assign([TP], {TP: {11, 12, 14}})
    state = tracker.partition(TP)
    assert state is not None
    assert [state.track(o) for o in range(10, 16)] == [True, False, False, True, False, True]
    assert state.position == 10
    tracker.finish([(TP[0], TP[1], 10)])
    assert state.position == 13  # 11 and 12 were finished before
    tracker.finish([(TP[0], TP[1], 13), (TP[0], TP[1], 15)])
    assert tracker.to_commit() == {TP: (16, "")}


def test_tracker_finish_skips_unassigned_or_revoked_partitions() -> None:
    tracker = OffsetTracker()
    tracker.finish([(*TP, 0)])  # never assigned: nothing to finish
    tracker.assign([TP, TP1])
    tracker.partition(TP).track(0)
    tracker.partition(TP1).track(0)
    tracker.finish([(*TP, 0), ("gone", 0, 0), (*TP1, 0, "more fields are ignored")])
    assert tracker.unfinished() == 0
    assert positions(tracker.to_commit()) == {TP: 1, TP1: 1}
    tracker.partition(TP).track(1)
    tracker.revoke([TP])
    tracker.finish([(*TP, 1)])
    assert tracker.partition(TP) is None and tracker.partition(TP1) is not None
    assert positions(tracker.to_commit()) == {TP1: 1}


def test_revoke_forgets_the_partition_state() -> None:
    tracker = OffsetTracker()
    tracker.assign([TP, TP1])
    tracker.partition(TP).track(100)
    tracker.partition(TP1).track(7)
    tracker.revoke([TP])
    assert tracker.partitions == [TP1]
    assert positions(tracker.to_commit()) == {TP1: 7}
    assert tracker.unfinished() == 1
    # re-assigned later: starts fresh, a lower offset is accepted again
    tracker.assign([TP])
    tracker.partition(TP).track(50)
    assert positions(tracker.to_commit([TP])) == {TP: 50}


def test_revoke_of_unknown_partition_is_a_no_op() -> None:
    tracker = OffsetTracker()
    tracker.revoke([TP])
    assert tracker.partitions == []


def test_assign_twice_keeps_existing_state() -> None:
    tracker = OffsetTracker()
    tracker.assign([TP])
    tracker.partition(TP).track(4)
    tracker.assign([TP])
    assert tracker.unfinished([TP]) == 1
    assert positions(tracker.to_commit()) == {TP: 4}


def test_an_unassigned_partition_has_no_offsets_to_track() -> None:
    assert OffsetTracker().partition(TP) is None


def test_to_commit_lists_only_moved_positions_and_committed_clears_them() -> None:
    tracker = OffsetTracker()
    tracker.assign([TP, TP1])
    assert positions(tracker.to_commit()) == {}  # nothing tracked: no position
    tracker.partition(TP).track(0)
    tracker.partition(TP).track(1)
    tracker.partition(TP1).track(10)
    assert positions(tracker.to_commit()) == {TP: 0, TP1: 10}
    tracker.committed({TP: 0, TP1: 10})
    assert positions(tracker.to_commit()) == {}
    tracker.finish([(*TP, 0)])
    assert positions(tracker.to_commit()) == {TP: 1}
    assert positions(tracker.to_commit([TP1])) == {}
    assert positions(tracker.to_commit([("other", 9)])) == {}
    tracker.committed({TP: 1, ("other", 9): 3})  # unknown partitions are ignored
    assert positions(tracker.to_commit()) == {}


def test_unfinished_counts_per_partition_and_total() -> None:
    tracker = OffsetTracker()
    tracker.assign([TP, TP1])
    for offset in range(3):
        tracker.partition(TP).track(offset)
    tracker.partition(TP1).track(0)
    tracker.finish([(*TP, 2)])  # out of order: still counted until the head finishes
    assert tracker.unfinished() == 4
    assert tracker.unfinished([TP1]) == 1
    assert tracker.unfinished([("gone", 0)]) == 0
    tracker.finish([(*TP, 0), (*TP, 1)])
    assert tracker.unfinished([TP]) == 0


@pytest.mark.parametrize("seed", range(40))
def test_random_finish_orders_position_is_lowest_unfinished_at_every_step(seed: int) -> None:
    rng = random.Random(seed)
    offsets: list[int] = []
    offset = rng.randrange(0, 1000)
    for _ in range(rng.randrange(1, 200)):
        offsets.append(offset)
        offset += rng.choice((1, 1, 1, 2, 5, 17))  # gaps, as in compacted topics
    state = PartitionOffsets()
    pending: set[int] = set()
    to_track = list(offsets)
    finish_pool: list[int] = []
    # interleave tracking (in order) and finishing (random order) like the main loop
    while to_track or finish_pool:
        if to_track and (not finish_pool or rng.random() < 0.5):
            o = to_track.pop(0)
            state.track(o)
            pending.add(o)
            finish_pool.append(o)
        else:
            o = finish_pool.pop(rng.randrange(len(finish_pool)))
            state.finish(o)
            pending.discard(o)
        expected = min(pending) if pending else (max(offsets[: len(offsets) - len(to_track)]) + 1)
        assert state.position == expected, f"seed {seed}: pending {sorted(pending)[:5]}"
    assert state.position == offsets[-1] + 1
    assert state.unfinished == 0


def test_committed_positions_are_the_first_offset_read_then_what_the_broker_accepted() -> None:
    """The committed offset reported with the lag: before any commit, where reading started (the
    group's committed position at assignment); then the last position the broker accepted."""
    tracker = OffsetTracker()
    tracker.assign([TP, TP1])
    assert tracker.committed_positions() == {}  # nothing read: not known
    for offset in (40, 41, 42):
        tracker.partition(TP).track(offset)
    assert tracker.committed_positions() == {TP: 40}
    tracker.finish([(*TP, 40), (*TP, 41)])
    assert tracker.committed_positions() == {TP: 40}  # finished, not yet committed
    tracker.committed({TP: 42})
    assert tracker.committed_positions() == {TP: 42}
    tracker.partition(TP).track(43)
    assert tracker.committed_positions() == {TP: 42}  # reading on moves nothing committed
