"""The replicated log start: a log-start control entry, applied identically on every replica.

What is checked: replicas that apply the same log have the same log start at every index; it
never decreases (across leader changes, restarts from a snapshot or a checkpoint, snapshot
installs); a replica with another segment layout deletes only below it and exposes the same
log start; a consumer at the old log start never sees records below it come back; old
snapshot and checkpoint encodings still decode.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partition import OffsetOutOfRange, PartitionInvariantError
from partition.checkpoint import decode, encode
from partition.header import EntryKind, describe_entry, encode_log_start, log_start_of
from partition.state import Control, LogStartMoved
from raft.types import Entry, EntryType
from tests.partition.test_support import (
    FakeLog,
    fresh,
    make_batch,
    propose,
    propose_control,
    propose_log_start,
)

# ops: ("data", n) | ("noop",) | ("cut", fraction of the high watermark) | ("leader",)
op = st.one_of(
    st.tuples(st.just("data"), st.integers(1, 4)),
    st.tuples(st.just("noop")),
    st.tuples(st.just("cut"), st.floats(0.0, 1.2)),
    st.tuples(st.just("leader")),
)


def build(ops: list[tuple[Any, ...]]) -> tuple[FakeLog, list[int]]:
    """A log written by a sequence of leaders (a new term on "leader"), with log-start
    proposals at arbitrary offsets (also lower than the current one, or past the end: apply
    must clamp and keep the maximum). Returns the log and each entry's term."""
    leader = fresh()
    log = FakeLog()
    term = 1
    propose_control(leader, log, term)
    for o in ops:
        if o[0] == "data":
            propose(leader, log, term, make_batch(o[1], ts=len(log.entries)))
        elif o[0] == "noop":
            propose_control(leader, log, term)
        elif o[0] == "leader":
            term += 1
            propose_control(leader, log, term)
        else:
            for e in log.entries[leader.applied_index :]:
                leader.apply(e)
            propose_log_start(leader, log, term, int(leader.high_watermark * o[1]))
    return log, [e.term for e in log.entries]


def test_the_control_entry_is_never_a_record_batch() -> None:
    data = encode_log_start(42)
    e = Entry(5, 1, EntryType.NORMAL, data)
    assert log_start_of(e) == 42
    meta = describe_entry(e)
    assert (meta.kind, meta.span) == (EntryKind.CONTROL, 1)  # one offset, never served
    batch = Entry(6, 1, EntryType.NORMAL, make_batch(1))
    assert log_start_of(batch) is None and describe_entry(batch).kind == EntryKind.DATA
    assert log_start_of(Entry(7, 1, EntryType.NORMAL, b"")) is None  # the leader's no-op
    # a replog control entry of an unknown kind or version: refused loudly on apply
    unknown = Entry(8, 1, EntryType.NORMAL, b"RPXX\x01" + bytes(8))
    st_ = fresh()
    st_.on_log_append([Entry(i, 1, EntryType.NORMAL, b"") for i in range(1, 8)] + [unknown])
    for i in range(1, 8):
        st_.apply(Entry(i, 1, EntryType.NORMAL, b""))
    with pytest.raises(PartitionInvariantError):
        st_.apply(unknown)
    with pytest.raises(ValueError):
        encode_log_start(-1)


def test_apply_moves_the_log_start_forward_only_and_never_past_the_entry() -> None:
    st_, log = fresh(), FakeLog()
    propose_control(st_, log, 1)
    for _ in range(3):
        propose(st_, log, 1, make_batch(2))  # offsets 1..6
    for e in log.entries:
        st_.apply(e)
    assert st_.apply(propose_log_start(st_, log, 1, 3)) == LogStartMoved(7, 3)  # at offset 7
    assert st_.log_start_offset == 3
    assert st_.apply(propose_log_start(st_, log, 1, 2)) == LogStartMoved(8, 3)  # lower: kept
    assert st_.apply(propose_log_start(st_, log, 1, 10**9)) == LogStartMoved(9, 9)  # clamped
    assert st_.log_start_offset == 9 == st_.high_watermark - 1
    assert st_.apply(propose_control(st_, log, 1)) == Control(10)


def test_fetch_below_the_log_start_is_out_of_range_with_the_new_start() -> None:
    st_, log = fresh(), FakeLog()
    propose_control(st_, log, 1)
    for _ in range(4):
        propose(st_, log, 1, make_batch(2))  # offsets 1..8
    for e in log.entries:
        st_.apply(e)
    st_.apply(propose_log_start(st_, log, 1, 5))
    for offset in range(5):
        with pytest.raises(OffsetOutOfRange) as err:
            st_.fetch(offset, 1 << 20, log.read)
        assert (err.value.start, err.value.end) == (5, st_.high_watermark)
    got = st_.fetch(5, 1 << 20, log.read)  # the batch at 5..6 and the one at 7..8
    assert got.batches == [log.entries[3].data, log.entries[4].data]
    assert got.log_start_offset == 5


