"""One-at-a-time membership changes applied at commit (thesis §4.1-§4.2.2)."""

from __future__ import annotations

import pytest

from raft import ConfChange, ConfChangeType, ConfState, MessageType, ProposalDropped, Role

from .netutil import Network


def add(node_id: int) -> ConfChange:
    return ConfChange(ConfChangeType.ADD_LEARNER, node_id)


def promote(node_id: int) -> ConfChange:
    return ConfChange(ConfChangeType.ADD_VOTER, node_id)


def remove(node_id: int) -> ConfChange:
    return ConfChange(ConfChangeType.REMOVE_NODE, node_id)


def test_add_learner_with_empty_storage_catches_up_then_promote() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.nodes[1].propose_many([b"a", b"b"])
    net.stabilize()
    net.add_node(4)  # brand-new node: empty storage, no membership known
    net.nodes[1].propose_conf_change(add(4))
    net.stabilize()
    for _ in range(3):
        net.tick_all()
    assert net.nodes[1].status().conf_state == ConfState(frozenset({1, 2, 3}), frozenset({4}))
    # the learner learned the full membership (bootstrap snapshot + replayed changes)
    assert net.nodes[4].status().conf_state == ConfState(frozenset({1, 2, 3}), frozenset({4}))
    assert net.data_applied(4) == [b"a", b"b"]
    assert "conf_change_applied" in net.event_names(4)
    # learners never count: with 2 and 3 cut off, nothing commits even though 4 acks
    net.partition([1, 4], [2, 3])
    before = net.nodes[1].status().commit
    net.nodes[1].propose(b"c")
    net.stabilize()
    assert net.nodes[1].status().commit == before
    assert net.nodes[4].status().last_index == net.nodes[1].status().last_index
    net.heal()
    net.tick_all(2)
    # promote once caught up
    net.nodes[1].propose_conf_change(promote(4))
    net.stabilize()
    net.tick_all(2)
    for node_id in (1, 2, 3, 4):
        assert net.nodes[node_id].status().conf_state == ConfState(frozenset({1, 2, 3, 4}))
    # now 4 counts: {1, 4} is not a majority of 4 voters, {1, 3, 4} is
    net.partition([1, 3, 4], [2])
    c = net.nodes[1].status().commit
    net.nodes[1].propose(b"d")
    net.stabilize()
    assert net.nodes[1].status().commit == c + 1


def test_only_one_pending_conf_change() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    net.nodes[1].propose_conf_change(add(4))
    with pytest.raises(ProposalDropped) as exc:
        net.nodes[1].propose_conf_change(add(5))
    assert "one change at a time" in exc.value.reason
    net.heal()
    net.tick_all(2)
    net.nodes[1].propose_conf_change(add(5))  # allowed once the first committed


def test_invalid_conf_change_dropped() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    with pytest.raises(ProposalDropped):
        net.nodes[1].propose_conf_change(promote(2))  # already a voter


def test_new_leader_refuses_conf_change_until_own_entry_committed() -> None:
    net = Network([1, 2, 3], check_quorum=False)  # no leader lease: 2 can win at once
    net.elect(1)
    net.drop = lambda m: m.type is MessageType.APP and m.from_ == 2
    net.elect(2)  # its no-op cannot reach anyone
    with pytest.raises(ProposalDropped):
        net.nodes[2].propose_conf_change(add(4))
    net.drop = None
    net.tick_all(2)
    net.nodes[2].propose_conf_change(add(4))


def test_remove_leader_steps_down_after_commit() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.nodes[1].propose_conf_change(remove(1))
    net.stabilize()
    assert net.nodes[1].status().role is Role.FOLLOWER
    assert net.nodes[2].status().conf_state == ConfState(frozenset({2, 3}))
    # the remaining two elect a leader and make progress; node 1 never campaigns again
    for _ in range(40):
        net.tick_all()
        if net.leaders():
            break
    (lead,) = net.leaders()
    assert lead in (2, 3)
    net.nodes[lead].propose(b"after")
    net.stabilize()
    assert net.data_applied(2)[-1] == b"after" == net.data_applied(3)[-1]
    assert (
        "became_candidate"
        not in [e for n, e, _ in net.events if n == 1 and e == "became_candidate"][1:]
    )


def test_remove_follower_shrinks_quorum() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.nodes[1].propose_conf_change(remove(3))
    net.stabilize()
    net.isolate(3)
    net.isolate(2)
    net.heal()
    net.cut |= {(1, 3), (3, 1), (2, 3), (3, 2)}
    net.nodes[1].propose(b"two-node")
    net.stabilize()
    assert net.data_applied(2)[-1] == b"two-node"


def test_restart_replays_committed_conf_changes() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.add_node(4)
    net.nodes[1].propose_conf_change(add(4))
    net.stabilize()
    net.tick_all(3)
    net.restart(2)
    assert net.nodes[2].status().conf_state == ConfState(frozenset({1, 2, 3}), frozenset({4}))
    net.restart(4)
    assert net.nodes[4].status().conf_state == ConfState(frozenset({1, 2, 3}), frozenset({4}))


def test_uninitialized_node_never_replays_changes_over_empty_membership() -> None:
    # A joining node whose driver did not persist the index-0 bootstrap snapshot restarts
    # with entries but no membership: it must ask again, not derive voters={4} from the
    # ADD_VOTER 4 entry in its log (that would let it elect itself alone).
    from raft import MemoryStorage

    net = Network([1, 2, 3])
    net.elect(1)
    net.add_node(4)
    net.nodes[1].propose_conf_change(add(4))
    net.stabilize()
    net.tick_all(3)
    net.nodes[1].propose_conf_change(promote(4))
    net.stabilize()
    net.tick_all(3)
    old = net.storages[4]
    bare = MemoryStorage(hard_state=old.hard_state)
    bare.append(old.entries(old.first_index(), old.last_index() + 1))
    net.storages[4] = bare
    net.restart(4)
    assert net.nodes[4].status().conf_state == ConfState()
    for _ in range(40):
        net.tick(4)  # no membership: never campaigns, however long it waits
    assert net.nodes[4].status().role is Role.FOLLOWER
    net.stabilize()
    net.tick_all(3)
    assert net.nodes[4].status().conf_state == ConfState(frozenset({1, 2, 3, 4}))
    assert "snapshot_restored" in net.event_names(4)
