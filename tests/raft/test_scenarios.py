"""Runs every scenario script in tests/raft/testdata and compares the rendered output.

``pytest tests/raft/test_scenarios.py --rewrite`` regenerates the files; review the diff.
Each script's first comment says which Raft property it demonstrates; the assertions in
this module additionally pin the property itself, so a rewrite cannot silently bless a
regression of the behaviour the script is about.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from tests.raft.scenario import run_script

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_scenario(path: Path, request: pytest.FixtureRequest) -> None:
    text = path.read_text()
    actual = run_script(text)
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
