"""Idempotent producers: the per-partition producer table and the sequence rules.

Contract: deterministic and pure; decided at APPLY time on every replica from the committed
log alone, so all replicas agree on which batches were duplicates or rejected (DESIGN.md:
"a retried batch is acknowledged with its original offsets, a gap in sequence is rejected").
No clock: producers are never expired here (see the report / docs: expiry needs a
replicated clock, e.g. a timestamp carried in the entries).

Rules (Kafka's ProducerStateManager, simplified to non-transactional idempotence):

* producer id -1: not idempotent, always appended (the caller checks this).
* epoch < current epoch: ``ProducerFenced`` (a newer instance exists).
* epoch > current epoch (or unknown producer): a new session; base sequence must be 0.
* same epoch: if (first, last) sequence equals one of the last ``keep`` batches, the batch
  is a duplicate and is answered with that batch's offsets; otherwise the base sequence must
  be last_sequence + 1, else ``OutOfOrderSequence``.

Sequences are int32 and wrap from 2**31 - 1 to 0, as in Kafka's
``DefaultRecordBatch.incrementSequence``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from partition.errors import OutOfOrderSequence, PartitionInvariantError, ProducerFenced
from wire.batch import BatchHeader

__all__ = ["BatchMetadata", "ProducerEntry", "ProducerTable", "increment_sequence"]

_INT32_MAX = (1 << 31) - 1
_PRODUCER = struct.Struct(">qhiH")
_BATCH = struct.Struct(">iiqq")
_COUNT = struct.Struct(">I")


def increment_sequence(sequence: int, increment: int) -> int:
    if sequence > _INT32_MAX - increment:
        return increment - (_INT32_MAX - sequence) - 1
    return sequence + increment


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_sequence: int
    last_sequence: int
    base_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class ProducerEntry:
    epoch: int
    last_sequence: int
    recent: tuple[BatchMetadata, ...]
    """The most recent appended batches of this epoch, oldest first (at most ``keep``)."""


class ProducerTable:
    __slots__ = ("_entries", "_keep")

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._entries: dict[int, ProducerEntry] = {}

    def view(self) -> Mapping[int, ProducerEntry]:
        return MappingProxyType(self._entries)

    def precheck(self, header: BatchHeader) -> None:
        """Leader fast path: refuse a fenced epoch before proposing. Sequence gaps are not
        checked here: batches still in flight in the Raft log may fill them."""
        current = self._entries.get(header.producer_id)
        if current is not None and header.producer_epoch < current.epoch:
            raise ProducerFenced(header.producer_id, header.producer_epoch, current.epoch)

    def check(self, header: BatchHeader) -> BatchMetadata | None:
        """The original batch if ``header`` duplicates a recent one, None if it may be
        appended; raises ProducerFenced / OutOfOrderSequence if it must be rejected."""
        pid = header.producer_id
        current = self._entries.get(pid)
        base_seq = header.base_sequence
        if current is None or header.producer_epoch > current.epoch:
            if base_seq != 0:
                raise OutOfOrderSequence(pid, 0, base_seq)
            return None
        if header.producer_epoch < current.epoch:
            raise ProducerFenced(pid, header.producer_epoch, current.epoch)
        last_seq = increment_sequence(base_seq, header.last_offset_delta)
        for batch in current.recent:
            if batch.first_sequence == base_seq and batch.last_sequence == last_seq:
                return batch
        expected = increment_sequence(current.last_sequence, 1)
        if base_seq != expected:
            raise OutOfOrderSequence(pid, expected, base_seq)
        return None

    def record(self, header: BatchHeader, base_offset: int, last_offset: int) -> None:
        """Remember an appended batch (after :meth:`check` returned None)."""
        pid = header.producer_id
        last_seq = increment_sequence(header.base_sequence, header.last_offset_delta)
        batch = BatchMetadata(header.base_sequence, last_seq, base_offset, last_offset)
        current = self._entries.get(pid)
        if current is None or current.epoch != header.producer_epoch:
            recent: tuple[BatchMetadata, ...] = (batch,)
        else:
            recent = (*current.recent, batch)[-self._keep :]
        self._entries[pid] = ProducerEntry(header.producer_epoch, last_seq, recent)

    # --- snapshot encoding ---------------------------------------------------------------

    def encode(self) -> bytes:
        parts = [_COUNT.pack(len(self._entries))]
        for pid in sorted(self._entries):
            e = self._entries[pid]
            parts.append(_PRODUCER.pack(pid, e.epoch, e.last_sequence, len(e.recent)))
            for b in e.recent:
                parts.append(
                    _BATCH.pack(b.first_sequence, b.last_sequence, b.base_offset, b.last_offset)
                )
        return b"".join(parts)

    def decode_into(self, buf: bytes, pos: int) -> int:
        """Replace the table with the one encoded at ``pos``; returns the end position."""
        try:
            (n,) = _COUNT.unpack_from(buf, pos)
            pos += _COUNT.size
            entries: dict[int, ProducerEntry] = {}
            for _ in range(n):
                pid, epoch, last_seq, n_recent = _PRODUCER.unpack_from(buf, pos)
                pos += _PRODUCER.size
                recent = []
                for _r in range(n_recent):
                    recent.append(BatchMetadata(*_BATCH.unpack_from(buf, pos)))
                    pos += _BATCH.size
                entries[pid] = ProducerEntry(epoch, last_seq, tuple(recent[-self._keep :]))
        except struct.error as e:
            raise PartitionInvariantError(
                "partition snapshot producer table is truncated",
                "a complete table",
                str(e),
                "the snapshot file is damaged or was written by another version",
            ) from e
        self._entries = entries
        return pos
