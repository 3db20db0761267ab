"""One segment file of the durable Raft log: a run of consecutive entries.

Contract: a Segment owns (at most) one file handle of the ``FileSystem`` seam and an in-memory
index of its frames (file position and term of every entry). It scans its own file, appends
frames at its end, cuts its suffix, records its "acknowledged through" mark and reads ranges
back. It never fsyncs on its own initiative and knows nothing of other segments, snapshots or
hard state: ``durable_log`` decides, and decides what a problem found by :meth:`scan` means.
Its handle may be closed while the segment stays in the log (``durable_log`` keeps only the
active segment, unsynced ones and a few recently read ones open); :meth:`ensure_open` reopens.

File layout: the name is the first index, zero-padded (``00000000000000000001.log``) so a
directory listing sorts in log order. The file starts with a header frame
``b"RLSG\\x02" [u64 first_index][u64 prev_term]`` -- ``prev_term`` is the term of the entry
just before the segment, which keeps ``term(first_index - 1)`` answerable after every older
segment has been deleted by compaction -- then a fixed 16-byte *ack mark* slot
``[u64 acked_through][u32 crc32c][u32 0]``, then one CRC32C frame per entry
(raft.storage.frame).

The ack mark holds two indexes. ``sync()`` writes into every segment it fdatasyncs, *before*
the fdatasync: ``durable_through``, the index the previous *completed* sync of this segment
covered (certainly on disk), and ``acked_through``, the last index this sync covers (on disk
once it returns; only then may anything in it be acknowledged). So at any moment the mark on
disk says: entries <= durable_through are durable; entries <= acked_through may have been
acknowledged. A mark is written in place within one sector (old or new value, never a mix; a
damaged slot reads as "unknown", which is treated as "everything is durable"). A new segment
starts with both at ``first_index - 1``. Recovery: damage at or before ``durable_through`` is
corruption (loud); damage after it is a torn tail and is cut -- a power loss during a sync
writes back pages in any order, so the mark can reach the disk while the frames it covers do
not (a one-index mark would call that corruption and brick the replica). The price: damage in
the span of the last completed sync, which only bit rot can cause, is cut rather than reported.
See docs/storage.md, "Recovery".

Memory: two ``array('q')`` (position, term) per segment, 16 bytes per entry.
"""

from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from raft.errors import StorageCorruption
from raft.storage.frame import (
    ENTRY_HEADER,
    FRAME_HEADER,
    check_frame,
    crc_of,
    decode_entry,
    encode_frame,
    entry_size_of_frame,
    find_frame_after,
)
from raft.storage.fs import FileSystem
from raft.types import Entry

SEGMENT_SUFFIX = ".log"
_MAGIC = b"RLSG\x02"
_HEADER = struct.Struct("<QQ")
_MARK = struct.Struct("<QII")
HEADER_FRAME_BYTES = FRAME_HEADER.size + len(_MAGIC) + _HEADER.size
MARK_OFFSET = HEADER_FRAME_BYTES
FIRST_FRAME_OFFSET = MARK_OFFSET + _MARK.size
MARK_UNKNOWN = 1 << 62
"""The mark of a segment whose mark slot is unreadable: treat everything as acknowledged."""


def segment_file_name(first_index: int) -> str:
    return f"{first_index:020d}{SEGMENT_SUFFIX}"


def parse_segment_file_name(name: str) -> int | None:
    """The first index encoded in a segment file name, or None if it is not one."""
    stem = name[: -len(SEGMENT_SUFFIX)]
    if not name.endswith(SEGMENT_SUFFIX) or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


def encode_mark(durable_through: int, acked_through: int) -> bytes:
    delta = acked_through - durable_through
    if not 0 <= delta < 1 << 32:
        raise ValueError(f"ack mark span {durable_through}..{acked_through} cannot be encoded")
    return _MARK.pack(durable_through, crc_of(struct.pack("<QI", durable_through, delta)), delta)


