"""The persistence rule (§3.8, §10.2.1): the core holds back what depends on unpersisted
state, whatever the driver does."""

from __future__ import annotations

import random

import pytest

from raft import (
    ConfState,
    Entry,
    InvariantViolation,
    MemoryStorage,
    Message,
    MessageType,
    RaftConfig,
    RawNode,
    Ready,
    Role,
)

from .netutil import Network

VOTERS = ConfState(voters=frozenset({1, 2, 3}))


def node(node_id: int = 2) -> tuple[RawNode, MemoryStorage]:
    st = MemoryStorage(VOTERS)
    return RawNode(RaftConfig(node_id=node_id), st, random.Random(node_id)), st


def persist(st: MemoryStorage, rd: Ready) -> None:
    if rd.snapshot is not None:
        st.apply_snapshot(rd.snapshot)
    st.append(rd.entries)
    if rd.hard_state is not None:
        st.set_hard_state(rd.hard_state)


def types(rd: Ready) -> list[MessageType]:
    return [m.type for m in rd.messages]


def test_follower_append_response_held_until_persisted() -> None:
    n, st = node(2)
    n.step(
        Message(
            MessageType.APP,
            2,
            1,
            1,
            log_term=0,
            index=0,
            entries=(Entry(1, 1, data=b"x"),),
            commit=0,
        )
    )
    rd = n.ready()
    assert rd.entries and rd.must_sync
    assert MessageType.APP_RESP not in types(rd)  # the ack waits for the disk
    assert not n.has_ready() or MessageType.APP_RESP not in types(n.ready())
    persist(st, rd)
    n.on_persisted(rd.number)
    assert n.has_ready()
    rd2 = n.ready()
    (resp,) = [m for m in rd2.messages if m.type is MessageType.APP_RESP]
    assert resp.index == 1 and not resp.reject and resp.to == 1


def test_vote_response_held_until_vote_persisted() -> None:
    n, st = node(2)
    n.step(Message(MessageType.VOTE, 2, 3, 5, log_term=0, index=0))
    rd = n.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == 3 and rd.must_sync
    assert MessageType.VOTE_RESP not in types(rd)
    persist(st, rd)
    n.advance(rd)
    rd2 = n.ready()
    assert [(m.type, m.reject) for m in rd2.messages] == [(MessageType.VOTE_RESP, False)]


def test_candidate_vote_requests_held_until_term_and_vote_persisted() -> None:
    st = MemoryStorage(VOTERS)
    n = RawNode(RaftConfig(node_id=1, pre_vote=False), st, random.Random(1))
    n.campaign()
    rd = n.ready()
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (1, 1)
    assert not rd.messages
    persist(st, rd)
    n.on_persisted(rd.number)
    rd2 = n.ready()
    assert sorted(m.to for m in rd2.messages if m.type is MessageType.VOTE) == [2, 3]


def test_no_release_for_a_later_ready_number() -> None:
    n, st = node(2)
    n.step(Message(MessageType.APP, 2, 1, 1, log_term=0, index=0, entries=(Entry(1, 1),), commit=0))
    rd1 = n.ready()
    n.step(Message(MessageType.APP, 2, 1, 1, log_term=1, index=1, entries=(Entry(2, 1),), commit=0))
    rd2 = n.ready()
    assert rd2.number == rd1.number + 1 and rd2.entries == (Entry(2, 1),)
    persist(st, rd1)
    n.on_persisted(rd1.number)  # only the first ack may leave
    rd3 = n.ready()
    assert [m.index for m in rd3.messages if m.type is MessageType.APP_RESP] == [1]
    persist(st, rd2)
    n.on_persisted(rd2.number)
    rd4 = n.ready()
    assert [m.index for m in rd4.messages if m.type is MessageType.APP_RESP] == [2]


def test_on_persisted_for_unknown_ready_is_invariant_violation() -> None:
    n, _ = node(2)
    with pytest.raises(InvariantViolation):
        n.on_persisted(5)


def test_leader_appends_leave_at_once_but_self_counts_only_when_persisted() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    lead = net.nodes[1]
    idx = lead.propose(b"p")
    rd = lead.ready()  # not persisted yet
    apps = [m for m in rd.messages if m.type is MessageType.APP]
    assert sorted(m.to for m in apps) == [2, 3]  # leaves before the leader's own fsync
    net.queue.extend(apps)
    net.deliver()
    net.process(2)  # only follower 2 persists...
    net.process(2)  # ...and its released ack goes out
    assert any(m.type is MessageType.APP_RESP and m.index == idx for m in net.queue)
    net.queue = [m for m in net.queue if m.from_ == 2]
    net.deliver()
    assert lead.status().commit < idx  # {2} alone is not a quorum: the leader is not counted
    net.persist(1, rd)
    lead.advance(rd)
    assert lead.status().commit == idx  # {1, 2} once the leader's own write is durable


def test_single_node_commit_waits_for_persistence() -> None:
    st = MemoryStorage(ConfState(voters=frozenset({1})))
    n = RawNode(RaftConfig(node_id=1), st, random.Random(1))
    n.campaign()
    rd = n.ready()
    assert n.status().role is Role.LEADER and n.status().commit == 0
    assert rd.committed_entries == ()
    persist(st, rd)
    n.advance(rd)
    assert n.status().commit == 1
    rd2 = n.ready()
    assert [e.index for e in rd2.committed_entries] == [1]
    assert rd2.must_sync is False  # commit-only change


def test_restart_loses_unpersisted_vote_and_votes_again() -> None:
    n, st = node(2)
    n.step(Message(MessageType.VOTE, 2, 3, 5, log_term=0, index=0))
    n.ready()  # crashed before persisting: the vote never left either
    n2 = RawNode(RaftConfig(node_id=2), st, random.Random(2))
    assert n2.status().term == 0 and n2.status().vote == 0
