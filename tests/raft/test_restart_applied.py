"""RawNode(applied=..., applied_conf_state=...): a restart whose state machine already holds
everything up to ``applied`` (a partition checkpoint) is handed only the entries after it."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft import ConfState, Entry, HardState, MemoryStorage, RaftConfig
from raft.rawnode import RawNode
from raft.types import ConfChange, ConfChangeType, EntryType

CS = ConfState(voters=frozenset({1, 2, 3}))


def storage(n: int, commit: int, snapshot_at: int = 0) -> MemoryStorage:
    st_ = MemoryStorage(CS, HardState(2, 1, commit))
    st_.append([Entry(i, 1 if i <= 3 else 2, data=b"e%d" % i) for i in range(1, n + 1)])
    if snapshot_at:
        st_.create_snapshot(snapshot_at, CS, b"snap")
        st_.compact(snapshot_at)
    return st_


def handed_out(node: RawNode) -> list[int]:
    out: list[int] = []
    while node.has_ready():
        rd = node.ready()
        out.extend(e.index for e in rd.committed_entries)
        if rd.committed_entries:
            node.advance_apply(rd.committed_entries[-1].index)
        node.on_persisted(rd.number)
    return out


def node(st_: MemoryStorage, **kw: object) -> RawNode:
    return RawNode(RaftConfig(node_id=1), st_, random.Random(1), **kw)  # type: ignore[arg-type]


def test_default_restarts_at_the_snapshot_index() -> None:
    assert handed_out(node(storage(8, 6, snapshot_at=2))) == [3, 4, 5, 6]


def test_applied_skips_what_the_state_machine_has() -> None:
    n = node(storage(8, 6, snapshot_at=2), applied=4)
    assert n.status().applied == 4
    assert handed_out(n) == [5, 6]


def test_applied_above_the_stored_commit_raises_the_commit() -> None:
    """The stored commit is flushed lazily; an applied entry was committed."""
    n = node(storage(8, 3), applied=7)
    assert (n.status().commit, n.status().applied) == (7, 7)
    assert handed_out(n) == []


@pytest.mark.parametrize("applied", [1, 9, -1])
def test_applied_outside_snapshot_and_last_index_is_refused(applied: int) -> None:
    with pytest.raises(ValueError, match="restart point 2"):
        node(storage(8, 6, snapshot_at=2), applied=applied)


def test_conf_state_without_applied_is_refused() -> None:
    with pytest.raises(ValueError, match="pass both"):
        node(storage(8, 6), applied_conf_state=CS)


def conf_entry(index: int, change: ConfChangeType, node_id: int) -> Entry:
    return Entry(index, 1, EntryType.CONF_CHANGE, ConfChange(change, node_id).encode())


@settings(max_examples=50, deadline=None)
@given(
    changes=st.lists(
        st.tuples(
            st.sampled_from(
                [ConfChangeType.ADD_LEARNER, ConfChangeType.ADD_VOTER, ConfChangeType.REMOVE_NODE]
            ),
            st.integers(2, 5),
        ),
        max_size=8,
    ),
    data=st.data(),
)
def test_membership_from_applied_conf_equals_the_log_replay(
    changes: list[tuple[ConfChangeType, int]], data: st.DataObject
) -> None:
    """The membership as of ``applied`` (computed as the core applies changes, invalid ones
    skipped) plus the log after it equals what the core derives from the whole log."""
    from raft.confchange import apply_conf_change

    entries: list[Entry] = []
    for change, node_id in changes:
        entries.append(Entry(len(entries) + 1, 1, EntryType.NORMAL, b"x"))
        entries.append(conf_entry(len(entries) + 1, change, node_id))
    entries.append(Entry(len(entries) + 1, 1, EntryType.NORMAL, b"x"))
    last = len(entries)
    commit = data.draw(st.integers(0, last), label="commit")
    applied = data.draw(st.integers(0, commit), label="applied")

    def fresh() -> MemoryStorage:
        s = MemoryStorage(CS, HardState(1, 1, commit))
        s.append(entries)
        return s

    conf = CS
    for e in entries[:applied]:
        if e.type == EntryType.CONF_CHANGE:
            try:
                conf = apply_conf_change(conf, ConfChange.decode(e.data))
            except ValueError:
                pass
    reference = node(fresh())
    restarted = node(fresh(), applied=applied, applied_conf_state=conf)
    assert restarted.status().conf_state == reference.status().conf_state
    assert restarted.raft.log.conf_indexes == reference.raft.log.conf_indexes
    assert handed_out(restarted) == handed_out(reference)[applied:]
