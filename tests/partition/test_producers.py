"""Idempotent producers: duplicates, sequence gaps, fencing, epochs, decided at apply."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from partition import (
    Appended,
    Duplicate,
    OutOfOrderSequence,
    PartitionState,
    ProducerFenced,
    Rejected,
)
from partition.producers import ProducerTable, increment_sequence
from tests.partition.test_support import FakeLog, fresh, make_batch, propose
from wire.batch import read_header

PID = 42


def produce(st_: PartitionState, log: FakeLog, n: int, epoch: int, seq: int, pid: int = PID):
    e = propose(st_, log, 1, make_batch(n, pid=pid, epoch=epoch, seq=seq))
    return st_.apply(e)


def test_retry_is_a_duplicate_with_original_offsets_and_a_gap() -> None:
    st_, log = fresh(), FakeLog()
    assert produce(st_, log, 3, 0, 0) == Appended(0, 2)
    assert produce(st_, log, 2, 0, 3) == Appended(3, 4)
    assert produce(st_, log, 3, 0, 0) == Duplicate(0, 2)  # retry of the first
    assert produce(st_, log, 2, 0, 3) == Duplicate(3, 4)
    # the duplicates kept their own offsets (5..9) but fetch never serves them
    assert st_.high_watermark == 10
    res = st_.fetch(0, 1 << 20, log.read)
    assert res.batches == [log.entries[0].data, log.entries[1].data]
    assert res.next_offset == 10
    assert st_.fetch(5, 1 << 20, log.read).batches == []
    assert produce(st_, log, 1, 0, 5) == Appended(10, 10)
    entry = st_.producer_table()[PID]
    assert (entry.epoch, entry.last_sequence) == (0, 5)
    assert [(b.first_sequence, b.last_sequence) for b in entry.recent] == [(0, 2), (3, 4), (5, 5)]


def test_sequence_gap_is_rejected() -> None:
    st_, log = fresh(), FakeLog()
    produce(st_, log, 2, 0, 0)
    result = produce(st_, log, 1, 0, 5)
    assert isinstance(result, Rejected)
    err = result.error
    assert isinstance(err, OutOfOrderSequence)
    assert (err.producer_id, err.expected, err.got) == (PID, 2, 5)
    assert "re-send from sequence 2" in str(err)
    assert st_.fetch(2, 1 << 20, log.read).batches == []  # rejected: a gap
    assert produce(st_, log, 1, 0, 2) == Appended(3, 3)  # the missing one, then onwards


def test_unknown_producer_must_start_at_zero() -> None:
    st_, log = fresh(), FakeLog()
    result = produce(st_, log, 1, 0, 7)
    assert isinstance(result, Rejected) and isinstance(result.error, OutOfOrderSequence)
    assert (result.error.expected, result.error.got) == (0, 7)
    assert PID not in st_.producer_table()


def test_stale_epoch_is_fenced_and_new_epoch_resets_sequence() -> None:
    st_, log = fresh(), FakeLog()
    produce(st_, log, 2, 0, 0)
    assert produce(st_, log, 1, 1, 0) == Appended(2, 2)  # new epoch starts at 0
    result = produce(st_, log, 1, 0, 2)  # the old instance, continuing its sequence
    assert isinstance(result, Rejected) and isinstance(result.error, ProducerFenced)
    assert (result.error.epoch, result.error.current_epoch) == (0, 1)
    gap = produce(st_, log, 1, 2, 4)  # a new epoch must start at 0
    assert isinstance(gap, Rejected) and isinstance(gap.error, OutOfOrderSequence)
    assert produce(st_, log, 1, 1, 1) == Appended(5, 5)
    # the leader refuses the fenced epoch before proposing (tests/partition/test_admit.py)
    fenced = st_.admit(make_batch(1, pid=PID, epoch=0, seq=9))
    assert isinstance(fenced, Rejected) and isinstance(fenced.error, ProducerFenced)


def test_only_the_last_five_batches_are_remembered() -> None:
    st_, log = fresh(), FakeLog()
    for seq in range(6):
        produce(st_, log, 1, 0, seq)
    assert produce(st_, log, 1, 0, 1) == Duplicate(1, 1)  # 5th most recent: still known
    result = produce(st_, log, 1, 0, 0)  # 6th most recent: forgotten
    assert isinstance(result, Rejected) and isinstance(result.error, OutOfOrderSequence)
    assert len(st_.producer_table()[PID].recent) == 5


def test_non_idempotent_batches_are_always_appended() -> None:
    st_, log = fresh(), FakeLog()
    data = make_batch(2)
    assert st_.apply(propose(st_, log, 1, data)) == Appended(0, 1)
    assert st_.apply(propose(st_, log, 1, data)) == Appended(2, 3)
    assert dict(st_.producer_table()) == {}


def test_sequence_wraps_like_kafka() -> None:
    top = (1 << 31) - 1
    assert increment_sequence(top, 1) == 0
    assert increment_sequence(top - 1, 3) == 1
    assert increment_sequence(5, 3) == 8
    table = ProducerTable(5)
    first = read_header(make_batch(1, pid=1, epoch=0, seq=0))
    table.record(first, 0, 0)
    # fast-forward the table to the top of the sequence space
    table.record(read_header(make_batch(1, pid=1, epoch=0, seq=top - 1)), 1, 1)
    nxt = read_header(make_batch(2, pid=1, epoch=0, seq=top))
    assert table.check(nxt) is None
    table.record(nxt, 2, 3)
    assert table.view()[1].last_sequence == 0
    assert table.check(read_header(make_batch(1, pid=1, epoch=0, seq=1))) is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 1), st.integers(1, 3), st.integers(0, 8)),
        max_size=30,
    )
)
def test_against_a_naive_model(ops: list[tuple[int, int, int, int]]) -> None:
    """Differential: the table against a model that keeps every appended batch."""
    st_, log = fresh(), FakeLog()
    model: dict[int, tuple[int, int, list[tuple[int, int, int, int]]]] = {}
    for pid, epoch, n, seq in ops:
        got = produce(st_, log, n, epoch, seq, pid=pid)
        base = log.entries[-1]
        base_offset = read_header(base.data).base_offset
        cur = model.get(pid)
        if cur is not None and epoch < cur[0]:
            assert isinstance(got, Rejected) and isinstance(got.error, ProducerFenced)
            continue
        if cur is None or epoch > cur[0]:
            if seq != 0:
                assert isinstance(got, Rejected) and got.error.expected == 0  # type: ignore[union-attr]
                continue
            model[pid] = (epoch, n - 1, [(0, n - 1, base_offset, base_offset + n - 1)])
            assert got == Appended(base_offset, base_offset + n - 1)
            continue
        recent = cur[2][-5:]
        dup = [b for b in recent if (b[0], b[1]) == (seq, seq + n - 1)]
        if dup:
            assert got == Duplicate(dup[0][2], dup[0][3])
        elif seq != cur[1] + 1:
            assert isinstance(got, Rejected) and isinstance(got.error, OutOfOrderSequence)
            assert got.error.expected == cur[1] + 1
        else:
            assert got == Appended(base_offset, base_offset + n - 1)
            cur[2].append((seq, seq + n - 1, base_offset, base_offset + n - 1))
            model[pid] = (epoch, seq + n - 1, cur[2])


DAY = 24 * 3600 * 1000


def test_producers_expire_by_log_time_not_by_wall_clock() -> None:
    """guards #12 defect 17: producer ids never expired, so every `replog produce` run grew
    the table (and every snapshot) for ever. Expiry follows the batch timestamps in the log."""
    st_, log = fresh(producer_expiry_ms=DAY), FakeLog()
    t0 = 1_700_000_000_000

    def at(pid: int, seq: int, ts: int, epoch: int = 0):
        e = propose(st_, log, 1, make_batch(1, pid=pid, epoch=epoch, seq=seq, ts=ts))
        return st_.apply(e)

    assert isinstance(at(1, 0, t0), Appended)
    assert isinstance(at(2, 0, t0 + DAY), Appended)  # exactly one day later: 1 still known
    assert set(st_.producer_table()) == {1, 2}
    assert st_.producer_table()[1].last_seen_ms == t0
    assert isinstance(at(3, 0, t0 + DAY + 1), Appended)  # now 1 is more than a day idle
    assert set(st_.producer_table()) == {2, 3}
    late = at(1, 1, t0 + DAY + 2)  # producer 1 continues: it is unknown now
    assert isinstance(late, Rejected) and isinstance(late.error, OutOfOrderSequence)
    assert late.error.expected == 0
    assert isinstance(at(1, 0, t0 + DAY + 3, epoch=1), Appended)  # bumped epoch, sequence 0
    # a batch with an old timestamp does not move the log time back
    assert isinstance(at(4, 0, t0), Appended)
    assert st_.producer_table()[4].last_seen_ms == t0 + DAY + 3


def test_snapshot_size_stays_bounded_for_an_unbounded_stream_of_producers() -> None:
    """guards #12 defect 17: snapshots grew with every producer id and every skipped entry."""
    minute = 60_000
    st_, log = fresh(producer_expiry_ms=60 * minute), FakeLog()
    sizes = []
    for i in range(3_000):
        ts = 1_700_000_000_000 + i * minute // 10  # ten new producers a minute
        st_.apply(propose(st_, log, 1, make_batch(1, pid=i, epoch=0, seq=0, ts=ts)))
        st_.apply(propose(st_, log, 1, make_batch(1, pid=i, epoch=0, seq=0, ts=ts)))  # retry
        if i % 500 == 499:
            sizes.append(len(st_.snapshot()))
            log.compact(log.last_index + 1)  # retention (keeps the fake log small)
            st_.on_compacted(log.first)
    assert len(st_.producer_table()) <= 601  # one hour of producers, ten a minute
    assert max(sizes) == sizes[-1] == sizes[1] < 601 * 60  # flat once an hour has passed


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.integers(0, 3),  # producer id
            st.integers(0, 1),  # epoch
            st.integers(0, 4),  # base sequence
            st.integers(-5, 40),  # timestamp step (negative: an older timestamp)
        ),
        max_size=40,
    ),
    data=st.data(),
)
def test_replicas_applying_the_same_log_end_with_identical_snapshots(
    ops: list[tuple[int, int, int, int]], data: st.DataObject
) -> None:
    """guards #12 defect 17: expiry is decided from the log alone, so a replica that applied
    everything and one that restored a snapshot midway agree, byte for byte."""
    leader, log = fresh(producer_expiry_ms=30), FakeLog()
    ts = 1_000
    for pid, epoch, seq, step in ops:
        ts = max(0, ts + step)
        propose(leader, log, 1, make_batch(1, pid=pid, epoch=epoch, seq=seq, ts=ts))
    a, b = fresh(producer_expiry_ms=30), fresh(producer_expiry_ms=30)
    k = data.draw(st.integers(0, len(log.entries)))
    for e in log.entries[:k]:
        a.apply(e)
        b.apply(e)
    c = fresh(producer_expiry_ms=30)
    c.restore(b.snapshot(), k)
    rest_a = [a.apply(e) for e in log.entries[k:]]
    rest_c = [c.apply(e) for e in log.entries[k:]]
    assert rest_a == rest_c
    assert a.snapshot() == c.snapshot()
    assert dict(a.producer_table()) == dict(c.producer_table())


