"""Leadership transfer (§3.10), ReadIndex (§6.4), leader priority."""

from __future__ import annotations

import pytest

from raft import MessageType, ProposalDropped, ReadState, Role

from .netutil import Network


def test_transfer_to_caught_up_follower() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    term = net.nodes[1].status().term
    net.nodes[1].transfer_leadership(2)
    net.stabilize()
    assert net.leaders() == [2]
    assert net.nodes[2].status().term == term + 1
    assert "transfer_started" in net.event_names(1)
    assert any(m.type is MessageType.TIMEOUT_NOW and m.to == 2 for m in net.sent)


def test_transfer_catches_target_up_first() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.nodes[1].propose_many([b"a", b"b"])
    net.stabilize()
    net.heal()
    net.nodes[1].transfer_leadership(3)
    # no TIMEOUT_NOW before 3 has the leader's last index
    rd = net.process(1)
    assert rd is not None and not any(m.type is MessageType.TIMEOUT_NOW for m in rd.messages)
    with pytest.raises(ProposalDropped):
        net.nodes[1].propose(b"during transfer")
    net.stabilize()
    assert net.leaders() == [3]
    assert net.data_applied(3) == [b"a", b"b"]


def test_transfer_forwarded_by_follower() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.nodes[3].transfer_leadership(2)
    net.stabilize()
    assert net.leaders() == [2]


def test_transfer_aborts_after_election_timeout() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.cut.discard((1, 3))
    net.cut.discard((3, 1))
    net.drop = lambda m: m.to == 3 or m.from_ == 3  # 3 is unreachable
    net.nodes[1].propose(b"x")
    net.stabilize()
    net.nodes[1].transfer_leadership(3)
    assert net.nodes[1].status().lead_transferee == 3
    for _ in range(10):
        net.tick_all()
    assert net.nodes[1].status().lead_transferee == 0
    assert "transfer_aborted" in net.event_names(1)
    assert net.leaders() == [1]
    net.nodes[1].propose(b"accepted again")


def test_read_index_on_leader_confirmed_by_quorum() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.nodes[1].propose(b"w")
    net.stabilize()
    commit = net.nodes[1].status().commit
    net.nodes[1].read_index(b"r1")
    # not answered before the heartbeat round
    rd = net.process(1)
    assert rd is not None and rd.read_states == ()
    assert any(m.type is MessageType.HEARTBEAT and m.context == b"r1" for m in rd.messages)
    net.stabilize()
    assert net.read_states[1] == [ReadState(commit, b"r1")]


def test_read_index_from_follower() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.nodes[1].propose(b"w")
    net.stabilize()
    net.nodes[3].read_index(b"f")
    net.stabilize()
    assert net.read_states[3] == [ReadState(net.nodes[1].status().commit, b"f")]


def test_read_index_single_voter_answers_at_once() -> None:
    net = Network([1])
    net.elect(1)
    net.nodes[1].read_index(b"solo")
    rd = net.process(1)
    assert rd is not None and rd.read_states == (ReadState(1, b"solo"),)


def test_partitioned_old_leader_never_answers_read_index() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    net.nodes[1].read_index(b"stale?")
    for _ in range(30):
        net.tick_all()
    assert net.read_states[1] == []
    # meanwhile the majority elected someone else and can answer
    (lead,) = [i for i in net.leaders() if i != 1]
    net.nodes[lead].read_index(b"fresh")
    net.stabilize()
    assert [rs.context for rs in net.read_states[lead]] == [b"fresh"]


def test_read_index_waits_for_commit_in_current_term() -> None:
    net = Network([1, 2, 3], check_quorum=False)
    net.elect(1)
    net.drop = lambda m: m.type is MessageType.APP and m.from_ == 2
    net.elect(2)
    net.nodes[2].read_index(b"early")
    net.stabilize()
    assert net.read_states[2] == []  # its no-op is not committed yet
    net.drop = None
    net.tick_all(3)
    assert [rs.context for rs in net.read_states[2]] == [b"early"]


def test_priority_transfers_to_highest_caught_up_voter() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    for node in net.nodes.values():
        node.set_priorities({1: 1, 2: 5, 3: 3})
    net.tick_all(3)
    assert net.leaders() == [2]
    assert any(e == "priority_transfer" for e in net.event_names(1))
    # no ping-pong: the top-priority leader keeps leading
    net.tick_all(30)
    assert net.leaders() == [2]


def test_priority_equal_does_not_transfer() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    for node in net.nodes.values():
        node.set_priorities({1: 2, 2: 2, 3: 2})
    net.tick_all(10)
    assert net.leaders() == [1]


def test_priority_skips_lagging_voter() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(2)
    for node in net.nodes.values():
        node.set_priorities({1: 1, 2: 9, 3: 0})
    net.nodes[1].propose(b"x")
    net.tick_all(3)
    assert net.leaders() == [1]
    assert net.nodes[1].status().role is Role.LEADER
