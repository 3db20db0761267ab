"""Partition checkpoints: the partition state at an applied index, so a restart need not
replay the retained log (issue #13).

Contract: pure, no I/O (server/checkpoint.py reads and writes the file, in the executor).
A checkpoint at index A holds what ``PartitionState`` rebuilds from the log up to A: the
state ``snapshot()`` holds (producer table, high watermark, log start) plus the offset index
of the retained entries <= A (term, base offset, kind, max timestamp of each). It describes
only committed, applied entries, so it is a prefix of every future log of the group; a
restart restores it and reports only the entries after A (``on_log_append``), and the Raft
core hands out committed entries from A + 1 (``RawNode(applied=A)``).

A checkpoint is NOT a Raft snapshot. A Raft snapshot is what a leader ships to a lagging
follower, which then drops its log up to the snapshot index: a snapshot above the retention
cut would make that follower lose records it must still serve. Raft snapshots stay at
retention cuts; checkpoints are private to one replica.

Two steps, so the event loop only copies: :func:`capture` takes an immutable image of the
state (list slices and a copy of the producer table: O(entries) pointer copies, no
encoding); :func:`encode` turns it into bytes off the loop.

Format (little-endian): ``b"RPCK" [u8 version] [u32 crc32c of the rest] [u64 length of the
rest]``, then the rest: a fixed header (index, term, snapshot index, high watermark, log
start floor, first index of the offset index, its start offset, entry count, term-run
count), the term runs ``(first position, term)``, the entries' base offsets and max
timestamps (int64 arrays), their kinds (one byte each), the Raft membership as of the index
(voter and learner counts and ids: the core restarts from it, ``RawNode(applied_conf_state=)``,
instead of reading the log for CONF_CHANGE entries), then the producer table in the snapshot
encoding (partition/producers.py, version 2). Anything that does not check out
raises :class:`CheckpointInvalid`: a checkpoint is only an optimisation, the caller logs it
loudly and replays the log instead.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass, field
from itertools import pairwise

import crc32c

from partition.errors import PartitionError, PartitionInvariantError
from partition.header import EntryKind
from partition.producers import ProducerTable
from raft.types import ConfState

__all__ = ["CheckpointImage", "CheckpointInvalid", "decode", "encode"]

MAGIC = b"RPCK"
VERSION = 2
# 1: the log start floor is the physical one (never above the high watermark); 2: it is the
# logical, replicated log start (partition/state.py), which a replica that installed a
# snapshot carrying a later log start may hold above its high watermark. Same layout.
READS = (1, 2)
_PREFIX = struct.Struct("<4sBIQ")
_HEAD = struct.Struct("<qqqqqqqQQ")
_RUN = struct.Struct("<Qq")
_COUNT = struct.Struct("<I")
_KINDS = frozenset(int(k) for k in EntryKind)


class CheckpointInvalid(PartitionError):
    """A checkpoint that cannot be used (damaged, another version, or not for this log)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"partition checkpoint unusable: {reason}")


@dataclass(frozen=True, slots=True)
class CheckpointImage:
    """The partition state at ``index`` (applied), immutable: what :func:`encode` writes."""

    index: int
    term: int
    """Term of the entry at ``index`` (0 when ``index`` is the snapshot point itself)."""
    snapshot_index: int
    high_watermark: int
    log_start_floor: int
    first_index: int
    """Raft index of the offset index's first entry."""
    start_offset: int
    """Base offset of that entry (the end offset when there is none)."""
    bases: tuple[int, ...] | list[int]
    terms: tuple[int, ...] | list[int]
    kinds: bytes
    max_timestamps: tuple[int, ...] | list[int]
    producers: ProducerTable
    """A private copy (the live table changes on the loop)."""
    conf_state: ConfState = field(default_factory=ConfState)
    """The group's membership as of ``index`` (the runtime tracks it; partition state does
    not know Raft membership)."""

    @property
    def entries(self) -> int:
        return len(self.bases)


def _le(values: array[int]) -> bytes:
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()


def _from_le(data: bytes | memoryview) -> array[int]:
    values = array("q")
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def encode(image: CheckpointImage) -> bytes:
    """The checkpoint file's bytes. Runs off the event loop (O(entries))."""
    terms = image.terms
    runs: list[bytes] = []
    previous = None
    for pos, term in enumerate(terms):
        if term != previous:
            runs.append(_RUN.pack(pos, term))
            previous = term
    head = _HEAD.pack(
        image.index,
        image.term,
        image.snapshot_index,
        image.high_watermark,
        image.log_start_floor,
        image.first_index,
        image.start_offset,
        image.entries,
        len(runs),
    )
    body = b"".join(
        [
            head,
            *runs,
            _le(array("q", image.bases)),
            _le(array("q", image.max_timestamps)),
            bytes(image.kinds),
            _encode_members(image.conf_state.voters),
            _encode_members(image.conf_state.learners),
            image.producers.encode(),
        ]
    )
    return _PREFIX.pack(MAGIC, VERSION, crc32c.crc32c(body), len(body)) + body


