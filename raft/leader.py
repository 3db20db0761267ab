"""The leader's half of the Raft state machine, mixed into ``raft.core.Raft``.

Contract: owns the rules only a leader runs -- ``step_leader`` dispatch, proposals, log
replication (``bcast_append`` / ``maybe_send_append`` / ``maybe_send_snapshot``), heartbeats
and their responses, commit advancement (``maybe_commit`` / ``on_committed``, §3.6.2), the
leader side of ReadIndex (§6.4), leadership transfer (§3.10) and leader priority, the
CheckQuorum tick (§6.2), and the runtime reports about followers (unreachable, snapshot
status). Pure and deterministic like the core: no I/O, every message leaves through
``send``. The state it reads and writes is the core's (declared below for the type checker
only); construction, term handling, ``step()`` dispatch, follower/candidate logic and the
persistence hold-back stay in raft/core.py. ``LeaderMixin`` is not usable on its own: its
methods resolve on ``Raft`` instances, so tests override them on ``Raft`` as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from raft.confchange import validate_conf_change
from raft.errors import (
    Compacted,
    InvariantViolation,
    NotLeader,
    ProposalDropped,
    SnapshotTemporarilyUnavailable,
)
from raft.progress import ProgressState
from raft.quorum import has_quorum
from raft.types import (
    NONE,
    ConfChange,
    Entry,
    EntryType,
    Message,
    MessageType,
    ReadState,
    Role,
)

if TYPE_CHECKING:
    from raft.config import RaftConfig
    from raft.log import RaftLog
    from raft.read_only import ReadOnly
    from raft.tracker import ProgressTracker

NEED_SNAPSHOT = b"need_snapshot"
"""Context of an APP rejection from an uninitialized node (no membership, empty log).

