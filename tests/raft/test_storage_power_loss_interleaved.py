"""DurableLog under torn power losses with the event loop's calls interleaved into ``sync()``
(tests.system_sim.fs SimDisk; MemFS for process crashes). From a fresh-eye review of the
truncation change (0e905d1); every scenario below bricked the log or lost entries before the
fixes that followed it:

1. a process crash (page cache kept), reopen, then a power loss: entries recovered from the
   page cache must be made durable at open;
2. hypothesis: a torn power loss at any file operation, loop and worker calls (appends with
   truncations, snapshot installs, local snapshots with compaction) run in the middle of a
   sync at any of its unlocked file operations; the reopened log keeps every acknowledged
   entry and obeys Raft log matching;
3. a lost first segment header leaves a later segment with an interrupted sync's mark as the
   first segment (fresh log, compaction, snapshot install): dropped, not "snapshot older than
   the log start";
4. a commit index written by an in-flight sync ahead of the entries it names (a truncation's
   new branch): a sync writes the hard state as of its start;
5. a zero first page of a multi-page new segment (a torn write-back) is a header that never
   reached the disk, not corruption;
6. a post-snapshot segment's mark raised before the snapshot is durable (a term mismatch):
   dropped as never acknowledged;
7. old acknowledged segments past an installed snapshot, left in place until after the
   snapshot is durable, follow the new segment right after the snapshot as a gap: removed by
   ``apply_snapshot`` at once, highest first (a journal commit between two of the unlinks
   must not leave a gap either).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raft.errors import StorageCorruption
from raft.storage import DurableLog
from raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from tests.raft.memfs import MemFS
from tests.system_sim.fs import SimDisk

DIR = Path("/data/group")


def entries(lo: int, hi: int, term: int = 1, size: int = 40) -> list[Entry]:
    return [Entry(i, term, data=bytes([(i * 7 + term) % 251]) * size) for i in range(lo, hi)]


def open_mem(fs: MemFS, segment_bytes: int = 300) -> DurableLog:
    return DurableLog(DIR, fs=fs, segment_bytes=segment_bytes)


# -- 1. process crash (page cache kept), reopen, then power loss -----------------------------


def test_segment_recovered_from_page_cache_is_made_durable_before_its_entries_are_acked() -> None:
    """Pre-existing (fails on 0e905d1~1 too). A SIGKILL keeps the page cache: recovery sees
    entries 6..11 (segments 4's tail, 7, 10) that no sync made durable, keeps them as clean
    segments (not in ``_dirty``), and never fdatasyncs them nor fsyncs the directory. A
    restarted node treats its whole log as persisted (and a completed sync here covers
    "everything recorded"), yet a power loss then loses 6..9 and the log refuses to open
    (gap before segment 10, whose data the later sync did make durable)."""
    fs = MemFS()
    log = open_mem(fs)
    log.append(entries(1, 6))
    log.sync()
    log.append(entries(6, 12))  # rolls (300-byte segments): new files, no fsync_dir yet
    fs.crash(power_loss=False)  # SIGKILL: page cache (data and directory entries) kept
    log = open_mem(fs)
    assert log.last_index() == 11
    log.append(entries(12, 14))
    log.sync()  # completed: 1..13 acknowledged
    fs.crash(power_loss=True)
    reopened = open_mem(fs)
    assert reopened.last_index() >= 13, reopened.last_index()
    assert reopened.entries(1, 14) == entries(1, 14)


def test_truncation_recovered_from_page_cache_then_power_loss() -> None:
    """Same class, through the new rule: after a SIGKILL, recovery finds the old frames past
    the lowered mark and the new segment 10 (both only in the page cache), cuts the old
    frames durably (``_truncation_not_cut``: ftruncate + fdatasync), keeps segment 10 but
    never fsyncs the directory; 13..14 appended to it and synced are acknowledged, and a
    power loss removes segment 10: 10..14 lost. (On 0e905d1~1 it also fails: the old
    term-1 entries come back instead.)"""
    fs = MemFS()
    log = open_mem(fs, segment_bytes=2_000)
    log.append(entries(1, 21))
    log.sync()
    log.append(entries(21, 25))
    log.sync()  # 1..24 durable, mark raised
    log.append(entries(10, 13, term=2))  # truncation: mark lowered, cut pending; new segment
    fs.crash(power_loss=False)
    log = open_mem(fs, segment_bytes=2_000)
    assert log.entries(10, 13) == entries(10, 13, term=2)
    log.append(entries(13, 15, term=2))
    log.sync()  # completed: 1..14 (10..14 of term 2) acknowledged
    fs.crash(power_loss=True)
    reopened = open_mem(fs, segment_bytes=2_000)
    assert reopened.last_index() >= 14, reopened.last_index()
    assert reopened.entries(10, 15) == entries(10, 15, term=2)


# -- 2. torn power loss at any file operation, with loop/worker calls interleaved into sync ------


SIM_DIR = Path("/data/group")
CONF = ConfState(voters=frozenset({1, 2, 3}))


class _PowerCut(Exception):
    pass


class _InterleavingFs:
    """A SimFileSystem that (a) loses power (torn, or not) just before its ``crash_at``-th
    call and (b) while ``sync()`` runs, at its ``hook_at``-th call made with none of the log's
    locks held, runs ``hook`` -- the event loop (or another worker) acting in the middle of
    the sync, as the real threads may."""

    def __init__(self, disk: SimDisk, crash_at: int, torn: bool) -> None:
        self._fs = disk.mount()
        self._disk = disk
        self._left = crash_at
        self._torn = torn
        self.log: DurableLog | None = None
        self.hook: object = None
        self.hook_at = 0
        self._in_hook = False
        self.trace: list[str] = []
        self.opened_at = 0

    def _locks_free(self) -> bool:
        log = self.log
        assert log is not None
        return not any(
            lock.locked() for lock in (log._lock, log._snap_lock, log._state_lock, log._hs_lock)
        )

    def __getattr__(self, name: str) -> object:
        target = getattr(self._fs, name)
        if not callable(target):
            return target

        def call(*args: object, **kwargs: object) -> object:
            self._left -= 1
            if self._left == 0:
                self._disk.crash(torn=self._torn)
            if self._left <= 0:
                raise _PowerCut(name)
            self.trace.append(name)
            if self.hook is not None and not self._in_hook and self._locks_free():
                self.hook_at -= 1
                if self.hook_at <= 0:
                    hook, self.hook = self.hook, None
                    self._in_hook = True
                    try:
                        hook()  # type: ignore[operator]
                    finally:
                        self._in_hook = False
            return target(*args, **kwargs)

        return call


def _sim_entries(lo: int, hi: int, term: int, size: int) -> list[Entry]:
    return [Entry(i, term, data=bytes([(i * 7 + term * 13) % 251]) * size) for i in range(lo, hi)]


def _new_sim_disk(seed: int) -> SimDisk:
    disk = SimDisk(random.Random(seed))
    fs = disk.mount()
    fs.makedirs(str(SIM_DIR.parent))
    fs.fsync_dir("/")
    fs.fsync_dir(str(SIM_DIR.parent))
    return disk


def _reopen_or_fail(disk: SimDisk, segment_bytes: int) -> DurableLog:
    """The log after the crash, failing the test if it refuses to open (a bricked log)."""
    try:
        return DurableLog(SIM_DIR, fs=disk.mount(), segment_bytes=segment_bytes)
    except StorageCorruption as exc:
        pytest.fail(f"bricked: {exc}")


class _FaultFs:
    """A SimFileSystem whose every call first passes ``_before(name)``, which may cut the power
    (raise _PowerCut); the subclasses say when."""

    def __init__(self, disk: SimDisk) -> None:
        self._fs = disk.mount()
        self._disk = disk

    def _before(self, name: str) -> None:
        raise NotImplementedError

    def _cut(self, name: str) -> None:
        self._disk.crash(torn=True)
        raise _PowerCut(name)

    def __getattr__(self, name: str) -> object:
        target = getattr(self._fs, name)
        if not callable(target):
            return target

        def call(*args: object, **kwargs: object) -> object:
            self._before(name)
            return target(*args, **kwargs)

        return call


class _Model:
    """What Raft sees, what must survive, and every entry ever written (for log matching)."""

    def __init__(self) -> None:
        self.log: dict[int, Entry] = {}
        self.snap_index = 0
        self.snap_term = 0
        self.term = 1
        self.acked: dict[int, Entry] = {}
        self.acked_snap = 0
        self.pending: list[dict[int, Entry]] = []  # syncs in flight: what each covers
        self.written: dict[tuple[int, int], tuple[Entry, int]] = {}  # (i, t) -> (entry, prev term)

    def last(self) -> int:
        return max(self.log, default=self.snap_index)

    def term_at(self, index: int) -> int:
        if index == self.snap_index:
            return self.snap_term
        return self.log[index].term

    def forget_from(self, start: int) -> None:
        for index in [i for i in self.log if i >= start]:
            del self.log[index]
        for view in [self.acked, *self.pending]:
            for index in [i for i in view if i >= start]:
                del view[index]


def _do_append(log: DurableLog, model: _Model, back: int, count: int, size: int) -> None:
    last = model.last()
    start = max(model.snap_index + 1, last + 1 - back)
    if start <= last:
        model.term += 1
    batch = _sim_entries(start, start + count, model.term, size)
    prev = model.term_at(start - 1)
    model.forget_from(start)
    for entry in batch:
        assert (entry.index, entry.term) not in model.written
        model.written[(entry.index, entry.term)] = (entry, prev)
        prev = entry.term
    model.log.update({e.index: e for e in batch})
    log.append(batch)


def _do_apply_snapshot(log: DurableLog, model: _Model, ahead: int) -> None:
    index = max(model.snap_index, model.last() + ahead)
    if index <= 0:
        return
    model.term += 1
    term = model.term
    model.forget_from(0)
    model.snap_index, model.snap_term = index, term
    log.apply_snapshot(Snapshot(SnapshotMetadata(index, term, CONF), b"follower"))


def _do_save_snapshot(log: DurableLog, model: _Model, back: int) -> None:
    last = model.last()
    if last <= model.snap_index:
        return
    lo = max(model.snap_index + 1, log.first_index())
    index = max(lo, last - back)
    term = model.term_at(index)
    log.save_snapshot(Snapshot(SnapshotMetadata(index, term, CONF), b"local"))
    model.snap_index, model.snap_term = index, term
    model.acked_snap = max(model.acked_snap, index)
    for i in [i for i in model.log if i <= index]:
        del model.log[i]


def _loop_op(draw: st.DrawFn) -> tuple[str, int, int, int]:
    kind = draw(st.sampled_from(["append"] * 6 + ["apply_snapshot", "save_snapshot"]))
    if kind == "append":
        back = draw(st.one_of(st.just(0), st.integers(1, 25)))
        return ("append", back, draw(st.integers(1, 12)), draw(st.sampled_from([150, 700, 1500])))
    if kind == "apply_snapshot":
        return ("apply_snapshot", draw(st.integers(-8, 6)), 0, 0)
    return ("save_snapshot", draw(st.integers(0, 10)), 0, 0)


def _run_loop_op(log: DurableLog, model: _Model, op: tuple[str, int, int, int]) -> None:
    kind, a, b, c = op
    if kind == "append":
        _do_append(log, model, a, b, c)
    elif kind == "apply_snapshot":
        _do_apply_snapshot(log, model, a)
    else:
        _do_save_snapshot(log, model, a)


@st.composite
def _workloads(draw: st.DrawFn) -> list[tuple[object, ...]]:
    ops: list[tuple[object, ...]] = []
    for _ in range(draw(st.integers(3, 16))):
        if draw(st.integers(0, 2)) == 0:
            hooks = []
            for _ in range(draw(st.integers(0, 2))):
                hook_ops = draw(st.lists(st.composite(_loop_op)(), max_size=3))
                hooks.append((draw(st.integers(1, 10)), hook_ops))
            ops.append(("sync", hooks))
        else:
            ops.append(("loop", _loop_op(draw)))
    return ops


def _check_recovered(reopened: DurableLog, model: _Model) -> None:
    snap = reopened.snapshot().metadata
    assert snap.index >= model.acked_snap, (snap.index, model.acked_snap)
    first, last = reopened.first_index(), reopened.last_index()
    for index, entry in sorted(model.acked.items()):
        if index <= snap.index:
            continue
        assert last >= index, ("acked entry lost", index, last)
        assert reopened.entries(index, index + 1) == [entry], ("acked entry changed", index)
    # Raft log matching: every entry is one we wrote, and chains to the entry before it.
    got = reopened.entries(first, last + 1) if last >= first else []
    for entry in got:
        key = (entry.index, entry.term)
        assert key in model.written, ("unknown entry", key)
        written, prev_term = model.written[key]
        assert entry == written, ("entry content differs", key)
        before = entry.index - 1
        if before >= first:
            assert reopened.term(before) == prev_term, ("log matching broken", key, before)
        elif before == snap.index and snap.index > 0:
            assert snap.term == prev_term, ("entry does not follow the snapshot", key)


def _run_workload(
    disk: SimDisk, fs: _InterleavingFs, ops: list[tuple[object, ...]], segment_bytes: int
) -> _Model:
    model = _Model()
    try:
        log = DurableLog(SIM_DIR, fs=fs, segment_bytes=segment_bytes, conf_state=CONF)  # type: ignore[arg-type]
        fs.log = log
        fs.opened_at = len(fs.trace)
        for op in ops:
            if op[0] == "loop":
                _run_loop_op(log, model, op[1])  # type: ignore[arg-type]
                continue
            _, hooks = op
            covers = dict(model.log)
            model.pending.append(covers)
            snap_before = model.snap_index

            def make_hook(k: int, hooks: list = hooks) -> object:  # type: ignore[type-arg]
                def hook() -> None:
                    for hop in hooks[k][1]:  # type: ignore[index]
                        _run_loop_op(log, model, hop)
                    if k + 1 < len(hooks):  # type: ignore[arg-type]
                        fs.hook, fs.hook_at = make_hook(k + 1), hooks[k + 1][0]  # type: ignore[index]

                return hook

            if hooks:
                fs.hook, fs.hook_at = make_hook(0), hooks[0][0]  # type: ignore[index]
            log.sync()
            while fs.hook is not None:  # the sync made fewer calls: run the rest after it
                rest, fs.hook = fs.hook, None
                rest()  # type: ignore[operator]
            model.pending.remove(covers)
            model.acked.update(covers)
            model.acked_snap = max(model.acked_snap, snap_before)
        log.sync()
        model.acked = dict(model.log)
        model.acked_snap = max(model.acked_snap, model.snap_index)
    except _PowerCut:
        pass
    return model


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    ops=_workloads(),
    where=st.integers(0, 999),
    torn=st.sampled_from([True, True, True, False]),
    seed=st.integers(0, 2**16),
    segment_bytes=st.sampled_from([2_500, 9_000]),
)
def test_power_loss_anywhere_with_loop_calls_interleaved_into_sync(
    ops: list[tuple[object, ...]], where: int, torn: bool, seed: int, segment_bytes: int
) -> None:
    """A torn (or plain) power loss at any file operation of a workload of appends (with
    suffix truncations), follower snapshot installs, local snapshots + compaction and syncs,
    where the loop's calls (and save_snapshot) may also run in the middle of a sync, at any of
    its file operations made without a lock held. The reopened log must hold every entry a
    completed sync covered (unless replaced since), and obey Raft log matching."""
    counting = _InterleavingFs(_new_sim_disk(seed), crash_at=10**9, torn=torn)
    _run_workload(counting._disk, counting, ops, segment_bytes)
    # half the time just before (or right after) a sync-type call: where the orders matter
    base, total = counting.opened_at, len(counting.trace)
    syncs = [
        i
        for i, name in enumerate(counting.trace)
        if i >= base and name in ("fdatasync", "fsync", "fsync_dir", "ftruncate")
    ]
    if where % 2 and syncs:
        crash_at = syncs[(where // 4) % len(syncs)] + 1 + (where // 2) % 2
    else:
        crash_at = base + 1 + where * (total - base) // 1000
    disk = _new_sim_disk(seed)
    fs = _InterleavingFs(disk, crash_at=crash_at, torn=torn)
    model = _run_workload(disk, fs, ops, segment_bytes)
    if fs._left > 0:
        disk.crash(torn=torn)
    reopened = DurableLog(SIM_DIR, fs=disk.mount(), segment_bytes=segment_bytes)
    _check_recovered(reopened, model)
    reopened.close()


# -- 3. the gap rule has no counterpart for a gap between the snapshot and the first segment ------


class _CrashAfterDirSyncs(_FaultFs):
    """SimFileSystem that, once ``armed``, loses power (torn) at the first call after the
    ``after``-th ``fsync_dir``."""

    def __init__(self, disk: SimDisk, after: int) -> None:
        super().__init__(disk)
        self._after = after
        self.armed = False

    def _before(self, name: str) -> None:
        if not self.armed:
            return
        if self._after < 0:
            raise _PowerCut(name)  # the process is dead
        if self._after == 0:
            self._after = -1
            self._cut(name)
        if name == "fsync_dir":
            self._after -= 1


@pytest.mark.parametrize("seed", range(20))
def test_power_loss_in_the_sync_after_a_snapshot_install_never_bricks_the_log(seed: int) -> None:
    """A follower installs a snapshot at 20 and appends 21..49 (several new segments); the
    next sync writes the snapshot (fsync_dir), removes the old segments (fsync_dir), fsyncs the
    directory, and a torn power loss hits before the new segments' fdatasync. The first new
    segment's header page may not reach the disk while a later one's does (with the mark this
    sync raised): recovery drops the first and keeps the later one with no previous segment, so
    no gap rule applies, and ``_reconcile_with_snapshot`` raises StorageCorruption ("snapshot at
    index 20 is older than the log start"). Nothing was acknowledged past 20."""
    disk = _new_sim_disk(seed)
    fs = _CrashAfterDirSyncs(disk, after=2)
    log = DurableLog(SIM_DIR, fs=fs, segment_bytes=3_000)  # type: ignore[arg-type]
    log.append(_sim_entries(1, 10, 1, 300))
    log.sync()
    log.apply_snapshot(Snapshot(SnapshotMetadata(20, 2, CONF), b"s"))
    log.append(_sim_entries(21, 50, 2, 300))
    fs.armed = True
    with pytest.raises(_PowerCut):
        log.sync()
    reopened = _reopen_or_fail(disk, 3_000)
    assert reopened.snapshot().metadata.index == 20
    reopened.close()


@pytest.mark.parametrize("seed", range(20))
def test_power_loss_after_a_compaction_never_bricks_the_log(seed: int) -> None:
    """Segments 1..9 synced; 10..49 appended (several new segments, not synced); a local
    snapshot at 9 compacts the first segment away, and the compaction's fsync_dir makes the
    new segments' directory entries durable, not their data. A torn power loss keeps a later
    segment's header but not the one starting at 10: StorageCorruption at reopen."""
    disk = _new_sim_disk(seed)
    fs = _CrashAfterDirSyncs(disk, after=2)  # snapshot file's fsync_dir, then the compaction's
    log = DurableLog(SIM_DIR, fs=fs, segment_bytes=3_000)  # type: ignore[arg-type]
    log.append(_sim_entries(1, 10, 1, 300))
    log.sync()
    log.append(_sim_entries(10, 50, 1, 300))
    assert log.segments()[1].first_index == 10
    fs.armed = True
    log.save_snapshot(Snapshot(SnapshotMetadata(9, 1, CONF), b"local"))
    assert log.first_index() == 10
    with pytest.raises(_PowerCut):
        log.sync()  # the power loss hits at its first file operation
    reopened = _reopen_or_fail(disk, 3_000)
    assert reopened.snapshot().metadata.index == 9
    reopened.close()


# -- 4. a commit index written ahead of the entries it commits, over a truncation -----------------


@pytest.mark.parametrize("hook_at", [1, 2])
def test_commit_index_never_points_at_entries_of_a_lost_truncation(hook_at: int) -> None:
    """Follower: 1..21 durable (term 1). A sync B is in flight (it started for entry 21).
    Meanwhile the loop handles one Ready from a new leader: entries 10..12 of term 2 (a suffix
    truncation) and HardState(term=2, commit=12) -- Raft's follower commits
    min(leaderCommit, last new index) before the entries are persisted. B's ``_flush_state``
    writes that hard state durably (the term changed), though B does not cover 10..12. A
    power loss before the next sync: the new segment's directory entry was never fsynced and
    the cut is not made, so the log comes back with the OLD 10..21 of term 1 -- and commit 12,
    not above the last index, is not clamped: on restart the node applies entries 10..12 of
    term 1, which were never committed (the cluster committed term 2's).

    hook_at=1: the Ready lands before B's fdatasync of the segment (before 0e905d1 that
    fdatasync made the eager ftruncate durable, and this passed; now the cut waits for the
    next sync). hook_at=2: after it (fails before and after 0e905d1)."""
    disk = _new_sim_disk(0)
    fs = _InterleavingFs(disk, crash_at=10**9, torn=False)
    log = DurableLog(SIM_DIR, fs=fs, segment_bytes=100_000)  # type: ignore[arg-type]
    fs.log = log
    log.append(_sim_entries(1, 21, 1, 100))
    log.save_hard_state(HardState(term=1, vote=0, commit=5))
    log.sync()
    log.append(_sim_entries(21, 22, 1, 100))

    def new_leader_ready() -> None:
        log.append(_sim_entries(10, 13, 2, 100))
        log.save_hard_state(HardState(term=2, vote=0, commit=12))

    fs.hook, fs.hook_at = new_leader_ready, hook_at  # at B's n-th unlocked file operation
    log.sync()  # B
    assert fs.hook is None  # it ran inside B
    disk.crash(torn=False)
    reopened = DurableLog(SIM_DIR, fs=disk.mount(), segment_bytes=100_000)
    hs, _ = reopened.initial_state()
    committed = reopened.entries(reopened.first_index(), hs.commit + 1)
    # every entry at or below the stored commit must be one the cluster committed: 1..9 of
    # term 1 and 10..12 of term 2 (the old term-1 entries 10.. never were)
    assert all(e.term == 1 for e in committed if e.index < 10), committed
    assert all(e.term == 2 for e in committed if e.index >= 10), (
        f"commit {hs.commit} covers entries of the truncated branch: "
        f"{[(e.index, e.term) for e in committed if e.index >= 10]}"
    )


# -- 5. a new segment's zero header page before a written-back second page ------------------------


class _CrashAtSync(_FaultFs):
    """SimFileSystem that loses power (torn) just before its ``nth`` fdatasync."""

    def __init__(self, disk: SimDisk, nth: int) -> None:
        super().__init__(disk)
        self._left = nth

    def _before(self, name: str) -> None:
        if self._left <= 0:
            raise _PowerCut(name)  # the process is dead
        if name == "fdatasync":
            self._left -= 1
            if self._left == 0:
                self._cut(name)


@pytest.mark.parametrize("seed", range(30))
def test_torn_new_segment_with_zero_first_page_never_bricks_the_log(seed: int) -> None:
    """Entries 1..4 synced; then 5..14 of 1500 bytes roll into a second segment of several
    4 KiB pages. The sync fsyncs the directory, fdatasyncs the first segment, and the power
    loss hits before the second's fdatasync. A torn writeback may keep the second segment's
    later pages but not its first (zeros): the zero header reads as a *valid* empty frame
    (length 0, CRC32C of nothing is 0; not a "zero-filled tail" because later bytes are not
    zero), and Segment.scan raises "not a replog segment header". Nothing in it was acked."""
    disk = _new_sim_disk(seed)
    fs = _CrashAtSync(disk, nth=2)  # before the second segment's fdatasync
    log = DurableLog(SIM_DIR, fs=fs, segment_bytes=9_000)  # type: ignore[arg-type]
    log.append(_sim_entries(1, 5, 1, 1500))
    log.append(_sim_entries(5, 14, 1, 1500))
    assert len(log.segments()) >= 2
    with pytest.raises(_PowerCut):
        log.sync()
    reopened = _reopen_or_fail(disk, 9_000)
    reopened.close()


@pytest.mark.parametrize("seed", range(20))
def test_power_loss_in_a_fresh_logs_first_sync_never_bricks_the_log(seed: int) -> None:
    """Finding 3 at its simplest (found by the hypothesis test above): a new log, entries 1..2
    in two segments, the first sync fsyncs the directory and the power loss (torn) hits before
    the first fdatasync. Segment 1's header page may be lost while segment 2's survives:
    segment 1 is dropped (header never reached the disk), segment 2 has no previous segment,
    so no continuity rule applies, and reconcile raises "snapshot at index 0 is older than the
    log start 2". Nothing was ever acknowledged."""
    disk = _new_sim_disk(seed)
    fs = _CrashAtSync(disk, nth=1)
    log = DurableLog(SIM_DIR, fs=fs, segment_bytes=2_500)  # type: ignore[arg-type]
    log.append(_sim_entries(1, 3, 1, 1500))
    assert len(log.segments()) == 2
    with pytest.raises(_PowerCut):
        log.sync()
    reopened = _reopen_or_fail(disk, 2_500)
    reopened.close()


# -- 6. a post-snapshot segment's mark raised before the snapshot is durable ----------------------


@pytest.mark.parametrize("seed", range(20))
def test_power_loss_writing_an_installed_snapshot_never_bricks_the_log(seed: int) -> None:
    """Found by the hypothesis test above; pre-existing (fails on 0e905d1~1 too). 1..4
    synced; 5..8 appended (a roll: a new segment). Sync B starts (directory dirty); before its
    fsync_dir the loop installs a leader snapshot at 8 (term 2) and appends 9..10 (term 2) to a
    new segment 9 -- B's fsync_dir makes segment 9's directory entry durable. The next sync C
    writes its ack marks first (segment 9: acked through 10) and only then the snapshot file;
    a torn power loss while the snapshot's temp file is fsynced keeps segment 9's mark page but
    no snapshot. Recovery: old segments 1..8 (term 1), then segment 9 with prev_term 2 and an
    acked mark -- not a gap (the new drop rule does not apply), not covered (no snapshot):
    StorageCorruption ("the previous term is 2, the previous segment ends with term 1")."""
    disk = _new_sim_disk(seed)
    fs = _InterleavingFs(disk, crash_at=10**9, torn=True)
    log = DurableLog(SIM_DIR, fs=fs, segment_bytes=600)  # type: ignore[arg-type]
    fs.log = log
    log.append(_sim_entries(1, 5, 1, 150))
    log.sync()
    log.append(_sim_entries(5, 9, 1, 150))

    def ready() -> None:
        log.apply_snapshot(Snapshot(SnapshotMetadata(8, 2, CONF), b"leader"))
        log.append(_sim_entries(9, 11, 2, 150))

    fs.hook, fs.hook_at = ready, 1
    log.sync()  # B
    assert fs.hook is None

    def power_loss(fd: int) -> None:
        disk.crash(torn=True)
        raise _PowerCut("fsync")

    fs._fs.fsync = power_loss  # type: ignore[method-assign]  # C's first fsync: the snapshot's
    with pytest.raises(Exception):  # noqa: B017 -- whatever the dead mount raises
        log.sync()  # C
    reopened = _reopen_or_fail(disk, 600)
    reopened.close()


# -- 7. old segments past an installed snapshot, left until after it is durable ------------------


@pytest.mark.parametrize("seed", range(20))
def test_power_loss_after_an_installed_snapshot_is_durable_never_bricks_the_log(seed: int) -> None:
    """Pre-existing (fails on 7a5b898 too). 1..12 (term 1) synced in segments 1, 6 and 11:
    acknowledged, their marks sealed. The loop installs a leader's snapshot at 4 (term 2; the
    log conflicts with it) and appends 5 (term 2): new segment 5. The next sync writes the
    snapshot (temp, fsync, rename, fsync_dir: which also makes segment 5's directory entry
    durable), and a torn power loss hits before the old segments' removal: segment 5's
    header page may reach the disk. Recovery: segment 5 starts right after the snapshot, so
    segment 1 (covered) is stale and dropped, but old segment 6 then follows segment 5 with a
    gap (or a term mismatch) and an acknowledged mark: StorageCorruption. Nothing past 4 of
    the old log was ever committed (it conflicts with the snapshot)."""
    disk = _new_sim_disk(seed)
    fs = _CrashAfterDirSyncs(disk, after=1)  # the snapshot file's fsync_dir
    log = DurableLog(SIM_DIR, fs=fs, segment_bytes=9_000)  # type: ignore[arg-type]
    log.append(_sim_entries(1, 13, 1, 1500))
    log.sync()
    assert [s.first_index for s in log.segments()] == [1, 6, 11]
    log.apply_snapshot(Snapshot(SnapshotMetadata(4, 2, CONF), b"leader"))
    log.append(_sim_entries(5, 6, 2, 150))
    fs.armed = True
    with pytest.raises(_PowerCut):
        log.sync()
    reopened = _reopen_or_fail(disk, 9_000)
    model = _Model()
    model.written = {(e.index, e.term): (e, 1) for e in _sim_entries(1, 13, 1, 1500)}
    model.written[(1, 1)] = (model.written[(1, 1)][0], 0)
    model.written[(5, 2)] = (_sim_entries(5, 6, 2, 150)[0], 2)
    _check_recovered(reopened, model)  # log matching: the old branch or the new one, not both
    assert reopened.snapshot().metadata.index == 4  # the crash came after its fsync_dir
    reopened.close()


@pytest.mark.parametrize("seed", range(20))
def test_local_snapshot_over_an_install_in_flight_never_bricks_the_log(seed: int) -> None:
    """The hypothesis example of scenario 2 that found it (seed 0 of this is that example):
    1 (term 1), then 2..12 (term 2, a truncation) in segments 1, 2, 7, 12. Sync B makes them
    durable; at B's 4th unlocked file operation the loop installs a leader's snapshot at 4
    (term 3), and after B sealed segments 1 and 2, it appends 5 (new segment 5) and a worker
    saves a local snapshot at 5 -- durable at once, with a directory fsync that also makes
    segment 5's entry durable, while the old segments wait for the next sync to remove them.
    A torn power loss at the next file operation: recovery restarts the log at segment 5
    (the snapshot covers the older ones) and then finds old segment 7 after a gap, its mark
    sealed by B: StorageCorruption."""
    disk = _new_sim_disk(seed)
    fs = _InterleavingFs(disk, crash_at=10**9, torn=True)
    log = DurableLog(SIM_DIR, fs=fs, segment_bytes=9_000, conf_state=CONF)  # type: ignore[arg-type]
    fs.log = log
    log.append(_sim_entries(1, 3, 1, 150))
    log.append(_sim_entries(2, 13, 2, 1500))
    assert [s.first_index for s in log.segments()] == [1, 2, 7, 12]

    def install() -> None:
        log.apply_snapshot(Snapshot(SnapshotMetadata(4, 3, CONF), b"leader"))
        fs.hook, fs.hook_at = local_snapshot, 4

    def local_snapshot() -> None:
        log.append(_sim_entries(5, 6, 3, 150))
        log.save_snapshot(Snapshot(SnapshotMetadata(5, 3, CONF), b"local"))
        fs._left = 1  # power loss (torn) at the next file operation

    fs.hook, fs.hook_at = install, 4
    with pytest.raises(_PowerCut):
        log.sync()  # B
    reopened = _reopen_or_fail(disk, 9_000)
    assert reopened.snapshot().metadata.index == 5
    assert reopened.last_index() == 5
    reopened.close()


class _CommitBetweenUnlinks(_FaultFs):
    """SimFileSystem that, once ``armed``, makes the directory durable just before the second
    ``unlink`` (a journal commit forced by another thread's fsync on a real filesystem; the
    simulated disk otherwise reverts a directory's unsynced entries all together) and then
    loses power (torn)."""

    def __init__(self, disk: SimDisk) -> None:
        super().__init__(disk)
        self.armed = False
        self.unlinks = 0

    def _before(self, name: str) -> None:
        if self.armed and name == "unlink":
            self.unlinks += 1
            if self.unlinks == 2:
                self._fs.fsync_dir(str(SIM_DIR))
                self._cut(name)


@pytest.mark.parametrize("seed", range(3))
def test_power_loss_between_the_unlinks_of_an_install_never_bricks_the_log(seed: int) -> None:
    """From the review of the fix above (helper-25): the install unlinks the old segments past
    the snapshot at once; lowest first, a journal commit between two unlinks left segment 6
    gone and segment 11 (sealed, acknowledged) in place after 1..5: a gap. Highest first, the
    log recovers as the old log, shorter (the removed entries conflict with the snapshot, so
    none was ever committed)."""
    disk = _new_sim_disk(seed)
    fs = _CommitBetweenUnlinks(disk)
    log = DurableLog(SIM_DIR, fs=fs, segment_bytes=9_000)  # type: ignore[arg-type]
    log.append(_sim_entries(1, 17, 1, 1500))
    log.sync()
    assert [s.first_index for s in log.segments()] == [1, 6, 11, 16]
    fs.armed = True
    with pytest.raises(_PowerCut):
        log.apply_snapshot(Snapshot(SnapshotMetadata(4, 2, CONF), b"leader"))
    reopened = _reopen_or_fail(disk, 9_000)
    assert reopened.first_index() == 1 and reopened.last_index() >= 5
    assert reopened.entries(1, reopened.last_index() + 1) == _sim_entries(
        1, reopened.last_index() + 1, 1, 1500
    )
    reopened.close()
