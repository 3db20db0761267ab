"""Retention: which prefix of the log's segments may be dropped, by time and by size.

Contract: a pure function over segment descriptions; no I/O, no clock (``now_ms`` is an
argument). It never selects the active (last) segment, nor a segment holding anything above
the applied index (an unapplied entry may still be needed to derive offsets and producer
state). Segments are dropped as a prefix, oldest first, as Kafka does
(``UnifiedLog.deleteRetentionMsBreachedSegments`` / ``...SizeBreachedSegments``):

* time: a segment is expired when the newest batch timestamp in it is older than
  ``now_ms - retention_ms``; the scan stops at the first segment that is not expired (or
  whose timestamps are unknown, e.g. below the offset index after a restart).
* size: while the whole log minus the segment still exceeds ``retention_bytes``, drop it.

The result is the union of both prefixes: the last index of the newest droppable segment.

Segments wholly at or below ``snapshot_index`` are dropped first whatever their age or size:
the snapshot covers them, and they exist only because a crash interrupted the previous pass
between saving its snapshot and deleting them (#12 defect 16). The cut is never below
``snapshot_index``: the caller saves a snapshot at the cut, and an older one than the stored
snapshot would not describe the state it restores to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["physical_cut", "retention_cut"]


def retention_cut(
    segments: Sequence[tuple[int, int, int]],
    *,
    applied_index: int,
    snapshot_index: int = 0,
    now_ms: int,
    retention_ms: int,
    retention_bytes: int,
    max_timestamp_ms: Callable[[int, int], int | None],
) -> int | None:
    """``segments`` = (first_index, last_index, size_bytes), oldest first. Returns the last
    index of the newest segment that may be dropped, or None."""
    eligible: list[tuple[int, int, int]] = []
    for seg in segments[:-1]:
        if seg[1] > applied_index:
            break
        eligible.append(seg)
    if not eligible:
        return None
    stale = 0
    while stale < len(eligible) and eligible[stale][1] <= snapshot_index:
        stale += 1
    by_time = stale
    if retention_ms >= 0:
        horizon = now_ms - retention_ms
        for first, last, _size in eligible[stale:]:
            ts = max_timestamp_ms(first, last)
            if ts is None or ts >= horizon:
                break
            by_time += 1
    by_size = stale
    if retention_bytes >= 0:
        excess = sum(s[2] for s in segments[stale:]) - retention_bytes
        for _first, _last, size in eligible[stale:]:
            if excess - size < 0:
                break
            excess -= size
            by_size += 1
    n = max(by_time, by_size)
    if not n or eligible[n - 1][1] < snapshot_index:
        return None
    return eligible[n - 1][1]


def physical_cut(
    segments: Sequence[tuple[int, int, int]],
    *,
    applied_index: int,
    snapshot_index: int,
    gone_index: int,
) -> int | None:
    """The last index of the newest segment a replica may delete, or None: segments are
    deleted as a prefix, never the active (last) one, and only when every entry in them is
    at or below ``gone_index`` (the last index below the applied *logical* log start, which
    the leader decided; partition/state.py) and applied. Segments wholly at or below
    ``snapshot_index`` qualify whatever else holds (a crash left them). The cut is never
    below ``snapshot_index`` (the caller saves a snapshot at the cut)."""
    limit = min(gone_index, applied_index)
    cut = None
    for _first, last, _size in segments[:-1]:
        if last > limit and last > snapshot_index:
            break
        cut = last
    if cut is None or cut < snapshot_index:
        return None
    return cut
