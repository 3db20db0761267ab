"""Deterministic simulation: many seeds, 3 and 5 nodes, zero violations expected.

Each seed runs a fault phase (crashes losing un-fsynced writes, partitions, drops,
duplicates, reordering, clock skew, membership changes, leadership transfers), heals, and
checks liveness; invariants are checked after every step (tests/sim/invariants.py).
A failing seed is replayable alone: ``python -m tests.sim --seeds S:S+1 --verbose``.
"""

from __future__ import annotations

import json

import pytest

from tests.sim.__main__ import main
from tests.sim.runner import SeedResult, run_seed


def _assert_clean(results: list[SeedResult]) -> None:
    bad = [r.summary() for r in results if r.violation is not None]
    assert not bad, "simulation violations:\n" + "\n".join(bad)


@pytest.mark.parametrize("block", range(6))
def test_three_nodes(block: int) -> None:
    results = [run_seed(seed, nodes=3, steps=300) for seed in range(block * 25, block * 25 + 25)]
    _assert_clean(results)
    # The runs must have done something: elections, proposals, acknowledged writes.
    assert sum(r.acked for r in results) > 25 * 20
    assert all(r.elections >= 1 for r in results)


@pytest.mark.parametrize("block", range(4))
def test_five_nodes(block: int) -> None:
    seeds = range(1000 + block * 15, 1000 + block * 15 + 15)
    results = [run_seed(seed, nodes=5, steps=300) for seed in seeds]
    _assert_clean(results)
    assert sum(r.acked for r in results) > 15 * 20


@pytest.mark.parametrize("profile", ["crashy", "churn", "vote-crash"])
def test_sharp_profiles(profile: str) -> None:
    results = [run_seed(seed, nodes=3, steps=300, profile=profile) for seed in range(2000, 2020)]
    _assert_clean(results)


def test_same_seed_same_run() -> None:
    a = run_seed(7, nodes=5, steps=200)
    b = run_seed(7, nodes=5, steps=200)
    assert (a.steps, a.proposed, a.acked, a.elections) == (
        b.steps,
        b.proposed,
        b.acked,
        b.elections,
    )


def test_cli_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--seeds", "3:5", "--nodes", "3", "--steps", "100"])
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert set(summary) == {"seeds", "violations", "steps"}
    assert summary["seeds"] == 2
    assert summary["steps"] > 200
    assert rc == (1 if summary["violations"] else 0)
    assert summary["violations"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [3, 5])
def test_thousands_of_seeds(nodes: int) -> None:
    results = [run_seed(seed, nodes=nodes, steps=500) for seed in range(10_000, 12_000)]
    _assert_clean(results)


# -- the harness itself: the fake disk and the checker must be able to fail ---------------


def test_disk_loses_unsynced_writes_on_crash() -> None:
    from raft.types import ConfState, Entry, HardState
    from tests.sim.disk import SimDisk

    disk = SimDisk(ConfState(voters=frozenset({1, 2, 3})))
    disk.write(1, 0, 2, None, (Entry(1, 1, data=b"a"),), HardState(1, 1, 0))
    disk.write(2, 1, 0, None, (Entry(2, 1, data=b"b"),), HardState(1, 1, 1))
    assert disk.storage.last_index() == 2  # visible at once (page cache)
    assert disk.complete_fsyncs(1) is None  # the first fsync is still running
    assert disk.complete_fsyncs(2) == 2  # completions are ordered: both at step 2
    disk.write(3, 3, 5, None, (Entry(2, 2, data=b"c"),), HardState(2, 2, 1))
    assert disk.crash() == 1
    storage = disk.recover()
    assert storage.last_index() == 2
    assert storage.entries(2, 3)[0].data == b"b"
    assert storage.initial_state()[0] == HardState(1, 1, 1)


def test_disk_forget_vote_knob() -> None:
    from raft.types import ConfState, HardState
    from tests.sim.disk import SimDisk

    disk = SimDisk(ConfState(voters=frozenset({1})), forget_vote_on_recover=True)
    disk.write(1, 0, 0, None, (), HardState(3, 2, 0))
    disk.complete_fsyncs(0)
    assert disk.recover().initial_state()[0] == HardState(3, 0, 0)


def test_checker_flags_two_leaders_and_divergent_logs() -> None:
    from raft.types import Entry
    from tests.sim.invariants import GENESIS, Invariants, Violation, chain

    inv = Invariants(seed=5)
    assert inv.on_leader(1, 2)
    assert not inv.on_leader(1, 2)
    with pytest.raises(Violation, match="two leaders in term 2"):
        inv.on_leader(3, 2)
    inv.on_entries_written(1, (Entry(1, 1, data=b"x"),))
    with pytest.raises(Violation, match="log matching"):
        inv.on_entries_written(2, (Entry(1, 1, data=b"y"),))
    e1, e2 = Entry(1, 1, data=b"x"), Entry(1, 2, data=b"y")
    inv.on_apply(1, e1, chain(GENESIS, e1))
    with pytest.raises(Violation, match="state machine safety"):
        inv.on_apply(2, e2, chain(GENESIS, e2))
    inv.on_commit(1, 3, [Entry(4, 3, data=b"c")])
    with pytest.raises(Violation, match="leader completeness"):
        inv.check_leader_completeness(2, 4, 1, {4: 2})
    inv.check_leader_completeness(2, 3, 1, {})  # committed in term 3: no claim on term 3
