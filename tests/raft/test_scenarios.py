"""Runs every scenario script in tests/raft/testdata and compares the rendered output.

``pytest tests/raft/test_scenarios.py --rewrite`` regenerates the files; review the diff.
Each script's first comment says which Raft property it demonstrates; ``CLAIMS`` below
additionally pins the lines that show it, so a rewrite cannot silently bless a regression
of the behaviour the script is about.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from tests.raft.scenario import run_script

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


# Lines each script's output must contain: the property it demonstrates, pinned so that a
# careless --rewrite cannot bless a regression.
CLAIMS: dict[str, list[str]] = {
    "figure8": [
        # index 2 (term 1) is on 1, 2, 3 but the term-3 leader's commit stays at 1
        "1: term=3 vote=1 role=LEADER leader=1 commit=1 applied=1",
        # ... and it is later overwritten by node 5's term-2 entry, committed in term 4
        "5: term=4 vote=5 role=LEADER leader=5 commit=3",
    ],
    "prevote_rejoin": [
        "3: term=1 vote=1 role=PRE_CANDIDATE",
        "INFO 1 vote_ignored term=1 candidate=3 reason=leader lease",
        "1: term=1 vote=1 role=LEADER leader=1 commit=2",
        "3: term=1 vote=1 role=FOLLOWER leader=1 commit=2",
    ],
    "checkquorum_stepdown": [
        "INFO 1 leader_stepped_down term=1 reason=no quorum contact",
        "error: NotLeader",
        "role=LEADER leader=2",
    ],
    "transfer_leadership": [
        "2->1 MsgVote Term:2 Log:1/1 Context:transfer",
        "2: term=2 vote=2 role=LEADER leader=2",
        "error: ProposalDropped: proposal dropped: leadership transfer to node 3 in progress",
        "INFO 2 transfer_aborted term=2 transferee=3",
        "proposed at index 3",
    ],
    "learner_promotion": [
        "Voters:(1,2,3) Learners:(4)\n  1: state=REPLICATE match=4",
        "4: state=REPLICATE match=4 next=5",
        "Voters:(1,2,3,4) Learners:()",
    ],
    "remove_leader": [
        "INFO 1 leader_stepped_down term=1 reason=removed from the configuration",
        "2: term=2 vote=2 role=LEADER leader=2 commit=3 applied=3 log=[1, 3] Voters:(2,3)",
        "proposed at index 4",
    ],
    "snapshot_lagging": [
        "1->3 MsgSnap Term:1 Log:0/0 Snapshot: Index:3 Term:1",
        "INFO 3 snapshot_restored term=1 index=3",
        'compacted up to 3 (term 1)\n1/4 EntryNormal "c"\n1/5 EntryNormal "d"',
    ],
    "read_index_partitioned": [
        "Index:1 Context:before",
        "Index:2 Context:new-leader",
    ],
}
FORBIDDEN: dict[str, list[str]] = {
    # the partitioned old leader never answers the read it could not confirm
    "read_index_partitioned": ["Context:cut-off\n  ReadStates", "Index:1 Context:cut-off"],
}


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_scenario(path: Path, request: pytest.FixtureRequest) -> None:
    text = path.read_text()
    actual = run_script(text)
    for claim in CLAIMS.get(path.stem, []):
        assert claim in actual, f"{path.name}: the output no longer shows {claim!r}"
    for bad in FORBIDDEN.get(path.stem, []):
        assert bad not in actual, f"{path.name}: the output shows {bad!r}"
    if request.config.getoption("--rewrite"):
        path.write_text(actual)
        return
    if actual != text:
        diff = "".join(
            difflib.unified_diff(
                text.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"{path.name} (expected)",
                tofile=f"{path.name} (actual)",
            )
        )
        pytest.fail(f"scenario output changed (run with --rewrite to accept):\n{diff}")


def test_required_scripts_exist() -> None:
    names = {p.name for p in SCRIPTS}
    required = {
        "figure8.txt",
        "prevote_rejoin.txt",
        "checkquorum_stepdown.txt",
        "transfer_leadership.txt",
        "learner_promotion.txt",
        "remove_leader.txt",
        "snapshot_lagging.txt",
        "read_index_partitioned.txt",
    }
    assert required <= names, f"missing scenario scripts: {sorted(required - names)}"
