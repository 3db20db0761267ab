"""The simulator must catch real Raft bugs: each test injects one and searches seeds.

The variants live here, not as switches in the core: each patches one method on the core
object of every node the simulator creates (an instance attribute, so nothing leaks into
other tests), or makes the fake disk forget the vote. A bug counts as caught at seed S when
the buggy run at S violates a property and the correct run at S does not (so the finding
is the injected bug's, not some other one). Each must be caught within ``MAX_SEEDS`` seeds;
the test prints which seed caught it, replayable with ``python -m tests.sim``'s profile.
"""

from __future__ import annotations

import types
from collections.abc import Callable

from raft.core import Raft
from raft.rawnode import RawNode
from raft.types import Message, MessageType
from tests.sim.runner import SeedResult, run_seed

MAX_SEEDS = 300


def _hunt(
    name: str,
    profile: str,
    nodes: int = 3,
    patch_node: Callable[[RawNode], None] | None = None,
    forget_vote_on_restart: bool = False,
) -> SeedResult:
    for seed in range(MAX_SEEDS):
        buggy = run_seed(
            seed,
            nodes=nodes,
            steps=300,
            profile=profile,
            patch_node=patch_node,
            forget_vote_on_restart=forget_vote_on_restart,
        )
        if buggy.violation is None:
            continue
        if run_seed(seed, nodes=nodes, steps=300, profile=profile).violation is not None:
            continue  # the correct core fails here too: not this bug's finding
        print(f"{name}: caught at seed {seed} ({profile}, {nodes} nodes): {buggy.violation}")
        return buggy
    raise AssertionError(f"{name}: not caught in {MAX_SEEDS} seeds of profile {profile!r}")


# (a) commit an old-term entry by counting replicas (Raft paper §5.4.2, Figure 8)
def _commit_by_counting(raw: RawNode) -> None:
    def maybe_commit(self: Raft) -> bool:
        index = self.tracker.committed()
        if index > self.log.committed:
            self.log.commit_to(index)  # no "entry is from my term" check
            return True
        return False

    raw.raft.maybe_commit = types.MethodType(maybe_commit, raw.raft)  # type: ignore[method-assign]


def test_catches_commit_of_old_term_entry_by_counting() -> None:
    found = _hunt("commit-by-counting", "figure8", patch_node=_commit_by_counting)
    assert found.violation is not None
    assert found.violation.kind in {
        "commit stability",
        "leader completeness",
        "state machine safety",
        "lost acknowledged proposal",
    }


def test_catches_commit_by_counting_with_five_nodes() -> None:
    found = _hunt("commit-by-counting/5", "figure8", nodes=5, patch_node=_commit_by_counting)
    assert found.violation is not None


# (b) answer appends and votes before the entries / vote are durable (thesis §3.8)
def _send_before_persist(raw: RawNode) -> None:
    def send(self: Raft, msg: Message) -> None:
        self.msgs.append(msg)  # no hold-back until on_persisted

    raw.raft.send = types.MethodType(send, raw.raft)  # type: ignore[method-assign]


def test_catches_responses_sent_before_persistence() -> None:
    found = _hunt("send-before-persist", "crashy", patch_node=_send_before_persist)
    assert found.violation is not None
    assert found.violation.kind != "core exception"


# (c) grant two votes in one term (§5.2)
def _vote_twice(raw: RawNode) -> None:
    def can_grant_vote(self: Raft, msg: Message) -> bool:
        if self.in_leader_lease(msg):
            return False
        return self.log.is_up_to_date(msg.index, msg.log_term)  # ignores self.vote

    raw.raft.can_grant_vote = types.MethodType(can_grant_vote, raw.raft)  # type: ignore[method-assign]


def test_catches_two_votes_in_one_term() -> None:
    found = _hunt("double-vote", "default", patch_node=_vote_twice)
    assert found.violation is not None
    assert found.violation.kind in {
        "election safety",
        "leader completeness",
        "commit stability",
        "core invariant",  # the core's own two-leaders-in-one-term assertion
    }


# (d) a restart that forgets the vote (the fake disk loses HardState.vote)
def test_catches_restart_that_forgets_the_vote() -> None:
    found = _hunt("forget-vote", "churn", forget_vote_on_restart=True)
    assert found.violation is not None
    assert found.violation.kind != "core exception"


# (e) send the vote grant before recording the vote (#12 defect 3): at the node's current
# term hold_tag() saw nothing unpersisted, so the grant left with the vote still in memory.
def _grant_before_vote(raw: RawNode) -> None:
    def handle_vote_request(self: Raft, m: Message) -> None:
        resp_type = (
            MessageType.VOTE_RESP if m.type is MessageType.VOTE else MessageType.PRE_VOTE_RESP
        )
        if self.can_grant_vote(m):
            self.send(Message(resp_type, m.from_, self.id, m.term))
            if m.type is MessageType.VOTE:
                self.election_elapsed = 0
                self.vote = m.from_
        else:
            self.send(Message(resp_type, m.from_, self.id, self.term, reject=True))

    raw.raft.handle_vote_request = types.MethodType(handle_vote_request, raw.raft)  # type: ignore[method-assign]


def test_catches_a_grant_sent_before_its_vote_is_durable() -> None:
    """guards #12 defect 3: the finer forget-vote fault (a crash right after a Ready granting a
    vote was handed out and sent, before its fsync) finds the old grant-then-record order."""
    found = _hunt("grant-before-vote", "vote-crash", patch_node=_grant_before_vote)
    assert found.violation is not None
    assert found.violation.kind in {
        "vote durability",  # the sim's own check at the crash: an announced vote was lost
        "election safety",
        "leader completeness",
        "commit stability",
        "core invariant",
    }
