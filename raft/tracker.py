"""The leader's view of every member: progress, votes, and the live configuration.

Contract: owns ``Progress`` per member and the vote tally of the current election; answers
quorum questions through ``raft.quorum``. Configuration is swapped in whole by
``apply_conf`` (computed by ``raft.confchange``); no I/O, no messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from raft.progress import Inflights, Progress, ProgressState
from raft.quorum import VoteResult, committed_index, has_quorum, vote_result
from raft.types import ConfState


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    match: int
    next: int
    state: ProgressState
    recent_active: bool


class ProgressTracker:
    __slots__ = (
        "learners",
        "max_inflight_bytes",
        "max_inflight_msgs",
        "progress",
        "voter_list",
        "voters",
        "votes",
    )

    def __init__(self, max_inflight_msgs: int, max_inflight_bytes: int) -> None:
        self.max_inflight_msgs = max_inflight_msgs
        self.max_inflight_bytes = max_inflight_bytes
        self.voters: frozenset[int] = frozenset()
        self.voter_list: tuple[int, ...] = ()
        self.learners: frozenset[int] = frozenset()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    def new_progress(self, match: int, next_index: int, is_learner: bool) -> Progress:
        return Progress(
            match,
            next_index,
            Inflights(self.max_inflight_msgs, self.max_inflight_bytes),
            is_learner,
        )

    def conf_state(self) -> ConfState:
        return ConfState(voters=self.voters, learners=self.learners)

    def apply_conf(self, cs: ConfState, next_index: int) -> None:
        """Swap in ``cs``: new members get a fresh PROBE progress at ``next_index``."""
        self.voters = cs.voters
        self.voter_list = tuple(sorted(cs.voters))
        self.learners = cs.learners
        members = cs.voters | cs.learners
        for node_id in list(self.progress):
            if node_id not in members:
                del self.progress[node_id]
        for node_id in members:
            pr = self.progress.get(node_id)
            if pr is None:
                self.progress[node_id] = self.new_progress(0, next_index, node_id in cs.learners)
            else:
                pr.is_learner = node_id in cs.learners

    def is_singleton(self) -> bool:
        return len(self.voters) == 1

    def committed(self) -> int:
        progress = self.progress
        return committed_index([progress[v].match for v in self.voter_list])

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node_id: int, granted: bool) -> None:
        self.votes.setdefault(node_id, granted)

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        granted = sum(1 for v in self.voters if self.votes.get(v) is True)
        rejected = sum(1 for v in self.voters if self.votes.get(v) is False)
        return granted, rejected, vote_result(self.voters, self.votes)

    def quorum_active(self) -> bool:
        active = {node_id for node_id, pr in self.progress.items() if pr.recent_active}
        return has_quorum(self.voters, active)

    def statuses(self) -> dict[int, ProgressStatus]:
        return {
            node_id: ProgressStatus(pr.match, pr.next, pr.state, pr.recent_active)
            for node_id, pr in sorted(self.progress.items())
        }