@settings(max_examples=80, deadline=None)
@given(ops=st.lists(op, min_size=1, max_size=40))
def test_replicas_applying_the_same_log_agree_and_never_go_back(ops: list[tuple[Any, ...]]) -> None:
    log, _terms = build(ops)
    a, b = fresh(), fresh()
    a.on_log_append(log.entries)
    previous = 0
    for e in log.entries:
        b.on_log_append([e])  # one reported its log at once, the other entry by entry
        a.apply(e)
        b.apply(e)
        assert a.log_start_offset == b.log_start_offset
        assert previous <= a.log_start_offset <= a.high_watermark
        previous = a.log_start_offset


def layout(n: int, cuts: list[int]) -> list[tuple[int, int, int]]:
    """Segments over indexes 1..n split after each index in ``cuts`` (the last is active)."""
    bounds = [*sorted({c for c in cuts if 1 <= c < n}), n]
    segments, first = [], 1
    for last in bounds:
        segments.append((first, last, 10 * (last - first + 1)))
        first = last + 1
    return segments


def snapshot_at(log: FakeLog, previous: tuple[bytes, int] | None, index: int, live: int) -> bytes:
    """What the server's retention does: replay up to ``index`` on the previous snapshot and
    carry the live logical log start (server/partition_replica.py ``_snapshot_at``)."""
    replay = fresh()
    if previous is not None:
        replay.restore(*previous)
    lo = previous[1] + 1 if previous is not None else log.first
    for e in log.entries[lo - log.first : index - log.first + 1]:
        replay.on_log_append([e])
        replay.apply(e)
    return replay.snapshot(live)


