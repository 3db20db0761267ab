"""DurableLog: the Raft log of one group on disk (segments + hard state + snapshot).

Contract
- Implements ``raft.storage_api.LogStorage`` exactly (reads are synchronous; recent entries
  come from an in-memory tail cache, older ones cost one ``pread``).
- Every file operation goes through the ``FileSystem`` seam (``fs``, raft.storage.fs): the
  system simulation plugs in a filesystem that loses, on a crash, file data not fsynced and
  directory entries (creates, renames, unlinks) not followed by ``fsync_dir``. So durability
  here is always explicit; nothing is durable by accident.
- The event loop never waits on the disk. Called on the loop: ``append`` (suffix truncation,
  segment roll and buffered writes), ``save_hard_state``, ``apply_snapshot`` and the reads.
  They only write into the page cache (pwrite, create, ftruncate, unlink) and record what is
  left to make durable. ``sync()`` -- run by the runtime in a worker thread -- does every
  fsync: the new snapshot file (temp, fsync, rename, fsync dir), each segment written since
  the last sync (after writing its ack mark, see ``segment``), the directory when segments
  were created or removed, the removal of segments a snapshot made obsolete, and the
  ``state`` file (hard state). ``dirty`` says whether any such work is pending.
  ``save_snapshot`` and ``compact`` (local snapshots, retention) run in a worker thread too and
  fsync inline.
- Thread safety: the loop thread, ``sync()`` callers and ``save_snapshot``/``compact`` callers
  may run at once. ``_lock`` guards the segment table, the cache and the pending work (held
  only for in-memory work and buffered writes, never across an fsync); ``_sync_lock``
  serializes syncs (a sync that finds nothing dirty still waits for one already fsyncing);
  ``_hs_lock`` guards the hard-state fields (brief); ``_state_lock`` serializes writes of the
  ``state`` file and ``_snap_lock`` of the ``snapshot`` file (held across I/O; the loop takes
  neither under ``fsync="always"``).

Directory layout: ``state`` (hard state + bootstrap ConfState), ``snapshot``, and segment
files named by their first index (see ``segment``). Small files are replaced atomically.

Durability rules (default ``fsync="always"``): everything is durable once the next ``sync()``
returns, and nothing before.
- Entries: when the sync that follows their append returns.
- A term or vote change (``save_hard_state``): written atomically by the next ``sync()``. The
  Raft core holds back every message that depends on it until the runtime reports that sync
  (``on_persisted``), so a vote is never announced before it is durable (thesis §3.8).
  A change of ``commit`` alone is kept in memory and written lazily -- with the next
  term/vote change, by ``sync()`` at most every ``commit_flush_interval_s`` (1 s), and at
  ``close()``. This is safe because the commit index is volatile state in Raft (thesis §3.8,
  Figure 3.1): a restarted node relearns it; a stale, lower commit only delays applying. At
  open, a commit above the recovered last index is clamped to it (``commit_clamped``).
- A follower's snapshot (``apply_snapshot``): the in-memory log is reset at once; the next
  ``sync()`` writes the snapshot file durably *first*, and only then removes the old segments
  (so a crash never leaves neither the old entries nor the snapshot). Old segments that start
  after the snapshot are removed at once (a suffix truncation: never committed, and left in
  place they would follow the new segments as a gap once the snapshot is durable). New
  segments created meanwhile are fsynced after the snapshot in that same sync.
- A suffix truncation seals the segment it cuts and starts a new segment for the new entries,
  so new frames never overwrite old ones in place. When the cut removes entries a sync's ack
  mark covered, the segment's mark is lowered at once but its file is cut (ftruncate) only by
  the next sync, after an fdatasync made the lowered mark durable, and before any segment's
  mark is raised: a power loss can make a shorter size durable before the page holding the
  mark (seed 2083). Until then recovery finds the old frames past the lowered mark and the
  new segment starting inside them, and drops those frames (``recovery._truncation_not_cut``).
- A roll to a new segment: the old one is fdatasynced by the next sync, with the new one.
- ``fsync="never"``: no fsync at all. Term, vote and snapshots are still *written* (temp +
  rename, no fsync) inside the call that records them (``save_hard_state``,
  ``apply_snapshot``), so they are in the page cache before any message that depends on them
  can leave: a process crash (SIGKILL) keeps the page cache and election safety holds. A
  power loss may lose anything.

Disk errors: any ``OSError`` from a write or a sync makes the log *failed*: that call and every
later append/sync/snapshot call raise ``StorageFailed`` (also an ``OSError``). Nothing is then
reported durable that was not: a failed ``sync()`` raises, and positions are recorded only
after a successful write. The files stay recoverable: a partial frame lies after the ack mark
and is cut as a torn tail at the next open. After a failed fsync the page cache cannot be
trusted (fsyncgate), hence no retry.

Open files: the active segment and segments with unsynced data stay open; other segments are
opened on demand for reads and kept in a small LRU (``open_segments``).

Recovery (at construction): stale temp files are removed; segments entirely covered by the
snapshot are removed (an interrupted compaction or snapshot install); every segment is scanned
(``Segment.scan``). A bad spot after a segment's ack mark was never acknowledged: it is a torn
tail, cut and logged ``torn_tail_truncated``. At or before the mark it is
``StorageCorruption``. A segment that does not continue the log before it (gap, overlap, term)
is dropped (``unacknowledged_segment_dropped``) if nothing in it was ever acknowledged (it was
created by a write no sync completed), or if its mark's durable part does not reach it (a
completed sync covering it would have made everything before it durable: the sync that raised
its mark was interrupted), else ``StorageCorruption``; the first segment likewise if it starts
after a gap following the snapshot. A segment starting inside the previous one past that
one's ack mark is a truncation not yet cut (above). Then the log is reconciled
with the snapshot: a snapshot beyond the log, or one whose (index, term) does not match the
log, resets the log to start after it (thesis §5.3: entries after a matching snapshot point are
kept). Finally what a process crash left only in the page cache is made durable (segments past
their mark's durable part, the directory), since the node will treat it as persisted. See
docs/storage.md for why the ack-mark rule is sound.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from sortedcontainers import SortedDict

from raft.errors import (
    Compacted,
    ConfigError,
    InvariantViolation,
    StorageCorruption,
    StorageFailed,
    Unavailable,
)
from raft.storage.frame import encode_entry
from raft.storage.fs import OS_FS, FileSystem
from raft.storage.hard_state import HardStateFile, remove_stale_temps
from raft.storage.recovery import make_recovered_state_durable, recover_segments
from raft.storage.segment import (
    MARK_OFFSET,
    Segment,
    SegmentInfo,
    encode_mark,
    parse_segment_file_name,
    pwrite_all,
)
from raft.storage.snapshot_file import SnapshotFile
from raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata

FsyncPolicy = Literal["always", "never"]
_StateSnapshot = tuple[HardState, ConfState, bool]
"""(hard state, bootstrap membership, whether a term/vote/membership change was pending)."""

DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_CACHE_BYTES = 8 << 20
"""Tail cache budget: entries this recent are served from memory, no syscall."""
DEFAULT_OPEN_SEGMENTS = 4
"""Closed (read-only) segments kept open after a read, besides the active and unsynced ones."""


def _no_log(event: str, **fields: object) -> None:
    del event, fields


class DurableLog:
    """The durable Raft log of one group. See the module docstring for the contract."""

    def __init__(
        self,
        directory: str | Path,
        *,
        conf_state: ConfState | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: FsyncPolicy = "always",
        logger: Callable[..., None] | None = None,
        commit_flush_interval_s: float = 1.0,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        clock: Callable[[], float] = time.monotonic,
        fs: FileSystem = OS_FS,
        open_segments: int = DEFAULT_OPEN_SEGMENTS,
    ) -> None:
        if fsync not in ("always", "never"):
            raise ConfigError("fsync", fsync, "use 'always' (default) or 'never'")
        if segment_bytes <= 0:
            raise ConfigError("segment_bytes", segment_bytes, "must be > 0 (default 64 MiB)")
        if commit_flush_interval_s < 0:
            raise ConfigError("commit_flush_interval_s", commit_flush_interval_s, "must be >= 0")
        if open_segments < 0:
            raise ConfigError("open_segments", open_segments, "must be >= 0 (default 4)")
        self.directory = Path(directory)
        self._fs = fs
        self._fsync = fsync == "always"
        self._segment_bytes = segment_bytes
        self._cache_max_bytes = cache_bytes
        self._commit_flush_interval_s = commit_flush_interval_s
        self._clock = clock
        self._log = logger if logger is not None else _no_log
        self._max_open = open_segments

        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._hs_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._snap_lock = threading.Lock()
        self._state_dirty = False  # a term/vote/membership change awaits the next sync()
        self._closed = False
        self._failure: StorageFailed | None = None
        self._fsyncs_performed = 0

        self._segments: SortedDict[int, Segment] = SortedDict()
        self._dirty: dict[int, Segment] = {}  # segments with data not yet fdatasynced
        self._dir_dirty = False  # directory entries created/removed since the last sync
        # Segments a suffix truncation cut in memory whose files are still to be cut; sync()
        # makes each one's lowered ack mark durable first (Segment.truncate_from).
        self._pending_cuts: dict[int, tuple[Segment, int]] = {}
        self._lru: OrderedDict[int, Segment] = OrderedDict()  # read-only segments kept open
        self._pending_snapshot: Snapshot | None = None  # to write durably in the next sync
        self._snapshot_written_index = -1  # newest snapshot index written to the file
        # Segment files to remove once the snapshot at the given index is durable.
        self._pending_unlinks: dict[Path, int] = {}
        # (index, term) just before the first entry; used only while there is no segment.
        self._base_index = 0
        self._base_term = 0
        self._cache: deque[Entry] = deque()
        self._cache_lo = 1
        self._cache_size_bytes = 0

        if not fs.is_dir(self.directory):
            fs.makedirs(self.directory)
            if self._fsync:
                fs.fsync_dir(self.directory.parent)
        remove_stale_temps(self.directory, self._log, fs)
        self._state_file = HardStateFile(self.directory, fsync=self._fsync, fs=fs)
        self._snapshot_file = SnapshotFile(self.directory, fsync=self._fsync, fs=fs)
        names = sorted(
            name for name in fs.listdir(self.directory) if parse_segment_file_name(name) is not None
        )
        loaded = self._state_file.load()
        if loaded is None:
            if names or self._snapshot_file.exists():
                raise StorageCorruption(
                    str(self._state_file.path), 0, "state file missing but log files exist"
                )
            bootstrap = conf_state if conf_state is not None else ConfState()
            hard_state = HardState()
            self._state_file.store(hard_state, bootstrap)
            self._log("log_created", directory=str(self.directory))
        else:
            hard_state, bootstrap = loaded
        self._bootstrap = bootstrap
        self._hs = hard_state
        self._hs_written = hard_state
        self._hs_written_at = self._clock()
        self._snapshot = self._snapshot_file.load()
        self._snapshot_written_index = self._snapshot.metadata.index
        try:
            snap_index = -1 if self._snapshot.is_empty() else self._snapshot.metadata.index
            paths = [self.directory / name for name in names]
            for segment in recover_segments(
                fs, self.directory, paths, snap_index, fsync=self._fsync, log=self._log
            ):
                self._segments[segment.first_index] = segment
            self._reconcile_with_snapshot()
            if self._fsync:
                make_recovered_state_durable(fs, self.directory, list(self._segments.values()))
        except BaseException:
            for segment in self._segments.values():
                segment.close()
            raise
        self._cache_lo = self.last_index() + 1
        last = self.last_index()
        if self._hs.commit > last:
            self._log("commit_clamped", stored_commit=self._hs.commit, last_index=last)
            self._hs = HardState(term=self._hs.term, vote=self._hs.vote, commit=last)

    def _reconcile_with_snapshot(self) -> None:
        meta = self._snapshot.metadata
        if not self._segments:
            self._base_index, self._base_term = meta.index, meta.term
            return
        first, last = self._first_index_locked(), self._last_index_locked()
        if meta.index < first - 1:
            raise StorageCorruption(
                str(self._snapshot_file.path),
                0,
                f"snapshot at index {meta.index} is older than the log start {first}: "
                "entries between them are missing",
            )
        if self._snapshot.is_empty():
            return
        if meta.index > last or self._term_locked(meta.index) != meta.term:
            self._log("log_reset_on_open", snapshot_index=meta.index, snapshot_term=meta.term)
            self._reset_locked(meta.index, meta.term, after_snapshot=None)
            if self._fsync:
                self._fs.fsync_dir(self.directory)
            self._dir_dirty = False

    # -- LogStorage (read side) ----------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        conf = self._bootstrap if self._snapshot.is_empty() else self._snapshot.metadata.conf_state
        return self._hs, conf

    def first_index(self) -> int:
        with self._lock:
            return self._first_index_locked()

    def last_index(self) -> int:
        with self._lock:
            return self._last_index_locked()

    def last_term(self) -> int:
        with self._lock:
            return self._last_term_locked()

    def _first_index_locked(self) -> int:
        if self._segments:
            first: int = self._segments.peekitem(0)[1].first_index
            return first
        return self._base_index + 1

    def _last_index_locked(self) -> int:
        if self._segments:
            last: int = self._segments.peekitem(-1)[1].last_index
            return last
        return self._base_index

    def _last_term_locked(self) -> int:
        if self._segments:
            term: int = self._segments.peekitem(-1)[1].last_term
            return term
        return self._base_term

    def term(self, index: int) -> int:
        with self._lock:
            return self._term_locked(index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        with self._lock:
            return self._entries_locked(lo, hi, max_bytes)

    def _entries_locked(self, lo: int, hi: int, max_bytes: int | None) -> list[Entry]:
        first, last = self._first_index_locked(), self._last_index_locked()
        if lo < first:
            raise Compacted(lo, first)
        if hi > last + 1:
            raise Unavailable(hi - 1, last)
        if lo > hi:
            raise ValueError(f"entries({lo}, {hi}): lo must not exceed hi")
        result: list[Entry] = []
        used = 0
        index = lo
        disk_hi = min(hi, self._cache_lo)
        while index < disk_hi:
            segment = self._segment_for(index)
            want_hi = min(disk_hi, segment.last_index + 1)
            budget = None if max_bytes is None else max_bytes - used
            with self._io("read"):
                self._open_for_read(segment)
                got = segment.read(index, want_hi, budget, need_one=not result)
            result.extend(got)
            used += sum(entry.size() for entry in got)
            index += len(got)
            if index < want_hi:
                return result  # byte budget exhausted
        while index < hi:
            entry = self._cache[index - self._cache_lo]
            size = entry.size()
            if max_bytes is not None and result and used + size > max_bytes:
                break
            result.append(entry)
            used += size
            index += 1
        return result

    def cached_from(self) -> int:
        """The first index ``entries`` serves from memory (no disk read); everything from it
        to the last index is cached. A racy read is fine: it only picks the fast path."""
        return self._cache_lo

    def snapshot(self) -> Snapshot:
        if self._snapshot.is_empty():
            # Never compacted: the "bootstrap snapshot" at index 0 carries the initial
            # membership, which is what a node added later with empty storage needs.
            return Snapshot(SnapshotMetadata(0, 0, self._bootstrap))
        return self._snapshot

    # -- write side (event loop: buffered only) -------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Store ``entries``, replacing any stored entries from ``entries[0].index`` on.

        Buffered: durable after the next ``sync()``. Raises ``InvariantViolation`` for a
        truncation below ``first_index()`` or at/below the snapshot index (committed
        entries), a gap after ``last_index()``, or entries that are not consecutive;
        ``StorageFailed`` if a write fails (the log is then failed)."""
        if not entries:
            return
        start = entries[0].index
        for offset, entry in enumerate(entries):
            if entry.index != start + offset:
                raise InvariantViolation(
                    "entries to append are not consecutive",
                    expected=start + offset,
                    actual=entry.index,
                    likely_cause="the caller built a batch with a hole or out of order",
                )
        with self._lock:
            self._check_usable()
            first, last = self._first_index_locked(), self._last_index_locked()
            if start < first:
                raise InvariantViolation(
                    "append truncates below the first index",
                    expected=f"first entry index >= {first}",
                    actual=start,
                    likely_cause="a conflicting entry was already compacted into a snapshot: "
                    "a committed entry is being overwritten",
                )
            snap_index = self._snapshot.metadata.index
            if start <= min(snap_index, last):
                raise InvariantViolation(
                    "append rewrites entries covered by the snapshot",
                    expected=f"first entry index > {snap_index} (or == {last + 1})",
                    actual=start,
                    likely_cause="entries up to a snapshot are committed and never replaced; "
                    "the leader's log diverges from a committed prefix",
                )
            if start > last + 1:
                raise InvariantViolation(
                    "append leaves a gap",
                    expected=f"first entry index <= {last + 1}",
                    actual=start,
                    likely_cause="entries were appended without the ones before them",
                )
            try:
                if start <= last:
                    self._truncate_suffix_locked(start)
                self._write_locked(entries)
            except OSError as exc:
                raise self._fail("append", exc) from exc
            self._cache_add(entries)

    def save_hard_state(self, hs: HardState) -> None:
        """Record ``hs``. Under ``fsync="always"`` a term or vote change is durable once the
        next ``sync()`` returns (not on return: the loop never waits on the disk); the Raft
        core holds back every message depending on it until then. Under ``"never"`` a term
        or vote change is written (no fsync) before this returns. A commit-only change is
        written lazily (module docstring, thesis §3.8)."""
        with self._hs_lock:
            self._check_usable()
            self._hs = hs
            written = self._hs_written
            changed = hs.term != written.term or hs.vote != written.vote
            if changed:
                self._state_dirty = True
        if changed and not self._fsync:
            self._flush_state()

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Install a leader's snapshot (follower): drop every entry; the log restarts at
        ``snap.metadata.index + 1``. Buffered: the snapshot file is written and the old
        segments removed by the next ``sync()``, in that order (under ``"never"``: before
        this returns)."""
        meta = snap.metadata
        if meta.index == 0:
            # A bootstrap snapshot (see snapshot()): adopt its membership, keep the log.
            with self._hs_lock:
                self._check_usable()
                self._bootstrap = meta.conf_state
                self._state_dirty = True
            self._log("bootstrap_membership_adopted", voters=sorted(meta.conf_state.voters))
            if not self._fsync:
                self._flush_state()
            return
        with self._lock:
            self._check_usable()
            if meta.index < self._snapshot.metadata.index:
                raise InvariantViolation(
                    "installing an out-of-date snapshot",
                    expected=f"snapshot index >= {self._snapshot.metadata.index}",
                    actual=meta.index,
                    likely_cause="a stale InstallSnapshot was not rejected by the core",
                )
            self._snapshot = snap
            self._pending_snapshot = snap
            self._log("snapshot_applied", index=meta.index, term=meta.term)
            with self._io("apply_snapshot"):
                self._reset_locked(meta.index, meta.term, after_snapshot=meta.index)
        if not self._fsync:
            self._flush_snapshot_and_unlinks()

    # -- worker-thread calls (may fsync) ---------------------------------------------------

    def save_snapshot(self, snap: Snapshot) -> None:
        """Store a snapshot taken locally (durably, before this returns), then compact the
        log up to it (or reset the log if the snapshot lies beyond ``last_index()``).
        Blocking: call it from a worker thread; safe alongside the loop's calls."""
        meta = snap.metadata
        with self._lock:
            self._check_usable()
            first, last = self._first_index_locked(), self._last_index_locked()
            if meta.index < first - 1:
                raise InvariantViolation(
                    "snapshot older than the log start",
                    expected=f"snapshot index >= {first - 1}",
                    actual=meta.index,
                    likely_cause="an outdated snapshot was saved after a newer compaction",
                )
            if meta.index <= last and self._term_locked(meta.index) != meta.term:
                raise InvariantViolation(
                    "snapshot does not match the log",
                    expected=f"term {self._term_locked(meta.index)} at index {meta.index}",
                    actual=meta.term,
                    likely_cause="the snapshot was taken from another log; followers install "
                    "a leader's snapshot with apply_snapshot()",
                )
        self._write_snapshot_file(snap, "save_snapshot")
        with self._lock:
            self._check_usable()
            if meta.index >= self._snapshot.metadata.index:
                self._snapshot = snap
            self._log("snapshot_saved", index=meta.index, term=meta.term)
            with self._io("save_snapshot"):
                if meta.index > self._last_index_locked():
                    removed = self._reset_locked(meta.index, meta.term, after_snapshot=None)
                else:
                    removed = self._compact_locked(meta.index)
        if removed:
            self._fsync_dir("save_snapshot")

    def compact(self, index: int) -> None:
        """Drop whole segments (never the last one) whose entries are all <= ``index``.

        A snapshot at >= ``index`` must already be saved. Afterwards ``first_index()`` is
        the first index still stored, which may be <= index + 1. Blocking (fsyncs the
        directory): call it from a worker thread."""
        with self._lock:
            self._check_usable()
            snap_index = self._snapshot_written_index
            if snap_index < index:
                raise InvariantViolation(
                    "compaction beyond the snapshot",
                    expected=f"a saved snapshot at index >= {index}",
                    actual=f"snapshot at {snap_index}",
                    likely_cause="compact() called before save_snapshot()",
                )
            with self._io("compact"):
                removed = self._compact_locked(index)
        if removed:
            self._fsync_dir("compact")

    def segments(self) -> list[SegmentInfo]:
        with self._lock:
            return [segment.info() for segment in self._segments.values()]

    @property
    def dirty(self) -> bool:
        """Whether work awaits ``sync()``: data, directory entries, a hard state change, a
        snapshot to write or segments to remove (everything the loop-side calls deferred)."""
        return (
            bool(self._dirty)
            or self._dir_dirty
            or self._state_dirty
            or self._pending_snapshot is not None
            or bool(self._pending_unlinks)
        )

    @property
    def failed(self) -> StorageFailed | None:
        """The failure that stopped this log, or None."""
        return self._failure

    @property
    def fsyncs_performed(self) -> int:
        """Number of fdatasync calls ``sync()`` has made on segment files."""
        return self._fsyncs_performed

    def sync(self) -> None:
        """Make everything recorded before this call durable (blocking; from a worker thread,
        while the loop keeps appending). Raises ``StorageFailed`` (and fails the log) if any
        write or sync fails: then nothing of it may be reported durable."""
        with self._sync_lock:
            while True:
                with self._lock:
                    self._check_usable()
                    cuts = self._take_pending_cuts_locked()
                    if not cuts:
                        dir_dirty, fds, marked = self._begin_sync_locked()
                        # The hard state as of now: its commit index refers to entries
                        # recorded before this point, which this sync makes durable. A later
                        # one may name entries it does not cover (a truncation's new branch
                        # still in flight), so it waits for the sync that covers them.
                        with self._hs_lock:
                            state = (self._hs, self._bootstrap, self._state_dirty)
                        break
                # Outside the lock: the loop may truncate again meanwhile, and the next round
                # takes that cut too. No segment's ack mark is raised until no cut is pending.
                self._complete_cuts(cuts)
            try:
                self._flush_snapshot_and_unlinks()
                # Directory entries before segment data: a segment removed by a suffix
                # truncation must be durably gone before the cut of the segment before it is
                # durable (else a power loss could leave an acknowledged segment behind a
                # gap). New segments' entries may become durable first: until their data
                # is synced their ack mark says "nothing acknowledged" and recovery drops them.
                if dir_dirty and self._fsync:
                    self._fsync_dir("sync")
                with self._io("sync"):
                    for fd in fds:
                        self._fs.fdatasync(fd)
                        self._fsyncs_performed += 1
                    # A rolled segment gets no more data, so no later sync would raise its
                    # mark's durable part: seal it now (one more fdatasync per segment roll),
                    # so damage anywhere in a rolled segment is always loud. Under the lock: a
                    # truncation since this sync's marks were written lowered the mark, and
                    # this stale one must not overwrite it (Segment.truncate_from).
                    for (segment, acked_through), fd in zip(marked, fds):
                        with self._lock:
                            if self._is_active(segment) or segment.mark != acked_through:
                                continue
                            pwrite_all(
                                self._fs,
                                fd,
                                encode_mark(acked_through, acked_through),
                                MARK_OFFSET,
                            )
                        self._fs.fdatasync(fd)
                        with self._lock:
                            if segment.mark == acked_through:
                                segment.mark_on_disk_durable = acked_through
                with self._lock:
                    for segment, acked_through in marked:
                        segment.on_synced(acked_through)
            finally:
                for fd in fds:
                    self._fs.close(fd)
            self._flush_state(state)
            self._maybe_flush_commit(force=False, state=state)

    def _take_pending_cuts_locked(self) -> list[tuple[Segment, int, int]]:
        """(segment, dup'ed fd, offset) of every file cut a suffix truncation left pending."""
        cuts: list[tuple[Segment, int, int]] = []
        try:
            for segment, offset in self._pending_cuts.values():
                cuts.append((segment, self._fs.dup(segment.ensure_open()), offset))
        except OSError as exc:
            for _, fd, _ in cuts:
                self._fs.close(fd)
            raise self._fail("sync", exc) from exc
        self._pending_cuts.clear()
        return cuts

    def _complete_cuts(self, cuts: list[tuple[Segment, int, int]]) -> None:
        """Cut the files of truncated segments, each only after its lowered ack mark is
        durable (Segment.truncate_from says why). Segments the truncation removed go first:
        they must be durably gone before a cut of the segment before them can be durable, or
        a power loss could leave an acknowledged segment behind a gap."""
        try:
            self._fsync_dir("sync")
            with self._io("sync"):
                for _, fd, offset in cuts:
                    self._fs.fdatasync(fd)
                    self._fsyncs_performed += 1
                    self._fs.ftruncate(fd, offset)
        finally:
            for _, fd, _ in cuts:
                self._fs.close(fd)
        for segment, _, offset in cuts:
            self._log("truncated_segment_cut", path=str(segment.path), offset=offset)

    def _begin_sync_locked(self) -> tuple[bool, list[int], list[tuple[Segment, int]]]:
        """Take the dirty segments and write their ack marks (buffered): (whether the
        directory is dirty, a dup'ed fd per segment to fdatasync, (segment, mark) each)."""
        to_sync = list(self._dirty.values())
        self._dirty.clear()
        dir_dirty = self._dir_dirty
        self._dir_dirty = False
        fds: list[int] = []
        marked: list[tuple[Segment, int]] = []
        try:
            if self._fsync:
                for segment in to_sync:
                    # The ack mark first: once this sync returns, the mark on disk is
                    # >= every index of the segment it covers (segment docstring).
                    segment.write_mark(segment.last_index)
                    marked.append((segment, segment.last_index))
                    fds.append(self._fs.dup(segment.fd))
            for segment in to_sync:
                self._retire_locked(segment)
        except OSError as exc:
            for fd in fds:
                self._fs.close(fd)
            raise self._fail("sync", exc) from exc
        return dir_dirty, fds, marked

    def close(self) -> None:
        """Sync, write a pending commit, close files. Idempotent."""
        if self._closed:
            return
        try:
            if self._failure is None:
                self.sync()
                self._maybe_flush_commit(force=True)
                self._seal_marks()
        finally:
            with self._lock:
                for segment in self._segments.values():
                    segment.close()
                self._lru.clear()
                self._closed = True

    def _seal_marks(self) -> None:
        """Clean close: every segment's mark says its synced entries are durable (a running log
        lags one sync behind; see segment.py), so recovery after a clean stop reports any
        damage to them as corruption."""
        if not self._fsync:
            return
        with self._lock:
            for segment in self._segments.values():
                if segment.mark_on_disk_durable >= segment.mark or segment.durable_mark < (
                    segment.mark
                ):
                    continue  # already sealed, or not everything marked was synced
                with self._io("sync"):
                    segment.ensure_open()
                    segment.write_mark(segment.mark)
                    self._fs.fdatasync(segment.fd)

    def __enter__(self) -> DurableLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals (callers hold _lock unless noted) --------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError(f"log {self.directory} is closed")
        failure = self._failure
        if failure is not None:
            raise StorageFailed(
                str(self.directory), "an earlier " + failure.operation, failure.error
            )

    def _fail(self, operation: str, exc: OSError) -> StorageFailed:
        """Mark the log failed (first failure wins) and return the error to raise."""
        if isinstance(exc, StorageFailed):
            return exc
        error = StorageFailed(str(self.directory), operation, exc)
        if self._failure is None:
            self._failure = error
            self._log("storage_failed", directory=str(self.directory), operation=operation,
                      error=str(exc))  # fmt: skip
        return error

    @contextmanager
    def _io(self, operation: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise self._fail(operation, exc) from exc

    def _fsync_dir(self, operation: str) -> None:
        """Any thread, no lock held."""
        if not self._fsync:
            return
        with self._io(operation):
            self._fs.fsync_dir(self.directory)

    def _segment_for(self, index: int) -> Segment:
        position = self._segments.bisect_right(index) - 1
        segment: Segment = self._segments.peekitem(position)[1]
        return segment

    def _is_active(self, segment: Segment) -> bool:
        return bool(self._segments) and self._segments.peekitem(-1)[1] is segment

    def _open_for_read(self, segment: Segment) -> None:
        segment.ensure_open()
        if self._is_active(segment) or segment.first_index in self._dirty:
            return
        self._lru[segment.first_index] = segment
        self._lru.move_to_end(segment.first_index)
        self._trim_lru_locked()

    def _retire_locked(self, segment: Segment) -> None:
        """A segment just synced: keep it open only if active or in the read LRU."""
        if self._is_active(segment) or segment.first_index in self._dirty:
            return
        if self._segments.get(segment.first_index) is not segment:
            return  # removed meanwhile (already closed)
        if segment.first_index not in self._lru:
            segment.close()

    def _trim_lru_locked(self) -> None:
        while len(self._lru) > self._max_open:
            _, old = self._lru.popitem(last=False)
            if not self._is_active(old) and old.first_index not in self._dirty:
                old.close()

    def _drop_segment_locked(self, segment: Segment, *, unlink: bool) -> None:
        self._dirty.pop(segment.first_index, None)
        self._pending_cuts.pop(segment.first_index, None)
        self._lru.pop(segment.first_index, None)
        if unlink:
            segment.remove()
        else:
            segment.close()

    def _term_locked(self, index: int) -> int:
        cache_offset = index - self._cache_lo
        if 0 <= cache_offset < len(self._cache):
            return self._cache[cache_offset].term
        first, last = self._first_index_locked(), self._last_index_locked()
        if index == first - 1:
            if self._segments:
                prev_term: int = self._segments.peekitem(0)[1].prev_term
                return prev_term
            return self._base_term
        if index < first - 1:
            raise Compacted(index, first)
        if index > last:
            raise Unavailable(index, last)
        return self._segment_for(index).term_at(index)

    def _truncate_suffix_locked(self, start: int) -> None:
        """Buffered. New entries go to a new segment (the cut one is sealed), never over old
        frames in place; the file itself is cut by the next sync, after the lowered ack mark
        is durable (module docstring, "suffix truncation")."""
        if self._segments:
            head = self._segments.peekitem(0)[1]
            self._base_index, self._base_term = head.first_index - 1, head.prev_term
        removed = 0
        while self._segments and self._segments.peekitem(-1)[1].first_index >= start:
            _, segment = self._segments.popitem(-1)
            self._drop_segment_locked(segment, unlink=True)
            removed += 1
        if self._segments:
            tail = self._segments.peekitem(-1)[1]
            if tail.last_index >= start:
                tail.ensure_open()
                cut_at = tail.truncate_from(start, cut_file=not self._fsync)
                if cut_at is not None:
                    self._pending_cuts[tail.first_index] = (tail, cut_at)
                self._dirty[tail.first_index] = tail
        if removed:
            self._dir_dirty = True
        if start < self._cache_lo:
            self._cache.clear()
            self._cache_size_bytes = 0
            self._cache_lo = start
        else:
            while len(self._cache) > start - self._cache_lo:
                self._cache_size_bytes -= self._cache.pop().size()
        self._log("log_truncated", from_index=start, segments_removed=removed)

    def _write_locked(self, entries: Sequence[Entry]) -> None:
        segment = self._segments.peekitem(-1)[1] if self._segments else None
        if segment is not None and segment.sealed:
            self._roll_locked(segment)
            segment = None
        last_term = self._last_term_locked()
        frames: list[bytes] = []
        terms: list[int] = []
        pending_bytes = 0
        for entry in entries:
            frame = encode_entry(entry)
            if segment is None:
                segment = self._new_segment_locked(entry.index, last_term)
            elif (
                segment.entry_count() + len(frames) > 0
                and segment.size_bytes + pending_bytes + len(frame) > self._segment_bytes
            ):
                if frames:
                    self._dirty[segment.first_index] = segment
                    segment.ensure_open()
                    segment.append(frames, terms)
                    frames, terms, pending_bytes = [], [], 0
                self._roll_locked(segment)
                segment = self._new_segment_locked(entry.index, last_term)
            frames.append(frame)
            terms.append(entry.term)
            pending_bytes += len(frame)
            last_term = entry.term
        if segment is not None and frames:
            self._dirty[segment.first_index] = segment
            segment.ensure_open()  # the tail may have been closed while it was not active
            segment.append(frames, terms)

    def _roll_locked(self, segment: Segment) -> None:
        # No fsync here (the loop never waits on the disk): the old segment stays dirty and
        # the next sync fdatasyncs it together with the new one and the directory.
        if segment.fd >= 0 and segment.first_index not in self._dirty:
            self._lru[segment.first_index] = segment
            self._trim_lru_locked()
        self._log(
            "segment_rolled",
            path=str(segment.path),
            last_index=segment.last_index,
            size_bytes=segment.size_bytes,
        )

    def _new_segment_locked(self, first_index: int, prev_term: int) -> Segment:
        path = self.directory / f"{first_index:020d}.log"
        if path in self._pending_unlinks:
            # An old segment of a reset awaiting the snapshot's sync has this name. Its
            # entries (and those of every later old segment) are past the snapshot and
            # conflict with it, so they were never committed: removing them now is a plain
            # suffix truncation, safe in any crash order.
            for other, _ in list(self._pending_unlinks.items()):
                other_first = parse_segment_file_name(other.name) or 0
                if other_first >= first_index:
                    del self._pending_unlinks[other]
                    try:
                        self._fs.unlink(other)
                    except FileNotFoundError:
                        pass
        segment = Segment.create(self._fs, self.directory, first_index, prev_term)
        self._segments[first_index] = segment
        self._dirty[first_index] = segment
        self._dir_dirty = True
        return segment

    def _compact_locked(self, index: int) -> int:
        dropped = 0
        while len(self._segments) > 1 and self._segments.peekitem(0)[1].last_index <= index:
            _, segment = self._segments.popitem(0)
            self._drop_segment_locked(segment, unlink=True)
            dropped += 1
        if not dropped:
            return 0
        first = self._first_index_locked()
        while self._cache and self._cache_lo < first:
            self._cache_size_bytes -= self._cache.popleft().size()
            self._cache_lo += 1
        self._log(
            "segments_compacted",
            up_to_index=index,
            segments_removed=dropped,
            first_index=first,
        )
        return dropped

    def _reset_locked(self, index: int, term: int, *, after_snapshot: int | None) -> int:
        """Drop every segment. With ``after_snapshot`` the files of segments that start at or
        before that index are removed only once the snapshot at that index is durable (by
        ``sync()``); the others, and all of them without it, at once (the caller or the next
        sync fsyncs the directory).

        A segment starting after the snapshot holds only entries past it. The core installs a
        snapshot only when its log lacks the snapshot's (index, term), so by log matching none
        of them was ever committed: removing them at once is a plain suffix truncation, safe in
        any crash order as long as it removes the highest first (as ``_truncate_suffix_locked``
        does: a journal commit between two unlinks must leave a shorter log, never a gap before
        a sealed segment). Waiting for the snapshot is not: once the snapshot file is durable
        (its own fsync_dir, or a ``save_snapshot`` meanwhile), recovery restarts the log at the
        new segment starting right after it (the older ones are covered) and an old,
        acknowledged segment after that one is a gap it must refuse (StorageCorruption after a
        power loss between the snapshot's rename and the removal)."""
        removed = len(self._segments)
        unlinked_now = False
        for segment in reversed(self._segments.values()):  # highest first: see above
            if after_snapshot is not None and segment.first_index <= after_snapshot:
                self._drop_segment_locked(segment, unlink=False)
                self._pending_unlinks[segment.path] = after_snapshot
            else:
                self._drop_segment_locked(segment, unlink=True)
                unlinked_now = True
        self._segments.clear()
        self._dirty.clear()
        self._lru.clear()
        if unlinked_now:
            self._dir_dirty = True
        self._base_index, self._base_term = index, term
        self._cache.clear()
        self._cache_size_bytes = 0
        self._cache_lo = index + 1
        self._log("log_reset", index=index, term=term, segments_removed=removed)
        return removed

    def _cache_add(self, entries: Sequence[Entry]) -> None:
        if not self._cache:
            self._cache_lo = entries[0].index
        for entry in entries:
            self._cache.append(entry)
            self._cache_size_bytes += entry.size()
        while self._cache and self._cache_size_bytes > self._cache_max_bytes:
            self._cache_size_bytes -= self._cache.popleft().size()
            self._cache_lo += 1

    # -- small files (no _lock held) --------------------------------------------------------

    def _write_snapshot_file(self, snap: Snapshot, operation: str) -> None:
        """Write ``snap`` to the snapshot file (durably under "always") unless a newer one
        is already written. Serialized by ``_snap_lock``."""
        with self._snap_lock:
            if snap.metadata.index < self._snapshot_written_index:
                return
            with self._io(operation):
                self._snapshot_file.store(snap)
            self._snapshot_written_index = snap.metadata.index

    def _flush_snapshot_and_unlinks(self) -> None:
        """The pending snapshot first, then the segments it made obsolete (sync order)."""
        with self._lock:
            snap = self._pending_snapshot
            self._pending_snapshot = None
        if snap is not None:
            self._write_snapshot_file(snap, "write snapshot")
        with self._lock:
            ready = [
                path
                for path, needs in self._pending_unlinks.items()
                if needs <= self._snapshot_written_index
            ]
            with self._io("remove segments"):
                for path in ready:
                    del self._pending_unlinks[path]
                    try:
                        self._fs.unlink(path)
                    except FileNotFoundError:
                        pass
        if ready:
            self._fsync_dir("remove segments")

    def _flush_state(self, state: _StateSnapshot | None = None) -> None:
        """Write the ``state`` file if a term/vote/membership change is pending (as of
        ``state``, taken when a sync began; the latest if None)."""
        if state is None:
            with self._hs_lock:
                if not self._state_dirty:
                    return
        elif not state[2]:
            return
        self._write_state(state)

    def _write_state(self, state: _StateSnapshot | None = None) -> None:
        with self._state_lock:
            with self._hs_lock:
                if state is None:
                    state = (self._hs, self._bootstrap, self._state_dirty)
                hs, bootstrap, _ = state
                # A term/vote/membership change made after ``state`` was taken stays pending.
                self._state_dirty = (self._hs.term, self._hs.vote, self._bootstrap) != (
                    hs.term,
                    hs.vote,
                    bootstrap,
                )
            try:
                self._state_file.store(hs, bootstrap)
            except OSError as exc:
                raise self._fail("write state", exc) from exc
            with self._hs_lock:
                self._hs_written = hs
                self._hs_written_at = self._clock()

    def _maybe_flush_commit(self, *, force: bool, state: _StateSnapshot | None = None) -> None:
        with self._hs_lock:
            hs = self._hs if state is None else state[0]
            if hs == self._hs_written:
                return
            due = self._clock() - self._hs_written_at >= self._commit_flush_interval_s
            if not (force or due):
                return
        self._write_state(state)


__all__ = ["DEFAULT_CACHE_BYTES", "DEFAULT_SEGMENT_BYTES", "DurableLog", "FsyncPolicy"]
