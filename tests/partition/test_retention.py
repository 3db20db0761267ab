"""Retention: which segments may go, by time and by size."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from partition import AlreadyApplied, PartitionState, retention_cut
from tests.partition.test_support import (
    FakeLog,
    fresh,
    make_batch,
    planned_cut,
    propose,
    propose_control,
    propose_log_start,
)

HOUR = 3_600_000


def log_with_timestamps(st_: PartitionState, timestamps: list[int]) -> FakeLog:
    log = FakeLog()
    propose_control(st_, log, 1)  # index 1: the leader's no-op
    for ts in timestamps:
        propose(st_, log, 1, make_batch(2, ts=ts))  # max timestamp = ts + 1
    for e in log.entries:
        st_.apply(e)
    return log


def test_retention_by_time() -> None:
    st_ = fresh(retention_ms=10 * HOUR)
    log_with_timestamps(st_, [0, HOUR, 2 * HOUR, 20 * HOUR, 21 * HOUR, 22 * HOUR])
    # indexes: 1 noop, 2..7 batches; segments of two entries each, the last one active
    segments = [(1, 2, 100), (3, 4, 100), (5, 6, 100), (7, 7, 50)]
    now = 12 * HOUR
    # (1,2) holds a no-op and a batch whose newest record is at 1 ms; (3,4) newest is
    # 2h + 1 ms. Expired means now - newest > retention (Kafka), i.e. newest < now - 10h.
    assert planned_cut(st_, segments, now) == 2  # horizon 2h: (3,4) kept
    assert planned_cut(st_, segments, now + 1) == 2  # exactly 10h old: still kept
    assert planned_cut(st_, segments, now + 2) == 4
    assert planned_cut(st_, segments, 100 * HOUR) == 6  # never the active segment
    assert planned_cut(st_, segments, 0) is None


def test_retention_by_bytes() -> None:
    st_ = fresh(retention_ms=-1, retention_bytes=250)
    log_with_timestamps(st_, [0] * 6)
    segments = [(1, 2, 100), (3, 4, 100), (5, 6, 100), (7, 7, 50)]  # 350 bytes
    assert planned_cut(st_, segments, 10**15) == 2  # 350 - 100 = 250 <= 250: drop one
    big = fresh(retention_ms=-1, retention_bytes=10_000)
    log_with_timestamps(big, [0] * 6)
    assert planned_cut(big, segments, 10**15) is None
    small = fresh(retention_ms=-1, retention_bytes=1)
    log_with_timestamps(small, [0] * 6)
    assert planned_cut(small, segments, 10**15) == 6


def test_retention_never_passes_applied() -> None:
    st_ = fresh(retention_ms=HOUR)
    log = FakeLog()
    propose_control(st_, log, 1)
    for _ in range(5):
        propose(st_, log, 1, make_batch(1, ts=0))
    st_.apply(log.entries[0])
    st_.apply(log.entries[1])  # applied index 2
    segments = [(1, 2, 10), (3, 4, 10), (5, 6, 10)]
    assert planned_cut(st_, segments, 100 * HOUR) == 2


def test_unknown_timestamps_stop_time_retention() -> None:
    st_ = fresh(retention_ms=HOUR)
    log_with_timestamps(st_, [0, 0, 0])
    st_.on_compacted(3)
    # (1, 2) lies below the compaction point: stale, the replica deletes it whatever its age,
    # and it does not count for the plan
    assert st_.retention_cut([(1, 2, 10), (3, 4, 10), (5, 5, 10)]) == 2
    assert st_.plan_retention([(1, 2, 10), (3, 4, 10), (5, 5, 10)], 0) is None
    assert planned_cut(st_, [(1, 2, 10), (3, 4, 10), (5, 5, 10)], 10 * HOUR) == 4
    assert planned_cut(st_, [(3, 4, 10), (5, 5, 10)], 10 * HOUR) == 4
    # a segment reaching past what the offset index knows has unknown timestamps
    assert planned_cut(st_, [(3, 9, 10), (10, 10, 10)], 10 * HOUR) is None


@given(
    sizes=st.lists(st.integers(1, 100), min_size=1, max_size=12),
    limit=st.integers(1, 800),
    ages=st.lists(st.integers(0, 100), min_size=12, max_size=12),
    retention_ms=st.integers(1, 100),
    applied_segments=st.integers(0, 12),
)
def test_against_naive_definition(
    sizes: list[int], limit: int, ages: list[int], retention_ms: int, applied_segments: int
) -> None:
    segments = [(i * 10 + 1, i * 10 + 10, s) for i, s in enumerate(sizes)]
    now = 1_000
    ts = {i * 10 + 1: now - ages[i] for i in range(len(sizes))}
    applied = applied_segments * 10
    got = retention_cut(
        segments,
        applied_index=applied,
        now_ms=now,
        retention_ms=retention_ms,
        retention_bytes=limit,
        max_timestamp_ms=lambda lo, hi: ts[lo],
    )

    # naive: largest k such that every one of the first k segments is droppable
    def droppable_prefix(k: int) -> bool:
        if k >= len(segments) or (k and segments[k - 1][1] > applied):
            return False
        by_time = all(ts[s[0]] < now - retention_ms for s in segments[:k])
        by_size = sum(sizes) - sum(sizes[:k]) >= limit
        return by_time or by_size

    best = max((k for k in range(len(segments)) if droppable_prefix(k)), default=0)
    assert got == (segments[best - 1][1] if best else None)


def snapshot_at(log: FakeLog, previous: tuple[bytes, int] | None, index: int) -> bytes:
    """What the server's retention does (server/partition_replica.py ``_snapshot_at``): the
    previous snapshot plus the stored entries up to ``index``, replayed in small chunks."""
    replay = fresh()
    if previous is not None:
        replay.restore(*previous)
    lo = log.first
    while lo <= index:
        chunk = log.read(lo, index + 1, 150)
        replay.on_log_append(chunk)
        for e in chunk:
            replay.apply(e)
        lo = chunk[-1].index + 1
    return replay.snapshot()


def test_crash_between_snapshot_and_segment_deletion_does_not_stop_retention() -> None:
    """guards #12 defect 16: after a crash between saving the retention snapshot and deleting
    the segments, every later pass failed with "apply order" and the log grew for ever."""
    leader, log = fresh(retention_ms=HOUR), FakeLog()
    propose_control(leader, log, 1)
    for i in range(8):  # indexes 2..9, an idempotent producer and a plain one
        batch = make_batch(2, pid=7, epoch=0, seq=i - 1, ts=i) if i % 2 else make_batch(1, ts=i)
        propose(leader, log, 1, batch)
    for e in log.entries:
        leader.apply(e)
    segments = [(1, 3, 10), (4, 6, 10), (7, 9, 10)]
    assert leader.retention_cut(segments) is None  # nothing is below the log start yet
    offset = leader.plan_retention(segments, 10 * HOUR)
    assert offset is not None and leader.index_for_offset(offset) == 7  # entries 1..6 go
    leader.apply(propose_log_start(leader, log, 1, offset))  # index 10
    cut = leader.retention_cut(segments)
    assert cut == 6
    snap = (snapshot_at(log, None, cut), cut)
    # --- crash: the snapshot is saved, the segments (1..6) are not deleted ---

    restarted = fresh(retention_ms=HOUR)
    restarted.restore(*snap)
    lo = log.first
    while lo <= log.last_index:  # the stored log, in small chunks
        chunk = log.read(lo, log.last_index + 1, 150)
        restarted.on_log_append(chunk)
        lo = chunk[-1].index + 1
    # the core may hand out every committed entry again: those in the snapshot are skipped
    results = [restarted.apply(e) for e in log.entries]
    assert results[:cut] == [AlreadyApplied(i) for i in range(1, cut + 1)]
    assert restarted.applied_index == leader.applied_index
    assert restarted.high_watermark == leader.high_watermark
    assert dict(restarted.producer_table()) == dict(leader.producer_table())
    start = restarted.log_start_offset
    served = [e.data for e in log.entries[cut:9]]  # index 10 (the log-start entry) is not served
    assert restarted.fetch(start, 1 << 20, log.read).batches == served

    # more records arrive, then retention runs again: it completes the interrupted pass
    for i in range(3):
        propose(restarted, log, 1, make_batch(1, pid=7, epoch=0, seq=8 + i, ts=20 * HOUR))
        restarted.apply(log.entries[-1])
    segments = [(1, 3, 10), (4, 6, 10), (7, 10, 10), (11, 13, 10)]
    assert restarted.retention_cut(segments) == 6  # stale segments go whatever their age
    offset2 = restarted.plan_retention(segments, 10 * HOUR)
    assert offset2 is not None
    restarted.apply(propose_log_start(restarted, log, 1, offset2))  # index 14
    cut2 = restarted.retention_cut(segments)
    assert cut2 == 10
    snap2 = (snapshot_at(log, snap, cut2), cut2)
    log.compact(cut2 + 1)
    restarted.on_compacted(cut2 + 1)
    again = fresh(retention_ms=HOUR)
    again.restore(*snap2)
    again.on_log_append(log.entries)
    for e in log.entries:
        again.apply(e)
    assert again.snapshot() == restarted.snapshot()
    assert again.log_start_offset == restarted.log_start_offset
