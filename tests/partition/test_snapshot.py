"""snapshot() / restore(): restoring and applying the rest equals applying everything."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partition import AlreadyApplied, PartitionInvariantError, PartitionState
from tests.partition.test_support import FakeLog, fresh, make_batch, propose, propose_control

op = st.one_of(
    st.tuples(st.just("data"), st.integers(1, 4)),
    st.tuples(st.sampled_from(["noop", "conf"])),
    # idempotent: (pid, epoch, seq, n): retries, gaps and stale epochs all happen
    st.tuples(
        st.just("idem"), st.integers(0, 2), st.integers(0, 1), st.integers(0, 6), st.integers(1, 3)
    ),
)


def build(ops: list[tuple]) -> FakeLog:
    leader = fresh()
    log = FakeLog()
    for i, o in enumerate(ops):
        if o[0] == "data":
            propose(leader, log, 1, make_batch(o[1], ts=i))
        elif o[0] == "idem":
            _, pid, epoch, seq, n = o
            propose(leader, log, 1, make_batch(n, pid=pid, epoch=epoch, seq=seq, ts=i))
        else:
            propose_control(leader, log, 1, o[0])
    return log


def fetch_all(st_: PartitionState, log: FakeLog, start: int) -> list[tuple]:
    out = []
    for offset in range(start, st_.high_watermark + 1):
        r = st_.fetch(offset, 1 << 20, log.read)
        out.append((offset, r.batches, r.next_offset))
    return out


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(op, min_size=1, max_size=30), data=st.data())
def test_snapshot_restore_then_apply_equals_apply_all(
    ops: list[tuple], data: st.DataObject
) -> None:
    log = build(ops)
    n = len(log.entries)
    k = data.draw(st.integers(0, n))
    reference = fresh()
    results = [reference.apply(e) for e in log.entries]

    before = fresh()
    for e in log.entries[:k]:
        before.apply(e)
    snap = before.snapshot()
    hw_at_k = before.high_watermark

    # a replica that installs the snapshot (no log below it)
    installed = fresh()
    installed.restore(snap, k)
    assert installed.applied_index == k and installed.high_watermark == hw_at_k
    assert installed.log_start_offset == hw_at_k
    installed.on_log_append(log.entries[k:])
    assert [installed.apply(e) for e in log.entries[k:]] == results[k:]
    assert installed.high_watermark == reference.high_watermark
    assert installed.next_offset() == reference.next_offset()
    assert dict(installed.producer_table()) == dict(reference.producer_table())
    assert fetch_all(installed, log, hw_at_k) == fetch_all(reference, log, hw_at_k)

    # a replica restarting from the snapshot with its whole log still on disk (a crash
    # before retention deleted the segments), whose core hands out every entry again
    restarted = fresh()
    restarted.restore(snap, k)
    restarted.on_log_append(log.entries)
    assert [restarted.apply(e) for e in log.entries[:k]] == [
        AlreadyApplied(e.index) for e in log.entries[:k]
    ]
    assert [restarted.apply(e) for e in log.entries[k:]] == results[k:]
    assert restarted.snapshot() == reference.snapshot()
    assert restarted.log_start_offset == hw_at_k  # below the snapshot: being deleted
    assert fetch_all(restarted, log, hw_at_k) == fetch_all(reference, log, hw_at_k)


def test_snapshot_is_compact_and_checked() -> None:
    log = build([("data", 2), ("idem", 1, 0, 0, 1), ("idem", 1, 0, 0, 1)])
    st_ = fresh()
    for e in log.entries:
        st_.apply(e)
    snap = st_.snapshot()
    assert len(snap) < 110  # header + log time + one producer with one batch, no skipped list
    other = fresh()
    with pytest.raises(PartitionInvariantError, match="identity"):
        other.restore(snap, 2)
    with pytest.raises(PartitionInvariantError):
        other.restore(snap[:-1], 3)
    with pytest.raises(PartitionInvariantError):
        other.restore(snap + b"\x00", 3)
    with pytest.raises(PartitionInvariantError):
        other.restore(b"RPPS", 3)
    other.restore(snap, 3)
    assert other.snapshot() == snap
    assert dict(other.producer_table()) == dict(st_.producer_table())


def test_entries_after_the_snapshot_must_line_up_with_it() -> None:
    log = build([("data", 2), ("data", 3), ("data", 1)])
    st_ = fresh()
    for e in log.entries[:2]:
        st_.apply(e)
    snap = st_.snapshot()
    wrong = build([("data", 1), ("data", 3), ("data", 1)])  # entry 3 stamped at 4, not 5
    other = fresh()
    other.restore(snap, 2)
    with pytest.raises(PartitionInvariantError, match="stamped base offset"):
        other.on_log_append(wrong.entries)


def test_version_1_snapshots_still_restore() -> None:
    """Written before producer expiry: a skipped list and no times. The producers restored
    from it count as seen at the first timestamp the log shows afterwards."""
    import struct

    from partition.producers import BatchMetadata, ProducerEntry

    v1 = b"".join(
        [
            struct.pack(">4sBqqqI", b"RPPS", 1, 3, 7, 2, 2),
            struct.pack(">qq", 2, 3),  # skipped indexes
            struct.pack(">I", 1),
            struct.pack(">qhiH", 5, 0, 1, 1),
            struct.pack(">iiqq", 0, 1, 0, 1),
        ]
    )
    st_ = fresh(producer_expiry_ms=1_000)
    st_.restore(v1, 3)
    assert (st_.applied_index, st_.high_watermark, st_.log_start_offset) == (3, 7, 7)
    assert dict(st_.producer_table()) == {5: ProducerEntry(0, 1, (BatchMetadata(0, 1, 0, 1),))}
    log = FakeLog(first=4)
    st_.apply(propose(st_, log, 1, make_batch(1, pid=9, epoch=0, seq=0, ts=50_000)))
    assert 5 in st_.producer_table()  # seen "now" (at 50 s), not at time -1
    st_.apply(propose(st_, log, 1, make_batch(1, pid=9, epoch=0, seq=1, ts=51_001)))
    assert 5 not in st_.producer_table()  # idle for more than a second of log time
