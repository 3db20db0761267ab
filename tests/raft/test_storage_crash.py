"""DurableLog over an in-memory filesystem that loses what was not made durable (MemFS).

What these show: every file operation goes through the ``fs`` seam; the calls made on the
event loop (append, truncation, roll, save_hard_state, apply_snapshot) never fsync; after
``sync()`` returns, a power loss keeps everything recorded before it (data *and* directory
entries); before it, recovery comes back to the previous synced state, never to a broken log.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from raft.storage import DurableLog
from raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from tests.raft.memfs import MemFS

DIR = Path("/data/group")
SYNC_OPS = ("fsync", "fdatasync", "fsync_dir")


def entries(lo: int, hi: int, term: int = 1, size: int = 40) -> list[Entry]:
    return [Entry(i, term, data=bytes([i % 251]) * size) for i in range(lo, hi)]


def syncs(fs: MemFS) -> int:
    return sum(fs.calls[op] for op in SYNC_OPS)


def open_log(fs: MemFS, **kwargs: object) -> DurableLog:
    return DurableLog(DIR, fs=fs, segment_bytes=300, **kwargs)  # type: ignore[arg-type]


def test_creating_the_directory_makes_it_durable() -> None:
    fs = MemFS()
    log = open_log(fs, conf_state=ConfState(voters=frozenset({1})))
    log.append(entries(1, 3))
    log.sync()
    fs.crash(power_loss=True)
    reopened = open_log(fs)
    assert reopened.last_index() == 2
    assert reopened.initial_state()[1] == ConfState(voters=frozenset({1}))


def test_loop_side_calls_never_fsync() -> None:
    fs = MemFS()
    log = open_log(fs)
    log.append(entries(1, 4))
    log.sync()
    before = syncs(fs)
    log.append(entries(4, 30))  # several segment rolls
    log.append(entries(20, 25, term=2))  # suffix truncation
    log.save_hard_state(HardState(term=2, vote=3, commit=5))
    log.apply_snapshot(
        Snapshot(SnapshotMetadata(40, 3, ConfState(voters=frozenset({1, 2, 3}))), b"s")
    )
    log.append(entries(41, 45, term=3))
    assert syncs(fs) == before
    assert log.dirty
    log.sync()
    assert syncs(fs) > before
    assert not log.dirty


def test_power_loss_before_sync_returns_to_the_last_sync_and_after_keeps_everything() -> None:
    fs = MemFS()
    log = open_log(fs)
    log.append(entries(1, 6))
    log.save_hard_state(HardState(term=1, vote=1, commit=0))
    log.sync()
    log.append(entries(6, 30))  # rolls: new segment files not yet fsynced, nor their entries
    log.save_hard_state(HardState(term=2, vote=2, commit=0))
    fs.crash(power_loss=True)
    reopened = open_log(fs)
    assert reopened.last_index() == 5
    assert reopened.initial_state()[0] == HardState(term=1, vote=1, commit=0)
    assert reopened.entries(1, 6) == entries(1, 6)
    reopened.append(entries(6, 30))
    reopened.save_hard_state(HardState(term=2, vote=2, commit=0))
    reopened.sync()
    fs.crash(power_loss=True)
    again = open_log(fs)
    assert again.last_index() == 29
    assert again.entries(1, 30) == entries(1, 30)
    assert again.initial_state()[0] == HardState(term=2, vote=2, commit=0)


def test_truncation_then_power_loss_before_sync_keeps_the_old_synced_entries() -> None:
    fs = MemFS()
    log = open_log(fs)
    log.append(entries(1, 8))
    log.sync()
    log.append(entries(5, 7, term=2))  # cut 5..7, new entries go to a new segment
    fs.crash(power_loss=True)
    reopened = open_log(fs)
    assert reopened.entries(1, 8) == entries(1, 8)
    reopened.append(entries(5, 7, term=2))
    reopened.sync()
    fs.crash(power_loss=True)
    again = open_log(fs)
    assert again.entries(1, 7) == [*entries(1, 5), *entries(5, 7, term=2)]
    assert again.last_index() == 6


def test_apply_snapshot_is_all_or_nothing_across_a_power_loss() -> None:
    fs = MemFS()
    log = open_log(fs)
    log.append(entries(1, 20))
    log.sync()
    snap = Snapshot(SnapshotMetadata(50, 4, ConfState(voters=frozenset({1, 2}))), b"state")
    log.apply_snapshot(snap)
    log.append(entries(51, 55, term=4))
    fs.crash(power_loss=True)
    before = open_log(fs)
    assert (before.first_index(), before.last_index()) == (1, 19)
    assert before.snapshot().metadata.index == 0
    before.apply_snapshot(snap)
    before.append(entries(51, 55, term=4))
    before.sync()
    fs.crash(power_loss=True)
    after = open_log(fs)
    assert after.snapshot() == snap
    assert (after.first_index(), after.last_index()) == (51, 54)
    names = [name for name in fs.names(DIR) if name.endswith(".log")]
    assert names and all(int(name[:20]) >= 51 for name in names)  # the old ones are gone


def test_apply_snapshot_over_a_colliding_segment_name_recovers() -> None:
    fs = MemFS()
    log = open_log(fs)
    log.append(entries(1, 30))  # segments start at 1, 7, 13, ...
    log.sync()
    first_names = [n for n in fs.names(DIR) if n.endswith(".log")]
    collide = int(first_names[1][:20])
    snap = Snapshot(SnapshotMetadata(collide - 1, 9, ConfState(voters=frozenset({1}))), b"s")
    log.apply_snapshot(snap)
    log.append(entries(collide, collide + 3, term=9))  # same file name as an old segment
    for power_loss in (True, False):
        fs.crash(power_loss=power_loss)
        reopened = open_log(fs)
        if power_loss:  # before sync: the old log, or its prefix (the suffix was not committed)
            assert reopened.snapshot().metadata.index == 0
            assert reopened.entries(1, collide) == entries(1, collide)
        else:  # a process crash keeps what was written: new entries, but no snapshot yet
            assert reopened.last_index() >= collide - 1
        reopened.close()
    log = open_log(fs)
    log.apply_snapshot(snap)
    log.append(entries(collide, collide + 3, term=9))
    log.sync()
    fs.crash(power_loss=True)
    final = open_log(fs)
    assert final.snapshot() == snap
    assert final.entries(collide, collide + 3) == entries(collide, collide + 3, term=9)


def test_save_snapshot_and_compact_from_a_worker_thread_while_the_loop_appends() -> None:
    fs = MemFS()
    log = open_log(fs)
    log.append(entries(1, 40))
    log.sync()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for index in range(10, 40, 5):
                log.save_snapshot(
                    Snapshot(SnapshotMetadata(index, 1, ConfState(voters=frozenset({1}))), b"x")
                )
                log.compact(index)
                log.sync()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    for lo in range(40, 200, 4):
        log.append(entries(lo, lo + 4))
    thread.join()
    assert errors == []
    log.sync()
    assert log.last_index() == 199
    assert log.entries(log.first_index(), 200)[-1] == entries(199, 200)[0]
    fs.crash(power_loss=True)
    reopened = open_log(fs)
    assert reopened.last_index() == 199
    assert reopened.snapshot().metadata.index == 35


def test_only_active_unsynced_and_recently_read_segments_stay_open() -> None:
    fs = MemFS()
    log = open_log(fs, open_segments=2, cache_bytes=0)
    log.append(entries(1, 100))
    log.sync()
    assert len(log.segments()) > 10
    open_now = [seg for seg in log._segments.values() if seg.fd >= 0]
    assert open_now == [log._segments.peekitem(-1)[1]]
    assert log.entries(1, 100) == entries(1, 100)  # opens each, keeps at most 2 more
    assert len([seg for seg in log._segments.values() if seg.fd >= 0]) <= 3
    log.close()
    fs.crash(power_loss=False)
    reopened = open_log(fs, open_segments=2)
    assert len([seg for seg in reopened._segments.values() if seg.fd >= 0]) == 1


@pytest.mark.parametrize("seed", range(60))
def test_random_workloads_survive_power_loss_at_any_point(seed: int) -> None:
    """Appends, truncations, rolls, follower snapshots, hard state and syncs in random order,
    then a power loss: recovery never fails and keeps every entry acknowledged by a sync
    (unless Raft itself replaced it later), the last synced hard state and snapshot."""
    rng = random.Random(seed)
    fs = MemFS()
    log = open_log(fs)
    model: dict[int, Entry] = {}
    first = 1
    acked: dict[int, Entry] = {}  # index -> entry that a completed sync covered
    acked_snapshot = 0
    acked_hs = HardState()
    hs = HardState()
    snap_index = 0
    term = 1
    for _ in range(rng.randrange(5, 40)):
        last = first - 1 + len(model) if model else snap_index
        roll = rng.random()
        if roll < 0.55:
            lo = last + 1
            if model and rng.random() < 0.25:
                lo = rng.randrange(max(first, snap_index + 1), last + 2)
                term += 1
            batch = entries(lo, lo + rng.randrange(1, 6), term=term, size=rng.randrange(5, 80))
            log.append(batch)
            for index in range(lo, last + 1):
                model.pop(index, None)
                acked.pop(index, None)  # Raft replaced it: no longer required
            model.update({e.index: e for e in batch})
        elif roll < 0.65:
            term += 1
            snap_index = max(last, snap_index) + rng.randrange(0, 4)
            conf = ConfState(voters=frozenset({1, 2}))
            log.apply_snapshot(Snapshot(SnapshotMetadata(snap_index, term, conf), b"s"))
            model = {}
            acked = {}  # a snapshot install replaces the whole log
            first = snap_index + 1
        elif roll < 0.75:
            hs = HardState(term=term, vote=rng.randrange(0, 3), commit=0)
            log.save_hard_state(hs)
        else:
            log.sync()
            acked = dict(model)
            acked_snapshot = snap_index
            acked_hs = hs
    fs.crash(power_loss=True)
    reopened = open_log(fs)
    assert reopened.snapshot().metadata.index >= acked_snapshot
    got_hs = reopened.initial_state()[0]
    assert (got_hs.term, got_hs.vote) >= (acked_hs.term, 0)
    if got_hs.term == acked_hs.term and acked_hs.vote:
        assert got_hs.vote == acked_hs.vote
    for index, entry in sorted(acked.items()):
        if index > reopened.snapshot().metadata.index:
            assert reopened.last_index() >= index, (index, reopened.last_index())
            assert reopened.entries(index, index + 1) == [entry]
    reopened.close()