def decode_mark(slot: bytes | memoryview) -> tuple[int, int]:
    """(durable_through, acked_through); both ``MARK_UNKNOWN`` for a damaged slot."""
    durable, crc, delta = _MARK.unpack_from(slot, 0)
    if crc_of(struct.pack("<QI", durable, delta)) != crc:
        return MARK_UNKNOWN, MARK_UNKNOWN
    return durable, durable + delta


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """A segment as retention planning sees it. ``last_index`` is ``first_index - 1`` for a
    segment that holds no entry yet."""

    first_index: int
    last_index: int
    size_bytes: int
    path: Path


@dataclass(frozen=True, slots=True)
class ScanProblem:
    """The first bad spot :meth:`Segment.scan` found: the segment's entries stop before it.

    ``index`` is the index the frame at ``byte_offset`` should have held; ``next_valid`` is the
    offset of a valid frame of a later entry found after it (None if none)."""

    byte_offset: int
    index: int
    detail: str
    next_valid: int | None


def pread_exact(fs: FileSystem, fd: int, length: int, offset: int) -> bytes:
    data = fs.pread(fd, length, offset)
    if len(data) == length:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        chunk = fs.pread(fd, length - got, offset + got)
        if not chunk:
            raise OSError(f"short read: wanted {length} bytes at {offset}, file ended at {got}")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def pwrite_all(fs: FileSystem, fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = fs.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class Segment:
    """A segment of the log. Not thread-safe: durable_log serializes access."""

    __slots__ = (
        "durable_mark",
        "fd",
        "first_index",
        "fs",
        "mark",
        "mark_on_disk_durable",
        "path",
        "positions",
        "prev_term",
        "sealed",
        "size_bytes",
        "terms",
    )

    def __init__(
        self,
        fs: FileSystem,
        path: Path,
        fd: int,
        first_index: int,
        prev_term: int,
        size_bytes: int,
        positions: array[int],
        terms: array[int],
        mark: int,
        durable_mark: int | None = None,
    ) -> None:
        self.fs = fs
        self.path = path
        self.fd = fd
        self.first_index = first_index
        self.prev_term = prev_term
        self.size_bytes = size_bytes
        self.positions = positions
        self.terms = terms
        self.mark = mark  # the acked-through mark last written to the file (not yet durable)
        # Entries through this index were covered by a completed fdatasync (as far as this
        # process knows; after a restart, what the mark on disk said).
        self.durable_mark = mark if durable_mark is None else durable_mark
        self.mark_on_disk_durable = self.durable_mark  # durable_through of the last mark written
        self.sealed = False  # cut by a suffix truncation: no more appends (truncate_from)

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def create(cls, fs: FileSystem, directory: Path, first_index: int, prev_term: int) -> Segment:
        """A new, empty segment; header and mark written (neither fsynced, nor is the new
        directory entry: ``durable_log`` fsyncs the directory before reporting it durable)."""
        path = directory / segment_file_name(first_index)
        fd = fs.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        header = encode_frame(_MAGIC + _HEADER.pack(first_index, prev_term))
        try:
            pwrite_all(fs, fd, header + encode_mark(first_index - 1, first_index - 1), 0)
        except BaseException:
            fs.close(fd)
            raise
        return cls(
            fs, path, fd, first_index, prev_term, FIRST_FRAME_OFFSET, array("q"), array("q"),
            first_index - 1,
        )  # fmt: skip

    @classmethod
    def scan(cls, fs: FileSystem, path: Path) -> tuple[Segment | None, ScanProblem | None]:
        """Open an existing segment and index every valid frame up to the first problem.

        Returns (None, problem) when the header itself is unreadable, else (segment, problem
        or None); the segment's entries stop before the problem and its file is left as is
        (the caller cuts it with :meth:`cut_at` or raises). The handle stays open.
        """
        named_first = parse_segment_file_name(path.name)
        if named_first is None:
            raise StorageCorruption(str(path), 0, "not a segment file name")
        fd = fs.open(path, os.O_RDWR)
        try:
            return cls._scan(fs, path, fd, named_first)
        except BaseException:
            fs.close(fd)
            raise

    @classmethod
    def _scan(
        cls, fs: FileSystem, path: Path, fd: int, named_first: int
    ) -> tuple[Segment | None, ScanProblem | None]:
        size = fs.size(fd)
        data = memoryview(pread_exact(fs, fd, size, 0))
        if size >= FIRST_FRAME_OFFSET and not any(data[:FIRST_FRAME_OFFSET]):
            # Every sync of this file writes its first page (header and mark): zeros there mean
            # no sync of it ever completed, whatever later pages reached the disk (a torn power
            # loss writes pages back in any order), so nothing in it was acknowledged.
            fs.close(fd)
            why = "segment header and mark are zeros: its first page never reached the disk"
            return None, ScanProblem(0, named_first, why, None)
        length, problem = check_frame(data, 0)
        if problem is not None or size < FIRST_FRAME_OFFSET:
            why = problem.detail if problem is not None else "partial ack mark"
            if find_frame_after(data, FIRST_FRAME_OFFSET - 1, named_first) is not None:
                # The header shares its page with the first frames: if they reached the disk,
                # so did it. Damage to it now is damage to a complete file.
                raise StorageCorruption(str(path), 0, f"segment header: {why}, entries follow")
            fs.close(fd)
            return None, ScanProblem(0, named_first, f"segment header: {why}", None)
        header = bytes(data[FRAME_HEADER.size : FRAME_HEADER.size + length])
        if length != len(_MAGIC) + _HEADER.size or not header.startswith(_MAGIC):
            raise StorageCorruption(str(path), 0, "not a replog segment header (version 2)")
        first_index, prev_term = _HEADER.unpack_from(header, len(_MAGIC))
        if first_index != named_first:
            raise StorageCorruption(
                str(path), 0, f"header says first index {first_index}, name says {named_first}"
            )
        durable_mark, mark = decode_mark(data[MARK_OFFSET : MARK_OFFSET + _MARK.size])
        positions: array[int] = array("q")
        terms: array[int] = array("q")
        offset = FIRST_FRAME_OFFSET
        expected = first_index
        last_term = prev_term
        found: ScanProblem | None = None
        detail: str | None
        while offset < size:
            length, frame_problem = check_frame(data, offset)
            detail = None
            if frame_problem is not None:
                detail = frame_problem.detail
            elif length < ENTRY_HEADER.size:
                detail = f"entry frame of only {length} bytes"
            else:
                index, term, _type = ENTRY_HEADER.unpack_from(data, offset + FRAME_HEADER.size)
                if index != expected:
                    detail = f"entry index {index} where {expected} was expected"
                elif term < last_term:
                    detail = f"entry {index} has term {term}, below the term {last_term} before it"
            if detail is not None:
                follower = find_frame_after(data, offset + 1, expected + 1)
                found = ScanProblem(offset, expected, detail, follower)
                break
            positions.append(offset)
            terms.append(term)
            last_term = term
            expected += 1
            offset += FRAME_HEADER.size + length
        segment = cls(
            fs, path, fd, first_index, prev_term, offset, positions, terms, mark, durable_mark
        )
        return segment, found

    def ensure_open(self) -> int:
        if self.fd < 0:
            self.fd = self.fs.open(self.path, os.O_RDWR)
        return self.fd

    # -- queries -------------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.terms) - 1

    @property
    def last_term(self) -> int:
        return self.terms[-1] if self.terms else self.prev_term

    def entry_count(self) -> int:
        return len(self.terms)

    def term_at(self, index: int) -> int:
        """Term of ``index``; ``first_index - 1`` gives ``prev_term``."""
        if index == self.first_index - 1:
            return self.prev_term
        return self.terms[index - self.first_index]

    def info(self) -> SegmentInfo:
        return SegmentInfo(self.first_index, self.last_index, self.size_bytes, self.path)

    def read(self, lo: int, hi: int, budget_bytes: int | None, need_one: bool) -> list[Entry]:
        """Entries [lo, hi) of this segment, stopping before the total ``Entry.size()``
        would exceed ``budget_bytes`` (but taking one entry anyway if ``need_one``).

        Sizes come from the position index, so exactly the needed bytes are read, with one
        pread. Every frame's CRC is checked again: bit rot is reported, not returned. The
        handle must be open (``ensure_open``)."""
        first = lo - self.first_index
        stop = hi - self.first_index
        count = len(self.positions)
        used = 0
        j = first
        while j < stop:
            end_j = self.positions[j + 1] if j + 1 < count else self.size_bytes
            size = entry_size_of_frame(end_j - self.positions[j])
            over_budget = budget_bytes is not None and used + size > budget_bytes
            if over_budget and not (need_one and j == first):
                break
            used += size
            j += 1
        if j == first:
            return []
        start = self.positions[first]
        end = self.positions[j] if j < count else self.size_bytes
        buf = memoryview(pread_exact(self.fs, self.fd, end - start, start))
        entries: list[Entry] = []
        offset = 0
        for k in range(first, j):
            length, crc = FRAME_HEADER.unpack_from(buf, offset)
            payload = buf[offset + FRAME_HEADER.size : offset + FRAME_HEADER.size + length]
            if crc_of(payload) != crc:
                raise StorageCorruption(str(self.path), self.positions[k], "CRC32C mismatch")
            entries.append(decode_entry(payload))
            offset += FRAME_HEADER.size + length
        return entries

    # -- mutation (the handle must be open) ----------------------------------------------

    def append(self, frames: Sequence[bytes], terms: Sequence[int]) -> None:
        """Append frames of the next entries (one pwrite). Not durable until fdatasync.

        The position index changes only after the write succeeded: if it raises, this
        segment is exactly as before (the file may hold a partial frame past ``size_bytes``,
        which recovery cuts as a torn tail: it lies after the ack mark)."""
        pwrite_all(self.fs, self.fd, b"".join(frames), self.size_bytes)
        position = self.size_bytes
        for frame in frames:
            self.positions.append(position)
            position += len(frame)
        self.terms.extend(terms)
        self.size_bytes = position

    def truncate_from(self, index: int, *, cut_file: bool) -> int | None:
        """Drop entries >= ``index`` (which must be within this segment, > first_index) and
        seal the segment: it takes no more frames (new entries go to a new segment, never
        over old frames in place). Returns the byte offset the caller is to cut the file at,
        or None if it was cut here.

        The mark is lowered at once (buffered). With ``cut_file``, or when no mark reached the
        cut, the file is cut here too; else (``fsync="always"``) the caller cuts the file
        (ftruncate) only after an fdatasync made the lowered mark durable. Cutting first would be unsafe: a power loss
        can make the shorter size durable (a journal commit) while the page holding the mark
        still has the old one, which then claims durable entries past the end of the file,
        and the replica refuses to start (system simulation seed 2083). Until the cut, the
        old frames past the new end stay in the file; they are not indexed, and recovery
        drops them (nothing past the lowered mark was acknowledged) -- see durable_log."""
        new_size = self.forget_from(index)
        self.sealed = True
        if self.mark >= index:
            self.durable_mark = min(self.durable_mark, index - 1)
            self.write_mark(index - 1)
        elif not cut_file:
            # No mark, on disk or buffered, reaches the cut: cutting at once is safe.
            self.fs.ftruncate(self.fd, new_size)
            return None
        if cut_file:
            self.fs.ftruncate(self.fd, new_size)
            return None
        return new_size

    def forget_from(self, index: int) -> int:
        """Drop entries >= ``index`` from the index only (the file is not touched); returns
        the byte offset where entry ``index`` starts."""
        keep = index - self.first_index
        new_size = self.positions[keep]
        del self.positions[keep:]
        del self.terms[keep:]
        self.size_bytes = new_size
        return new_size

    def cut_at(self, offset: int) -> None:
        """Recovery: drop the bytes from ``offset`` on (the scan already stopped there, or a
        later segment starts there)."""
        self.fs.ftruncate(self.fd, offset)
        self.size_bytes = offset

    def write_mark(self, acked_through: int) -> None:
        """Record (buffered) that entries through ``acked_through`` may be acknowledged once
        the next fdatasync of this file returns, and that entries through ``durable_mark``
        are already durable. Call ``on_synced(acked_through)`` when that fdatasync returned."""
        pwrite_all(self.fs, self.fd, encode_mark(self.durable_mark, acked_through), MARK_OFFSET)
        self.mark = acked_through

    def on_synced(self, acked_through: int) -> None:
        self.durable_mark = max(self.durable_mark, min(acked_through, self.mark))

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            self.fs.close(fd)

    def remove(self) -> None:
        self.close()
        self.fs.unlink(self.path)
