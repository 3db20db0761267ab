"""RawNode: the driver-facing API of one Raft group member (etcd-raft's RawNode, with
raft-rs's numbered Readies).

Contract: wraps ``raft.core.Raft`` and packs its state into numbered ``Ready`` values
(see ``raft.types.Ready`` for the loop). It owns the "what changed since the last Ready"
bookkeeping; the core owns the persistence hold-back (``Raft.send``). No I/O.

Restart: ``RawNode(config, storage, rng)`` reads term/vote/commit from
``storage.initial_state()``; membership is the storage's ConfState plus every CONF_CHANGE
entry in (snapshot index, commit]. Applied restarts at the snapshot index, so committed
entries after it are handed out again for the state machine to rebuild from -- unless the
driver passes ``applied`` (the index its state machine's checkpoint holds everything up to):
then committed entries are handed out from ``applied + 1`` only.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from raft.config import RaftConfig
from raft.core import Raft
from raft.storage_api import LogStorage
from raft.tracker import ProgressStatus
from raft.types import (
    NONE,
    ConfChange,
    ConfState,
    HardState,
    Message,
    Ready,
    Role,
    SoftState,
)


@dataclass(frozen=True, slots=True)
class Status:
    node_id: int
    term: int
    vote: int
    role: Role
    leader_id: int
    commit: int
    applied: int
    last_index: int
    first_index: int
    conf_state: ConfState
    progress: Mapping[int, ProgressStatus] = field(default_factory=dict)
    lead_transferee: int = NONE


class RawNode:
    def __init__(
        self,
        config: RaftConfig,
        storage: LogStorage,
        rng: random.Random,
        logger: Callable[..., None] | None = None,
        applied: int | None = None,
        applied_conf_state: ConfState | None = None,
    ) -> None:
        """``applied``: the state machine already has everything up to this index (a
        checkpoint), so committed entries are handed out from ``applied + 1``. None (the
        default) restarts at the snapshot index. Must satisfy snapshot index <= applied <=
        last stored index, else ``ValueError``; the commit index starts at least there.
        ``applied_conf_state``: the membership as of ``applied`` (the storage's ConfState plus
        every committed CONF_CHANGE up to it, applied as the core applies them), so restart
        reads only the entries after ``applied``; None derives it from the storage's log."""
        self._raft = Raft(config, storage, rng, logger, applied, applied_conf_state)
        self._prev_soft = SoftState(self._raft.leader_id, self._raft.role)

    @property
    def raft(self) -> Raft:
        """The core itself: for tests and scenario scripts only. The runtime uses the methods
        below and never reads or writes the core's fields."""
        return self._raft

    # -- what the runtime may know (the boundary: no ``.raft`` outside raft/ and tests) -------

    @property
    def id(self) -> int:
        return self._raft.id

    @property
    def term(self) -> int:
        return self._raft.term

    @property
    def role(self) -> Role:
        return self._raft.role

    @property
    def leader_id(self) -> int:
        return self._raft.leader_id

    @property
    def last_ready_number(self) -> int:
        """The highest Ready number handed out so far (0 before the first)."""
        return self._raft.next_ready_number - 1

    def has_voters(self) -> bool:
        return bool(self._raft.tracker.voters)

    def peer_ids(self) -> list[int]:
        """Every other member (voters and learners), sorted."""
        return sorted(p for p in self._raft.tracker.progress if p != self._raft.id)

    def quorum_silent(self, silent: set[int] | frozenset[int]) -> bool:
        """True if the voters outside ``silent`` (this node counted as heard) are fewer than a
        majority: the runtime's per-node liveness says this group cannot make progress, so a
        leader must keep ticking for CheckQuorum to decide."""
        voters = self._raft.tracker.voters
        heard = sum(1 for v in voters if v == self._raft.id or v not in silent)
        return heard < len(voters) // 2 + 1

    def is_quiescable(self) -> bool:
        """A leader with nothing in flight: committed == last == applied, every member matched
        up to the last index, no leadership transfer, no pending read-index request."""
        r = self._raft
        if r.role != Role.LEADER:
            return False
        last = r.log.last_index()
        return (
            r.log.committed == last
            and r.log.applied == last
            and not r.lead_transferee
            and not r.read_only.pending
            and not r.pending_read_index  # reads waiting for the first commit of the term
            and all(pr.match == last for pr in r.tracker.progress.values())
        )

    def is_caught_up_follower_of(self, leader_id: int) -> bool:
        r = self._raft
        return (
            r.role == Role.FOLLOWER
            and r.leader_id == leader_id
            and r.log.committed == r.log.last_index()
        )

    def on_wake(self, leader_lost: bool) -> None:
        """The group was quiesced (not ticked) and wakes up. A leader forgets activity flags
        from before the pause, so its first CheckQuorum does not judge peers on stale data; a
        follower whose leader's node went silent starts the randomized part of its election
        timeout now rather than a whole new timeout."""
        r = self._raft
        if r.role == Role.LEADER:
            r.election_elapsed = 0
            for pr in r.tracker.progress.values():
                pr.recent_active = True
        elif leader_lost:
            r.election_elapsed = max(r.election_elapsed, r.election_ticks)

    # -- inputs ----------------------------------------------------------------------------

    def tick(self) -> None:
        self._raft.tick()

    def step(self, msg: Message) -> None:
        self._raft.step(msg)

    def propose(self, data: bytes) -> int:
        return self._raft.propose_many((data,))

    def propose_many(self, datas: Sequence[bytes]) -> int:
        return self._raft.propose_many(datas)

    def propose_conf_change(self, cc: ConfChange) -> int:
        return self._raft.propose_conf_change(cc)

    def campaign(self) -> None:
        self._raft.hup()

    def transfer_leadership(self, to: int) -> None:
        self._raft.transfer_leadership(to)

    def read_index(self, context: bytes) -> None:
        self._raft.read_index(context)

    def report_unreachable(self, node_id: int) -> None:
        self._raft.report_unreachable(node_id)

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        self._raft.report_snapshot(node_id, ok)

    def set_priorities(self, priorities: Mapping[int, int]) -> None:
        self._raft.set_priorities(priorities)

    # -- outputs ---------------------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self._raft
        if r.msgs or r.read_states:
            return True
        u = r.log.unstable
        if u.in_progress < u.offset + len(u.entries) or u.has_next_snapshot():
            return True
        if r.log.has_next_committed_entries():
            return True
        hs = r.handed_hard_state
        if r.term != hs.term or r.vote != hs.vote or r.log.committed != hs.commit:
            return True
        prev = self._prev_soft
        return prev.leader_id != r.leader_id or prev.role != r.role

    def ready(self) -> Ready:
        r = self._raft
        log = r.log
        number = r.next_ready_number
        r.next_ready_number += 1

        soft: SoftState | None = None
        prev_soft = self._prev_soft
        if prev_soft.leader_id != r.leader_id or prev_soft.role != r.role:
            soft = SoftState(r.leader_id, r.role)
            self._prev_soft = soft

        hard: HardState | None = None
        prev_hs = r.handed_hard_state
        vote_changed = r.term != prev_hs.term or r.vote != prev_hs.vote
        if vote_changed or log.committed != prev_hs.commit:
            hard = HardState(r.term, r.vote, log.committed)
            r.handed_hard_state = hard

        u = log.unstable
        entries = tuple(u.next_entries())
        snapshot = u.snapshot if u.has_next_snapshot() else None
        u.accept_in_progress()
        if entries or snapshot is not None or vote_changed:
            r.durable_wait_number = number
            if entries or snapshot is not None:
                last = entries[-1] if entries else None
                r.persist_records.append(
                    (
                        number,
                        last.index if last else 0,
                        last.term if last else 0,
                        snapshot.metadata.index if snapshot is not None else -1,
                    )
                )

        committed = tuple(log.next_committed_entries())
        if committed and r.uncommitted_bytes:
            size = 0
            for e in committed:
                size += len(e.data)
            r.uncommitted_bytes = max(0, r.uncommitted_bytes - size)

        msgs = tuple(r.msgs)
        r.msgs = []
        read_states = tuple(r.read_states)
        r.read_states = []
        return Ready(
            number=number,
            soft_state=soft,
            hard_state=hard,
            entries=entries,
            snapshot=snapshot,
            committed_entries=committed,
            messages=msgs,
            read_states=read_states,
            must_sync=bool(entries) or snapshot is not None or vote_changed,
        )

    def on_persisted(self, number: int) -> None:
        self._raft.on_persisted(number)

    def advance_apply(self, index: int) -> None:
        self._raft.log.applied_to(index)

    def advance(self, ready: Ready) -> None:
        self.on_persisted(ready.number)
        index = 0
        if ready.snapshot is not None:
            index = ready.snapshot.metadata.index
        if ready.committed_entries:
            index = max(index, ready.committed_entries[-1].index)
        if index > self._raft.log.applied:
            self.advance_apply(index)

    def status(self) -> Status:
        r = self._raft
        return Status(
            node_id=r.id,
            term=r.term,
            vote=r.vote,
            role=r.role,
            leader_id=r.leader_id,
            commit=r.log.committed,
            applied=r.log.applied,
            last_index=r.log.last_index(),
            first_index=r.log.first_index(),
            conf_state=r.tracker.conf_state(),
            progress=r.tracker.statuses() if r.role is Role.LEADER else {},
            lead_transferee=r.lead_transferee,
        )
