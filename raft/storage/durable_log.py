"""DurableLog: the Raft log of one group on disk (segments + hard state + snapshot).

Contract
- Implements ``raft.storage_api.LogStorage`` exactly (reads are synchronous; recent entries
  come from an in-memory tail cache, older ones cost one ``os.pread``).
- Write side, called from the runtime's event-loop thread: ``append`` (suffix truncation +
  buffered write), ``save_hard_state``, ``save_snapshot``, ``apply_snapshot``, ``compact``.
  ``append`` does not fsync: data reaches the OS page cache and becomes durable at the next
  ``sync()``, which a worker thread (``GroupCommitter`` or the runtime's pool) may call
  while appends continue. ``sync()`` covers every append that returned before it was called.
- Nothing here uses asyncio. Thread safety: one writer thread plus any number of ``sync()``
  callers. ``_lock`` guards the segment table and the dirty set (held only for in-memory
  work and buffered writes); ``_sync_lock`` serializes syncs, so a sync that finds nothing
  dirty still waits for one already fsyncing (otherwise it would return too early);
  ``_hs_lock`` serializes writes of the ``state`` file.

Directory layout: ``state`` (hard state + bootstrap ConfState), ``snapshot``, and segment
files named by their first index (see ``segment``). Small files are replaced atomically.

Durability rules (default ``fsync="always"``)
- A term or vote change is durable when the next ``sync()`` returns (temp file, fsync,
  rename, fsync dir, done inside ``sync()`` so the event-loop thread never waits on the disk);
  the Raft core holds back every message that depends on it until the runtime reports that
  sync (``on_persisted``), so a vote is never announced before it is durable (thesis §3.8).
  A change of ``commit`` alone is kept in
  memory and written lazily -- with the next term/vote change, by ``sync()`` at most every
  ``commit_flush_interval_s`` (1 s), and at ``close()``. This is safe because the commit
  index is volatile state in Raft (thesis §3.8, Figure 3.1): a restarted node relearns it
  from the leader; a stale, lower commit only delays applying. At open, a commit above the
  recovered last index (possible when a term change persisted a commit whose entries were
  not yet synced) is clamped to it and logged as ``commit_clamped``.
- Rare structural changes are made durable synchronously, so recovery never sees a mix of
  old and new layouts: a suffix truncation that rewrites stored entries fdatasyncs the cut
  segment (and the directory if whole segments went), deleting segments (compaction,
  snapshot reset) fsyncs the directory, and rolling to a new segment fdatasyncs the old one
  first (once per ``segment_bytes``). This is what lets recovery treat a bad frame in any
  segment but the last as corruption rather than a torn write.
- ``fsync="never"``: no fsync at all (writes are acknowledged once in the page cache). For
  benchmarks and as the chaos suite's negative control; a crash may then lose anything and
  even leave damage recovery reports as corruption.

Recovery (at construction): stale temp files are removed; every segment is validated
(``Segment.recover``: torn tail of the last segment cut and logged ``torn_tail_truncated``,
anything else raises ``StorageCorruption``); segments must be contiguous (no gap, no overlap,
each header's ``prev_term`` equal to the previous segment's last term). Then the log is
reconciled with the snapshot, as after an interrupted ``save_snapshot``/``apply_snapshot``:
a snapshot beyond the log, or one whose (index, term) does not match the log, resets the
log to start after it (thesis §5.3: entries after a matching snapshot point are kept).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from sortedcontainers import SortedDict

from raft.errors import (
    Compacted,
    ConfigError,
    InvariantViolation,
    StorageCorruption,
    Unavailable,
)
from raft.storage.frame import encode_entry
from raft.storage.hard_state import HardStateFile, fsync_dir, remove_stale_temps
from raft.storage.segment import (
    SEGMENT_SUFFIX,
    Segment,
    SegmentInfo,
    parse_segment_file_name,
)
from raft.storage.snapshot_file import SnapshotFile
from raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata

FsyncPolicy = Literal["always", "never"]

DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_CACHE_BYTES = 8 << 20
"""Tail cache budget: entries this recent are served from memory, no syscall."""


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
    ) -> None:
        if fsync not in ("always", "never"):
            raise ConfigError("fsync", fsync, "use 'always' (default) or 'never'")
        if segment_bytes <= 0:
            raise ConfigError("segment_bytes", segment_bytes, "must be > 0 (default 64 MiB)")
        if commit_flush_interval_s < 0:
            raise ConfigError("commit_flush_interval_s", commit_flush_interval_s, "must be >= 0")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync == "always"
        self._segment_bytes = segment_bytes
        self._cache_max_bytes = cache_bytes
        self._commit_flush_interval_s = commit_flush_interval_s
        self._clock = clock
        self._log = logger if logger is not None else _no_log

        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._hs_lock = threading.Lock()
        self._vote_dirty = False  # a term/vote change awaits the next sync()
        self._closed = False
        self._failure: OSError | None = None
        self._fsyncs_performed = 0

        self._segments: SortedDict[int, Segment] = SortedDict()
        self._dirty: dict[int, Segment] = {}
        self._dir_dirty = False
        # (index, term) just before the first entry; used only while there is no segment.
        self._base_index = 0
        self._base_term = 0
        self._cache: deque[Entry] = deque()
        self._cache_lo = 1
        self._cache_size_bytes = 0

        remove_stale_temps(self.directory, self._log)
        self._state_file = HardStateFile(self.directory, fsync=self._fsync)
        self._snapshot_file = SnapshotFile(self.directory, fsync=self._fsync)
        segment_paths = sorted(self.directory.glob("*" + SEGMENT_SUFFIX))
        loaded = self._state_file.load()
        if loaded is None:
            if segment_paths or self._snapshot_file.path.exists():
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
        try:
            self._recover_segments(segment_paths)
            self._reconcile_with_snapshot()
        except BaseException:
            for segment in self._segments.values():
                segment.close()
            raise
        self._cache_lo = self.last_index() + 1
        last = self.last_index()
        if self._hs.commit > last:
            self._log("commit_clamped", stored_commit=self._hs.commit, last_index=last)
            self._hs = HardState(term=self._hs.term, vote=self._hs.vote, commit=last)

    # -- recovery ------------------------------------------------------------------------

    def _recover_segments(self, paths: list[Path]) -> None:
        previous: Segment | None = None
        for position, path in enumerate(paths):
            if parse_segment_file_name(path.name) is None:
                continue
            segment = Segment.recover(
                path, is_last=position == len(paths) - 1, fsync=self._fsync, logger=self._log
            )
            if segment is None:
                continue
            self._segments[segment.first_index] = segment
            if previous is not None:
                if segment.first_index != previous.last_index + 1:
                    raise StorageCorruption(
                        str(path),
                        0,
                        f"segment starts at index {segment.first_index} but the previous one "
                        f"ends at {previous.last_index} (gap or overlap)",
                    )
                if segment.prev_term != previous.last_term:
                    raise StorageCorruption(
                        str(path),
                        0,
                        f"segment header says the previous term is {segment.prev_term}, "
                        f"the previous segment ends with term {previous.last_term}",
                    )
            previous = segment

    def _reconcile_with_snapshot(self) -> None:
        meta = self._snapshot.metadata
        if not self._segments:
            self._base_index, self._base_term = meta.index, meta.term
            return
        first, last = self.first_index(), self.last_index()
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
            self._reset_locked(meta.index, meta.term)

    # -- LogStorage (read side) ----------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        conf = self._bootstrap if self._snapshot.is_empty() else self._snapshot.metadata.conf_state
        return self._hs, conf

    def first_index(self) -> int:
        if self._segments:
            first: int = self._segments.peekitem(0)[1].first_index
            return first
        return self._base_index + 1

    def last_index(self) -> int:
        if self._segments:
            last: int = self._segments.peekitem(-1)[1].last_index
            return last
        return self._base_index

    def last_term(self) -> int:
        if self._segments:
            term: int = self._segments.peekitem(-1)[1].last_term
            return term
        return self._base_term

    def term(self, index: int) -> int:
        return self._term_locked(index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        first, last = self.first_index(), self.last_index()
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

    def snapshot(self) -> Snapshot:
        if self._snapshot.is_empty():
            # Never compacted: the "bootstrap snapshot" at index 0 carries the initial
            # membership, which is what a node added later with empty storage needs.
            return Snapshot(SnapshotMetadata(0, 0, self._bootstrap))
        return self._snapshot

    # -- write side ----------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Store ``entries``, replacing any stored entries from ``entries[0].index`` on.

        Buffered: durable after the next ``sync()``. Raises ``InvariantViolation`` for a
        truncation below ``first_index()`` or at/below the snapshot index (committed
        entries), a gap after ``last_index()``, or entries that are not consecutive."""
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
            first, last = self.first_index(), self.last_index()
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
            if start <= last:
                self._truncate_suffix_locked(start)
            self._write_locked(entries)
            self._cache_add(entries)

    def save_hard_state(self, hs: HardState) -> None:
        """Record ``hs``. A term or vote change is durable on return; a commit-only change
        is written lazily (module docstring, thesis §3.8)."""
        with self._hs_lock:
            self._check_usable()
            self._hs = hs
            written = self._hs_written
            if hs.term != written.term or hs.vote != written.vote:
                self._vote_dirty = True  # written by the next sync()

    def save_snapshot(self, snap: Snapshot) -> None:
        """Store a snapshot taken locally, then compact the log up to it (or reset the log
        if the snapshot lies beyond ``last_index()``)."""
        meta = snap.metadata
        with self._lock:
            self._check_usable()
            first, last = self.first_index(), self.last_index()
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
            self._snapshot_file.store(snap)
            self._snapshot = snap
            self._log("snapshot_saved", index=meta.index, term=meta.term)
            if meta.index > last:
                self._reset_locked(meta.index, meta.term)
            else:
                self._compact_locked(meta.index)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Install a leader's snapshot (follower): store it, drop every entry; the log
        restarts at ``snap.metadata.index + 1``."""
        meta = snap.metadata
        if meta.index == 0:
            # A bootstrap snapshot (see snapshot()): adopt its membership, keep the log.
            with self._hs_lock:
                self._check_usable()
                self._bootstrap = meta.conf_state
                self._write_hard_state_locked(self._hs)
            self._log("bootstrap_membership_adopted", voters=sorted(meta.conf_state.voters))
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
            self._snapshot_file.store(snap)
            self._snapshot = snap
            self._log("snapshot_applied", index=meta.index, term=meta.term)
            self._reset_locked(meta.index, meta.term)

    def compact(self, index: int) -> None:
        """Drop whole segments (never the last one) whose entries are all <= ``index``.

        A snapshot at >= ``index`` must already be saved. Afterwards ``first_index()`` is
        the first index still stored, which may be <= index + 1."""
        with self._lock:
            self._check_usable()
            snap_index = self._snapshot.metadata.index
            if snap_index < index:
                raise InvariantViolation(
                    "compaction beyond the snapshot",
                    expected=f"a saved snapshot at index >= {index}",
                    actual=f"snapshot at {snap_index}",
                    likely_cause="compact() called before save_snapshot()",
                )
            self._compact_locked(index)

    def segments(self) -> list[SegmentInfo]:
        with self._lock:
            return [segment.info() for segment in self._segments.values()]

    @property
    def dirty(self) -> bool:
        """Whether something was written since the last ``sync()`` began."""
        return bool(self._dirty) or self._dir_dirty or self._vote_dirty

    @property
    def fsyncs_performed(self) -> int:
        """Number of fdatasync calls ``sync()`` has made on segment files."""
        return self._fsyncs_performed

    def sync(self) -> None:
        """Make every append that returned before this call durable (blocking).

        Safe to call from a worker thread while the writer thread keeps appending."""
        with self._sync_lock:
            with self._lock:
                self._check_usable()
                to_sync = list(self._dirty.values()) if self._fsync else []
                fds = [os.dup(segment.fd) for segment in to_sync]
                dir_dirty = self._dir_dirty and self._fsync
                self._dirty.clear()
                self._dir_dirty = False
            try:
                for fd in fds:
                    os.fdatasync(fd)
                    self._fsyncs_performed += 1
                if dir_dirty:
                    fsync_dir(self.directory)
            except OSError as exc:
                # After a failed fsync the page cache state is unknown (fsyncgate): refuse
                # to continue rather than acknowledge writes that may be gone.
                self._failure = exc
                self._log("sync_failed", directory=str(self.directory), error=str(exc))
                raise
            finally:
                for fd in fds:
                    os.close(fd)
            with self._hs_lock:
                if self._vote_dirty:
                    self._vote_dirty = False
                    self._write_hard_state_locked(self._hs)
            self._maybe_flush_commit(force=False)

    def close(self) -> None:
        """Sync, write a pending commit, close files. Idempotent."""
        if self._closed:
            return
        try:
            if self._failure is None:
                self.sync()
                self._maybe_flush_commit(force=True)
        finally:
            with self._lock:
                for segment in self._segments.values():
                    segment.close()
                self._closed = True

    def __enter__(self) -> DurableLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals (callers hold _lock unless noted) --------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError(f"log {self.directory} is closed")
        if self._failure is not None:
            raise OSError(f"log {self.directory} failed an earlier fsync") from self._failure

    def _segment_for(self, index: int) -> Segment:
        position = self._segments.bisect_right(index) - 1
        segment: Segment = self._segments.peekitem(position)[1]
        return segment

    def _term_locked(self, index: int) -> int:
        cache_offset = index - self._cache_lo
        if 0 <= cache_offset < len(self._cache):
            return self._cache[cache_offset].term
        first, last = self.first_index(), self.last_index()
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
        if self._segments:
            head = self._segments.peekitem(0)[1]
            self._base_index, self._base_term = head.first_index - 1, head.prev_term
        removed = 0
        while self._segments and self._segments.peekitem(-1)[1].first_index >= start:
            _, segment = self._segments.popitem(-1)
            self._dirty.pop(segment.first_index, None)
            segment.remove()
            removed += 1
        cut: Segment | None = None
        if self._segments:
            tail = self._segments.peekitem(-1)[1]
            if tail.last_index >= start:
                tail.truncate_from(start)
                cut = tail
        # A rewrite of stored entries is made durable now: otherwise a crash could leave
        # new frames behind a truncation that never reached the disk (module docstring).
        if self._fsync:
            if cut is not None:
                os.fdatasync(cut.fd)
            if removed:
                fsync_dir(self.directory)
        elif removed:
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
        last_term = self.last_term()
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
                    segment.append(frames, terms)
                    frames, terms, pending_bytes = [], [], 0
                self._roll_locked(segment)
                segment = self._new_segment_locked(entry.index, last_term)
            frames.append(frame)
            terms.append(entry.term)
            pending_bytes += len(frame)
            last_term = entry.term
        if segment is not None and frames:
            segment.append(frames, terms)
            self._dirty[segment.first_index] = segment

    def _roll_locked(self, segment: Segment) -> None:
        # The closed segment is made complete on disk before the next one exists, so a
        # bad frame in a non-last segment can only be corruption, never a torn write.
        if self._fsync:
            os.fdatasync(segment.fd)
            self._dirty.pop(segment.first_index, None)
        else:
            self._dirty[segment.first_index] = segment
        self._log(
            "segment_rolled",
            path=str(segment.path),
            last_index=segment.last_index,
            size_bytes=segment.size_bytes,
        )

    def _new_segment_locked(self, first_index: int, prev_term: int) -> Segment:
        segment = Segment.create(self.directory, first_index, prev_term)
        self._segments[first_index] = segment
        self._dirty[first_index] = segment
        self._dir_dirty = True
        return segment

    def _compact_locked(self, index: int) -> None:
        dropped: list[Segment] = []
        while len(self._segments) > 1 and self._segments.peekitem(0)[1].last_index <= index:
            _, segment = self._segments.popitem(0)
            self._dirty.pop(segment.first_index, None)
            segment.remove()
            dropped.append(segment)
        if not dropped:
            return
        if self._fsync:
            fsync_dir(self.directory)
        first = self.first_index()
        while self._cache and self._cache_lo < first:
            self._cache_size_bytes -= self._cache.popleft().size()
            self._cache_lo += 1
        self._log(
            "segments_compacted",
            up_to_index=index,
            segments_removed=len(dropped),
            first_index=first,
        )

    def _reset_locked(self, index: int, term: int) -> None:
        for segment in self._segments.values():
            segment.remove()
        removed = len(self._segments)
        self._segments.clear()
        self._dirty.clear()
        if removed:
            if self._fsync:
                fsync_dir(self.directory)
            else:
                self._dir_dirty = True
        self._base_index, self._base_term = index, term
        self._cache.clear()
        self._cache_size_bytes = 0
        self._cache_lo = index + 1
        self._log("log_reset", index=index, term=term, segments_removed=removed)

    def _cache_add(self, entries: Sequence[Entry]) -> None:
        if not self._cache:
            self._cache_lo = entries[0].index
        for entry in entries:
            self._cache.append(entry)
            self._cache_size_bytes += entry.size()
        while self._cache and self._cache_size_bytes > self._cache_max_bytes:
            self._cache_size_bytes -= self._cache.popleft().size()
            self._cache_lo += 1

    def _write_hard_state_locked(self, hs: HardState) -> None:
        """Caller holds _hs_lock."""
        self._state_file.store(hs, self._bootstrap)
        self._hs_written = hs
        self._hs_written_at = self._clock()

    def _maybe_flush_commit(self, *, force: bool) -> None:
        with self._hs_lock:
            if self._hs == self._hs_written:
                return
            due = self._clock() - self._hs_written_at >= self._commit_flush_interval_s
            if force or due:
                self._write_hard_state_locked(self._hs)