def decode(data: bytes, *, keep: int, expiry_ms: int) -> CheckpointImage:
    """The image ``encode`` wrote; raises CheckpointInvalid if ``data`` is not one intact."""
    if len(data) < _PREFIX.size:
        raise CheckpointInvalid(f"{len(data)} bytes is shorter than the header")
    magic, version, crc, length = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise CheckpointInvalid(f"magic {magic!r}, expected {MAGIC!r}")
    if version not in READS:
        raise CheckpointInvalid(f"version {version}, this broker reads {READS}")
    body = memoryview(data)[_PREFIX.size :]
    if len(body) != length:
        raise CheckpointInvalid(f"{len(body)} bytes after the header, the header says {length}")
    if crc32c.crc32c(body) != crc:
        raise CheckpointInvalid("CRC mismatch: the file is damaged")
    try:
        (
            index,
            term,
            snapshot_index,
            hw,
            floor,
            first_index,
            start_offset,
            n,
            n_runs,
        ) = _HEAD.unpack_from(body, 0)
        pos = _HEAD.size
        runs = [_RUN.unpack_from(body, pos + i * _RUN.size) for i in range(n_runs)]
        pos += n_runs * _RUN.size
        bases = _from_le(body[pos : pos + 8 * n]).tolist()
        pos += 8 * n
        max_ts = _from_le(body[pos : pos + 8 * n]).tolist()
        pos += 8 * n
        kinds = bytes(body[pos : pos + n])
        pos += n
        if len(bases) != n or len(max_ts) != n or len(kinds) != n:
            raise struct.error(f"{n} entries do not fit")
        voters, pos = _decode_members(body, pos)
        learners, pos = _decode_members(body, pos)
        producers = ProducerTable(keep, expiry_ms)
        end = producers.decode_into(bytes(body[pos:]), 0, 2)
        if pos + end != len(body):
            raise struct.error(f"{len(body) - pos - end} bytes left after the producer table")
    except (struct.error, ValueError, PartitionInvariantError) as e:
        raise CheckpointInvalid(f"malformed body: {e}") from e
    terms: list[int] = [0] * n
    for i, (start, t) in enumerate(runs):
        stop = runs[i + 1][0] if i + 1 < len(runs) else n
        if not (0 <= start <= stop <= n) or (i == 0 and start != 0):
            raise CheckpointInvalid("term runs out of order")
        terms[start:stop] = [t] * (stop - start)
    if n and not runs:
        raise CheckpointInvalid("entries without terms")
    if any(b >= c for b, c in pairwise(bases)) or set(kinds) - _KINDS:
        raise CheckpointInvalid("offset index is not well formed")
    if first_index + n - 1 != index or (n and bases[0] != start_offset):
        raise CheckpointInvalid(
            f"offset index [{first_index}, {first_index + n - 1}] does not end at index {index}"
        )
    if n and hw <= bases[-1]:
        raise CheckpointInvalid(f"high watermark {hw} is not past the last entry's base")
    if not snapshot_index <= index or hw < start_offset or (floor > hw and version < 2):
        raise CheckpointInvalid(f"inconsistent header (index {index}, snapshot {snapshot_index})")
    return CheckpointImage(
        index=index,
        term=term,
        snapshot_index=snapshot_index,
        high_watermark=hw,
        log_start_floor=floor,
        first_index=first_index,
        start_offset=start_offset,
        bases=bases,
        terms=terms,
        kinds=kinds,
        max_timestamps=max_ts,
        producers=producers,
        conf_state=ConfState(voters, learners),
    )


def _encode_members(members: frozenset[int]) -> bytes:
    ids = sorted(members)
    return _COUNT.pack(len(ids)) + struct.pack(f"<{len(ids)}q", *ids)


def _decode_members(body: memoryview, pos: int) -> tuple[frozenset[int], int]:
    (count,) = _COUNT.unpack_from(body, pos)
    pos += _COUNT.size
    ids = struct.unpack_from(f"<{count}q", body, pos)
    return frozenset(ids), pos + 8 * count
