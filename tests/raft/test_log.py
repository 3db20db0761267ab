"""RaftLog and Unstable: append/truncate, conflicts, fast back-off search, commit rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raft import ConfState, Entry, InvariantViolation, MemoryStorage, Snapshot, SnapshotMetadata
from raft.log import RaftLog
from raft.unstable import Unstable


def ents(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(start + i, t) for i, t in enumerate(terms)]


def log_with(stored: list[Entry], unstable: list[Entry] = ()) -> RaftLog:  # type: ignore[assignment]
    storage = MemoryStorage(ConfState(voters=frozenset({1})))
    storage.append(stored)
    log = RaftLog(storage)
    if unstable:
        log.append(unstable)
    return log


def test_bounds_across_storage_and_unstable() -> None:
    log = log_with(ents(1, 1, 2), ents(2, 3, start=4))
    assert (log.first_index(), log.last_index(), log.last_term()) == (1, 5, 3)
    assert [e.index for e in log.slice(2, 6)] == [2, 3, 4, 5]
    assert log.persisted_last_index() == 3


def test_maybe_append_consistency_check_and_truncation() -> None:
    log = log_with(ents(1, 1, 2, 2))
    assert log.maybe_append(4, 3, 0, ents(3, start=5)) is None  # term mismatch at 4
    assert log.maybe_append(2, 1, 2, ents(3, 3, start=3)) == 4
    assert [log.term(i) for i in range(1, 5)] == [1, 1, 3, 3]
    assert log.committed == 2
    # Duplicate delivery does not truncate anything.
    assert log.maybe_append(2, 1, 2, ents(3, start=3)) == 3
    assert log.last_index() == 4


def test_truncating_committed_entries_is_an_invariant_violation() -> None:
    log = log_with(ents(1, 1, 2))
    log.commit_to(3)
    with pytest.raises(InvariantViolation):
        log.maybe_append(1, 1, 3, ents(5, 5, start=2))


def test_commit_never_beyond_last_index() -> None:
    log = log_with(ents(1))
    with pytest.raises(InvariantViolation):
        log.commit_to(5)
    log.commit_to(1)
    log.commit_to(0)  # never decreases
    assert log.committed == 1


def test_find_conflict_by_term() -> None:
    log = log_with(ents(1, 1, 2, 2, 5, 5, 5))
    assert log.find_conflict_by_term(7, 4) == (4, 2)
    assert log.find_conflict_by_term(7, 5) == (7, 5)
    assert log.find_conflict_by_term(3, 1) == (2, 1)
    assert log.find_conflict_by_term(7, 0) == (0, 0)


def test_committed_entries_only_after_local_persistence() -> None:
    log = log_with(ents(1, 1), ents(1, start=3))
    log.commit_to(3)
    assert [e.index for e in log.next_committed_entries()] == [1, 2]
    log.unstable.accept_in_progress()
    log.storage.append(log.unstable.entries)  # type: ignore[attr-defined]  # the driver's write
    log.unstable.stable_to(3, 1)
    assert [e.index for e in log.next_committed_entries()] == [3]
    with pytest.raises(InvariantViolation):
        log.applied_to(4)
    log.applied_to(3)
    with pytest.raises(InvariantViolation):
        log.applied_to(2)


def test_stable_to_ignores_replaced_entries() -> None:
    u = Unstable(1)
    u.truncate_and_append(ents(1, 1, 1))
    u.accept_in_progress()
    u.truncate_and_append(ents(2, start=3))  # index 3 replaced by a newer leader's entry
    assert u.in_progress == 3
    u.stable_to(3, 1)  # the persisted write was of term 1 at index 3: no longer ours
    assert u.offset == 1
    u.stable_to(2, 1)
    assert u.offset == 3 and [e.term for e in u.entries] == [2]


def test_restore_snapshot() -> None:
    log = log_with(ents(1, 1))
    snap = Snapshot(SnapshotMetadata(10, 3, ConfState(voters=frozenset({1}))))
    log.restore(snap)
    assert (log.first_index(), log.last_index(), log.committed) == (11, 10, 10)
    assert log.term(10) == 3
    assert log.persisted_last_index() == 10
    assert log.next_committed_entries() == []


def test_conf_indexes_follow_truncation() -> None:
    from raft import EntryType

    log = log_with([])
    log.append([Entry(1, 1), Entry(2, 1, EntryType.CONF_CHANGE), Entry(3, 1)])
    assert log.conf_indexes == [2]
    log.append([Entry(2, 2)])
    assert log.conf_indexes == []


@given(st.lists(st.integers(1, 4), min_size=1, max_size=12), st.data())
def test_unstable_truncate_matches_list_model(terms: list[int], data: st.DataObject) -> None:
    u = Unstable(1)
    model: list[Entry] = []
    for _ in range(3):
        start = data.draw(st.integers(1, len(model) + 1))
        new = ents(*data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=5)), start=start)
        u.truncate_and_append(new)
        model = model[: start - 1] + new
        assert u.entries == model[u.offset - 1 :]
        assert u.maybe_last_index() == len(model)
