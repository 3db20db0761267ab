"""MemoryStorage: the LogStorage contract plus append / snapshot / compact."""

from __future__ import annotations

import pytest

from raft import (
    Compacted,
    ConfState,
    Entry,
    HardState,
    MemoryStorage,
    Snapshot,
    SnapshotMetadata,
    Unavailable,
)

CS = ConfState(voters=frozenset({1, 2, 3}))


def filled(n: int = 5) -> MemoryStorage:
    st = MemoryStorage(CS)
    st.append([Entry(i, 1 if i <= 3 else 2, data=b"x" * i) for i in range(1, n + 1)])
    return st


def test_empty_storage() -> None:
    st = MemoryStorage(CS, HardState(3, 2, 0))
    assert st.initial_state() == (HardState(3, 2, 0), CS)
    assert (st.first_index(), st.last_index()) == (1, 0)
    assert st.term(0) == 0
    assert st.entries(1, 1) == []
    assert st.snapshot().is_empty()


def test_append_and_read() -> None:
    st = filled()
    assert (st.first_index(), st.last_index()) == (1, 5)
    assert [e.index for e in st.entries(2, 5)] == [2, 3, 4]
    assert st.term(3) == 1 and st.term(4) == 2
    with pytest.raises(Unavailable):
        st.entries(2, 7)
    with pytest.raises(Unavailable):
        st.term(6)


def test_append_replaces_suffix() -> None:
    st = filled()
    st.append([Entry(3, 5), Entry(4, 5)])
    assert st.last_index() == 4
    assert [e.term for e in st.entries(1, 5)] == [1, 1, 5, 5]


def test_append_gap_is_an_invariant_violation() -> None:
    from raft import InvariantViolation

    st = filled()
    with pytest.raises(InvariantViolation):
        st.append([Entry(9, 2)])


def test_max_bytes_returns_at_least_one() -> None:
    st = filled()
    assert len(st.entries(1, 6, max_bytes=1)) == 1
    # entry sizes are len(data)+24: 25, 26, 27 -> 78 fit in 80
    assert len(st.entries(1, 6, max_bytes=80)) == 3


def test_snapshot_and_compact() -> None:
    st = filled()
    snap = st.create_snapshot(4, CS, b"state")
    assert snap.metadata == SnapshotMetadata(4, 2, CS)
    st.compact(4)
    assert (st.first_index(), st.last_index()) == (5, 5)
    assert st.term(4) == 2
    with pytest.raises(Compacted):
        st.entries(3, 5)
    with pytest.raises(Compacted):
        st.term(3)
    assert st.snapshot().data == b"state"


def test_apply_snapshot_replaces_log() -> None:
    st = filled()
    snap = Snapshot(SnapshotMetadata(10, 4, ConfState(voters=frozenset({1}))), b"s")
    st.apply_snapshot(snap)
    assert (st.first_index(), st.last_index()) == (11, 10)
    assert st.term(10) == 4
    assert st.initial_state()[1] == ConfState(voters=frozenset({1}))
    st.append([Entry(11, 4)])
    assert st.last_index() == 11
