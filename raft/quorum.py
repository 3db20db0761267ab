"""Majority arithmetic, as pure functions (thesis §3.6, §3.4).

Contract: no state, no I/O; inputs are plain collections. Used by the tracker for commit
(``committed_index``), elections (``vote_result``), CheckQuorum and ReadIndex (``has_quorum``).
Each function has a naive twin in tests/raft/test_quorum.py that it is checked against.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping, Sequence
from enum import IntEnum


class VoteResult(IntEnum):
    PENDING = 0
    WON = 1
    LOST = 2


def majority(voter_count: int) -> int:
    """How many of ``voter_count`` voters make a quorum."""
    return voter_count // 2 + 1


def committed_index(voter_matches: Sequence[int]) -> int:
    """The largest index replicated on a majority, given each voter's match index.

    Sorted descending, the majority-th highest value is held by a quorum. No voters: 0.
    """
    n = len(voter_matches)
    if n == 0:
        return 0
    if n == 1:
        return voter_matches[0]
    return sorted(voter_matches, reverse=True)[n // 2]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON once a majority granted, LOST once a majority can no longer grant, else PENDING."""
    if not voters:
        return VoteResult.WON
    granted = rejected = 0
    for v in voters:
        vote = votes.get(v)
        if vote is None:
            continue
        if vote:
            granted += 1
        else:
            rejected += 1
    need = majority(len(voters))
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING


def has_quorum(voters: Collection[int], acked: Container[int]) -> bool:
    """True when a majority of ``voters`` is in ``acked``."""
    return sum(1 for v in voters if v in acked) >= majority(len(voters))
