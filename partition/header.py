"""Classify a Raft entry of a partition group and read what the offset index needs.

Contract: pure, no I/O, no CRC (the leader checked it with ``wire.batch.validate`` before
proposing; every replica stores the leader's bytes). Reads only the 61-byte header, through
``wire.batch.read_header``.

Every Raft entry occupies offsets (DESIGN.md "partition/"): a data entry (a NORMAL entry
whose data is a record batch) occupies ``lastOffsetDelta + 1`` offsets starting at its
stamped baseOffset; a control entry (the leader's empty no-op, or a CONF_CHANGE) occupies
exactly one offset and is never served to consumers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from partition.errors import PartitionInvariantError
from raft.types import Entry, EntryType
from wire.batch import BatchHeader, InvalidBatch, read_header

__all__ = ["EntryKind", "EntryMeta", "describe_entry", "entry_header"]


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
    return entry.type == EntryType.NORMAL and len(entry.data) > 0


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
            "a batch was proposed without wire.batch.validate, or the log is corrupt",
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
            "a batch was proposed without wire.batch.validate",
        )
    return EntryMeta(EntryKind.DATA, h.last_offset_delta + 1, h.base_offset, h.max_timestamp, h)
