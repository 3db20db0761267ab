"""PartitionState: structural offsets, the tail, apply, fetch, compaction."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partition import (
    Appended,
    BatchTooLarge,
    Control,
    InvalidBatch,
    OffsetOutOfRange,
    PartitionInvariantError,
    PartitionState,
)
from raft.types import Entry, EntryType
from tests.partition.test_support import (
    FakeLog,
    conf,
    fresh,
    make_batch,
    noop,
    propose,
    propose_control,
)
from wire.batch import decode, read_header, with_base_offset

# An op: ("data", n_records) or ("noop",) or ("conf",)
ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("data"), st.integers(min_value=1, max_value=7)),
        st.tuples(st.sampled_from(["noop", "conf"])),
    ),
    min_size=1,
    max_size=40,
)


def build_log(ops: list[tuple], term: int = 1) -> tuple[PartitionState, FakeLog]:
    leader = fresh()
    log = FakeLog()
    for i, op in enumerate(ops):
        if op[0] == "data":
            propose(leader, log, term, make_batch(op[1], ts=1_000 + i))
        else:
            propose_control(leader, log, term, op[0])
    return leader, log


def expected_spans(ops: list[tuple]) -> list[int]:
    return [op[1] if op[0] == "data" else 1 for op in ops]


def test_offsets_are_structural() -> None:
    ops = [("noop",), ("data", 3), ("data", 1), ("conf",), ("data", 5)]
    leader, log = build_log(ops)
    assert leader.next_offset() == 1 + 3 + 1 + 1 + 5
    results = [leader.apply(e) for e in log.entries]
    assert results == [
        Control(0),
        Appended(1, 3),
        Appended(4, 4),
        Control(5),
        Appended(6, 10),
    ]
    assert leader.high_watermark == 11 == leader.next_offset()
    assert leader.applied_index == 5
    # the stored batches carry their final offsets
    _, records = decode(log.entries[4].data)
    assert [r.offset for r in records] == [6, 7, 8, 9, 10]


@settings(max_examples=60, deadline=None)
@given(ops=ops_strategy, data=st.data())
def test_two_replicas_derive_the_same_offsets(ops: list[tuple], data: st.DataObject) -> None:
    leader, log = build_log(ops)
    leader_results = [leader.apply(e) for e in log.entries]
    follower = fresh()
    follower_results = []
    # the follower sees the log in Ready-sized chunks, some re-reported, applies behind
    i = 0
    n = len(log.entries)
    while i < n:
        step = data.draw(st.integers(min_value=1, max_value=5))
        chunk = log.entries[i : i + step]
        follower.on_log_append(chunk)
        if data.draw(st.booleans()):
            follower.on_log_append(chunk)  # re-reported: harmless
        i += len(chunk)
        while follower.applied_index < i and data.draw(st.booleans()):
            follower_results.append(follower.apply(log.entries[follower.applied_index]))
    while follower.applied_index < n:
        follower_results.append(follower.apply(log.entries[follower.applied_index]))
    assert follower_results == leader_results
    assert follower.high_watermark == leader.high_watermark == sum(expected_spans(ops))
    for offset in range(leader.high_watermark):
        assert follower.index_for_offset(offset) == leader.index_for_offset(offset)


def test_apply_without_prior_append_appends() -> None:
    _, log = build_log([("data", 2), ("noop",), ("data", 1)])
    follower = fresh()
    assert [follower.apply(e) for e in log.entries] == [
        Appended(0, 1),
        Control(2),
        Appended(3, 3),
    ]


def test_truncation_then_reappend() -> None:
    leader = fresh()
    log = FakeLog()
    propose_control(leader, log, 1)
    propose(leader, log, 1, make_batch(2))
    assert leader.apply(log.entries[0]) == Control(0)
    assert leader.apply(log.entries[1]) == Appended(1, 2)
    # uncommitted tail of term 1: 5 + 1 records at indexes 3, 4
    propose(leader, log, 1, make_batch(5))
    propose(leader, log, 1, make_batch(1))
    assert leader.next_offset() == 9
    # a new leader (term 2) overwrites index 3 onwards: its no-op then a 2-record batch
    follower = leader  # this replica now follows
    new = [noop(3, 2), Entry(4, 2, EntryType.NORMAL, with_base_offset(make_batch(2), 4))]
    log.write(new)
    follower.on_log_append(new)
    assert follower.next_offset() == 6
    assert follower.apply(log.entries[2]) == Control(3)
    assert follower.apply(log.entries[3]) == Appended(4, 5)
    assert follower.index_for_offset(5) == 4
    with pytest.raises(OffsetOutOfRange):
        follower.index_for_offset(6)


def test_replacing_an_applied_entry_is_an_invariant_violation() -> None:
    leader, log = build_log([("data", 1), ("data", 1)])
    leader.apply(log.entries[0])
    with pytest.raises(PartitionInvariantError, match="applied entry 1"):
        leader.on_log_append([noop(1, 2)])


def test_wrong_stamp_gap_and_order_are_invariant_violations() -> None:
    st_ = fresh()
    st_.on_log_append([noop(1, 1)])
    bad = Entry(2, 1, EntryType.NORMAL, with_base_offset(make_batch(1), 7))
    with pytest.raises(PartitionInvariantError, match="stamped base offset") as e:
        st_.on_log_append([bad])
    assert (e.value.expected, e.value.actual) == (1, 7)
    with pytest.raises(PartitionInvariantError, match="gap"):
        st_.on_log_append([noop(5, 1)])
    with pytest.raises(PartitionInvariantError, match="apply order"):
        st_.apply(noop(2, 1))
    with pytest.raises(PartitionInvariantError, match="not a record batch"):
        st_.on_log_append([Entry(2, 1, EntryType.NORMAL, b"garbage")])


def test_stamp_validates_and_does_not_record() -> None:
    st_ = fresh(max_batch_bytes=500)
    st_.on_log_append([noop(1, 1)])
    stamped, base, last = st_.stamp(make_batch(3))
    assert (base, last) == (1, 3)
    assert read_header(stamped).base_offset == 1
    assert st_.next_offset() == 1  # not recorded until on_log_append
    with pytest.raises(BatchTooLarge) as e:
        st_.stamp(make_batch(1, value=b"x" * 600))
    assert e.value.limit == 500 and e.value.size > 500
    with pytest.raises(InvalidBatch):
        st_.stamp(make_batch(1)[:-1])


# --- fetch -------------------------------------------------------------------------------


def applied_log(ops: list[tuple]) -> tuple[PartitionState, FakeLog]:
    leader, log = build_log(ops)
    for e in log.entries:
        leader.apply(e)
    return leader, log


def batch_bounds(log: FakeLog) -> list[tuple[int, int, bytes]]:
    out = []
    for e in log.entries:
        if e.type == EntryType.NORMAL and e.data:
            h = read_header(e.data)
            out.append((h.base_offset, h.last_offset, e.data))
    return out


@settings(max_examples=40, deadline=None)
@given(ops=ops_strategy)
def test_fetch_at_every_offset_returns_the_containing_batch(ops: list[tuple]) -> None:
    st_, log = applied_log(ops)
    bounds = batch_bounds(log)
    for offset in range(st_.high_watermark):
        res = st_.fetch(offset, 1, log.read)
        following = [b for b in bounds if b[1] >= offset]
        if not following:
            assert res.batches == [] and res.next_offset == st_.high_watermark
            continue
        first = following[0]
        assert res.batches == [first[2]]  # at least one batch even past max_bytes
        if first[0] <= offset:
            assert first[0] <= offset <= first[1]  # the batch containing it
        assert res.next_offset == first[1] + 1
        everything = st_.fetch(offset, 1 << 30, log.read)
        assert everything.batches == [b[2] for b in following]
        assert everything.next_offset == st_.high_watermark
        assert everything.high_watermark == st_.high_watermark


def test_fetch_honours_max_bytes() -> None:
    st_, log = applied_log([("data", 2)] * 10)
    size = len(log.entries[0].data)
    res = st_.fetch(0, size * 3 + size // 2, log.read)
    assert len(res.batches) == 3
    assert res.next_offset == 6
    assert sum(map(len, res.batches)) <= size * 3 + size // 2
    res = st_.fetch(6, size * 3, log.read)
    assert len(res.batches) == 3 and res.next_offset == 12


def test_control_entries_are_skipped_and_never_read() -> None:
    st_, log = applied_log([("noop",), ("conf",), ("noop",), ("data", 1), ("conf",)])
    assert st_.high_watermark == 5
    log.reads = 0
    res = st_.fetch(0, 1 << 20, log.read)
    assert res.batches == [log.entries[3].data]
    assert res.next_offset == 5
    assert log.reads == 1
    res = st_.fetch(4, 1 << 20, log.read)  # only a control entry after it
    assert res.batches == [] and res.next_offset == 5


def test_fetch_at_high_watermark_is_empty_and_out_of_range_carries_range() -> None:
    st_, log = applied_log([("data", 3)])
    res = st_.fetch(3, 100, log.read)
    assert (res.batches, res.next_offset, res.high_watermark, res.log_start_offset) == (
        [],
        3,
        3,
        0,
    )
    with pytest.raises(OffsetOutOfRange) as e:
        st_.fetch(4, 100, log.read)
    assert (e.value.requested, e.value.start, e.value.end) == (4, 0, 3)
    assert "seek to 0" in str(e.value)
    with pytest.raises(OffsetOutOfRange):
        st_.fetch(-1, 100, log.read)


def test_fetch_serves_only_applied_entries() -> None:
    leader, log = build_log([("data", 2), ("data", 2), ("data", 2)])
    leader.apply(log.entries[0])
    assert leader.high_watermark == 2 and leader.next_offset() == 6
    res = leader.fetch(0, 1 << 20, log.read)
    assert res.batches == [log.entries[0].data] and res.next_offset == 2
    assert leader.fetch(3, 100, log.read).batches == []  # in the tail: not served yet
    with pytest.raises(OffsetOutOfRange):
        leader.fetch(7, 100, log.read)
    assert leader.index_for_offset(5) == 3  # the tail is indexed, just not served


def test_compaction_advances_log_start() -> None:
    st_, log = applied_log([("data", 2), ("noop",), ("data", 3), ("data", 1)])
    assert st_.log_start_offset == 0
    log.compact(3)
    st_.on_compacted(3)
    assert st_.log_start_offset == 3
    with pytest.raises(OffsetOutOfRange) as e:
        st_.fetch(2, 100, log.read)
    assert (e.value.start, e.value.end) == (3, 7)
    assert st_.fetch(3, 1 << 20, log.read).batches == [log.entries[0].data, log.entries[1].data]
    with pytest.raises(PartitionInvariantError, match="compaction point"):
        st_.on_compacted(st_.applied_index + 2)
    st_.on_compacted(st_.applied_index + 1)  # everything applied dropped
    assert st_.log_start_offset == st_.high_watermark == 7
    # re-reporting compacted entries is ignored
    st_.on_log_append([noop(1, 1)])
    assert st_.next_offset() == 7


def test_index_for_offset_matches_linear_scan() -> None:
    st_, _log = applied_log([("data", 3), ("noop",), ("data", 1), ("data", 4), ("conf",)])
    spans = [3, 1, 1, 4, 1]
    offset = 0
    for i, span in enumerate(spans, 1):
        for o in range(offset, offset + span):
            assert st_.index_for_offset(o) == i
        offset += span
    with pytest.raises(OffsetOutOfRange):
        st_.index_for_offset(offset)


def test_conf_helper_is_control() -> None:
    st_ = fresh()
    assert st_.apply(conf(1, 1)) == Control(0)
    assert st_.high_watermark == 1


def test_fetch_between_high_watermark_and_log_end_is_empty_not_out_of_range() -> None:
    """guards #12 defect 7: a new leader's high watermark can trail its predecessor's; a
    consumer at the old high watermark got OFFSET_OUT_OF_RANGE, reset to latest and skipped
    records. Kafka answers empty there; only offsets past the log end are out of range."""
    st_, log = fresh(), FakeLog()
    propose_control(st_, log, 1)  # offset 0
    propose(st_, log, 1, make_batch(3))  # offsets 1..3
    propose(st_, log, 1, make_batch(2))  # offsets 4..5
    st_.apply(log.entries[0])
    st_.apply(log.entries[1])
    assert (st_.high_watermark, st_.next_offset()) == (4, 6)
    for offset in (4, 5, 6):  # appended, not committed yet / the log end
        got = st_.fetch(offset, 1 << 20, log.read)
        assert (got.batches, got.next_offset, got.high_watermark) == ([], offset, 4)
    with pytest.raises(OffsetOutOfRange) as info:
        st_.fetch(7, 1 << 20, log.read)
    assert (info.value.requested, info.value.start, info.value.end) == (7, 0, 4)
    st_.apply(log.entries[2])
    assert st_.fetch(4, 1 << 20, log.read).batches == [log.entries[2].data]
