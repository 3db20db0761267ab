"""RawNode is the runtime's boundary: what it may know of a group without reading the core."""

from __future__ import annotations

import random

from raft.config import RaftConfig
from raft.memory import MemoryStorage
from raft.rawnode import RawNode
from raft.types import ConfState, Role
from tests.raft.netutil import Network


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


def test_three_nodes_quiesce_only_when_every_member_has_everything() -> None:
    net = Network([1, 2, 3], learners=[4])
    net.elect(1)
    leader, follower = net.nodes[1], net.nodes[2]
    assert leader.peer_ids() == [2, 3, 4]  # voters and learners, never itself
    net.stabilize()
    assert leader.is_quiescable()
    assert follower.is_caught_up_follower_of(1) and not follower.is_caught_up_follower_of(3)
    net.isolate(3)
    leader.propose(b"x")
    net.stabilize()  # committed by 1 and 2; node 3 lags
    assert not leader.is_quiescable()
    net.heal()
    net.tick_all(2)
    assert leader.is_quiescable()
    leader.transfer_leadership(2)
    assert not leader.is_quiescable()  # a transfer in progress


def test_pending_read_index_blocks_quiescence() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.stabilize()
    leader = net.nodes[1]
    net.isolate(1)
    leader.read_index(b"ctx")  # needs a quorum's heartbeat acks: stays pending
    net.stabilize()
    assert not leader.is_quiescable()


def test_a_node_without_membership_has_no_voters() -> None:
    node = RawNode(RaftConfig(node_id=5), MemoryStorage(), random.Random(5))
    assert not node.has_voters() and node.peer_ids() == []
    assert not node.is_quiescable() and not node.is_caught_up_follower_of(1)


def test_a_follower_that_did_not_lose_its_leader_keeps_its_election_clock() -> None:
    node, _storage = single(frozenset({1, 2, 3}))
    node.raft.election_elapsed = 3
    node.on_wake(leader_lost=False)
    assert node.raft.election_elapsed == 3
    node.raft.election_elapsed = node.raft.election_ticks + 4
    node.on_wake(leader_lost=True)  # never moves the clock back
    assert node.raft.election_elapsed == node.raft.election_ticks + 4
