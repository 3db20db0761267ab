"""The leader's stamp-time decision (``admit``) agrees with the apply-time one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partition import (
    Append,
    Appended,
    Duplicate,
    DuplicateOf,
    OutOfOrderSequence,
    PartitionState,
    ProducerFenced,
    Rejected,
)
from raft.types import Entry, EntryType
from tests.partition.test_support import FakeLog, fresh, make_batch, noop

PID = 9


def admit_and_propose(st_: PartitionState, log: FakeLog, term: int, batch: bytes):
    decision = st_.admit(batch)
    if isinstance(decision, Append):
        e = Entry(log.last_index + 1, term, EntryType.NORMAL, decision.data)
        log.write([e])
        st_.on_log_append([e])
    return decision


def test_leader_refuses_duplicates_and_gaps_in_its_unapplied_tail() -> None:
    """guards #12 defect 8: idempotence was decided at apply only, so acks=leader reported
    batches as written that apply later answered as duplicates or rejected."""
    st_, log = fresh(), FakeLog()
    first = admit_and_propose(st_, log, 1, make_batch(2, pid=PID, epoch=0, seq=0))
    assert isinstance(first, Append) and (first.base_offset, first.last_offset) == (0, 1)
    # nothing applied yet: the retry is a duplicate of the entry in the tail
    assert st_.admit(make_batch(2, pid=PID, epoch=0, seq=0)) == DuplicateOf(0, 1, 1, 1)
    gap = st_.admit(make_batch(1, pid=PID, epoch=0, seq=5))
    assert isinstance(gap, Rejected) and isinstance(gap.error, OutOfOrderSequence)
    assert (gap.error.expected, gap.error.got) == (2, 5)
    bump = admit_and_propose(st_, log, 1, make_batch(1, pid=PID, epoch=1, seq=0))
    assert isinstance(bump, Append) and bump.base_offset == 2
    fenced = st_.admit(make_batch(1, pid=PID, epoch=0, seq=2))  # old epoch, bump unapplied
    assert isinstance(fenced, Rejected) and isinstance(fenced.error, ProducerFenced)
    for e in log.entries:
        st_.apply(e)
    assert st_.admit(make_batch(2, pid=PID, epoch=0, seq=0)) == Rejected(ProducerFenced(PID, 0, 1))
    assert st_.admit(make_batch(1, pid=PID, epoch=1, seq=0)) == DuplicateOf(2, 2)  # applied
    plain = st_.admit(make_batch(1))
    assert isinstance(plain, Append) and plain.base_offset == 3


def test_a_truncated_tail_is_forgotten() -> None:
    st_, log = fresh(), FakeLog()
    admit_and_propose(st_, log, 1, make_batch(1, pid=PID, epoch=0, seq=0))
    admit_and_propose(st_, log, 1, make_batch(1, pid=PID, epoch=0, seq=1))
    st_.apply(log.entries[0])
    assert isinstance(st_.admit(make_batch(1, pid=PID, epoch=0, seq=1)), DuplicateOf)
    e = noop(2, 2)  # a new leader overwrote index 2
    log.write([e])
    st_.on_log_append([e])
    again = st_.admit(make_batch(1, pid=PID, epoch=0, seq=1))
    assert isinstance(again, Append) and again.base_offset == 2


op = st.one_of(
    # produce: (pid, epoch, base sequence, records, timestamp step, propose even if refused)
    st.tuples(
        st.just("produce"),
        st.integers(-1, 2),
        st.integers(0, 2),
        st.integers(0, 5),
        st.integers(1, 3),
        st.integers(-3, 20),
        st.booleans(),
    ),
    st.tuples(st.just("apply"), st.integers(1, 4)),
    st.tuples(st.just("new_leader"), st.integers(0, 3)),
)


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(op, max_size=40), expiry=st.sampled_from([-1, 15, 60]))
def test_stamp_time_decision_equals_apply_time_decision(ops: list[tuple], expiry: int) -> None:
    """guards #12 defect 8: whenever the log below a batch is committed as it was when the
    leader decided, apply decides the same (retries, gaps, epoch bumps, expiry, new leaders)."""
    leader, log = fresh(producer_expiry_ms=expiry), FakeLog()
    term, ts = 1, 1_000
    decided: dict[int, tuple[int, object]] = {}  # index -> (term, admit decision)
    for o in ops:
        if o[0] == "produce":
            _, pid, epoch, seq, n, step, force = o
            ts = max(0, ts + step)
            if pid < 0:
                batch = make_batch(n, ts=ts)
            else:
                batch = make_batch(n, pid=pid, epoch=epoch, seq=seq, ts=ts)
            decision = leader.admit(batch)
            if isinstance(decision, Append):
                data = decision.data
            elif force:  # propose it anyway: apply must refuse it the same way
                data, _b, _l = leader.stamp(batch)
            else:
                continue
            e = Entry(log.last_index + 1, term, EntryType.NORMAL, data)
            log.write([e])
            leader.on_log_append([e])
            decided[e.index] = (term, decision)
        elif o[0] == "apply":
            for e in log.entries[leader.applied_index : leader.applied_index + o[1]]:
                leader.apply(e)
        else:  # a new leader overwrites part of the unapplied tail with its no-op
            term += 1
            at = min(log.last_index + 1, leader.applied_index + 1 + o[1])
            e = noop(at, term)
            log.write([e])
            leader.on_log_append([e])
    results = {e.index: leader.apply(e) for e in log.entries[leader.applied_index :]}
    replica = fresh(producer_expiry_ms=expiry)
    replayed = [replica.apply(e) for e in log.entries]
    assert replica.snapshot() == leader.snapshot()
    for e in log.entries:
        if e.index in results:
            assert results[e.index] == replayed[e.index - 1]
        found = decided.get(e.index)
        if found is None or found[0] != e.term:
            continue  # not decided by admit, or the log below changed since
        decision = found[1]
        got = replayed[e.index - 1]
        if isinstance(decision, Append):
            assert got == Appended(decision.base_offset, decision.last_offset)
        elif isinstance(decision, DuplicateOf):
            assert got == Duplicate(decision.base_offset, decision.last_offset)
        else:
            assert got == decision


def test_admit_validates_the_batch() -> None:
    from wire.batch import InvalidBatch

    with pytest.raises(InvalidBatch):
        fresh().admit(make_batch(1)[:-1])


def test_admit_bounds_timestamps_by_the_leaders_clock() -> None:
    """guards #12 defect 15: a far-future maxTimestamp stopped time retention (and would
    expire every producer): the leader refuses it against its own clock."""
    from wire.batch import InvalidTimestamp

    now = 1_700_000_000_000
    far = make_batch(1, ts=now + 10 * 365 * 24 * 3_600_000)
    st_ = fresh()
    with pytest.raises(InvalidTimestamp):
        st_.admit(far, now_ms=now)
    assert isinstance(st_.admit(make_batch(1, ts=now + 60_000), now_ms=now), Append)
    lenient = fresh(message_timestamp_after_max_ms=-1)
    assert isinstance(lenient.admit(far, now_ms=now), Append)
    strict = fresh(message_timestamp_before_max_ms=3_600_000)
    with pytest.raises(InvalidTimestamp):
        strict.admit(make_batch(1, ts=now - 3_600_001), now_ms=now)


def test_a_producer_is_not_expired_by_its_own_batch() -> None:
    """A producer's batch that comes more than the expiry after its previous one is appended
    (the producer was alive before it); apply dropped the producer's recent batches anyway
    (expired entries were dropped at the new log time before the batch was recorded), so a
    retry of the previous batch was refused as out of order instead of answered as a
    duplicate, and the admit-time decision disagreed (hypothesis, expiry 15 ms)."""
    leader, log = fresh(producer_expiry_ms=15), FakeLog()
    first = admit_and_propose(leader, log, 1, make_batch(1, pid=PID, epoch=0, seq=0, ts=1_000))
    second = admit_and_propose(leader, log, 1, make_batch(1, pid=PID, epoch=0, seq=1, ts=1_016))
    assert isinstance(first, Append) and isinstance(second, Append)
    retry = make_batch(1, pid=PID, epoch=0, seq=0, ts=1_016)
    assert leader.admit(retry) == DuplicateOf(0, 0, 1, 1)
    for e in log.entries:
        leader.apply(e)
    assert leader.admit(retry) == DuplicateOf(0, 0)  # applied: still a duplicate
    e = Entry(log.last_index + 1, 1, EntryType.NORMAL, leader.stamp(retry)[0])
    log.write([e])
    leader.on_log_append([e])
    assert leader.apply(e) == Duplicate(0, 0)


def test_a_rejected_batch_drops_the_producers_it_expires() -> None:
    """A rejected batch (proposed anyway, so that apply decides) moves the log time; apply
    kept the producers it expired in the table, so a late copy of an expired producer's batch
    was admitted as an append and applied as a duplicate (review of a2fa42d)."""
    leader, log = fresh(producer_expiry_ms=15), FakeLog()
    other = 5
    decided: dict[int, object] = {}
    for seq, ts in ((0, 1_000), (1, 1_001)):
        admit_and_propose(leader, log, 1, make_batch(1, pid=PID, epoch=0, seq=seq, ts=ts))
    for e in log.entries:
        leader.apply(e)
    gap = make_batch(1, pid=other, epoch=0, seq=3, ts=1_100)  # unknown producer, seq 3
    assert isinstance(leader.admit(gap), Rejected)
    e = Entry(log.last_index + 1, 1, EntryType.NORMAL, leader.stamp(gap)[0])
    log.write([e])
    leader.on_log_append([e])
    assert isinstance(leader.apply(e), Rejected)
    for seq, ts in ((0, 1_000), (1, 1_001)):  # late copies: the producer expired meanwhile
        d = admit_and_propose(leader, log, 1, make_batch(1, pid=PID, epoch=0, seq=seq, ts=ts))
        decided[log.last_index] = d
    for e in log.entries[leader.applied_index :]:
        d = decided[e.index]
        assert isinstance(d, Append)
        assert leader.apply(e) == Appended(d.base_offset, d.last_offset)
