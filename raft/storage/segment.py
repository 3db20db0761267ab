"""One segment file of the durable Raft log: a run of consecutive entries.

Contract: a Segment owns one file descriptor and an in-memory index of its frames (file
position and term of every entry). It validates and recovers its own file, appends frames
at its end, cuts its suffix, and reads ranges back. It never fsyncs on its own initiative
and knows nothing of other segments, snapshots or hard state: ``durable_log`` decides.

File layout: the name is the first index, zero-padded (``00000000000000000001.log``) so a
directory listing sorts in log order. The file starts with a header frame
``b"RLSG\\x01" [u64 first_index][u64 prev_term]`` -- ``prev_term`` is the term of the entry
just before the segment, which keeps ``term(first_index - 1)`` answerable after every older
segment has been deleted by compaction -- followed by one CRC32C frame per entry
(raft.storage.frame).

Recovery (``Segment.recover``): every frame is checked. A torn tail (partial frame, a zero
filled tail, or a bad CRC in the very last frame) is cut with ftruncate -- only when this is
the last segment; anywhere else it is ``StorageCorruption``, as is any bad frame followed by
more data, a header that does not match the name, or an index out of sequence. A length
field that points past the end of the file looks torn, so before cutting we search for a
valid frame of the next entry after it: if one exists, the frame was damaged in place and
that is corruption too (cutting would drop complete entries). Nothing is ever skipped.

Memory: two ``array('q')`` (position, term) per segment, 16 bytes per entry.
"""

from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Callable, Sequence
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
from raft.types import Entry

SEGMENT_SUFFIX = ".log"
_MAGIC = b"RLSG\x01"
_HEADER = struct.Struct("<QQ")
HEADER_FRAME_BYTES = FRAME_HEADER.size + len(_MAGIC) + _HEADER.size


def segment_file_name(first_index: int) -> str:
    return f"{first_index:020d}{SEGMENT_SUFFIX}"


