"""A simulated Raft cluster: N RawNodes over simulated disks and one simulated network.

Contract: :class:`SimCluster` owns the nodes, the network, the clients' bookkeeping and the
invariant checker; :meth:`SimCluster.step` advances the whole world by one step. It follows
the Ready loop contract from ``raft.types.Ready`` exactly: persist (into the fake disk),
send, apply, ``advance_apply``; ``on_persisted(number)`` only once the simulated fsync of that
Ready has completed. Fault *decisions* (when to crash, partition, ...) belong to
``tests.sim.runner``; this module offers the fault *actions*.

Determinism: every random choice comes from ``self.rng`` (seeded once); each node's core gets
its own ``random.Random`` derived from it. Node iteration is in sorted id order.

A client proposal is *acknowledged* when the node that accepted it applies its index with
the same data while still the same incarnation (no crash in between): that is the moment a
real broker would answer the producer.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raft.config import RaftConfig
from raft.errors import RaftError
from raft.rawnode import RawNode
from raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    MessageType,
    Ready,
    Role,
)
from tests.sim.disk import SimDisk
from tests.sim.invariants import GENESIS, Digest, Invariants, Violation, chain
from tests.sim.network import SimNetwork

Logger = Callable[..., None]


@dataclass
class SimOptions:
    nodes: int = 3
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    # False: followers learn a new commit index from the next append or heartbeat (the
    # broker's partitions run so); runner.run_seed picks it by the seed's parity.
    broadcast_commit: bool = True
    min_fsync_steps: int = 0
    max_fsync_steps: int = 3
    max_clock_skew: float = 0.3  # tick rate in [1 - skew, 1 + skew] ticks per step
    snapshot_after_entries: int = 30  # compact once applied - first_index exceeds this
    forget_vote_on_restart: bool = False
    # The finer forget-vote fault (see runner.FaultProfile.crash_after_vote_rate).
    crash_after_vote_rate: float = 0.0
    crash_after_vote_down_steps: tuple[int, int] = (0, 0)  # back before the next delivery
    max_size_per_msg: int = 4096
    max_inflight_msgs: int = 16
    # Core-behaviour overrides for bug injection: called with each new RawNode.
    patch_node: Callable[[RawNode], None] | None = None


@dataclass
class SimNode:
    node_id: int
    disk: SimDisk
    tick_rate: float
    raw: RawNode | None = None
    incarnation: int = 0
    tick_credit: float = 0.0
    applied: int = 0
    digest: Digest = GENESIS
    last_commit: int = 0
    crashed_until: int | None = None
    handed_vote: tuple[int, int] = (0, 0)  # (term, vote) of the last Ready handed out
    announced_votes: set[tuple[int, int]] = field(default_factory=set)  # (term, candidate) sent
    removed: bool = False
    proposals: dict[int, bytes] = field(default_factory=dict)  # index -> data (this life)
    conf_history: list[tuple[int, ConfState]] = field(default_factory=list)  # applied


class SimCluster:
    def __init__(
        self,
        seed: int,
        options: SimOptions,
        logger: Logger | None = None,
    ) -> None:
        self.seed = seed
        self.options = options
        self.rng = random.Random(seed)
        self.logger = logger
        self.now = 0
        self.inv = Invariants(seed)
        self.net = SimNetwork(self.rng)
        voters = frozenset(range(1, options.nodes + 1))
        self.nodes: dict[int, SimNode] = {}
        for node_id in sorted(voters):
            self._add_node(node_id, ConfState(voters=voters))
        self.next_node_id = options.nodes + 1
        self.acked: dict[bytes, int] = {}  # data -> index
        self.proposed = 0
        self.value_seq = 0
        self.conf_change_pending_index = 0
        self.membership_log: list[str] = []
        self.scratch: dict[str, Any] = {}  # state private to the fault schedule
        self.leader_commits: list[int] = []  # leaders whose commit advanced this step
        self.healed = False

    # -- node lifecycle -------------------------------------------------------------------

    def _add_node(self, node_id: int, bootstrap: ConfState) -> SimNode:
        skew = self.options.max_clock_skew
        rate = 1.0 + self.rng.uniform(-skew, skew)
        disk = SimDisk(bootstrap, forget_vote_on_recover=self.options.forget_vote_on_restart)
        node = SimNode(node_id=node_id, disk=disk, tick_rate=rate)
        self.nodes[node_id] = node
        self._start(node, disk.storage)
        return node

    def _config(self, node_id: int) -> RaftConfig:
        o = self.options
        return RaftConfig(
            node_id=node_id,
            election_ticks=o.election_ticks,
            heartbeat_ticks=o.heartbeat_ticks,
            max_size_per_msg=o.max_size_per_msg,
            max_inflight_msgs=o.max_inflight_msgs,
            pre_vote=o.pre_vote,
            check_quorum=o.check_quorum,
            broadcast_commit=o.broadcast_commit,
        )

    def _start(self, node: SimNode, storage: Any) -> None:
        node_rng = random.Random(self.rng.getrandbits(64))
        logger = None
        if self.logger is not None:
            log = self.logger
            nid = node.node_id

            def logger(event: str, **fields: Any) -> None:
                fields.setdefault("node_id", nid)
                log(event, step=self.now, **fields)

        node.raw = RawNode(self._config(node.node_id), storage, node_rng, logger)
        if self.options.patch_node is not None:
            self.options.patch_node(node.raw)
        node.incarnation += 1
        node.proposals = {}
        snap = node.disk.durable_snapshot
        node.applied = 0
        node.digest = GENESIS
        node.conf_history = [(0, node.disk.bootstrap)]
        if snap is not None:
            node.conf_history = [(snap.metadata.index, snap.metadata.conf_state)]
            if not snap.is_empty():
                node.applied = snap.metadata.index
                node.digest = snap.data
        node.last_commit = node.disk.durable_hard_state.commit
        node.crashed_until = None

    def live(self) -> list[SimNode]:
        return [n for _, n in sorted(self.nodes.items()) if n.raw is not None]

    def members(self) -> list[SimNode]:
        return [n for _, n in sorted(self.nodes.items()) if not n.removed]

    def crash(self, node_id: int, down_steps: int, lose_outbox: bool = False) -> None:
        """Kill the node: un-fsynced writes are lost; with ``lose_outbox`` so are the
        messages it sent that are still in flight (a killed process's socket buffers)."""
        node = self.nodes[node_id]
        if node.raw is None:
            return
        if lose_outbox:
            self.net.drop_from(node_id)
        lost = node.disk.crash()
        self.check_votes_durable(node)
        node.raw = None
        node.crashed_until = self.now + down_steps
        self._log("sim_crash", node_id=node_id, lost_writes=lost, down_steps=down_steps)

    def check_votes_durable(self, node: SimNode) -> None:
        """A vote announced (a granting VOTE_RESP sent) must survive a crash (thesis §3.8):
        otherwise the node may grant another candidate in the same term."""
        durable = node.disk.durable_hard_state
        for term, candidate in sorted(node.announced_votes):
            if term > durable.term or (term == durable.term and durable.vote != candidate):
                raise self.inv.fail(
                    "vote durability",
                    f"node {node.node_id} sent a vote for {candidate} in term {term}, but after "
                    f"a crash its disk holds term {durable.term} vote {durable.vote}",
                )
        node.announced_votes.clear()

    def restart(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.raw is not None or node.removed:
            return
        storage = node.disk.recover()
        self._start(node, storage)
        self._log("sim_restart", node_id=node_id, incarnation=node.incarnation)

    def leaders(self) -> list[SimNode]:
        out = []
        for n in self.live():
            assert n.raw is not None
            if n.raw.status().role == Role.LEADER:
                out.append(n)
        return out

    def leader(self) -> SimNode | None:
        """The live leader of the highest term, if any."""
        best: SimNode | None = None
        best_term = -1
        for n in self.leaders():
            assert n.raw is not None
            t = n.raw.status().term
            if t > best_term:
                best, best_term = n, t
        return best

    # -- clients --------------------------------------------------------------------------

    def next_value(self) -> bytes:
        self.value_seq += 1
        return f"s{self.seed}-v{self.value_seq}".encode()

    def propose(self, node: SimNode, count: int = 1) -> list[int]:
        """Propose ``count`` fresh values at ``node``; the indexes accepted (maybe none)."""
        assert node.raw is not None
        datas = [self.next_value() for _ in range(count)]
        try:
            first = node.raw.propose(datas[0]) if count == 1 else node.raw.propose_many(datas)
        except RaftError:
            return []
        self.proposed += count
        indexes = list(range(first, first + count))
        for index, data in zip(indexes, datas, strict=True):
            node.proposals[index] = data
        return indexes

    def propose_conf_change(self, node: SimNode, cc: ConfChange) -> int | None:
        assert node.raw is not None
        try:
            index = node.raw.propose_conf_change(cc)
        except RaftError:
            return None
        self.membership_log.append(f"step {self.now}: node {node.node_id} proposes {cc}")
        self._log("sim_conf_change", node_id=node.node_id, change=str(cc), index=index)
        return index

    def add_learner_node(self) -> int:
        """Create an empty node (joining: it learns the configuration from the leader)."""
        node_id = self.next_node_id
        self.next_node_id += 1
        self._add_node(node_id, ConfState())
        return node_id

    # -- the world step -------------------------------------------------------------------

    def step(self) -> None:
        self.now += 1
        self.inv.step = self.now
        for node in self.live():
            number = node.disk.complete_fsyncs(self.now)
            if number is not None:
                assert node.raw is not None
                node.raw.on_persisted(number)
        for msg in self.net.due(self.now):
            target = self.nodes.get(msg.to)
            if target is None or target.raw is None:
                continue
            try:
                target.raw.step(msg)
            except RaftError:
                pass
        outcomes, self.net.snapshot_outcomes = self.net.snapshot_outcomes, []
        for msg, ok in outcomes:
            sender = self.nodes.get(msg.from_)
            if sender is not None and sender.raw is not None:
                sender.raw.report_snapshot(msg.to, ok)
        for node in self.live():
            node.tick_credit += node.tick_rate
            while node.tick_credit >= 1.0:
                node.tick_credit -= 1.0
                assert node.raw is not None
                node.raw.tick()
        for node in self.live():
            self.process_ready(node)
        self.observe_leaders()

    def observe_leaders(self) -> None:
        for node in self.live():
            assert node.raw is not None
            st = node.raw.status()
            if st.role == Role.LEADER and self.inv.on_leader(node.node_id, st.term):
                self._log("sim_leader", node_id=node.node_id, term=st.term)
                self.check_leader_completeness(node, st.term)

    def check_leader_completeness(self, node: SimNode, term: int) -> None:
        storage = node.disk.storage
        first = storage.first_index()
        last = storage.last_index()
        term_at: dict[int, int] = {}
        for index in self.inv.commit_term:
            if first <= index <= last:
                term_at[index] = storage.term(index)
        self.inv.check_leader_completeness(node.node_id, term, first, term_at)

    def process_ready(self, node: SimNode) -> None:
        raw = node.raw
        if raw is None:  # removed while this step ran
            return
        for _ in range(8):
            if node.raw is None or not raw.has_ready():
                return
            self.handle_ready(node, raw, raw.ready())

    def handle_ready(self, node: SimNode, raw: RawNode, rd: Ready) -> None:
        # 1. persist (page cache now, durable after the simulated fsync)
        self.inv.on_entries_written(node.node_id, rd.entries)
        fsync = self.rng.randint(self.options.min_fsync_steps, self.options.max_fsync_steps)
        node.disk.write(rd.number, self.now, fsync, rd.snapshot, rd.entries, rd.hard_state)
        if rd.hard_state is not None and rd.hard_state.commit > node.last_commit:
            self.on_commit_advanced(node, raw, rd.hard_state.commit)
        # 2. send
        for msg in rd.messages:
            self.net.send(msg, self.now)
            if msg.type is MessageType.VOTE_RESP and not msg.reject:
                node.announced_votes.add((msg.term, msg.to))
        rate = self.options.crash_after_vote_rate if not self.healed else 0.0
        if rate > 0 and self.grants_vote(node, rd) and self.rng.random() < rate:
            # Killed before this Ready's fsync: its vote (and nothing durable) is lost, what
            # it sent is on the wire.
            lo, hi = self.options.crash_after_vote_down_steps
            self._log("sim_crash_after_vote", node_id=node.node_id)
            self.crash(node.node_id, self.rng.randint(lo, hi), lose_outbox=False)
            return
        # 3. apply
        if rd.snapshot is not None:
            snap = rd.snapshot
            if snap.metadata.index >= node.applied:
                # An index-0 snapshot only carries membership (sent to a joining node).
                node.conf_history = [(snap.metadata.index, snap.metadata.conf_state)]
            if snap.metadata.index > node.applied:
                node.applied = snap.metadata.index
                node.digest = snap.data
                self.inv.on_snapshot_installed(node.node_id, node.applied, node.digest)
        for entry in rd.committed_entries:
            self.apply(node, entry)
        if rd.committed_entries:
            raw.advance_apply(node.applied)
        self.maybe_compact(node, raw)

    def grants_vote(self, node: SimNode, rd: Ready) -> bool:
        """Whether ``rd`` hands out a new vote for another node (not yet persisted)."""
        hs = rd.hard_state
        if hs is None or hs.vote in (0, node.node_id):
            return False
        granted = (hs.term, hs.vote) != node.handed_vote
        node.handed_vote = (hs.term, hs.vote)
        return granted

    def on_commit_advanced(self, node: SimNode, raw: RawNode, commit: int) -> None:
        st = raw.status()
        leader_term = st.term if st.role == Role.LEADER else None
        if leader_term is not None:
            self.leader_commits.append(node.node_id)
        storage = node.disk.storage
        lo = max(node.last_commit + 1, storage.first_index())
        hi = min(commit, storage.last_index())
        entries = storage.entries(lo, hi + 1) if lo <= hi else []
        self.inv.on_commit(node.node_id, leader_term, list(entries))
        node.last_commit = commit

    def apply(self, node: SimNode, entry: Entry) -> None:
        if entry.index <= node.applied:
            # Re-delivery of something already applied (e.g. covered by a snapshot): the
            # core must not do this.
            raise self.inv.fail(
                "apply order",
                f"node {node.node_id} was given index {entry.index} to apply, "
                f"but it already applied up to {node.applied}",
            )
        if entry.index != node.applied + 1:
            raise self.inv.fail(
                "apply order",
                f"node {node.node_id} applied up to {node.applied}, then was given "
                f"index {entry.index} (a gap)",
            )
        node.digest = chain(node.digest, entry)
        node.applied = entry.index
        self.inv.on_apply(node.node_id, entry, node.digest)
        proposed = node.proposals.pop(entry.index, None)
        if proposed is not None and proposed == entry.data:
            self.acked[proposed] = entry.index
        if entry.type == EntryType.CONF_CHANGE:
            cc = ConfChange.decode(entry.data)
            conf = apply_conf_change(node.conf_history[-1][1], cc)
            node.conf_history.append((entry.index, conf))
            self.on_conf_change_applied(node, cc)

    def on_conf_change_applied(self, node: SimNode, cc: ConfChange) -> None:
        assert node.raw is not None
        if node.raw.status().role != Role.LEADER:
            return
        self.membership_log.append(f"step {self.now}: leader {node.node_id} applied {cc}")
        if cc.type == ConfChangeType.REMOVE_NODE:
            gone = self.nodes.get(cc.node_id)
            if gone is not None and not gone.removed:
                # The operator shuts a removed node down once the removal is applied.
                gone.removed = True
                if gone.raw is not None:
                    gone.disk.crash()
                gone.raw = None
                self.net.drop_to(cc.node_id)
                self._log("sim_removed", node_id=cc.node_id)

    def maybe_compact(self, node: SimNode, raw: RawNode) -> None:
        threshold = self.options.snapshot_after_entries
        if threshold <= 0:
            return
        storage = node.disk.storage
        index = node.disk.compactable_index(node.applied)
        if index - storage.first_index() < threshold:
            return
        # Compact to a bit below the applied index so lagging peers still catch up by
        # appends sometimes, and by snapshots other times.
        index -= threshold // 3
        if index < storage.first_index():
            return
        digest = self.digest_at(node, index)
        if digest is None:
            return
        conf = node.conf_history[0][1]
        for at, c in node.conf_history:
            if at <= index:
                conf = c
        node.disk.compact(index, conf, digest)
        node.conf_history = [(index, conf)] + [(i, c) for i, c in node.conf_history if i > index]

    def digest_at(self, node: SimNode, index: int) -> Digest | None:
        """The node's own chain digest at ``index`` (equal to the global one: checked)."""
        if index == node.applied:
            return node.digest
        return self.inv.applied_chain.get(index)

    # -- liveness helpers -----------------------------------------------------------------

    def heal_all(self) -> None:
        self.healed = True  # fault hooks inside the step (crash_after_vote) stop too
        self.net.heal()
        self.net.faults.drop_rate = 0.0
        self.net.faults.dup_rate = 0.0
        self.net.faults.reorder = False
        self.net.faults.max_delay_steps = 3
        for node in list(self.nodes.values()):
            if node.raw is None and not node.removed:
                self.restart(node.node_id)

    def _log(self, event: str, **fields: Any) -> None:
        if self.logger is not None:
            self.logger(event, step=self.now, **fields)


def apply_conf_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The one-at-a-time membership rule, computed by the simulator on its own."""
    voters, learners = set(conf.voters), set(conf.learners)
    if cc.type == ConfChangeType.ADD_LEARNER:
        if cc.node_id not in voters:
            learners.add(cc.node_id)
    elif cc.type == ConfChangeType.ADD_VOTER:
        learners.discard(cc.node_id)
        voters.add(cc.node_id)
    elif conf.voters != frozenset({cc.node_id}):  # the core refuses to remove the last voter
        voters.discard(cc.node_id)
        learners.discard(cc.node_id)
    return ConfState(voters=frozenset(voters), learners=frozenset(learners))


__all__ = ["SimCluster", "SimNode", "SimOptions", "Violation"]