@settings(max_examples=80, deadline=None)
@given(
    ops=st.lists(op, min_size=1, max_size=40),
    split_a=st.lists(st.integers(1, 80), max_size=8),
    split_b=st.lists(st.integers(1, 80), max_size=8),
)
def test_a_follower_with_another_segment_layout_exposes_the_same_log_start(
    ops: list[tuple[Any, ...]], split_a: list[int], split_b: list[int]
) -> None:
    """Each replica deletes its own segments lazily, only below the applied logical log
    start, takes its snapshot at its own cut and compacts; the log start they expose, and
    what they serve from it, stay identical."""
    log, _terms = build(ops)
    n = len(log.entries)
    replicas = []
    for split in (split_a, split_b):
        st_ = fresh()
        st_.on_log_append(log.entries)
        for e in log.entries:
            st_.apply(e)
        segments = layout(n, split)
        cut = st_.retention_cut(segments)
        if cut is not None:
            ends = [s[1] for s in segments]
            assert cut in ends and cut < ends[-1]  # whole segments, never the active one
            # every entry in the dropped segments lies below the log start
            if st_.log_start_offset < st_.next_offset():
                assert st_.index_for_offset(st_.log_start_offset) > cut
            snap = snapshot_at(log, None, cut, st_.log_start_offset)
            restarted = fresh()
            restarted.restore(snap, cut)
            restarted.on_log_append([e for e in log.entries if e.index > cut])
            for e in log.entries:
                restarted.apply(e)  # the core hands out everything again: skipped below
            st_.on_compacted(cut + 1)
            assert restarted.log_start_offset == st_.log_start_offset
            st_ = restarted
        replicas.append(st_)
    a, b = replicas
    assert a.log_start_offset == b.log_start_offset
    start, hw = a.log_start_offset, a.high_watermark
    for offset in range(start, hw + 1):
        assert a.fetch(offset, 1 << 20, log.read) == b.fetch(offset, 1 << 20, log.read)
    for offset in range(start):
        for s in (a, b):
            with pytest.raises(OffsetOutOfRange):
                s.fetch(offset, 1 << 20, log.read)


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(op, min_size=1, max_size=40), data=st.data())
def test_the_log_start_survives_restarts_snapshot_installs_and_checkpoints(
    ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    """A replica that restarts (snapshot at its cut, or a checkpoint) or installs another
    replica's snapshot never exposes a log start below the one it had, and once it applied
    the rest of the log it agrees with a replica that never restarted."""
    log, _terms = build(ops)
    reference = fresh()
    reference.on_log_append(log.entries)
    for e in log.entries:
        reference.apply(e)
    n = len(log.entries)
    k = data.draw(st.integers(1, n))  # applied when the restart happens
    live = fresh()
    live.on_log_append(log.entries)
    for e in log.entries[:k]:
        live.apply(e)
    segments = layout(n, data.draw(st.lists(st.integers(1, n), max_size=6)))
    before = live.log_start_offset
    cut = live.retention_cut(segments)

    # (1) restart from a checkpoint at k (v2), then the rest of the log
    image = decode(encode(live.capture_checkpoint()), keep=5, expiry_ms=-1)
    from_checkpoint = fresh()
    from_checkpoint.restore_checkpoint(image, 0)
    assert from_checkpoint.log_start_offset == before

    # (2) restart from the snapshot at the cut (or none), then the rest of the log
    restarted = fresh()
    if cut is not None:
        restarted.restore(snapshot_at(log, None, cut, before), cut)
        assert restarted.log_start_offset >= before  # even before anything is re-applied
    # (3) a follower far behind installs that snapshot (a leader's, sent over Raft)
    installed = fresh()
    if cut is not None:
        installed.restore(snapshot_at(log, None, cut, before), cut)
    for st_ in (from_checkpoint, restarted, installed):
        lo = st_.applied_index + 1
        st_.on_log_append(log.entries[lo - 1 :])
        seen = st_.log_start_offset
        for e in log.entries[lo - 1 :]:
            st_.apply(e)
            assert st_.log_start_offset >= seen  # never backwards
            seen = st_.log_start_offset
        assert st_.log_start_offset == reference.log_start_offset
        assert st_.high_watermark == reference.high_watermark


def test_a_consumer_at_the_old_log_start_never_sees_records_reappear() -> None:
    """The system simulation's finding: the old leader had cut to 50 by its own segments, a
    later leader (another layout) still served 19..49. Now the cut is a Raft entry: every
    later leader has applied it, whatever its layout, before it serves."""
    old, log = fresh(retention_bytes=100, retention_ms=-1), FakeLog()
    propose_control(old, log, 1)
    for i in range(30):
        propose(old, log, 1, make_batch(2, ts=i))
    for e in log.entries:
        old.apply(e)
    segments_old = layout(len(log.entries), list(range(5, len(log.entries), 5)))
    offset = old.plan_retention(segments_old, 0)
    assert offset is not None and offset > 0
    old.apply(propose_log_start(old, log, 1, offset))
    start = old.log_start_offset
    consumer_position = start  # reset to "earliest" on the old leader

    # leadership moves to a replica with one huge segment (it would cut nothing by itself)
    new = fresh(retention_bytes=100, retention_ms=-1)
    new.on_log_append(log.entries)
    for e in log.entries:
        new.apply(e)
    propose_control(new, log, 2)  # its no-op
    new.apply(log.entries[-1])
    segments_new = [(1, len(log.entries), 10_000), (len(log.entries) + 1, len(log.entries), 0)]
    assert new.retention_cut(segments_new) is None  # its one segment straddles the start
    assert new.log_start_offset == start
    for below in range(start):
        with pytest.raises(OffsetOutOfRange):
            new.fetch(below, 1 << 20, log.read)
    got = new.fetch(consumer_position, 1 << 20, log.read)
    assert got.batches and got.log_start_offset == start


def test_old_snapshot_and_checkpoint_versions_still_decode() -> None:
    st_, log = fresh(), FakeLog()
    propose_control(st_, log, 1)
    for _ in range(3):
        propose(st_, log, 1, make_batch(2))
    for e in log.entries:
        st_.apply(e)
    st_.apply(propose_log_start(st_, log, 1, 3))
    snap = st_.snapshot()
    assert snap[4] == 3  # version 3
    head = struct.Struct(">4sBqqqI")
    magic, _v, applied, hw, _start, skipped = head.unpack_from(snap, 0)
    # version 2 wrote the end offset as its log start: restored as the end offset
    v2 = head.pack(magic, 2, applied, hw, hw, skipped) + snap[head.size :]
    old = fresh()
    old.restore(v2, applied)
    assert old.log_start_offset == hw
    # a version 3 snapshot carrying a later logical start: above its own end offset
    ahead = fresh()
    ahead.restore(st_.snapshot(log_start_offset=hw + 5), applied)
    assert ahead.log_start_offset == hw + 5

    # a version 1 checkpoint (same layout) still reads; its floor never exceeds the end
    data = bytearray(encode(st_.capture_checkpoint()))
    assert data[4] == 2
    data[4] = 1
    image = decode(bytes(data), keep=5, expiry_ms=-1)
    assert image.log_start_floor == 3
    restored = fresh()
    restored.restore_checkpoint(image, 0)
    assert restored.log_start_offset == 3
