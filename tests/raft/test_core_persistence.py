"""The persistence rule (§3.8, §10.2.1): the core holds back what depends on unpersisted
state, whatever the driver does."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from raft import (
    ConfState,
    Entry,
    HardState,
    InvariantViolation,
    MemoryStorage,
    Message,
    MessageType,
    RaftConfig,
    RawNode,
    Ready,
    Role,
    Snapshot,
    SnapshotMetadata,
)
from raft.storage import DurableLog

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


def _cluster_at_term(terms: dict[int, int]) -> dict[int, tuple[RawNode, MemoryStorage]]:
    nodes = {}
    for node_id, term in terms.items():
        st = MemoryStorage(VOTERS, HardState(term=term))
        cfg = RaftConfig(node_id=node_id, pre_vote=False, check_quorum=False)
        nodes[node_id] = (RawNode(cfg, st, random.Random(node_id)), st)
    return nodes


def _persist_and_send(n: RawNode, st: MemoryStorage) -> list[Message]:
    """One full loop turn: persist, report persisted, collect what may leave."""
    out: list[Message] = []
    while n.has_ready():
        rd = n.ready()
        persist(st, rd)
        out.extend(rd.messages)
        n.advance(rd)
    return out


def test_vote_granted_at_the_current_term_waits_for_the_disk() -> None:
    """guards #12 defect 3: a grant made at the node's current term (it already knew term 2,
    had not voted) left in the same Ready as the vote, before the vote was durable; a SIGKILL
    before the fsync then let the node vote again in term 2: two leaders in term 2."""
    nodes = _cluster_at_term({1: 1, 2: 1, 3: 2})  # node 3 learned term 2 earlier, no vote
    n1, st1 = nodes[1]
    n2, st2 = nodes[2]
    n3, st3 = nodes[3]
    n1.campaign()  # term 2
    vote_req = [m for m in _persist_and_send(n1, st1) if m.to == 3]
    assert [m.type for m in vote_req] == [MessageType.VOTE] and vote_req[0].term == 2
    n3.step(vote_req[0])
    rd = n3.ready()  # handed out: the vote is in rd.hard_state, not yet persisted
    assert rd.hard_state is not None and rd.hard_state.vote == 1 and rd.must_sync
    leaked = [m for m in rd.messages if m.type is MessageType.VOTE_RESP and not m.reject]
    # SIGKILL before the fsync: whatever left is delivered, the vote is lost.
    for m in leaked:
        n1.step(m)
    n3 = RawNode(RaftConfig(node_id=3, pre_vote=False, check_quorum=False), st3, random.Random(9))
    assert n3.status().vote == 0 and n3.status().term == 2
    n2.campaign()  # term 2 as well
    for m in _persist_and_send(n2, st2):
        if m.to == 3:
            n3.step(m)
    for m in _persist_and_send(n3, st3):
        if m.to == 2:
            n2.step(m)
    _persist_and_send(n2, st2)
    leaders_in_term_2 = [
        n.status().node_id
        for n in (n1, n2, n3)
        if n.status().role is Role.LEADER and n.status().term == 2
    ]
    assert len(leaders_in_term_2) <= 1, f"two leaders in term 2: {leaders_in_term_2}"
    assert leaked == []  # the grant never left with the unpersisted vote


def test_restart_after_a_snapshot_above_the_first_index_hands_out_only_later_entries(
    tmp_path: Path,
) -> None:
    """guards #12 defect 2: compaction keeps the active segment, so after a local snapshot
    at S the log's first index stays below S; a restart must not hand out 1..S again."""
    log = DurableLog(tmp_path, conf_state=ConfState(voters=frozenset({1})))
    log.append([Entry(i, 1, data=f"e{i}".encode()) for i in range(1, 21)])
    log.save_hard_state(HardState(term=1, vote=1, commit=20))
    log.save_snapshot(
        Snapshot(SnapshotMetadata(15, 1, ConfState(voters=frozenset({1}))), b"state@15")
    )
    log.close()
    with DurableLog(tmp_path) as reopened:
        assert reopened.first_index() < 15 and reopened.snapshot().metadata.index == 15
        n = RawNode(RaftConfig(node_id=1), reopened, random.Random(1))
        assert n.status().applied == 15
        rd = n.ready()
        assert [e.index for e in rd.committed_entries] == list(range(16, 21))


def test_fsync_never_still_writes_the_vote_before_the_grant_can_leave(tmp_path: Path) -> None:
    """guards #12 defect 9: with fsync="never" the term and vote were only written at close(),
    so a plain process crash (page cache kept) forgot a vote that had been sent. The runtime
    does not sync() under "never"; the vote must be written by save_hard_state itself."""
    log = DurableLog(tmp_path, conf_state=VOTERS, fsync="never")
    n = RawNode(RaftConfig(node_id=2), log, random.Random(2))
    n.step(Message(MessageType.VOTE, 2, 3, 5, log_term=0, index=0))
    sent: list[Message] = []
    while n.has_ready():  # the runtime's loop under "never": write, report persisted, send
        rd = n.ready()
        if rd.hard_state is not None:
            log.save_hard_state(rd.hard_state)
        log.append(rd.entries)
        sent.extend(rd.messages)
        n.advance(rd)
    assert [(m.type, m.reject) for m in sent] == [(MessageType.VOTE_RESP, False)]
    for segment in log._segments.values():  # SIGKILL: no sync, no close
        segment.close()
    with DurableLog(tmp_path, fsync="never") as reopened:
        assert reopened.initial_state()[0].term == 5
        assert reopened.initial_state()[0].vote == 3