def test_epoch_bump_fences_delayed_copies_of_the_old_epoch() -> None:
    """guards #12 defect 10: after OUT_OF_ORDER_SEQUENCE the client bumps its epoch and starts
    again at sequence 0 (KIP-360); a delayed copy under the old epoch arriving after the new
    epoch's first batch is fenced, never appended after its successor."""
    st_, log = fresh(), FakeLog()
    assert produce(st_, log, 2, 0, 0) == Appended(0, 1)
    gap = produce(st_, log, 1, 0, 3)  # seq 2 was lost: the client learns OUT_OF_ORDER
    assert isinstance(gap, Rejected) and isinstance(gap.error, OutOfOrderSequence)
    not_zero = produce(st_, log, 1, 1, 2)  # a new epoch must start at sequence 0
    assert isinstance(not_zero, Rejected) and isinstance(not_zero.error, OutOfOrderSequence)
    assert (not_zero.error.expected, not_zero.error.got) == (0, 2)
    assert st_.producer_table()[PID].epoch == 0  # a refused bump changes nothing
    assert produce(st_, log, 1, 1, 0) == Appended(4, 4)  # re-sent under epoch 1 from 0
    for delayed in [(1, 0, 2), (1, 0, 3), (2, 0, 0)]:  # old-epoch copies, in flight before
        got = produce(st_, log, *delayed)
        assert isinstance(got, Rejected) and isinstance(got.error, ProducerFenced)
        assert (got.error.epoch, got.error.current_epoch) == (0, 1)
    assert produce(st_, log, 1, 1, 0) == Duplicate(4, 4)  # a retry of the new first batch
    assert produce(st_, log, 1, 1, 1) == Appended(10, 10)
    served = st_.fetch(0, 1 << 20, log.read).batches
    assert [read_header(b).producer_epoch for b in served] == [0, 1, 1]


def test_old_epoch_copy_proposed_before_the_bump_was_applied_is_fenced() -> None:
    """guards #12 defect 10: the decision is the apply-time one, so it holds when both
    copies sit in the uncommitted tail together."""
    st_, log = fresh(), FakeLog()
    produce(st_, log, 1, 0, 0)
    new = propose(st_, log, 1, make_batch(1, pid=PID, epoch=1, seq=0))
    old = propose(st_, log, 1, make_batch(1, pid=PID, epoch=0, seq=1))
    assert st_.apply(new) == Appended(1, 1)
    fenced = st_.apply(old)
    assert isinstance(fenced, Rejected) and isinstance(fenced.error, ProducerFenced)
