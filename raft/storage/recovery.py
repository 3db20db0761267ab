"""Recovery of a log directory's segments at open (used by ``durable_log``).

Contract: :func:`recover_segments` scans every segment file, decides which ones form the
longest sound log and only then changes files (cuts torn tails, removes dropped segments), so a
``StorageCorruption`` leaves the directory exactly as it was found.
:func:`make_recovered_state_durable` then makes durable what a process crash may have left only
in the page cache. The rules and why they are sound: ``durable_log``'s docstring ("Recovery")
and docs/storage.md ("Recovery", "Truncation").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from raft.errors import StorageCorruption
from raft.storage.fs import FileSystem
from raft.storage.segment import ScanProblem, Segment


def recover_segments(
    fs: FileSystem,
    directory: Path,
    paths: list[Path],
    snap_index: int,
    *,
    fsync: bool,
    log: Callable[..., None],
) -> list[Segment]:
    """Scan every segment and keep the longest sound log (module docstring): returns the kept
    segments in order (the last one open), after cutting torn tails and removing dropped
    files. ``snap_index`` is the snapshot's index, -1 without one."""
    removed = 0
    # Scan everything first, decide, and only then change files: a loud error must leave
    # the directory exactly as it was found.
    scanned: list[tuple[Path, Segment | None, ScanProblem | None]] = []
    try:
        for path in paths:
            segment, problem = Segment.scan(fs, path)
            if segment is not None:
                segment.close()  # reopened on demand
            scanned.append((path, segment, problem))
    except BaseException:
        for _, segment, _ in scanned:
            if segment is not None:
                segment.close()
        raise

    def covered_from(segment: Segment) -> bool:
        return segment.first_index <= snap_index + 1

    kept: list[Segment] = []
    cuts: list[tuple[Segment, ScanProblem]] = []
    drops: list[tuple[Path, str, str]] = []  # (path, event, reason)
    previous: Segment | None = None
    for path, segment, problem in scanned:
        if segment is None:
            # A header that never reached the disk: no sync of this file ever completed,
            # so nothing in it was acknowledged (every sync writes the header too).
            assert problem is not None
            drops.append((path, "torn_tail_truncated", problem.detail))
            continue
        if previous is not None:
            reason = _discontinuity(previous, segment)
        elif segment.first_index > max(snap_index, 0) + 1:
            reason = (
                f"the first segment starts at index {segment.first_index}, after a gap "
                f"(the log starts at {max(snap_index, 0) + 1})"
            )
        else:
            reason = None
        if reason is not None and _truncation_not_cut(previous, segment):
            # A suffix truncation whose file cut is still to be done (a sync makes it
            # after the lowered mark is durable): the old frames past the previous
            # segment's mark were never acknowledged, and this segment holds what
            # replaced them. After a process crash the page cache has it all.
            assert previous is not None
            offset = previous.forget_from(segment.first_index)
            cuts = [(seg, prob) for seg, prob in cuts if seg is not previous]
            replaced = ScanProblem(offset, segment.first_index, "replaced", None)
            cuts.append((previous, replaced))
            reason = None
        if reason is not None and covered_from(segment):
            # Everything before it is covered by the snapshot: leftovers of a snapshot
            # install or compaction that a crash interrupted before removing them.
            for stale in kept:
                drops.append((stale.path, "stale_segment_removed", reason))
            cuts = [(seg, prob) for seg, prob in cuts if seg not in kept]
            kept = []
            reason = None
        if reason is not None:
            if segment.mark < segment.first_index or segment.durable_mark < (segment.first_index):
                # Nothing in it was acknowledged: its mark says so, or the sync that raised
                # it never completed. A completed sync covering this segment would have
                # made everything recorded before it durable too (the entries before it, a
                # snapshot, a cut, removed segments), so it could not follow a gap, an
                # overlap or a term mismatch; the mark's durable part lags one sync, so it
                # is below the first index only while no later sync has completed.
                drops.append((path, "unacknowledged_segment_dropped", reason))
                continue
            raise StorageCorruption(str(path), 0, reason)
        if problem is not None:
            if problem.index <= segment.durable_mark:
                raise StorageCorruption(str(path), problem.byte_offset, _why(problem))
            cuts.append((segment, problem))
        kept.append(segment)
        previous = segment
    for segment, problem in cuts:
        segment.ensure_open()
        segment.cut_at(problem.byte_offset)
        if fsync:
            fs.fdatasync(segment.fd)
        segment.close()
        log(
            "torn_tail_truncated",
            path=str(segment.path),
            offset=problem.byte_offset,
            detail=problem.detail,
            ack_mark=segment.mark,
        )
    for path, event, reason in drops:
        fs.unlink(path)
        removed += 1
        log(event, path=str(path), offset=0, detail=reason)
    if removed and fsync:
        fs.fsync_dir(directory)
    if kept:
        kept[-1].ensure_open()
    return kept


def make_recovered_state_durable(fs: FileSystem, directory: Path, segments: list[Segment]) -> None:
    """After a process crash (SIGKILL) the page cache still holds what no sync made
    durable: segment data past a segment's last completed sync, new segment files, a
    renamed ``state`` or ``snapshot`` file, a cut of a truncation. Recovery reads it all,
    and the restarted node then treats its whole log and hard state as persisted (it
    acknowledges those entries, re-grants that vote). So make it durable now, before
    anything is acknowledged: every segment whose entries go past its mark's durable
    part is fdatasynced, then the directory (its entries, and the renames) is fsynced."""
    for segment in segments:
        if segment.last_index <= segment.durable_mark:
            continue  # a completed sync covered all of it (a clean close seals every mark)
        fd = segment.ensure_open()
        segment.write_mark(segment.last_index)  # as a sync does: mark first, then data
        fs.fdatasync(fd)
        segment.on_synced(segment.last_index)
        if segment is not segments[-1]:
            segment.close()  # only the active (last) segment stays open
    fs.fsync_dir(directory)


def _truncation_not_cut(previous: Segment | None, segment: Segment) -> bool:
    """Whether ``segment`` starts inside ``previous`` past its ack mark and continues the
    entries before that point: the trace of a truncation not yet cut (truncate_from)."""
    first = segment.first_index
    return (
        previous is not None
        and previous.first_index < first <= previous.last_index
        and previous.mark < first
        and previous.term_at(first - 1) == segment.prev_term
    )


def _discontinuity(previous: Segment, segment: Segment) -> str | None:
    if segment.first_index != previous.last_index + 1:
        return (
            f"segment starts at index {segment.first_index} but the previous one ends at "
            f"{previous.last_index} (gap or overlap)"
        )
    if segment.prev_term != previous.last_term:
        return (
            f"segment header says the previous term is {segment.prev_term}, the previous "
            f"segment ends with term {previous.last_term}"
        )
    return None


def _why(problem: ScanProblem) -> str:
    detail = f"{problem.detail} at entry {problem.index}, which a completed sync had made durable"
    if problem.next_valid is not None:
        detail += (
            f"; a valid frame of a later entry follows at byte {problem.next_valid}: "
            "the frame was damaged in place"
        )
    return detail
