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

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.system_sim.putback import TARGETS

ROOT = Path(__file__).resolve().parents[2]

# defect -> the most seeds the detection may take (from first_seed on)
BOUNDS: dict[int, int] = {
    1: 20,
    2: 5,
    3: 5,  # seed 0; every episode of SplitVoteAcrossRestart makes a second leader (putback.py)
    4: 5,
    5: 15,  # 6 seeds since CreateTopic waits for a metadata barrier (91a8f64): timings moved
    6: 10,
    7: 10,
    9: 5,
    10: 5,
    12: 30,  # 18 seeds since the two-index ack mark (a torn last sync is cut, not refused)
    14: 3,
    16: 5,
    17: 5,
}


def _caught(defect: int) -> None:
    """Runs putback.verify in a fresh process with PYTHONHASHSEED=0 (seeds replay exactly,
    as with the simulation's CLI: the seeds a detection needs are the ones documented)."""
    target = TARGETS[defect]
    assert target.expect or defect in (1, 2), "name the violation that counts as the detection"
    bound = BOUNDS[defect]
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.system_sim.putback", str(defect), str(bound)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["seed"] is not None, (
        f"defect {defect} put back: no violation in seeds "
        f"{target.first_seed}..{target.first_seed + bound - 1}: the simulation no longer finds it"
    )
    assert not out["negative"], (
        f"defect {defect}'s configuration WITHOUT the patch violates (a real finding, or the "
        f"configuration is not targeted; replay: python -m tests.system_sim.putback {defect} "
        f"{bound}): {out['negative']}"
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


def test_defect_3_vote_grant_leaves_before_the_vote_is_durable() -> None:
    """#12 defect 3. Patch: ``Raft.handle_vote_request`` hands the grant to send() before it
    sets the vote (before 3d844de), so a grant made at the voter's current term is not held
    until the vote is durable. Faults (SplitVoteAcrossRestart, no nemesis; pre-vote on,
    check-quorum off, no quiescence; a topic no client writes): its leader X's messages to
    its followers A and C are lost (vote responses excepted) and A and C cannot reach each
    other, so both become candidates of one term T, their vote requests to X held in the
    network; X then hears of T from A's append response and steps down without a vote, A's
    request is delivered, X grants it and is SIGKILLed 20 µs after the grant reached its
    transport, and C's request is delivered to X's next process. With the fix X comes back
    with its vote for A and rejects C; with the patch the kill came before the vote's fsync,
    X grants C too, and A and C both lead term T."""
    _caught(3)


def test_defect_4_failed_sync_job_fails_every_group() -> None:
    """#12 defect 4. Patch: one persistence lane shared by every group (the one sync job per
    turn of before 251fd4e), a failed job fails every group with a job in flight, and a
    deleted partition's log is closed at once on the loop (not through its lane). Faults:
    slow fsyncs on every broker (the shared lane has a queue) and a topic deleted while
    producers still write to it: a queued job meets the closed log (``ValueError: log ... is
    closed``) and the metadata replica and every other group on that broker fail."""
    _caught(4)


def test_defect_5_invariant_errors_escape_group_isolation() -> None:
    """#12 defect 5. Patch: the runtime turn of before 251fd4e, which stopped a group only for
    Raft's own InvariantViolation/StorageCorruption: a ``PartitionInvariantError`` (or
    ``MetadataInvariantViolation``, or anything else) escapes the turn, skipping the other
    groups and the transport flush, and the group is not failed. Faults: none from the
    nemesis; InjectApplyError makes one partition replica's apply on broker 1 raise a
    PartitionInvariantError once. With one failure model that group stops there alone (its
    own "group failed" is filtered out as expected); with the patch its entries are never
    applied there, it raises again every turn, and broker 1 stops driving its other groups
    and sending Raft messages: probes time out (liveness), groups are stuck."""
    _caught(5)


def test_defect_6_snapshot_status_never_reported() -> None:
    """#12 defect 6. Patch: ``Runtime.report_snapshot`` is a no-op (before 74bdd7e nothing in
    the broker called it). Faults: followers isolated or cut one way, heavy message drops,
    small retention limits and no leadership transfers: leaders must send snapshots to
    followers behind a retention cut, some are lost, and the follower stays paused in
    SNAPSHOT state (``group stuck`` at the end: it never holds what its leader committed)."""
    _caught(6)


def test_defect_7_consumer_resets_on_a_trailing_high_watermark() -> None:
    """#12 defect 7. Patch: a fetch above the high watermark answers OFFSET_OUT_OF_RANGE
    (before 11a6985), the consumer applies auto_offset_reset at once (before 60d0cdd), and a
    new leader serves fetches and ListOffsets before it applied an entry of its term (before
    05ca412: no LEADER_NOT_AVAILABLE, no wait in the fetch stream). Faults: SlowPeerLinks
    (80-200 ms between brokers, client links fast), leadership transfers every 0.3 s on
    average and kills: a consumer follows the NOT_LEADER redirect to the new leader before
    that leader's no-op commits, asks for an offset above its trailing high watermark, and
    resets: to the earliest offset or that high watermark (it goes backwards and re-reads)
    or past records it never saw (a skip)."""
    _caught(7)


def test_defect_9_fsync_never_forgets_votes_on_sigkill() -> None:
    """#12 defect 9. Patch: with ``storage.fsync=never`` term and vote are only kept in memory
    (written at close(); no sync job wrote them). Faults: plain SIGKILLs of one, a minority or
    every broker, with the PageCache model (a killed process's written pages survive, as
    they do under a real kernel; the simulated disk otherwise treats a kill as a power loss,
    under which "never" is allowed to lose data): a restarted broker forgot its vote and
    votes again in the same term, two leaders in one term."""
    _caught(9)


def test_defect_10_reseal_under_a_new_producer_id() -> None:
    """#12 defect 10. Patch: on OUT_OF_ORDER_SEQUENCE for its oldest unacknowledged batch the
    producer drops its id and reseals the partition's pending batches from sequence 0 under a
    FRESH producer id from InitProducerId (before 6b1f6ad), instead of bumping its epoch.
    Faults: no nemesis; producer ids expire after 300 ms of log time (so a producer idle on a
    partition is forgotten there and meets OUT_OF_ORDER_SEQUENCE), and LateProduceCopy: the
    network keeps a copy of each producer session's first Produce request (sequence 0) and
    delivers it once that client's next session has written to the partition. The old id is
    unknown there, so the copy opens a new session and is appended a second time
    (duplicate under idempotence); with the bumped epoch it is fenced (PRODUCER_FENCED)."""
    _caught(10)


def test_defect_12_failed_write_acknowledged() -> None:
    """#12 defect 12. Patch: ``Segment.append`` records frame positions before its pwrite,
    ``DurableLog`` has no failed state (an OSError is raised as is and the log carries on),
    and an OSError from ``log.append`` escapes the runtime turn instead of failing the group
    (only ``raft.errors.GroupFailure`` stops a group). Faults: the disk profile (EIO/ENOSPC
    on writes and syncs, slow fsyncs, kills, power losses): after a failed write a later
    Ready is reported persisted, its append acknowledged, and the segment's positions point
    past what the disk holds; the restart finds an acknowledged entry missing
    (StorageCorruption) or acknowledged records are gone."""
    _caught(12)


def test_defect_14_oversized_peer_batches_lost_silently() -> None:
    """#12 defect 14. Patch: the transport of before 3c6e5e6: a peer's queued messages merge
    into one RaftBatch with no byte bound, snapshots travel whole, no message is refused for
    its size, and a batch the link refused is lost without report_unreachable or a snapshot
    status. Faults: LinkSizeLimit (the simulated links refuse batches over 160 KiB as gRPC
    does with RESOURCE_EXHAUSTED; every broker is configured with that limit), 64 KiB Raft
    appends, heavy load, followers behind after kills and isolation: the catch-up of several
    groups in one turn exceeds the limit, every message of it (heartbeats and votes of other
    groups too) is lost, unreported, again and again: followers stay behind (group stuck)."""
    _caught(14)


def test_defect_16_crash_mid_retention_stops_retention() -> None:
    """#12 defect 16. Patch: ``PartitionState.apply`` refuses an entry at or below the
    restored snapshot ("apply order") and ``retention_cut`` does not drop segments the
    snapshot covers first (before 52ab9ea). Faults: small retention limits checked every
    100 ms, and a process killed between writing a retention snapshot and deleting the
    segments it covers (RetentionKeepsCutting(crash_p=0.05): the nemesis cannot aim a kill
    inside one executor job, so the harness does). After the restart every retention pass
    replays those entries and fails; the checker sees three failed passes in a row while a
    cut is due."""
    _caught(16)


def test_defect_17_snapshots_grow_without_bound() -> None:
    """#12 defect 17. Patch: producer ids never expire (``ProducerTable`` built with
    expiry -1, as before 3da22cb). Faults: hardly any (a few kills); the workload gains
    short-lived idempotent producers, a new producer id every 150 ms on one partition, with
    ``producer_expiry_ms`` = 1.5 s. The ProducerChurn checker measures every replica's
    partition snapshot: without expiry it outgrows the bound set by the producers that can
    be live within one expiry window."""
    _caught(17)


# ---------------------------------------------------------------------------- patch is real
#
# The product's own regression test for a defect, run with the put-back patch, must fail (and
# pass without it): the patch really reinstates the defect. For 3, 7 and 10, whose detection
# needs a schedule or fault built for them (putback.py: SplitVoteAcrossRestart, SlowPeerLinks,
# LateProduceCopy), this also shows that the patch is the defect the fix removed, not just
# something the schedule happens to trip over.

REGRESSION_TESTS: dict[int, list[str]] = {
    # Raft core, with pre-vote and check-quorum off as in its regression test: a grant at the
    # node's current term leaves before the vote is durable.
    3: [
        "tests/raft/test_core_persistence.py::test_vote_granted_at_the_current_term_waits_for_the_disk"
    ],
    # partition fetch above the high watermark, and the consumer's immediate reset
    7: [
        "tests/partition/test_state.py::"
        "test_fetch_between_high_watermark_and_log_end_is_empty_not_out_of_range",
        "tests/client/test_consumer_failover.py::test_out_of_range_once_on_the_new_leader_skips_nothing",
    ],
    # the producer's reseal under a fresh producer id: a delayed copy under the old id lands
    10: [
        "tests/client/test_fencing.py::"
        "test_delayed_copy_under_the_old_epoch_is_fenced_not_appended_after_its_successor",
    ],
}


@pytest.mark.parametrize("defect", sorted(REGRESSION_TESTS))
def test_patch_is_real(defect: int) -> None:
    """#12 defects 3, 7 and 10 put back (putback.py ``_patch_3``, ``_patch_7``,
    ``_patch_10``): their regression tests fail; they pass without the patch."""
    root = ROOT
    code = (
        "import sys, pytest\n"
        "from tests.system_sim.putback import putback\n"
        f"with putback({defect}):\n"
        f"    rc = pytest.main(['-q', '-p', 'no:cacheprovider', *{REGRESSION_TESTS[defect]!r}])\n"
        "sys.exit(int(rc))\n"
    )
    patched = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert patched.returncode != 0, (
        f"defect {defect} put back, yet its tests pass:\n{patched.stdout}"
    )
    clean = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *REGRESSION_TESTS[defect]],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert clean.returncode == 0, f"defect {defect}'s tests fail WITHOUT the patch:\n{clean.stdout}"


@pytest.mark.parametrize("defect", sorted(BOUNDS))
def test_every_bound_has_a_target(defect: int) -> None:
    assert defect in TARGETS
