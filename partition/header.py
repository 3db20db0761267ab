"""Classify a Raft entry of a partition group and read what the offset index needs.

Contract: pure, no I/O, no CRC (the leader checked it with ``wire.validate.validate`` before
proposing; every replica stores the leader's bytes). Reads only the 61-byte header, through
``wire.batch.read_header``.

Every Raft entry occupies offsets (DESIGN.md "partition/"): a data entry (a NORMAL entry
whose data is a record batch) occupies ``lastOffsetDelta + 1`` offsets starting at its
stamped baseOffset; a control entry (the leader's empty no-op, or a CONF_CHANGE) occupies
exactly one offset and is never served to consumers.

replog's own control entries. A NORMAL entry whose data is *shorter than a RecordBatch header*
(61 bytes) and starts with ``b"RP"`` is a replog control entry, never a record batch (a batch
is at least 61 bytes long, so the two can never be confused). One kind exists:

* **log start** (``b"RPLS" [u8 version = 1] [i64 offset]``, 13 bytes): the leader's retention
  decision "the log now starts at ``offset``". Applying it sets the partition's logical log
  start to ``max(current, min(offset, the entry's own base offset))`` on every replica
  (partition/state.py). Like every control entry it occupies one offset that no consumer
  ever sees (a gap, as the leader's no-op). A broker that predates it refuses the entry
  loudly (PartitionInvariantError: "not a record batch"): upgrade every broker first.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from partition.errors import PartitionInvariantError
from raft.types import Entry, EntryType
from wire.batch import BatchHeader, InvalidBatch, read_header

__all__ = [
    "EntryKind",
    "EntryMeta",
    "describe_entry",
    "encode_log_start",
    "entry_header",
    "log_start_of",
]

_LOG_START = struct.Struct(">4sBq")
_LOG_START_MAGIC = b"RPLS"
_LOG_START_VERSION = 1
_CONTROL_PREFIX = b"RP"
_BATCH_MIN = 61  # a RecordBatch v2 header; replog control entries are shorter


class EntryKind(IntEnum):
    CONTROL = 0
    """Raft's own entry (no-op, configuration): one offset, never fetched."""
    DATA = 1
    """A record batch: appended (once committed) and served."""
    DUPLICATE = 2
    """A committed batch that repeated one already appended: its offsets are a gap."""
    REJECTED = 3
    """A committed batch refused at apply time (sequence gap, fenced epoch): a gap."""


@dataclass(frozen=True, slots=True)
class EntryMeta:
    kind: EntryKind
    span: int
    """Offsets the entry occupies (>= 1)."""
    stamped_base_offset: int
    """The batch's baseOffset as the leader stamped it; -1 for control entries."""
    max_timestamp_ms: int
    """The batch's maxTimestamp; -1 for control entries."""
    header: BatchHeader | None = None
    """The batch header of a data entry; None for control entries."""


_CONTROL = EntryMeta(EntryKind.CONTROL, 1, -1, -1)


def is_data(entry: Entry) -> bool:
    data = entry.data
    return (
        entry.type == EntryType.NORMAL
        and len(data) > 0
        and not (len(data) < _BATCH_MIN and data[:2] == _CONTROL_PREFIX)
    )


def encode_log_start(offset: int) -> bytes:
    """The data of a log-start control entry (the leader proposes it; see the module doc)."""
    if offset < 0:
        raise ValueError(f"log start offset {offset} is negative")
    return _LOG_START.pack(_LOG_START_MAGIC, _LOG_START_VERSION, offset)


def log_start_of(entry: Entry) -> int | None:
    """The offset of a log-start control entry; None for any other entry. A replog control
    entry this broker does not know (another kind or version) is an invariant violation:
    applying it wrongly, or skipping it, would make replicas disagree."""
    data = entry.data
    if entry.type != EntryType.NORMAL or not data or len(data) >= _BATCH_MIN:
        return None
    if data[:2] != _CONTROL_PREFIX:
        return None
    if len(data) == _LOG_START.size:
        magic, version, offset = _LOG_START.unpack(data)
        if magic == _LOG_START_MAGIC and version == _LOG_START_VERSION and offset >= 0:
            return int(offset)
    raise PartitionInvariantError(
        f"entry {entry.index} (term {entry.term}) is a replog control entry",
        f"a known kind ({_LOG_START_MAGIC!r} version {_LOG_START_VERSION}, offset >= 0)",
        data.hex(),
        "a newer broker proposed a control entry this one does not know (upgrade it), or "
        "the log is corrupt",
    )


def entry_header(entry: Entry) -> BatchHeader:
    """The batch header of a data entry; a malformed one is an invariant violation (the
    leader validates every batch before proposing it)."""
    try:
        return read_header(entry.data)
    except InvalidBatch as e:
        raise PartitionInvariantError(
            f"entry {entry.index} (term {entry.term}) is not a record batch",
            "a RecordBatch v2 header",
            e.what,
            "a batch was proposed without wire.validate.validate, or the log is corrupt",
        ) from e


def describe_entry(entry: Entry) -> EntryMeta:
    if not is_data(entry):
        return _CONTROL
    h = entry_header(entry)
    if h.last_offset_delta < 0:
        raise PartitionInvariantError(
            f"entry {entry.index} has a negative lastOffsetDelta",
            ">= 0",
            h.last_offset_delta,
            "a batch was proposed without wire.validate.validate",
        )
    return EntryMeta(EntryKind.DATA, h.last_offset_delta + 1, h.base_offset, h.max_timestamp, h)
