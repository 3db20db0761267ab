"""CRC32C framing shared by every durable file of raft/storage.

Contract: pure byte manipulation. No I/O here, no state. Every record this package writes to
disk is one frame::

    [u32 length][u32 crc32c(payload)][payload: length bytes]        (little-endian)

A log entry's payload is ``[u64 index][u64 term][u8 type][data]``. The length comes first
so a reader can skip a frame without decoding it, and the CRC covers only the payload so a
torn write anywhere in the frame (length, CRC or payload) is detected: either the frame runs
past the end of the file or its CRC does not match.

Size bookkeeping: a frame of an entry is ``len(data) + 8 + 17`` bytes, which is exactly
``Entry.size() + 1``. The segment index uses this to cap reads by ``max_bytes`` from file
positions alone, without reading the bytes first.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import crc32c

from raft.types import Entry, EntryType

FRAME_HEADER = struct.Struct("<II")
"""[u32 payload length][u32 crc32c of the payload]."""

ENTRY_HEADER = struct.Struct("<QQB")
"""[u64 index][u64 term][u8 entry type], followed by the entry's data."""

MAX_PAYLOAD_BYTES = 1 << 30
"""A length field above this is garbage (a torn or corrupted header), never a real frame."""

FRAME_OVERHEAD_BYTES = FRAME_HEADER.size + ENTRY_HEADER.size
"""Bytes a frame of an entry adds to the entry's data (8 + 17 = 25)."""


def crc_of(payload: bytes | memoryview) -> int:
    return int(crc32c.crc32c(payload))


def encode_frame(payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload), crc_of(payload)) + payload


def encode_entry(entry: Entry) -> bytes:
    """The whole frame (header + payload) of one log entry."""
    payload = ENTRY_HEADER.pack(entry.index, entry.term, int(entry.type)) + entry.data
    return FRAME_HEADER.pack(len(payload), crc_of(payload)) + payload


def decode_entry(payload: bytes | memoryview) -> Entry:
    """The entry of a payload whose CRC has already been checked."""
    index, term, type_ = ENTRY_HEADER.unpack_from(payload, 0)
    return Entry(index=index, term=term, type=EntryType(type_), data=bytes(payload[17:]))


def entry_size_of_frame(frame_bytes: int) -> int:
    """``Entry.size()`` of the entry stored in a frame of ``frame_bytes`` bytes."""
    return frame_bytes - 1


@dataclass(frozen=True, slots=True)
class FrameProblem:
    """Why a frame at ``byte_offset`` could not be read.

    ``torn`` is True when the damage looks like an interrupted final write: the frame runs
    past the end of the buffer, the frame is the very last one and its CRC fails, or the rest
    of the buffer is zeros (a file extended by the file system but never written). Whether a
    torn frame may be cut is the caller's decision: only the tail of the last segment may.
    """

    byte_offset: int
    detail: str
    torn: bool


def check_frame(buf: bytes | memoryview, offset: int) -> tuple[int, FrameProblem | None]:
    """Validate the frame starting at ``offset``; return (payload length, problem or None).

    ``buf`` is everything from the start of the file to its end, so "the end of buf" is "the
    end of the file".
    """
    end = len(buf)
    remaining = end - offset
    if remaining < FRAME_HEADER.size:
        return 0, FrameProblem(offset, f"partial frame header ({remaining} bytes)", torn=True)
    length, crc = FRAME_HEADER.unpack_from(buf, offset)
    payload_end = offset + FRAME_HEADER.size + length
    if length > MAX_PAYLOAD_BYTES or payload_end > end:
        return 0, FrameProblem(
            offset, f"frame of {length} bytes runs past the end of the file ({end})", torn=True
        )
    if length == 0 and crc == 0 and not any(bytes(buf[offset:end])):
        return 0, FrameProblem(offset, "zero-filled tail", torn=True)
    if crc_of(buf[offset + FRAME_HEADER.size : payload_end]) != crc:
        # Only the last frame of the file can be a torn write; a bad CRC with intact frames
        # after it is damage to data that was already complete.
        return 0, FrameProblem(offset, "CRC32C mismatch", torn=payload_end == end)
    return length, None


def find_frame_after(buf: bytes | memoryview, start: int, index: int) -> int | None:
    """Offset of a valid frame holding entry ``index`` at or after ``start``, or None.

    Used before cutting a "torn" tail whose length field points past the end of the file:
    if a complete, valid frame of the next entry still follows, the length field was damaged
    in place and cutting would silently drop entries that were complete -- corruption.
    The search looks for the next index's bytes (one C-level ``find`` per candidate).
    """
    data = bytes(buf)
    needle = struct.pack("<Q", index)
    found = data.find(needle, start + FRAME_HEADER.size)
    while found != -1:
        offset = found - FRAME_HEADER.size
        length, problem = check_frame(data, offset)
        if problem is None and length >= ENTRY_HEADER.size:
            return offset
        found = data.find(needle, found + 1)
    return None
