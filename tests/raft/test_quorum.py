"""raft.quorum against naive twins (STYLE: differential property tests)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from raft.quorum import VoteResult, committed_index, has_quorum, majority, vote_result


def naive_committed(matches: list[int]) -> int:
    # The largest index i such that a majority has match >= i.
    best = 0
    for i in set(matches) | {0}:
        if sum(1 for m in matches if m >= i) >= majority(len(matches)):
            best = max(best, i)
    return best


def naive_vote(voters: set[int], votes: dict[int, bool]) -> VoteResult:
    yes = sum(1 for v in voters if votes.get(v) is True)
    undecided = sum(1 for v in voters if v not in votes)
    if yes >= majority(len(voters)):
        return VoteResult.WON
    if yes + undecided >= majority(len(voters)):
        return VoteResult.PENDING
    return VoteResult.LOST


def test_majority_values() -> None:
    assert [majority(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


@given(st.lists(st.integers(0, 50), min_size=1, max_size=9))
def test_committed_index_matches_naive(matches: list[int]) -> None:
    assert committed_index(matches) == naive_committed(matches)


def test_committed_index_examples() -> None:
    assert committed_index([]) == 0
    assert committed_index([5]) == 5
    assert committed_index([5, 3, 1]) == 3
    assert committed_index([5, 5, 1, 1]) == 1
    assert committed_index([9, 8, 7, 1, 1]) == 7


@given(
    st.sets(st.integers(1, 9), min_size=1, max_size=7),
    st.dictionaries(st.integers(1, 12), st.booleans()),
)
def test_vote_result_matches_naive(voters: set[int], votes: dict[int, bool]) -> None:
    assert vote_result(voters, votes) == naive_vote(voters, votes)


@given(st.sets(st.integers(1, 9), min_size=1, max_size=7), st.sets(st.integers(1, 12)))
def test_has_quorum_matches_naive(voters: set[int], acked: set[int]) -> None:
    assert has_quorum(voters, acked) == (len(voters & acked) * 2 > len(voters))


def test_votes_from_non_voters_do_not_count() -> None:
    assert vote_result({1, 2, 3}, {1: True, 4: True, 5: True}) is VoteResult.PENDING
    assert vote_result({1, 2, 3}, {1: True, 2: False, 3: False}) is VoteResult.LOST
