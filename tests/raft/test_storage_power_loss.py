"""DurableLog under *torn* power losses: the simulated disk of the system simulation
(tests.system_sim.fs) writes unsynced pages back in any order and keeps any file size between
the durable and the current one, the way ext4 can make a truncation durable (a journal commit
triggered by some other fsync) before the data page holding our ack mark.

What these show: a power loss at any file operation -- inside ``sync()`` too -- leaves a log
that opens without ``StorageCorruption`` and still holds every entry a completed sync covered
(unless Raft itself replaced it). The first test is system simulation seed 2083 reduced to
the storage: a suffix truncation of entries a completed sync had made durable, then a power
loss before the next sync completes, used to leave the old mark (``durable_through`` past the
cut) over a file cut short, and the replica refused to start.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raft.storage import DurableLog
from raft.types import Entry
from tests.system_sim.fs import SimDisk, SimFileSystem

DIR = Path("/data/group")


def entries(lo: int, hi: int, term: int, size: int = 300) -> list[Entry]:
    return [Entry(i, term, data=bytes([(i * 7 + term) % 251]) * size) for i in range(lo, hi)]


def open_log(fs: SimFileSystem, segment_bytes: int = 16_000) -> DurableLog:
    return DurableLog(DIR, fs=fs, segment_bytes=segment_bytes)


def new_disk(seed: int) -> SimDisk:
    """A disk whose data directory's parent exists durably, as a broker's does."""
    disk = SimDisk(random.Random(seed))
    fs = disk.mount()
    fs.makedirs(str(DIR.parent))
    fs.fsync_dir("/")
    fs.fsync_dir(str(DIR.parent))
    return disk


@pytest.mark.parametrize("seed", range(120))
def test_power_loss_after_truncating_durable_entries_never_bricks_the_log(seed: int) -> None:
    disk = new_disk(seed)
    log = open_log(disk.mount())
    log.append(entries(1, 20, term=1))
    log.sync()
    log.append(entries(20, 25, term=1))
    log.sync()  # entries 1..24 durable, and the mark on disk says so through 19
    cut = 5 + seed % 15
    log.append(entries(cut, cut + 3, term=2))  # Raft replaces an uncommitted suffix
    if seed % 3 == 0:
        log.sync()
        log.append(entries(cut + 3, cut + 6, term=2))
    disk.crash(torn=True)
    reopened = open_log(disk.mount())  # must not raise StorageCorruption
    last = reopened.last_index()
    assert last >= cut - 1
    assert reopened.entries(1, cut) == entries(1, cut, term=1)
    tail = reopened.entries(cut, last + 1)
    if seed % 3 == 0:
        # the sync after the truncation completed: its entries are acknowledged
        assert tail[:3] == entries(cut, cut + 3, term=2)
    else:
        # either the old suffix (the truncation was lost) or a prefix of the new one
        old, new = entries(cut, 25, term=1), entries(cut, cut + 3, term=2)
        assert tail in (old[: len(tail)], new[: len(tail)]), (cut, last)
    reopened.close()


class _PowerCut(Exception):
    """Raised by ``CrashingFs`` at the operation chosen for the power loss."""


class CrashingFs:
    """A ``SimFileSystem`` that loses power (torn) just before its ``crash_at``-th call."""

    def __init__(self, disk: SimDisk, crash_at: int) -> None:
        self._fs = disk.mount()
        self._disk = disk
        self._left = crash_at

    def __getattr__(self, name: str) -> object:
        target = getattr(self._fs, name)
        if not callable(target):
            return target

        def call(*args: object, **kwargs: object) -> object:
            self._left -= 1
            if self._left == 0:
                self._disk.crash(torn=True)
            if self._left <= 0:  # the process is dead: no call does anything any more
                raise _PowerCut(name)
            return target(*args, **kwargs)

        return call


@st.composite
def workloads(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    """("append", start_offset_from_end, count) or ("sync", 0, 0); offsets < 0 truncate."""
    ops: list[tuple[str, int, int]] = []
    for _ in range(draw(st.integers(3, 14))):
        if draw(st.booleans()):
            ops.append(("sync", 0, 0))
        else:
            back = draw(st.one_of(st.just(0), st.integers(1, 12)))
            ops.append(("append", back, draw(st.integers(1, 8))))
    return ops


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=workloads(), crash_at=st.integers(1, 400), seed=st.integers(0, 2**16))
def test_a_torn_power_loss_at_any_operation_keeps_every_acknowledged_entry(
    ops: list[tuple[str, int, int]], crash_at: int, seed: int
) -> None:
    disk = new_disk(seed)
    fs = CrashingFs(disk, crash_at)
    model: dict[int, Entry] = {}  # the log as Raft sees it
    acked: dict[int, Entry] = {}  # entries a completed sync covered, not replaced since
    term = 1
    try:
        log = open_log(fs, segment_bytes=3_000)  # type: ignore[arg-type]
        for op, back, count in ops:
            last = max(model, default=0)
            if op == "sync":
                log.sync()
                acked = dict(model)
                continue
            start = max(1, last + 1 - back)
            if start <= last:
                term += 1
            batch = entries(start, start + count, term=term, size=200)
            log.append(batch)
            for index in range(start, last + 1):
                model.pop(index, None)
                acked.pop(index, None)  # Raft replaced it: no longer required
            model.update({e.index: e for e in batch})
        log.sync()
        acked = dict(model)
        disk.crash(torn=True)
    except _PowerCut:
        pass
    reopened = open_log(disk.mount(), segment_bytes=3_000)  # never StorageCorruption
    for index, entry in sorted(acked.items()):
        assert reopened.last_index() >= index, (index, reopened.last_index())
        assert reopened.entries(index, index + 1) == [entry]
    reopened.close()