def parse_segment_file_name(name: str) -> int | None:
    """The first index encoded in a segment file name, or None if it is not one."""
    stem = name[: -len(SEGMENT_SUFFIX)]
    if not name.endswith(SEGMENT_SUFFIX) or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """A segment as retention planning sees it. ``last_index`` is ``first_index - 1`` for a
    segment that holds no entry yet."""

    first_index: int
    last_index: int
    size_bytes: int
    path: Path


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) == length:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        chunk = os.pread(fd, length - got, offset + got)
        if not chunk:
            raise OSError(f"short read: wanted {length} bytes at {offset}, file ended at {got}")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class Segment:
    """An open segment file. Not thread-safe: durable_log serializes access."""

    __slots__ = ("fd", "first_index", "path", "positions", "prev_term", "size_bytes", "terms")

    def __init__(
        self,
        path: Path,
        fd: int,
        first_index: int,
        prev_term: int,
        size_bytes: int,
        positions: array[int],
        terms: array[int],
    ) -> None:
        self.path = path
        self.fd = fd
        self.first_index = first_index
        self.prev_term = prev_term
        self.size_bytes = size_bytes
        self.positions = positions
        self.terms = terms

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, first_index: int, prev_term: int) -> Segment:
        """A new, empty segment; its header is written (not fsynced)."""
        path = directory / segment_file_name(first_index)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        header = encode_frame(_MAGIC + _HEADER.pack(first_index, prev_term))
        try:
            _pwrite_all(fd, header, 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, first_index, prev_term, len(header), array("q"), array("q"))

    @classmethod
    def recover(
        cls, path: Path, *, is_last: bool, fsync: bool, logger: Callable[..., None]
    ) -> Segment | None:
        """Open and validate an existing segment; cut a torn tail if ``is_last``.

        Returns None when the last segment's header itself is torn: such a file was being
        created when the process died and holds nothing; it is deleted.
        """
        named_first = parse_segment_file_name(path.name)
        if named_first is None:
            raise StorageCorruption(str(path), 0, "not a segment file name")
        fd = os.open(path, os.O_RDWR)
        try:
            segment = cls._scan(path, fd, named_first, is_last=is_last, fsync=fsync, log=logger)
        except BaseException:
            os.close(fd)
            raise
        if segment is None:
            os.close(fd)
            path.unlink()
        return segment

    @classmethod
    def _scan(
        cls,
        path: Path,
        fd: int,
        named_first: int,
        *,
        is_last: bool,
        fsync: bool,
        log: Callable[..., None],
    ) -> Segment | None:
        size = os.fstat(fd).st_size
        data = memoryview(_pread_exact(fd, size, 0))

        def cut(offset: int, detail: str) -> None:
            os.ftruncate(fd, offset)
            if fsync:
                os.fdatasync(fd)
            log("torn_tail_truncated", path=str(path), offset=offset, detail=detail)

        length, problem = check_frame(data, 0)
        if problem is not None:
            if problem.torn and is_last:
                log("torn_tail_truncated", path=str(path), offset=0, detail=problem.detail)
                return None
            raise StorageCorruption(str(path), 0, f"segment header: {problem.detail}")
        header = bytes(data[FRAME_HEADER.size : FRAME_HEADER.size + length])
        if length != len(_MAGIC) + _HEADER.size or not header.startswith(_MAGIC):
            raise StorageCorruption(str(path), 0, "not a replog segment header")
        first_index, prev_term = _HEADER.unpack_from(header, len(_MAGIC))
        if first_index != named_first:
            raise StorageCorruption(
                str(path), 0, f"header says first index {first_index}, name says {named_first}"
            )
        positions: array[int] = array("q")
        terms: array[int] = array("q")
        offset = HEADER_FRAME_BYTES
        expected = first_index
        while offset < size:
            length, problem = check_frame(data, offset)
            if problem is not None:
                follower = None
                if problem.torn:
                    follower = find_frame_after(data, offset + 1, expected + 1)
                if follower is not None:
                    raise StorageCorruption(
                        str(path),
                        offset,
                        f"{problem.detail}, yet a valid frame of entry {expected + 1} "
                        f"follows at byte {follower}: the frame was damaged in place",
                    )
                if problem.torn and is_last:
                    cut(offset, problem.detail)
                    size = offset
                    break
                raise StorageCorruption(str(path), offset, problem.detail)
            if length < ENTRY_HEADER.size:
                raise StorageCorruption(str(path), offset, f"entry frame of only {length} bytes")
            index, term, _type = ENTRY_HEADER.unpack_from(data, offset + FRAME_HEADER.size)
            if index != expected:
                raise StorageCorruption(
                    str(path), offset, f"entry index {index} where {expected} was expected"
                )
            positions.append(offset)
            terms.append(term)
            expected += 1
            offset += FRAME_HEADER.size + length
        return cls(path, fd, first_index, prev_term, size, positions, terms)

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
        pread. Every frame's CRC is checked again: bit rot is reported, not returned."""
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
        buf = memoryview(_pread_exact(self.fd, end - start, start))
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

    # -- mutation ------------------------------------------------------------------------

    def append(self, frames: Sequence[bytes], terms: Sequence[int]) -> None:
        """Append frames of the next entries (one pwrite). Not durable until fdatasync."""
        position = self.size_bytes
        for frame in frames:
            self.positions.append(position)
            position += len(frame)
        _pwrite_all(self.fd, b"".join(frames), self.size_bytes)
        self.terms.extend(terms)
        self.size_bytes = position

    def truncate_from(self, index: int) -> None:
        """Drop entries >= ``index`` (which must be within this segment, > first_index)."""
        keep = index - self.first_index
        new_size = self.positions[keep]
        os.ftruncate(self.fd, new_size)
        del self.positions[keep:]
        del self.terms[keep:]
        self.size_bytes = new_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