Such a node (added to a running group with empty storage) cannot replay CONF_CHANGE entries:
it does not know the membership they modify. It asks for the leader's snapshot instead, which
carries a ConfState; for a never-compacted log that is the bootstrap snapshot at index 0."""

_MT = MessageType
_NORMAL = EntryType.NORMAL
_REPLICATE = ProgressState.REPLICATE
_PROBE = ProgressState.PROBE
_SNAPSHOT = ProgressState.SNAPSHOT


class LeaderMixin:
    # State owned and initialised by raft.core.Raft (annotations only: no class attributes).
    id: int
    config: RaftConfig
    term: int
    leader_id: int
    role: Role
    log: RaftLog
    tracker: ProgressTracker
    election_ticks: int
    heartbeat_ticks: int
    election_elapsed: int
    heartbeat_elapsed: int
    max_size_per_msg: int
    lead_transferee: int
    pending_conf_index: int
    uncommitted_bytes: int
    read_only: ReadOnly
    read_states: list[ReadState]
    pending_read_index: list[Message]
    priorities: dict[int, int]

    if TYPE_CHECKING:
        # Core methods the leader calls; defined (and overridable) on raft.core.Raft.
        def report(self, event: str, **fields: object) -> None: ...
        def send(self, msg: Message) -> None: ...
        def my_priority(self) -> int: ...
        def become_follower(self, term: int, leader_id: int) -> None: ...
        def after_commit_changed(self) -> None: ...

    # -- ticks: heartbeats and CheckQuorum -------------------------------------------------

    def tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum:
                if not self.tracker.quorum_active():
                    self.report("leader_stepped_down", reason="no quorum contact")
                    self.become_follower(self.term, NONE)
                    return
                for node_id, pr in self.tracker.progress.items():
                    pr.recent_active = node_id == self.id
            if self.lead_transferee != NONE:
                self.report("transfer_aborted", transferee=self.lead_transferee)
                self.lead_transferee = NONE
        if self.heartbeat_elapsed >= self.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self.bcast_heartbeat()
            self.maybe_transfer_to_priority()

    # -- step ------------------------------------------------------------------------------

    def step_leader(self, m: Message) -> None:
        t = m.type
        if t is _MT.APP_RESP:
            self.handle_append_response(m)
        elif t is _MT.HEARTBEAT_RESP:
            self.handle_heartbeat_response(m)
        elif t is _MT.READ_INDEX:
            self.leader_read_index(m)
        elif t is _MT.TRANSFER_LEADER:
            self.transfer_leadership(m.from_)
        elif t is _MT.SNAPSHOT_STATUS:
            self.report_snapshot(m.from_, not m.reject)
        elif t is _MT.UNREACHABLE:
            self.report_unreachable(m.from_)
        elif t in (_MT.APP, _MT.HEARTBEAT, _MT.SNAPSHOT):
            raise InvariantViolation(
                "election safety",
                f"one leader in term {self.term}",
                f"node {m.from_} also leads term {m.term}",
                "two nodes won the same term (vote rule or vote persistence bug)",
            )

    # -- proposals -------------------------------------------------------------------------

    def append_entries(self, ents: list[Entry]) -> None:
        self.log.append(ents)
        self.bcast_append()

    def propose_many(self, datas: Sequence[bytes]) -> int:
        self.check_can_propose()
        size = 0
        for d in datas:
            size += len(d)
        if self.uncommitted_bytes and self.uncommitted_bytes + size > (
            self.config.max_uncommitted_bytes
        ):
            raise ProposalDropped(
                f"uncommitted tail is full ({self.uncommitted_bytes} bytes pending, limit "
                f"{self.config.max_uncommitted_bytes}); retry after commits catch up"
            )
        self.uncommitted_bytes += size
        first = self.log.last_index() + 1
        term = self.term
        self.append_entries([Entry(first + i, term, _NORMAL, d) for i, d in enumerate(datas)])
        return first

    def check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id, self.term)
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership transfer to node {self.lead_transferee} in progress")
        if self.id not in self.tracker.progress:
            raise ProposalDropped("this leader has been removed from the group")

    def propose_conf_change(self, cc: ConfChange) -> int:
        self.check_can_propose()
        if self.pending_conf_index > self.log.committed:
            raise ProposalDropped(
                f"a configuration change (index {self.pending_conf_index}) is not yet "
                f"committed (commit {self.log.committed}); one change at a time"
            )
        reason = validate_conf_change(self.tracker.conf_state(), cc)
        if reason is not None:
            raise ProposalDropped(reason)
        index = self.log.last_index() + 1
        self.pending_conf_index = index
        self.append_entries([Entry(index, self.term, EntryType.CONF_CHANGE, cc.encode())])
        return index

    # -- replication -----------------------------------------------------------------------

    def bcast_append(self) -> None:
        for node_id in self.tracker.progress:
            if node_id != self.id:
                self.maybe_send_append(node_id, True)

    def maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self.tracker.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        prev_index = pr.next - 1
        try:
            prev_term = log.term(prev_index)
            ents = log.slice(pr.next, log.last_index() + 1, self.max_size_per_msg)
        except Compacted:
            return self.maybe_send_snapshot(to)
        if not ents and not send_if_empty:
            return False
        nbytes = 0
        if ents:
            for e in ents:
                nbytes += len(e.data)
            nbytes += 24 * len(ents)
        self.send(
            Message(
                _MT.APP,
                to,
                self.id,
                self.term,
                log_term=prev_term,
                index=prev_index,
                entries=tuple(ents),
                commit=log.committed,
            )
        )
        pr.sent_entries(len(ents), nbytes)
        return True

    def maybe_send_snapshot(self, to: int, bootstrap_ok: bool = False) -> bool:
        pr = self.tracker.progress[to]
        if not pr.recent_active:
            return False
        try:
            snap = self.log.storage.snapshot()
        except SnapshotTemporarilyUnavailable:
            self.report("snapshot_unavailable", to=to)
            return False
        if snap.is_empty() and not bootstrap_ok:
            raise InvariantViolation(
                "snapshot to send",
                "a non-empty snapshot",
                "an empty one",
                "the log was compacted without a snapshot",
            )
        pr.become_snapshot(snap.metadata.index)
        self.send(Message(_MT.SNAPSHOT, to, self.id, self.term, snapshot=snap))
        self.report("snapshot_sent", to=to, index=snap.metadata.index)
        return True

    def bcast_heartbeat(self, context: bytes = b"") -> None:
        ctx = context or self.read_only.last_pending_context()
        committed = self.log.committed
        for node_id, pr in self.tracker.progress.items():
            if node_id != self.id:
                self.send(
                    Message(
                        _MT.HEARTBEAT,
                        node_id,
                        self.id,
                        self.term,
                        commit=min(pr.match, committed),
                        context=ctx,
                    )
                )

    # -- responses from followers ----------------------------------------------------------

    def handle_append_response(self, m: Message) -> None:
        pr = self.tracker.progress.get(m.from_)
        if pr is None:
            return
        pr.recent_active = True
        if m.reject and m.context == NEED_SNAPSHOT:
            if pr.state is not _SNAPSHOT:
                self.maybe_send_snapshot(m.from_, bootstrap_ok=True)
            return
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state is _REPLICATE:
                    pr.become_probe()
                self.maybe_send_append(m.from_, True)
            return
        old_paused = pr.is_paused()
        updated = pr.maybe_update(m.index)
        if pr.state is _SNAPSHOT and m.index >= pr.pending_snapshot and pr.match >= m.index:
            pr.become_probe()  # the snapshot (possibly the index-0 bootstrap one) is installed
        elif not updated:
            return
        elif pr.state is _PROBE:
            pr.become_replicate()
        elif pr.state is _REPLICATE:
            pr.inflights.free_le(m.index)
        if self.maybe_commit():
            self.on_committed()
            # Committing may have applied a conf change removing the peer or this leader.
            if self.role is not Role.LEADER or m.from_ not in self.tracker.progress:
                return
        elif old_paused:
            self.maybe_send_append(m.from_, True)
        while self.maybe_send_append(m.from_, False):
            pass
        if m.from_ == self.lead_transferee and pr.match == self.log.last_index():
            self.send_timeout_now(m.from_)

    def handle_heartbeat_response(self, m: Message) -> None:
        pr = self.tracker.progress.get(m.from_)
        if pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state is _REPLICATE and pr.inflights.full():
            pr.inflights.free_first_one()
        if pr.match < self.log.last_index():
            self.maybe_send_append(m.from_, True)
        if not m.context:
            return
        acks = self.read_only.recv_ack(m.from_, m.context)
        if acks is None or not has_quorum(self.tracker.voters, acks):
            return
        for status in self.read_only.advance(m.context):
            self.respond_read_index(status.index, status.context, status.request_from)

    # -- commit ----------------------------------------------------------------------------

    def maybe_commit(self) -> bool:
        """Advance commit to the quorum's match, only for a current-term entry (§3.6.2)."""
        return self.log.maybe_commit(self.tracker.committed(), self.term)

    def on_committed(self) -> None:
        """The leader's commit index moved: apply conf changes, release reads, tell peers."""
        first_in_term = bool(self.pending_read_index) and self.committed_entry_in_current_term()
        self.after_commit_changed()
        if self.role is not Role.LEADER:
            return
        if self.config.broadcast_commit:
            self.bcast_append()
        else:  # only where entries wait; the others learn it from the next append/heartbeat
            for node_id in self.tracker.progress:
                if node_id != self.id:
                    self.maybe_send_append(node_id, False)
        if first_in_term:
            pending, self.pending_read_index = self.pending_read_index, []
            for m in pending:
                self.leader_read_index(m)

    # -- leadership transfer and priority --------------------------------------------------

    def transfer_leadership(self, to: int) -> None:
        if self.role is not Role.LEADER:
            if self.leader_id == NONE:
                self.report("transfer_dropped", transferee=to, reason="no leader")
                return
            if self.leader_id == self.id or to == self.leader_id:
                return
            self.send(Message(_MT.TRANSFER_LEADER, self.leader_id, to, self.term))
            return
        if to == self.id or to not in self.tracker.voters:
            self.report("transfer_ignored", transferee=to, reason="self or not a voter")
            return
        if self.lead_transferee == to:
            return
        if self.lead_transferee != NONE:
            self.report("transfer_aborted", transferee=self.lead_transferee)
        self.election_elapsed = 0
        self.lead_transferee = to
        self.report("transfer_started", transferee=to)
        if self.tracker.progress[to].match == self.log.last_index():
            self.send_timeout_now(to)
        else:
            self.maybe_send_append(to, True)

    def send_timeout_now(self, to: int) -> None:
        self.send(Message(_MT.TIMEOUT_NOW, to, self.id, self.term))

    def maybe_transfer_to_priority(self) -> bool:
        if not self.priorities or self.lead_transferee != NONE:
            return False
        mine = self.my_priority()
        last = self.log.last_index()
        best = NONE
        best_priority = mine
        for node_id in self.tracker.voter_list:
            if node_id == self.id:
                continue
            p = self.priorities.get(node_id, 0)
            pr = self.tracker.progress[node_id]
            if p > best_priority and pr.recent_active and pr.match == last:
                best, best_priority = node_id, p
        if best == NONE:
            return False
        self.report("priority_transfer", transferee=best, priority=best_priority, own_priority=mine)
        self.transfer_leadership(best)
        return True

    # -- read index (leader side) ----------------------------------------------------------

    def committed_entry_in_current_term(self) -> bool:
        return self.log.term_or_zero(self.log.committed) == self.term

    def leader_read_index(self, m: Message) -> None:
        if self.tracker.is_singleton():
            self.respond_read_index(self.log.committed, m.context, m.from_)
            return
        if not self.committed_entry_in_current_term():
            self.pending_read_index.append(m)
            return
        if self.read_only.add_request(self.log.committed, m.context, m.from_, self.id):
            self.bcast_heartbeat(m.context)

    def respond_read_index(self, index: int, context: bytes, request_from: int) -> None:
        if request_from in (self.id, NONE):
            self.read_states.append(ReadState(index, context))
        else:
            self.send(
                Message(
                    _MT.READ_INDEX_RESP,
                    request_from,
                    self.id,
                    self.term,
                    index=index,
                    context=context,
                )
            )

    # -- runtime reports about followers ---------------------------------------------------

    def report_unreachable(self, node_id: int) -> None:
        pr = self.tracker.progress.get(node_id)
        if self.role is not Role.LEADER or pr is None:
            return
        if pr.state is _REPLICATE:
            pr.become_probe()

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        pr = self.tracker.progress.get(node_id)
        if self.role is not Role.LEADER or pr is None or pr.state is not _SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for the follower's APP_RESP (or a heartbeat) before the next probe.
        pr.probe_sent = True
        self.report("snapshot_reported", to=node_id, ok=ok)
