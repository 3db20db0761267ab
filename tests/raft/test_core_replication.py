"""Replication (§3.5), commit rules (§3.6.2, Figure 8), flow control, snapshots (§5)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from raft import (
    ConfState,
    Entry,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProgressState,
    ProposalDropped,
    Raft,
    Role,
)

from .netutil import Network

VOTERS = frozenset({1, 2, 3})


def storage_with(terms: list[int], term: int, commit: int = 0) -> MemoryStorage:
    st = MemoryStorage(ConfState(voters=VOTERS), HardState(term, 0, commit))
    st.append([Entry(i + 1, t, data=b"e%d" % (i + 1)) for i, t in enumerate(terms)])
    return st


def test_replication_and_commit_on_all_nodes() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    first = net.nodes[1].propose_many([b"a", b"b", b"c"])
    net.stabilize()
    assert first == 2
    for node_id in (1, 2, 3):
        assert net.data_applied(node_id) == [b"a", b"b", b"c"]
        assert net.nodes[node_id].status().commit == 4
    # storages agree entry by entry (Log Matching)
    logs = [net.storages[i].entries(1, 5) for i in (1, 2, 3)]
    assert logs[0] == logs[1] == logs[2]


def test_follower_propose_raises_not_leader_with_hint() -> None:
    from raft import NotLeader

    net = Network([1, 2, 3])
    net.elect(1)
    with pytest.raises(NotLeader) as exc:
        net.nodes[2].propose(b"x")
    assert exc.value.leader_hint == 1 and exc.value.term == net.nodes[1].status().term


def test_minority_never_commits() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    net.nodes[1].propose(b"lost")
    for _ in range(5):
        net.tick(1)
        net.stabilize()
    assert net.nodes[1].status().commit == 1
    assert net.data_applied(1) == []


def _figure8_drop(net: Network) -> Callable[[Message], bool]:
    """Node 3 gets no appends; node 2 gets index 2 (term 2) but never a term-3 entry it
    could accept (the first probe, which it rejects, may pass)."""

    def drop(m: Message) -> bool:
        if m.type is not MessageType.APP:
            return False
        if m.to == 3:
            return True
        has_two = net.storages[2].last_index() >= 2
        return has_two and any(e.term == 3 for e in m.entries)

    return drop


def test_figure8_old_term_entry_not_committed_by_counting() -> None:
    net = Network([1, 2, 3], max_size_per_msg=1)
    net.add_node(1, storage_with([1, 2], term=2, commit=1))
    net.add_node(2, storage_with([1], term=2, commit=1))
    net.add_node(3, storage_with([1], term=2, commit=1))
    net.nodes[1].campaign()

    net.drop = _figure8_drop(net)
    net.stabilize()
    lead = net.nodes[1].raft
    assert lead.role is Role.LEADER and lead.term == 3
    assert lead.tracker.progress[2].match == 2  # index 2 (term 2) is on a majority...
    assert lead.log.committed == 1  # ...but counting replicas never commits an old term
    assert net.data_applied(1) == [b"e1"]  # e1 was committed before; e2 must wait
    net.drop = None
    net.tick_all(2)
    assert lead.log.committed == 3  # once the term-3 no-op is on a majority, both commit
    assert [e.data for e in net.applied[2]] == [b"e1", b"e2", b""]


def test_figure8_bug_injection_is_detectable() -> None:
    class CountingLeader(Raft):
        def maybe_commit(self) -> bool:  # the Figure 8 bug: ignore the term check
            idx = self.tracker.committed()
            if idx > self.log.committed:
                self.log.commit_to(idx)
                return True
            return False

    net = Network([1, 2, 3], max_size_per_msg=1)
    net.add_node(1, storage_with([1, 2], term=2, commit=1))
    net.add_node(2, storage_with([1], term=2, commit=1))
    net.add_node(3, storage_with([1], term=2, commit=1))
    net.nodes[1]._raft.__class__ = CountingLeader
    net.nodes[1].campaign()
    net.drop = _figure8_drop(net)
    net.stabilize()
    assert net.nodes[1].raft.log.committed == 2  # the bug commits the term-2 entry


def test_log_conflict_resolved_with_fast_backoff() -> None:
    # node 2 has 50 divergent term-2 entries after index 3; leader has term-3 entries there.
    net = Network([1, 2, 3])
    net.add_node(1, storage_with([1, 1, 1] + [3] * 50, term=3, commit=3))
    net.add_node(2, storage_with([1, 1, 1] + [2] * 50, term=3, commit=3))
    net.add_node(3, storage_with([1, 1, 1] + [3] * 50, term=3, commit=3))
    net.nodes[1].campaign()
    net.stabilize()
    assert net.nodes[1].status().role is Role.LEADER
    rejects = [m for m in net.sent if m.type is MessageType.APP_RESP and m.reject and m.from_ == 2]
    assert 1 <= len(rejects) <= 2  # one probe per term, not one per entry
    last = net.nodes[1].status().last_index
    assert net.storages[2].entries(1, last + 1) == net.storages[1].entries(1, last + 1)
    assert net.nodes[2].status().commit == last


def test_pipelining_and_inflight_window() -> None:
    net = Network([1, 2, 3], max_inflight_msgs=2, max_size_per_msg=1)
    net.elect(1)
    lead = net.nodes[1]
    for i in range(6):
        lead.propose(b"p%d" % i)
    rd = net.process(1)
    assert rd is not None
    apps = [m for m in rd.messages if m.type is MessageType.APP and m.to == 2]
    assert len(apps) == 2  # window of 2 in flight, one entry each (max_size_per_msg)
    assert lead.status().progress[2].state is ProgressState.REPLICATE
    net.stabilize()
    assert net.data_applied(2) == [b"p%d" % i for i in range(6)]


def test_max_size_per_msg_splits_batches() -> None:
    net = Network([1, 2, 3], max_size_per_msg=3 * (24 + 10))
    net.elect(1)
    net.nodes[1].propose_many([b"0123456789"] * 10)
    net.stabilize()
    apps = [m for m in net.sent if m.type is MessageType.APP and m.to == 2 and m.entries]
    assert max(len(m.entries) for m in apps) == 3
    assert len(net.data_applied(2)) == 10


def test_uncommitted_bytes_limit_drops_proposals() -> None:
    net = Network([1, 2, 3], max_uncommitted_bytes=100)
    net.elect(1)
    net.isolate(1)
    net.nodes[1].propose(b"x" * 60)
    with pytest.raises(ProposalDropped):
        net.nodes[1].propose(b"y" * 60)
    net.heal()
    net.tick_all(2)
    net.nodes[1].propose(b"y" * 60)  # room again once the first committed


def test_snapshot_installed_on_lagging_follower() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    for i in range(10):
        net.nodes[1].propose(b"v%d" % i)
    net.stabilize()
    lead_storage = net.storages[1]
    applied = net.nodes[1].status().applied
    lead_storage.create_snapshot(applied, ConfState(voters=VOTERS), b"state@%d" % applied)
    lead_storage.compact(applied)
    net.heal()
    for _ in range(5):
        net.tick_all()
    assert "snapshot_sent" in net.event_names(1)
    assert "snapshot_restored" in net.event_names(3)
    assert net.storages[3].snapshot().data == b"state@%d" % applied
    assert net.nodes[3].status().commit == net.nodes[1].status().commit
    # it keeps replicating after the snapshot
    net.nodes[1].propose(b"after")
    net.stabilize()
    assert net.data_applied(3)[-1] == b"after"
    assert net.nodes[1].status().progress[3].state is ProgressState.REPLICATE


def test_report_snapshot_failure_moves_back_to_probe() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    for i in range(3):
        net.nodes[1].propose(b"v%d" % i)
    net.stabilize()
    applied = net.nodes[1].status().applied
    net.storages[1].create_snapshot(applied, ConfState(voters=VOTERS), b"s")
    net.storages[1].compact(applied)
    net.heal()
    net.drop = lambda m: m.type is MessageType.SNAPSHOT  # the snapshot send fails
    for _ in range(3):
        net.tick_all()
    assert net.nodes[1].status().progress[3].state is ProgressState.SNAPSHOT
    net.nodes[1].report_snapshot(3, False)
    assert net.nodes[1].status().progress[3].state is ProgressState.PROBE
    net.drop = None
    for _ in range(3):
        net.tick_all()
    assert net.nodes[3].status().commit == net.nodes[1].status().commit


def test_report_unreachable_moves_replicate_to_probe() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    assert net.nodes[1].status().progress[2].state is ProgressState.REPLICATE
    net.nodes[1].report_unreachable(2)
    assert net.nodes[1].status().progress[2].state is ProgressState.PROBE


# -- broadcast_commit: how followers learn a new commit index --------------------------------


def _empty_appends(net: Network) -> list[Message]:
    return [m for m in net.sent if m.type is MessageType.APP and not m.entries]


def test_broadcast_commit_sends_an_empty_append_per_follower_when_commit_moves() -> None:
    net = Network([1, 2, 3])  # etcd's behaviour, the default (the metadata group's)
    net.elect(1)
    net.sent.clear()
    net.nodes[1].propose(b"a")
    net.stabilize()
    commit = net.nodes[1].status().commit
    told = {m.to for m in _empty_appends(net) if m.commit == commit}
    assert told == {2, 3}
    for node_id in (2, 3):  # learned at once, without a tick
        assert net.data_applied(node_id) == [b"a"]


def test_without_broadcast_commit_followers_learn_commit_from_the_next_heartbeat() -> None:
    net = Network([1, 2, 3], broadcast_commit=False)  # the partitions' setting
    net.elect(1)
    net.stabilize()
    net.tick_all(1)  # settle the election's own commit first
    net.sent.clear()
    net.nodes[1].propose(b"a")
    net.stabilize()
    commit = net.nodes[1].status().commit
    assert net.data_applied(1)[-1:] == [b"a"]
    assert _empty_appends(net) == []  # no extra message per write ...
    for node_id in (2, 3):  # ... so the followers hold the entry, not yet known committed
        assert net.nodes[node_id].status().commit < commit
        assert b"a" not in net.data_applied(node_id)
    net.tick(1, 1)  # one heartbeat round (heartbeat_ticks = 1) carries it
    net.stabilize()
    for node_id in (2, 3):
        assert net.nodes[node_id].status().commit == commit
        assert net.data_applied(node_id)[-1:] == [b"a"]


def test_without_broadcast_commit_the_next_append_carries_the_commit() -> None:
    net = Network([1, 2, 3], broadcast_commit=False)
    net.elect(1)
    net.stabilize()
    net.tick_all(1)
    net.nodes[1].propose(b"a")
    net.stabilize()
    first_commit = net.nodes[1].status().commit
    net.sent.clear()
    net.nodes[1].propose(b"b")  # a steady stream: the next write tells the followers
    net.process(1)
    carried = [m for m in net.sent if m.type is MessageType.APP and m.entries]
    assert {m.to for m in carried} == {2, 3}
    assert all(m.commit == first_commit for m in carried)
    net.deliver()
    net.process_all()
    for node_id in (2, 3):
        assert b"a" in net.data_applied(node_id)


def test_without_broadcast_commit_a_lagging_follower_still_gets_its_entries_on_commit() -> None:
    """Commit moving must still send entries to a follower that has some waiting (only the
    empty append is left out)."""
    net = Network([1, 2, 3], broadcast_commit=False, max_inflight_msgs=1)
    net.elect(1)
    net.stabilize()
    net.tick_all(1)
    net.isolate(3)
    net.nodes[1].propose(b"a")
    net.stabilize()
    net.nodes[1].propose(b"b")
    net.stabilize()
    net.heal()
    net.tick_all(3)  # heartbeats: 3 answers, the leader probes and catches it up
    assert net.data_applied(3)[-2:] == [b"a", b"b"]
    assert net.nodes[3].status().commit == net.nodes[1].status().commit
