"""RawNode is the runtime's boundary: what it may know of a group without reading the core."""

from __future__ import annotations

import random

from raft.config import RaftConfig
from raft.memory import MemoryStorage
from raft.rawnode import RawNode
from raft.types import ConfState, Role


def single(voters: frozenset[int] = frozenset({1})) -> tuple[RawNode, MemoryStorage]:
    storage = MemoryStorage(conf_state=ConfState(voters=voters))
    return RawNode(RaftConfig(node_id=1), storage, random.Random(1)), storage


def drive(node: RawNode, storage: MemoryStorage) -> None:
    while node.has_ready():
        rd = node.ready()
        if rd.entries:
            storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        node.on_persisted(rd.number)
        if rd.committed_entries:
            node.advance_apply(rd.committed_entries[-1].index)


def test_identity_and_role_without_the_core() -> None:
    node, storage = single()
    assert (node.id, node.role, node.leader_id, node.last_ready_number) == (1, Role.FOLLOWER, 0, 0)
    assert node.has_voters() and node.peer_ids() == []
    node.campaign()
    drive(node, storage)
    assert node.role == Role.LEADER and node.leader_id == 1 and node.term >= 1
    assert node.last_ready_number >= 1


def test_quiescable_only_when_nothing_is_in_flight() -> None:
    node, storage = single()
    node.campaign()
    drive(node, storage)
    assert node.is_quiescable()
    node.propose(b"x")
    assert not node.is_quiescable()  # appended, not yet committed or applied
    drive(node, storage)
    assert node.is_quiescable()


def test_a_follower_is_never_quiescable_and_wakes_with_its_election_clock_advanced() -> None:
    node, _storage = single(frozenset({1, 2, 3}))
    assert not node.is_quiescable()
    assert node.peer_ids() == [2, 3]
    assert not node.is_caught_up_follower_of(2)  # no leader known
    node.on_wake(leader_lost=True)
    assert node.raft.election_elapsed >= node.raft.election_ticks


def test_a_leader_waking_forgets_stale_activity() -> None:
    node, storage = single()
    node.campaign()
    drive(node, storage)
    for pr in node.raft.tracker.progress.values():
        pr.recent_active = False
    node.raft.election_elapsed = 5
    node.on_wake(leader_lost=False)
    assert node.raft.election_elapsed == 0
    assert all(pr.recent_active for pr in node.raft.tracker.progress.values())
