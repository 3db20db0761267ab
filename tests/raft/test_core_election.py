"""Elections: randomized timeouts (§3.4), PreVote (§9.6), CheckQuorum (§6.2), restart."""

from __future__ import annotations

import random

from raft import MemoryStorage, MessageType, RaftConfig, RawNode, Role
from raft.types import ConfState, HardState

from .netutil import Network


def test_single_node_elects_itself_and_commits() -> None:
    net = Network([1])
    net.tick_all(20)
    st = net.nodes[1].status()
    assert st.role is Role.LEADER and st.term == 1
    idx = net.nodes[1].propose(b"a")
    net.stabilize()
    assert net.nodes[1].status().commit == idx == 2  # after the leader's no-op at 1
    assert net.data_applied(1) == [b"a"]


def test_three_node_election_by_timeout() -> None:
    net = Network([1, 2, 3], seed=3)
    for _ in range(40):
        net.tick_all()
        if net.leaders():
            break
    leaders = net.leaders()
    assert len(leaders) == 1
    lead = leaders[0]
    term = net.nodes[lead].status().term
    for node_id in (1, 2, 3):
        st = net.nodes[node_id].status()
        assert st.leader_id == lead and st.term == term
    # the new leader's no-op in its term committed everywhere
    assert all(net.nodes[i].status().commit == 1 for i in (1, 2, 3))
    assert "became_leader" in net.event_names(lead)


def test_randomized_timeout_in_range_and_seeded() -> None:
    timeouts = set()
    for seed in range(40):
        node = RawNode(
            RaftConfig(node_id=1, election_ticks=10),
            MemoryStorage(ConfState(voters=frozenset({1, 2, 3}))),
            random.Random(seed),
        )
        t = node.raft.randomized_election_timeout
        assert 10 <= t < 20
        timeouts.add(t)
    assert len(timeouts) > 3  # actually randomized


def test_prevote_does_not_bump_term_of_isolated_node() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    term = net.nodes[1].status().term
    net.isolate(3)
    for _ in range(100):
        net.tick(3)
        net.stabilize()
    st3 = net.nodes[3].status()
    assert st3.term == term  # pre-vote never won, so never bumped the term
    assert "became_pre_candidate" in net.event_names(3)
    assert "became_candidate" not in net.event_names(3)
    net.heal()
    net.tick_all(3)
    assert net.nodes[1].status().role is Role.LEADER
    assert net.nodes[1].status().term == term


def test_without_prevote_isolated_node_bumps_term_and_disrupts() -> None:
    # The contrast case: the same partition without PreVote/CheckQuorum makes the rejoining
    # node's higher term depose the leader.
    net = Network([1, 2, 3], pre_vote=False, check_quorum=False)
    net.elect(1)
    term = net.nodes[1].status().term
    net.isolate(3)
    for _ in range(60):
        net.tick(3)
        net.stabilize()
    assert net.nodes[3].status().term > term
    net.heal()
    for _ in range(40):  # node 3 times out again and its VOTE carries the higher term
        net.tick(3)
        net.stabilize()
    assert net.nodes[1].status().term > term


def test_check_quorum_leader_steps_down_when_cut_off() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    for _ in range(2 * net.nodes[1].raft.election_ticks + 1):  # the 2nd CheckQuorum finds no quorum
        net.tick(1)
        net.stabilize()
    assert net.nodes[1].status().role is Role.FOLLOWER
    assert "leader_stepped_down" in net.event_names(1)


def test_leader_lease_followers_ignore_votes_while_leader_is_alive() -> None:
    net = Network([1, 2, 3], pre_vote=False)
    net.elect(1)
    term = net.nodes[1].status().term
    # node 3 campaigns on its own (e.g. a slow node that timed out spuriously)
    net.nodes[3].campaign()
    net.stabilize()
    assert net.nodes[1].status().role is Role.LEADER
    assert net.nodes[2].status().term == term  # ignored without even bumping its term
    assert any(e == "vote_ignored" for e in net.event_names(2))


def test_vote_rejected_for_stale_log() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.nodes[1].propose(b"x")
    net.stabilize()
    net.heal()
    net.isolate(1)
    # node 3 (missing the entry) cannot win; node 2 can
    for _ in range(30):
        net.tick(3)
        net.stabilize()
    assert net.nodes[3].status().role is not Role.LEADER
    net.nodes[2].campaign()
    for _ in range(30):
        net.tick(2)
        net.stabilize()
        if net.nodes[2].status().role is Role.LEADER:
            break
    assert net.nodes[2].status().role is Role.LEADER


def test_restart_restores_term_and_vote() -> None:
    storage = MemoryStorage(ConfState(voters=frozenset({1, 2, 3})), HardState(7, 2, 0))
    node = RawNode(RaftConfig(node_id=1), storage, random.Random(1))
    st = node.status()
    assert (st.term, st.vote) == (7, 2)
    from raft import Message

    # a different candidate in the same term is refused: the vote survived the restart
    node.step(Message(MessageType.VOTE, 1, 3, 7, log_term=0, index=0))
    rd = node.ready()
    node.advance(rd)
    rd2 = node.ready() if node.has_ready() else rd
    resp = [m for m in rd.messages + rd2.messages if m.type is MessageType.VOTE_RESP]
    assert resp and resp[0].reject


def test_learner_never_campaigns() -> None:
    net = Network([1, 2], learners=[3])
    for _ in range(60):
        net.tick(3)
        net.stabilize()
    assert net.nodes[3].status().role is Role.FOLLOWER
    assert "became_pre_candidate" not in net.event_names(3)
