"""Raft: the protocol state machine of one group member (Raft thesis, Ongaro 2014).

Contract: pure and deterministic. Input is ``step(msg)``, ``tick()`` and the local requests
(propose, campaign, transfer, read index, runtime reports); output is state the ``RawNode``
packs into a ``Ready``. No clocks, sockets, threads, files or global randomness: time is
``tick()``, randomness the injected ``random.Random``, logging the injected callable
``logger(event, **fields)``.

Strategy (etcd-raft's shape):

* ``step()`` does the one term check of §3.3 at the top (newer term: become follower; older
  term: ignore, or answer so a stale leader/candidate learns the term), then dispatches to
  ``step_leader`` / ``step_candidate`` / ``step_follower``.
* Each protocol rule lives in its own overridable method (``maybe_commit``,
  ``can_grant_vote``, ``send``, ``become_*``): tests inject known bugs by overriding them.
* Persistence (§3.8, §10.2.1): ``send`` is the single exit. A message generated while this
  node has unpersisted term/vote/entries/snapshot is held back, tagged with the number of the
  Ready that carries (or will carry) that state, and released by ``on_persisted(number)``.
  Only a leader's APP/HEARTBEAT/SNAPSHOT/TIMEOUT_NOW leave at once; the leader counts itself
  toward commit only once its own entries are persisted.
* PreVote (§9.6) and CheckQuorum (§6.2): a node rejoining from a partition cannot bump the
  term of a healthy group; a leader without a quorum's contact steps down.
* Membership is applied when a CONF_CHANGE entry commits (see raft/confchange.py).
* ReadIndex (§6.4), leadership transfer (§3.10), leader priority (replog's own: a leader
  hands over to a strictly higher-priority, caught-up, recently active voter).
* The leader-only rules (``step_leader``, proposals, replication, commit, the leader side of
  ReadIndex and transfer, the CheckQuorum tick) live in raft/leader.py as ``LeaderMixin``;
  they are still methods of ``Raft`` and are overridden the same way.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from enum import IntEnum

from raft.confchange import apply_conf_change
from raft.config import RaftConfig
from raft.errors import InvariantViolation
from raft.leader import NEED_SNAPSHOT, LeaderMixin
from raft.log import RaftLog, restart_index
from raft.quorum import VoteResult
from raft.read_only import ReadOnly
from raft.storage_api import LogStorage
from raft.tracker import ProgressTracker
from raft.types import (
    NONE,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Role,
    Snapshot,
)

Logger = Callable[..., None]

CAMPAIGN_TRANSFER = b"transfer"
"""Context of VOTE requests triggered by TIMEOUT_NOW: they bypass the leader lease."""

_MT = MessageType
_LEADER_IMMEDIATE = frozenset({_MT.APP, _MT.HEARTBEAT, _MT.SNAPSHOT, _MT.TIMEOUT_NOW})


class CampaignType(IntEnum):
    PRE_ELECTION = 0
    ELECTION = 1
    TRANSFER = 2


def _noop_logger(event: str, **fields: object) -> None:
    return None


class Raft(LeaderMixin):
    def __init__(
        self,
        config: RaftConfig,
        storage: LogStorage,
        rng: random.Random,
        logger: Logger | None = None,
        applied: int | None = None,
        applied_conf_state: ConfState | None = None,
    ) -> None:
        if applied_conf_state is not None and applied is None:
            raise ValueError("applied_conf_state is the membership as of `applied`: pass both")
        self.id = config.node_id
        self.config = config
        self.rng = rng
        self.logger: Logger = logger or _noop_logger
        self.election_ticks = config.election_ticks
        self.heartbeat_ticks = config.heartbeat_ticks
        self.max_size_per_msg = config.max_size_per_msg
        self.log = RaftLog(storage, applied)
        self.tracker = ProgressTracker(config.max_inflight_msgs, config.max_inflight_bytes)
        self.term = 0
        self.vote = NONE
        self.leader_id = NONE
        self.role = Role.FOLLOWER
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_ticks
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.uncommitted_bytes = 0
        self.read_only = ReadOnly()
        self.read_states: list[ReadState] = []
        self.pending_read_index: list[Message] = []
        self.msgs: list[Message] = []
        self.held: list[tuple[int, Message]] = []
        self.priorities: dict[int, int] = {}
        # Ready bookkeeping, shared with RawNode (see the persistence rule above).
        self.next_ready_number = 1
        self.persisted_number = 0
        self.durable_wait_number = 0
        # (ready number, last entry index, its term, snapshot index or -1) per durable Ready
        self.persist_records: list[tuple[int, int, int, int]] = []

        hs, cs = storage.initial_state()
        self._restore_membership(storage, hs, cs, applied_conf_state)
        self.handed_hard_state = hs
        self.term = hs.term
        self.vote = hs.vote
        self.become_follower(self.term, NONE)

    def _restore_membership(
        self, storage: LogStorage, hs: HardState, cs: ConfState, applied_cs: ConfState | None
    ) -> None:
        last = storage.last_index()
        # RaftLog starts applied at the snapshot index (or first_index - 1 if that is higher),
        # or at the caller's ``applied`` (a state machine checkpoint): entries a snapshot or
        # checkpoint covers are never handed out again, even when the storage still keeps some
        # of them (compaction keeps whole segments). Membership is the snapshot's ConfState plus
        # the changes after the restart point ``base`` -- or, when the caller knows the
        # membership as of ``applied`` (``applied_cs``, the checkpoint's), that plus the changes
        # after ``applied``, so the entries up to it are not even read. An applied entry was
        # committed, so the commit index starts at least at ``applied`` (the stored commit is
        # flushed lazily and may trail it).
        base = restart_index(storage)
        if applied_cs is not None:
            cs, base = applied_cs, self.log.applied
        commit = max(hs.commit, self.log.committed)
        if commit > last:
            raise InvariantViolation(
                "restored commit index",
                f"<= last stored index {last}",
                hs.commit,
                "hard state persisted ahead of the entries it commits (storage lost entries)",
            )
        self.log.committed = commit
        if not cs.voters:
            # Uninitialized: CONF_CHANGE entries cannot be replayed without knowing the
            # membership they modify. Learn it from the leader's snapshot (NEED_SNAPSHOT).
            self.tracker.apply_conf(ConfState(), last + 1)
            return
        self.adopt_membership(cs, base)

    def adopt_membership(self, cs: ConfState, base_index: int) -> bool:
        """Membership = ``cs`` (as of ``base_index``) plus the CONF_CHANGE entries of our own
        log after it: committed ones applied, later ones pending until they commit."""
        log = self.log
        last = log.last_index()
        if base_index + 1 < log.first_index():
            return False  # our log no longer has the entries after base_index
        pending: list[int] = []
        for e in log.slice(base_index + 1, last + 1) if last > base_index else []:
            if e.type is not EntryType.CONF_CHANGE:
                continue
            if e.index <= log.committed:
                cs = self._applied_conf(cs, ConfChange.decode(e.data), e.index)
            else:
                pending.append(e.index)
        log.conf_indexes = pending
        self.tracker.apply_conf(cs, last + 1)
        return True

    # -- logging and small queries -------------------------------------------------------

    def report(self, event: str, **fields: object) -> None:
        self.logger(event, node_id=self.id, term=self.term, **fields)

    def promotable(self) -> bool:
        return self.id in self.tracker.voters

    def my_priority(self) -> int:
        return self.priorities.get(self.id, self.config.priority)

    # -- the single exit for messages (persistence rule) ---------------------------------

    def hold_tag(self) -> int:
        """0 if nothing is unpersisted, else the Ready number a message must wait for."""
        u = self.log.unstable
        hs = self.handed_hard_state
        if (
            u.in_progress < u.offset + len(u.entries)
            or u.has_next_snapshot()
            or self.term != hs.term
            or self.vote != hs.vote
        ):
            return self.next_ready_number
        if self.durable_wait_number > self.persisted_number:
            return self.durable_wait_number
        return 0

    def send(self, msg: Message) -> None:
        if self.role is Role.LEADER and msg.type in _LEADER_IMMEDIATE:
            self.msgs.append(msg)
            return
        tag = self.hold_tag()
        if tag:
            self.held.append((tag, msg))
        else:
            self.msgs.append(msg)

    def on_persisted(self, number: int) -> None:
        if number <= self.persisted_number:
            return
        if number >= self.next_ready_number:
            raise InvariantViolation(
                "persisted ready number",
                f"< {self.next_ready_number} (the next Ready not yet handed out)",
                number,
                "on_persisted called for a Ready that was never returned by ready()",
            )
        unstable = self.log.unstable
        records = self.persist_records
        k = 0
        while k < len(records) and records[k][0] <= number:
            _, index, term, snap_index = records[k]
            if snap_index >= 0:
                unstable.stable_snap_to(snap_index)
            if index:
                unstable.stable_to(index, term)
            k += 1
        del records[:k]
        self.persisted_number = number
        if self.held:
            keep: list[tuple[int, Message]] = []
            for tag, m in self.held:
                if tag <= number:
                    self.msgs.append(m)
                else:
                    keep.append((tag, m))
            self.held = keep
        if self.role is Role.LEADER:
            pr = self.tracker.progress.get(self.id)
            if (
                pr is not None
                and pr.maybe_update(self.log.persisted_last_index())
                and self.maybe_commit()
            ):
                self.on_committed()

    # -- roles -----------------------------------------------------------------------------

    def reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.leader_id = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_ticks + self.rng.randrange(
            self.election_ticks
        )
        self.lead_transferee = NONE
        self.tracker.reset_votes()
        last = self.log.last_index()
        for node_id, pr in self.tracker.progress.items():
            pr.become_probe()
            pr.match = 0
            pr.next = last + 1
            pr.recent_active = False
            if node_id == self.id:
                pr.match = self.log.persisted_last_index()
                pr.recent_active = True
        self.pending_conf_index = 0
        self.uncommitted_bytes = 0
        self.read_only.reset()
        self.pending_read_index = []

    def become_follower(self, term: int, leader_id: int) -> None:
        self.reset(term)
        self.leader_id = leader_id
        self.role = Role.FOLLOWER
        self.report("became_follower", leader_id=leader_id)

    def become_pre_candidate(self) -> None:
        if self.role is Role.LEADER:
            raise InvariantViolation(
                "role transition",
                "follower/candidate",
                "leader",
                "a leader tried to become pre-candidate",
            )
        self.tracker.reset_votes()
        self.leader_id = NONE
        self.role = Role.PRE_CANDIDATE
        self.report("became_pre_candidate")

    def become_candidate(self) -> None:
        if self.role is Role.LEADER:
            raise InvariantViolation(
                "role transition",
                "follower/candidate",
                "leader",
                "a leader tried to become candidate",
            )
        self.reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self.report("became_candidate")

    def become_leader(self) -> None:
        if self.role is Role.FOLLOWER:
            raise InvariantViolation(
                "role transition",
                "candidate",
                "follower",
                "a follower tried to become leader without an election",
            )
        self.reset(self.term)
        self.leader_id = self.id
        self.role = Role.LEADER
        pr = self.tracker.progress.get(self.id)
        if pr is not None:
            pr.become_replicate()
            pr.match = self.log.persisted_last_index()
            pr.next = self.log.last_index() + 1
        # No conf change until our own first entry (the no-op) has committed (confchange.py).
        self.pending_conf_index = self.log.last_index() + 1
        self.append_entries([Entry(self.log.last_index() + 1, self.term)])
        self.report("became_leader")

    # -- elections ---------------------------------------------------------------------------

    def campaign(self, kind: CampaignType) -> None:
        if not self.promotable():
            self.report("campaign_ignored", reason="not a voter")
            return
        if kind is CampaignType.PRE_ELECTION:
            self.become_pre_candidate()
            vote_type, term = _MT.PRE_VOTE, self.term + 1
        else:
            self.become_candidate()
            vote_type, term = _MT.VOTE, self.term
        if self.poll(self.id, vote_type, True) is VoteResult.WON:
            if kind is CampaignType.PRE_ELECTION:
                self.campaign(CampaignType.ELECTION)
            else:
                self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if kind is CampaignType.TRANSFER else b""
        last = self.log.last_index()
        last_term = self.log.last_term()
        for node_id in self.tracker.voter_list:
            if node_id != self.id:
                self.send(
                    Message(
                        vote_type,
                        node_id,
                        self.id,
                        term,
                        log_term=last_term,
                        index=last,
                        context=ctx,
                    )
                )

    def poll(self, node_id: int, vote_type: MessageType, granted: bool) -> VoteResult:
        self.report("vote_received", voter=node_id, granted=granted, vote_type=vote_type.name)
        self.tracker.record_vote(node_id, granted)
        return self.tracker.tally_votes()[2]

    def hup(self, transfer: bool = False) -> None:
        if self.role is Role.LEADER:
            return
        if not self.promotable():
            self.report("campaign_ignored", reason="not a voter")
            return
        if transfer:
            self.campaign(CampaignType.TRANSFER)
        elif self.config.pre_vote:
            self.campaign(CampaignType.PRE_ELECTION)
        else:
            self.campaign(CampaignType.ELECTION)

    def in_leader_lease(self, msg: Message) -> bool:
        """CheckQuorum's other half (§4.2.3): while we hear from a leader, ignore votes."""
        return (
            self.config.check_quorum
            and self.leader_id != NONE
            and self.election_elapsed < self.election_ticks
            and msg.context != CAMPAIGN_TRANSFER
        )

    def can_grant_vote(self, msg: Message) -> bool:
        """Vote / pre-vote rule (§3.6.1, §9.6): not voted for another this term, candidate's
        log at least as up to date, and no live leader lease."""
        if self.in_leader_lease(msg):
            return False
        can_vote = (
            self.vote == msg.from_
            or (self.vote == NONE and self.leader_id == NONE)
            or (msg.type is _MT.PRE_VOTE and msg.term > self.term)
        )
        return can_vote and self.log.is_up_to_date(msg.index, msg.log_term)

    def handle_vote_request(self, m: Message) -> None:
        resp_type = _MT.VOTE_RESP if m.type is _MT.VOTE else _MT.PRE_VOTE_RESP
        if self.can_grant_vote(m):
            if m.type is _MT.VOTE:
                # Record the vote *before* the grant goes through send(): hold_tag() then sees
                # an unpersisted vote and holds the grant until the Ready carrying the vote is
                # persisted, also when the vote is made at our current term (thesis §3.8).
                self.election_elapsed = 0
                self.vote = m.from_
            self.send(Message(resp_type, m.from_, self.id, m.term))
            self.report("vote_granted", candidate=m.from_, vote_type=m.type.name)
        else:
            self.send(Message(resp_type, m.from_, self.id, self.term, reject=True))
            self.report(
                "vote_rejected",
                candidate=m.from_,
                vote_type=m.type.name,
                vote=self.vote,
                leader_id=self.leader_id,
            )

    # -- ticks -------------------------------------------------------------------------------

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self.tick_heartbeat()
        else:
            self.tick_election()

    def tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.hup()

    # -- step ----------------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        if m.term == 0:
            self.step_local(m)
            return
        if m.term > self.term:
            if (m.type is _MT.VOTE or m.type is _MT.PRE_VOTE) and self.in_leader_lease(m):
                self.report(
                    "vote_ignored", candidate=m.from_, reason="leader lease", msg_term=m.term
                )
                return
            if m.type is _MT.PRE_VOTE or (m.type is _MT.PRE_VOTE_RESP and not m.reject):
                pass  # PreVote never changes our term (§9.6)
            elif m.type in (_MT.APP, _MT.HEARTBEAT, _MT.SNAPSHOT):
                self.become_follower(m.term, m.from_)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if m.type in (_MT.APP, _MT.HEARTBEAT) and (
                self.config.check_quorum or self.config.pre_vote
            ):
                # A stale leader learns our term and steps down (it may be cut off from
                # others who would otherwise tell it, §9.6 with PreVote/CheckQuorum).
                self.send(Message(_MT.APP_RESP, m.from_, self.id, self.term))
            elif m.type is _MT.PRE_VOTE:
                self.send(Message(_MT.PRE_VOTE_RESP, m.from_, self.id, self.term, reject=True))
            return
        if m.type is _MT.VOTE or m.type is _MT.PRE_VOTE:
            self.handle_vote_request(m)
        elif self.role is Role.LEADER:
            self.step_leader(m)
        elif self.role is Role.FOLLOWER:
            self.step_follower(m)
        else:
            self.step_candidate(m)

    def step_local(self, m: Message) -> None:
        if m.type is _MT.SNAPSHOT_STATUS:
            self.report_snapshot(m.from_, not m.reject)
        elif m.type is _MT.UNREACHABLE:
            self.report_unreachable(m.from_)
        elif m.type is _MT.READ_INDEX:
            self.read_index(m.context)
        elif m.type is _MT.TRANSFER_LEADER:
            self.transfer_leadership(m.from_)
        else:
            self.report("message_dropped", reason="term 0", msg_type=m.type.name)

    def step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = _MT.PRE_VOTE_RESP if self.role is Role.PRE_CANDIDATE else _MT.VOTE_RESP
        if t is _MT.APP or t is _MT.HEARTBEAT or t is _MT.SNAPSHOT:
            self.become_follower(m.term, m.from_)
            self.step_follower(m)
        elif t is my_resp:
            result = self.poll(m.from_, t, not m.reject)
            if result is VoteResult.WON:
                if self.role is Role.PRE_CANDIDATE:
                    self.campaign(CampaignType.ELECTION)
                else:
                    self.become_leader()
            elif result is VoteResult.LOST:
                self.become_follower(self.term, NONE)

    def step_follower(self, m: Message) -> None:
        t = m.type
        if t is _MT.APP:
            self.election_elapsed = 0
            self.leader_id = m.from_
            self.handle_append(m)
        elif t is _MT.HEARTBEAT:
            self.election_elapsed = 0
            self.leader_id = m.from_
            self.handle_heartbeat(m)
        elif t is _MT.SNAPSHOT:
            self.election_elapsed = 0
            self.leader_id = m.from_
            self.handle_snapshot(m)
        elif t is _MT.TIMEOUT_NOW:
            self.report("timeout_now_received", from_node=m.from_)
            self.hup(transfer=True)
        elif t is _MT.TRANSFER_LEADER:
            if self.leader_id != NONE:
                self.send(Message(_MT.TRANSFER_LEADER, self.leader_id, m.from_, self.term))
        elif t is _MT.READ_INDEX:
            if self.leader_id == NONE:
                self.report("read_index_dropped", reason="no leader")
            else:
                self.send(
                    Message(_MT.READ_INDEX, self.leader_id, m.from_, self.term, context=m.context)
                )
        elif t is _MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    # -- follower handlers -------------------------------------------------------------------

    def uninitialized(self) -> bool:
        """No known voters: this node does not know its group's membership yet."""
        return not self.tracker.voters

    def handle_append(self, m: Message) -> None:
        log = self.log
        if self.uninitialized():
            self.send(
                Message(
                    _MT.APP_RESP,
                    m.from_,
                    self.id,
                    self.term,
                    index=m.index,
                    reject=True,
                    context=NEED_SNAPSHOT,
                )
            )
            return
        if m.index < log.committed:
            self.send(Message(_MT.APP_RESP, m.from_, self.id, self.term, index=log.committed))
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self.after_commit_changed()
            self.send(Message(_MT.APP_RESP, m.from_, self.id, self.term, index=last_new))
            return
        hint_index = min(m.index, log.last_index())
        hint_index, hint_term = log.find_conflict_by_term(hint_index, m.log_term)
        self.report("append_rejected", index=m.index, log_term=m.log_term, reject_hint=hint_index)
        self.send(
            Message(
                _MT.APP_RESP,
                m.from_,
                self.id,
                self.term,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self.after_commit_changed()
        self.send(Message(_MT.HEARTBEAT_RESP, m.from_, self.id, self.term, context=m.context))
        if self.uninitialized():
            # The leader may believe we are caught up (we restarted without membership).
            self.send(
                Message(
                    _MT.APP_RESP,
                    m.from_,
                    self.id,
                    self.term,
                    reject=True,
                    context=NEED_SNAPSHOT,
                )
            )

    def handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            return
        if self.restore(snap):
            self.report(
                "snapshot_restored", index=snap.metadata.index, snapshot_term=snap.metadata.term
            )
        # Acknowledge only what is known to match the leader: the commit index (after a full
        # restore that is the snapshot index).
        self.send(Message(_MT.APP_RESP, m.from_, self.id, self.term, index=self.log.committed))

    def restore(self, snap: Snapshot) -> bool:
        meta = snap.metadata
        log = self.log
        if self.uninitialized():
            if not meta.conf_state.voters:
                return False
            if log.last_index() == 0 or (
                meta.index > log.committed and not log.match_term(meta.index, meta.term)
            ):
                self._full_restore(snap)
                return True
            # Keep our log (after a restart it may hold entries): learn the membership as of
            # the snapshot and replay our own committed changes after it.
            if not self.adopt_membership(meta.conf_state, meta.index):
                return False
            if meta.index > log.committed:
                log.commit_to(meta.index)
                self.after_commit_changed()
            return True
        if meta.index <= log.committed:
            return False
        if log.match_term(meta.index, meta.term):
            # We already have the snapshot's last entry: just fast-forward the commit.
            log.commit_to(meta.index)
            self.after_commit_changed()
            return False
        self._full_restore(snap)
        return True

    def _full_restore(self, snap: Snapshot) -> None:
        self.log.restore(snap)
        self.tracker.apply_conf(snap.metadata.conf_state, self.log.last_index() + 1)

    # -- commit application (any role) --------------------------------------------------------

    def after_commit_changed(self) -> None:
        ci = self.log.conf_indexes
        committed = self.log.committed
        while ci and ci[0] <= committed:
            index = ci.pop(0)
            entry = self.log.slice(index, index + 1)[0]
            self.apply_conf_change_entry(entry)

    # -- membership ----------------------------------------------------------------------------

    def _applied_conf(self, cs: ConfState, cc: ConfChange, index: int) -> ConfState:
        try:
            return apply_conf_change(cs, cc)
        except ValueError as e:
            self.report("conf_change_ignored", index=index, reason=str(e))
            return cs

    def apply_conf_change_entry(self, entry: Entry) -> None:
        cc = ConfChange.decode(entry.data)
        cs = self._applied_conf(self.tracker.conf_state(), cc, entry.index)
        self.tracker.apply_conf(cs, self.log.last_index() + 1)
        self.report(
            "conf_change_applied",
            index=entry.index,
            change=cc.type.name,
            changed_node=cc.node_id,
            voters=sorted(cs.voters),
            learners=sorted(cs.learners),
        )
        if self.role is not Role.LEADER:
            return
        if self.id not in cs.voters:
            # Tell the others the change committed, then step down (thesis §4.2.2).
            self.bcast_append()
            self.report("leader_stepped_down", reason="removed from the configuration")
            self.become_follower(self.term, NONE)
            return
        if self.lead_transferee != NONE and self.lead_transferee not in cs.voters:
            self.report("transfer_aborted", transferee=self.lead_transferee)
            self.lead_transferee = NONE
        if self.maybe_commit():
            self.on_committed()

    # -- read index ------------------------------------------------------------------------------

    def read_index(self, context: bytes) -> None:
        m = Message(_MT.READ_INDEX, self.id, self.id, self.term, context=context)
        if self.role is Role.LEADER:
            self.leader_read_index(m)
        elif self.leader_id == NONE:
            self.report("read_index_dropped", reason="no leader")
        else:
            self.send(Message(_MT.READ_INDEX, self.leader_id, self.id, self.term, context=context))

    # -- runtime configuration -----------------------------------------------------------------

    def set_priorities(self, priorities: Mapping[int, int]) -> None:
        self.priorities = dict(priorities)
