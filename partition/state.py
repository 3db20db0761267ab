"""PartitionState: one partition replica's deterministic state, derived from its Raft log.

Contract: owns the mapping from Raft indexes to record offsets, the high watermark, the log
start offset and the idempotent-producer table. No I/O, no asyncio, no clock: the runtime
feeds it entries (``on_log_append``, ``apply``), passes the log's reader into ``fetch`` and
time into ``retention_cut``. Two replicas fed the same log reach the same state.

Model (DESIGN.md "partition/"):

* Every Raft entry occupies offsets. A data entry (non-empty NORMAL) is one RecordBatch v2
  stamped by the leader with its final base offset before it is proposed; it occupies
  ``lastOffsetDelta + 1`` offsets. A control entry (empty NORMAL = the leader's no-op, or
  CONF_CHANGE) occupies one offset and is never fetched. Offsets are structural: entry i
  starts one past the last offset of entry i-1, for every entry in the log, committed or not
  (the *tail*). A stamped base that disagrees is a PartitionInvariantError.
* The high watermark is the offset after the last *applied* entry: only committed, applied
  batches are served.
* Idempotence is decided at apply time, on every replica identically (partition/producers):
  a duplicate is answered with the original offsets, a gap or a fenced epoch is rejected.
  Such entries keep their offsets (offsets stay structural) but fetch skips them: a gap.
  The leader takes the same decision before proposing (``admit``, over the applied producer
  table plus its unapplied tail, partition/tail.py), so it proposes only batches apply will
  append, whenever the log below is committed as it stands (#12 defect 8).

Runtime loop: ``admit`` then propose ``Append.data`` then ``on_log_append([entry])`` on the
leader (before the next ``admit``); ``on_log_append(ready.entries)`` for every Ready (re-reporting is harmless;
an entry with a new term at an existing index truncates the tail from there); ``apply`` each
committed entry once, in order. At start: ``restore(snapshot)`` then ``on_log_append`` with the
stored log.

Snapshots and restarts (#12 defect 16): a snapshot at index S describes the state after S *and*
a log that starts at S + 1 (retention drops whole segments up to S right after saving it), so
the log start offset after ``restore`` is the end offset of S. A crash between saving the
snapshot and deleting the segments leaves entries at or below S on disk: ``on_log_append``
ignores them, ``apply`` skips them idempotently (``AlreadyApplied``: committed entries never
change, and their effect is in the snapshot), and ``retention_cut`` drops those stale segments
first, so the interrupted pass completes. The snapshot therefore carries no skipped-entry list
(everything it covers lies below the log start).

The log start is replicated (docs/architecture.md "Partition snapshots and retention"). The
*logical* log start is a Raft decision: only the leader plans retention (``plan_retention``,
by its own segments, sizes and clock) and proposes the result as a log-start control entry
(partition/header.py); applying it sets ``log_start_offset = max(current, offset)`` on every
replica, so replicas that applied the same log agree and the log start never moves
backwards. Deleting files stays local: ``retention_cut`` names only whole segments that lie
below the *applied* logical log start, so a follower never cuts on its own clock or sizes.
The snapshot (version 3) and the checkpoint carry the logical log start, so it survives
restarts and reaches a follower that installs a snapshot.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from partition.checkpoint import CheckpointImage, CheckpointInvalid
from partition.config import PartitionConfig
from partition.errors import (
    BatchTooLarge,
    OffsetOutOfRange,
    OutOfOrderSequence,
    PartitionInvariantError,
    ProducerFenced,
)
from partition.header import EntryKind, describe_entry, entry_header, log_start_of
from partition.offset_index import OffsetIndex
from partition.producers import BatchMetadata, ProducerEntry, ProducerTable
from partition.retention import physical_cut as _physical_cut
from partition.retention import retention_cut as _retention_cut
from partition.tail import ProducerTail
from raft.types import ConfState, Entry
from wire.batch import BatchHeader, with_base_offset
from wire.validate import validate

__all__ = [
    "Admission",
    "AlreadyApplied",
    "Append",
    "Appended",
    "ApplyResult",
    "Control",
    "Duplicate",
    "DuplicateOf",
    "FetchResult",
    "LogStartMoved",
    "PartitionState",
    "Rejected",
]

ReadEntries = Callable[[int, int, int], Sequence[Entry]]

_SNAP_HEAD = struct.Struct(">4sBqqqI")
_SNAP_MAGIC = b"RPPS"
_SNAP_VERSION = 3
# 2: the producer table carries the log time and last-seen times; 3: the head's log start is
# the logical (replicated) log start, which may lie above the snapshot's end offset
_SNAP_READS = (1, 2, 3)
_DATA = int(EntryKind.DATA)


@dataclass(frozen=True, slots=True)
class Appended:
    base_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A retry of a batch already appended at [base_offset, last_offset]."""

    base_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class Rejected:
    error: OutOfOrderSequence | ProducerFenced


@dataclass(frozen=True, slots=True)
class Control:
    offset: int


@dataclass(frozen=True, slots=True)
class AlreadyApplied:
    """A committed entry at or below the restored snapshot's index, handed out again after a
    restart (its effect is in the snapshot): skipped, nothing changes."""

    index: int


@dataclass(frozen=True, slots=True)
class LogStartMoved:
    """A log-start control entry at ``offset`` was applied; the logical log start is now
    ``log_start_offset`` (unchanged if the entry did not advance it)."""

    offset: int
    log_start_offset: int


ApplyResult = Appended | Duplicate | Rejected | Control | AlreadyApplied | LogStartMoved


@dataclass(frozen=True, slots=True)
class Append:
    """Leader decision: propose ``data`` (the batch stamped with its final offsets), then
    report the entry through ``on_log_append`` before the next ``admit``."""

    data: bytes
    base_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class DuplicateOf:
    """Leader decision: do not propose; the batch repeats one already in the log at
    [base_offset, last_offset]. ``pending_index`` is 0 when that batch is applied (answer
    now); otherwise it is the original's Raft index, written in ``pending_term``: answer once
    that index is applied with that term (if another term's entry is applied there instead,
    the original is gone: answer NOT_LEADER, the client retries)."""

    base_offset: int
    last_offset: int
    pending_index: int = 0
    pending_term: int = 0


Admission = Append | DuplicateOf | Rejected


@dataclass(frozen=True, slots=True)
class FetchResult:
    batches: list[bytes]
    next_offset: int
    high_watermark: int
    log_start_offset: int


class PartitionState:
    def __init__(self, config: PartitionConfig) -> None:
        self.config = config
        self._index = OffsetIndex(first_index=1, start_offset=0)
        self._producers = ProducerTable(config.producer_state_keep, config.producer_expiry_ms)
        self._applied = 0
        self._applied_term = 0
        self._hw = 0
        self._log_start_floor = 0  # the logical log start (replicated, monotonic)
        self._snapshot_index = 0  # entries <= this are covered by a snapshot (or compacted)
        self._tail = ProducerTail(self._producers, 0)

    # --- read-only facts -----------------------------------------------------------------

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def applied_term(self) -> int:
        """Term of the entry at ``applied_index`` (0 when unknown: a restored snapshot's)."""
        return self._applied_term

    @property
    def high_watermark(self) -> int:
        return self._hw

    @property
    def log_start_offset(self) -> int:
        return max(self._log_start_floor, self._index.start_offset)

    def next_offset(self) -> int:
        """Base offset the next appended entry gets (the end of the tail)."""
        return self._index.end_offset

    def producer_table(self) -> Mapping[int, ProducerEntry]:
        return self._producers.view()

    def index_for_offset(self, offset: int) -> int:
        """The Raft index of the entry containing ``offset`` (committed or not)."""
        start, end = self.log_start_offset, self._index.end_offset
        if not start <= offset < end:
            raise OffsetOutOfRange(offset, start, end)
        return self._index.locate(offset)

    # --- leader: before proposing --------------------------------------------------------

    def validate(self, batch: bytes, *, now_ms: int | None = None) -> BatchHeader:
        """The leader's checks of a produced batch (wire.validate ``validate``: header, CRC,
        every record, decompression bound) with this topic's limits; with ``now_ms`` (the
        leader's clock) also the topic's timestamp bounds. Raises BatchTooLarge or
        InvalidBatch (InvalidTimestamp for a timestamp out of bounds)."""
        config = self.config
        limit = config.max_batch_bytes
        if len(batch) > limit:
            raise BatchTooLarge(len(batch), limit)
        return validate(
            batch,
            max_bytes=limit,
            now_ms=now_ms,
            timestamp_before_max_ms=config.message_timestamp_before_max_ms,
            timestamp_after_max_ms=config.message_timestamp_after_max_ms,
        )

    def stamp(self, batch: bytes, *, now_ms: int | None = None) -> tuple[bytes, int, int]:
        """Validate a produced batch and give it its final offsets, without the idempotence
        decision (prefer :meth:`admit`). Does not record it: the runtime proposes the
        result, then reports it through ``on_log_append``."""
        header = self.validate(batch, now_ms=now_ms)
        base = self._index.end_offset
        return with_base_offset(batch, base), base, base + header.last_offset_delta

    def admit(self, batch: bytes, *, now_ms: int | None = None) -> Admission:
        """The leader's decision for a produced batch, before proposing it (#12 defect 8):
        validate it, then decide idempotence against the producer state *including the
        appended-but-unapplied tail*: ``Append`` (propose ``data``, stamped with its final
        offsets), ``DuplicateOf`` (the original's offsets; do not propose) or ``Rejected``
        (OutOfOrderSequence / ProducerFenced; do not propose). Raises InvalidBatch /
        BatchTooLarge for a malformed batch (see :meth:`validate`; pass the leader's wall
        clock as ``now_ms`` so timestamps are bounded). Records nothing: the runtime proposes
        ``Append.data`` and reports the entry through ``on_log_append`` before the next call.

        Apply decides again and is the authority; both agree whenever the entries before
        this one are committed as they are now (tests/partition/test_admit.py)."""
        header = self.validate(batch, now_ms=now_ms)
        if header.producer_id >= 0:
            try:
                original = self._tail.decide(header, self._producers, self._index.last_index)
            except (OutOfOrderSequence, ProducerFenced) as e:
                return Rejected(e)
            if original is not None:
                return self._duplicate_of(original)
        base = self._index.end_offset
        return Append(with_base_offset(batch, base), base, base + header.last_offset_delta)

    def _duplicate_of(self, original: BatchMetadata) -> DuplicateOf:
        if original.base_offset < self._hw:
            return DuplicateOf(original.base_offset, original.last_offset)
        index = self._index.locate(original.base_offset)
        return DuplicateOf(
            original.base_offset, original.last_offset, index, self._index.term_of(index)
        )

    # --- the tail --------------------------------------------------------------------------

    def on_log_append(self, entries: Sequence[Entry]) -> None:
        """Record entries written to the Raft log (committed or not)."""
        if not entries:
            return
        index = self._index
        if entries[0].index < index.first_index:
            # at or below the snapshot (a crash left them on disk) or already compacted:
            # covered by the snapshot, never served again
            entries = [e for e in entries if e.index >= index.first_index]
        for e in entries:
            pos = e.index - index.first_index
            if pos < len(index):
                if index.term_of(e.index) == e.term:
                    continue  # re-reported: same index and term = same entry (Log Matching)
                if e.index <= self._applied:
                    raise PartitionInvariantError(
                        f"applied entry {e.index} replaced by one of term {e.term}",
                        f"term {index.term_of(e.index)}",
                        e.term,
                        "the Raft core overwrote a committed entry (a Raft safety bug)",
                    )
                index.truncate_from(e.index)
                self._tail.on_truncate(e.index, self._producers, self._applied)
            elif pos > len(index):
                raise PartitionInvariantError(
                    "gap in the reported log",
                    f"index {index.last_index + 1}",
                    e.index,
                    "the runtime skipped a Ready's entries or a proposal's on_log_append",
                )
            meta = describe_entry(e)
            base = index.end_offset
            if meta.kind == EntryKind.DATA and meta.stamped_base_offset != base:
                raise PartitionInvariantError(
                    f"entry {e.index} (term {e.term}) stamped base offset",
                    base,
                    meta.stamped_base_offset,
                    "the leader stamped before reporting its previous proposal, or a "
                    "replica's log diverged",
                )
            index.append(e.index, e.term, meta.span, meta.kind, meta.max_timestamp_ms)
            if meta.header is not None and e.index > self._applied:
                self._tail.on_append(e.index, meta.header, base, base + meta.span - 1)

    # --- apply -----------------------------------------------------------------------------

    def apply(self, entry: Entry) -> ApplyResult:
        """Apply one committed entry; entries come in index order, exactly once each. An
        entry at or below the restored snapshot's index (the core may hand those out again
        after a restart) is skipped: ``AlreadyApplied``."""
        if entry.index <= self._snapshot_index:
            return AlreadyApplied(entry.index)
        if entry.index != self._applied + 1:
            raise PartitionInvariantError(
                "apply order",
                self._applied + 1,
                entry.index,
                "a committed entry was applied twice or skipped",
            )
        index = self._index
        if not index.contains(entry.index) or index.term_of(entry.index) != entry.term:
            self.on_log_append([entry])  # the committed entry is authoritative
        base = index.base_of(entry.index)
        end = index.end_of(entry.index)
        result: ApplyResult
        header: BatchHeader | None = None
        if index.kind_of(entry.index) == EntryKind.CONTROL:
            cut = log_start_of(entry)
            if cut is None:
                result = Control(base)
            else:
                # never past the entry itself (so never past the high watermark)
                self._log_start_floor = max(self._log_start_floor, min(cut, base))
                result = LogStartMoved(base, self.log_start_offset)
        else:
            header = entry_header(entry)
            result = Appended(base, end - 1)
            if header.producer_id >= 0:
                try:
                    original = self._producers.apply(header, base, end - 1)
                except (OutOfOrderSequence, ProducerFenced) as e:
                    index.set_kind(entry.index, EntryKind.REJECTED)
                    result = Rejected(e)
                else:
                    if original is not None:
                        index.set_kind(entry.index, EntryKind.DUPLICATE)
                        result = Duplicate(original.base_offset, original.last_offset)
            else:
                self._producers.observe(header.max_timestamp)
        self._tail.on_applied(entry.index, header, self._producers)
        self._applied = entry.index
        self._applied_term = entry.term
        self._hw = end
        return result

    # --- fetch -----------------------------------------------------------------------------

    def fetch(self, offset: int, max_bytes: int, read: ReadEntries) -> FetchResult:
        """Applied, live batches from the one containing ``offset``, up to ``max_bytes``
        (at least one batch).

        An offset at or above the high watermark but not past the log end offset gives an
        empty result with ``next_offset == offset``: the consumer waits and asks again, as
        Kafka answers. The leader may have appended but not committed it yet, and a new
        leader's high watermark can trail its predecessor's until its no-op commits (#12
        defect 7); answering OFFSET_OUT_OF_RANGE there made consumers reset and skip
        records. Only offsets below the log start or past the log end are out of range
        (the error's ``end`` is the high watermark, where "latest" seeks to)."""
        start, hw = self.log_start_offset, self._hw
        if offset < start or offset > max(hw, self._index.end_offset):
            raise OffsetOutOfRange(offset, start, hw)
        if offset >= hw:
            return FetchResult([], offset, hw, start)
        index = self._index
        i = index.locate(offset)
        last = self._applied
        batches: list[bytes] = []
        total = 0
        full = False
        while i <= last and not full:
            while i <= last and index.kind_of(i) != _DATA:
                i += 1  # control / duplicate / rejected: never served, not even read
            if i > last:
                break
            got = read(i, last + 1, max(max_bytes - total, 1))
            if not got:
                raise PartitionInvariantError(
                    f"log read of [{i}, {last + 1})",
                    "at least one entry",
                    "none",
                    "the Raft log lost applied entries, or read() ignores its contract",
                )
            for e in got:
                if e.index != i:
                    raise PartitionInvariantError(
                        "log read returned entries out of order",
                        i,
                        e.index,
                        "read() must return consecutive entries starting at lo",
                    )
                if i > last:
                    break
                if index.kind_of(i) == _DATA:
                    size = len(e.data)
                    if batches and total + size > max_bytes:
                        full = True
                        break
                    batches.append(e.data)
                    total += size
                i += 1
                if total >= max_bytes:
                    full = True
                    break
        return FetchResult(batches, index.base_of(i) if i <= last else hw, hw, start)

    # --- snapshot / compaction / retention ---------------------------------------------------

    def snapshot(self, log_start_offset: int = 0) -> bytes:
        """The state at ``applied_index`` for a log that will start at ``applied_index + 1``:
        end offset, logical log start, producer table. The offset index is rebuilt from the
        log; skipped entries all lie below the snapshot, so none are listed (#12 defect 17).

        ``log_start_offset``: a logical log start known to be committed *later* than this
        index (the live replica's, when the snapshot is rebuilt at an older retention cut);
        the snapshot carries the larger of it and its own, so a follower installing it never
        exposes a lower log start than the replica that sent it. Safe because the log start
        is monotonic and that value was decided by a committed entry the follower will apply
        anyway."""
        start = max(self._hw, self._log_start_floor, log_start_offset)
        head = _SNAP_HEAD.pack(_SNAP_MAGIC, _SNAP_VERSION, self._applied, self._hw, start, 0)
        return head + self._producers.encode()

    def restore(self, data: bytes, snapshot_index: int) -> None:
        """Replace the state with ``data`` taken at ``snapshot_index``; the tail starts
        empty after it (the runtime then reports the stored log)."""
        try:
            magic, version, applied, hw, log_start, n_skipped = _SNAP_HEAD.unpack_from(data, 0)
            pos = _SNAP_HEAD.size
            if pos + 8 * n_skipped > len(data):
                raise struct.error(f"{n_skipped} skipped indexes do not fit")
        except struct.error as e:
            raise PartitionInvariantError(
                "partition snapshot header",
                "a complete header",
                str(e),
                "the snapshot is damaged or not a partition snapshot",
            ) from e
        if magic != _SNAP_MAGIC or version not in _SNAP_READS or applied != snapshot_index:
            raise PartitionInvariantError(
                "partition snapshot identity",
                (_SNAP_MAGIC, _SNAP_VERSION, snapshot_index),
                (magic, version, applied),
                "the snapshot belongs to another group or index, or another version",
            )
        producers = ProducerTable(self.config.producer_state_keep, self.config.producer_expiry_ms)
        end = producers.decode_into(data, pos + 8 * n_skipped, version)
        if end != len(data):
            raise PartitionInvariantError(
                "partition snapshot length", end, len(data), "the snapshot is damaged"
            )
        # version 1 wrote a log start and a skipped list: both lie below the end offset;
        # version 3's is the logical log start (it may lie above the end offset)
        floor = max(hw, log_start) if version >= 3 else hw
        self._producers = producers
        self._index = OffsetIndex(first_index=snapshot_index + 1, start_offset=hw)
        self._applied = snapshot_index
        self._applied_term = 0
        self._snapshot_index = snapshot_index
        self._hw = hw
        self._log_start_floor = floor
        self._tail = ProducerTail(producers, snapshot_index)

    # --- checkpoints (partition/checkpoint.py) ---------------------------------------------

    def capture_checkpoint(self, conf_state: ConfState | None = None) -> CheckpointImage:
        """An immutable image of the state at ``applied_index``: the offset index up to it
        (list slices) and a copy of the producer table, with the group's membership as of that
        index (``conf_state``, which the runtime tracks). Cheap enough for the event loop; the
        caller encodes and writes it elsewhere. Describes applied (so committed) entries only."""
        applied, index = self._applied, self._index
        bases, terms, kinds, max_ts = index.prefix(applied)
        return CheckpointImage(
            index=applied,
            term=index.term_of(applied) if index.contains(applied) else 0,
            snapshot_index=self._snapshot_index,
            high_watermark=self._hw,
            log_start_floor=self._log_start_floor,
            first_index=index.first_index,
            start_offset=bases[0] if bases else self._hw,
            bases=bases,
            terms=terms,
            kinds=kinds,
            max_timestamps=max_ts,
            producers=self._producers.copy(),
            conf_state=conf_state if conf_state is not None else ConfState(),
        )

    def restore_checkpoint(self, image: CheckpointImage, snapshot_index: int) -> None:
        """Replace the state with the checkpoint's, for a log whose Raft snapshot is at
        ``snapshot_index``: afterwards the state equals the one ``restore(snapshot)`` plus
        ``on_log_append`` and ``apply`` of every entry up to ``image.index`` would give. A
        retention cut after the checkpoint was taken (``image.snapshot_index <
        snapshot_index <= image.index``) is applied to the restored index; a cut above the
        checkpoint makes it useless: CheckpointInvalid. Then report the log after
        ``image.index`` through ``on_log_append``."""
        if image.first_index != image.snapshot_index + 1:
            raise CheckpointInvalid(
                f"offset index starts at {image.first_index}, not after the checkpoint's "
                f"snapshot index {image.snapshot_index}"
            )
        if not image.snapshot_index <= snapshot_index <= image.index:
            raise CheckpointInvalid(
                f"checkpoint at index {image.index} (snapshot {image.snapshot_index}) does not "
                f"cover the log's snapshot at index {snapshot_index}"
            )
        producers = image.producers.copy()
        index = OffsetIndex.from_parts(
            image.first_index,
            image.start_offset,
            image.high_watermark,
            list(image.bases),
            list(image.terms),
            image.kinds,
            list(image.max_timestamps),
        )
        floor = image.log_start_floor
        if snapshot_index > image.snapshot_index:
            index.compact_to(snapshot_index + 1)
            floor = max(floor, index.start_offset)
        self._producers = producers
        self._index = index
        self._applied = image.index
        self._applied_term = image.term
        self._snapshot_index = snapshot_index
        self._hw = image.high_watermark
        self._log_start_floor = floor
        self._tail = ProducerTail(producers, image.index)

    def on_compacted(self, first_kept_index: int) -> None:
        """The Raft log now starts at ``first_kept_index``; offsets before it are gone."""
        if first_kept_index > self._applied + 1:
            raise PartitionInvariantError(
                "compaction point",
                f"<= {self._applied + 1} (applied + 1)",
                first_kept_index,
                "the log was compacted past unapplied entries",
            )
        self._snapshot_index = max(self._snapshot_index, first_kept_index - 1)
        self._index.compact_to(first_kept_index)
        self._log_start_floor = max(self._log_start_floor, self._index.start_offset)

    def retention_cut(
        self, segments: Sequence[tuple[int, int, int]], now_ms: int | None = None
    ) -> int | None:
        """The last index of the newest segment this replica may delete now, or None: whole
        segments whose entries all lie below the *applied* logical log start (and segments
        left at or below the snapshot by a crash, first). Never above the log start, and
        independent of this replica's clock and sizes (``now_ms`` is ignored: the leader
        decides the log start, :meth:`plan_retention`). The server saves a snapshot at the
        cut, so a cut is never below the snapshot index (partition/retention.py)."""
        return _physical_cut(
            segments,
            applied_index=self._applied,
            snapshot_index=self._snapshot_index,
            gone_index=self._gone_index(),
        )

    def plan_retention(self, segments: Sequence[tuple[int, int, int]], now_ms: int) -> int | None:
        """The leader's retention decision: the offset the log should start at, by time and
        size over this replica's segments (partition/retention.py; segments already below
        the logical log start count as gone), or None when that does not advance the log
        start. The runtime proposes it as a log-start control entry (``encode_log_start``);
        nothing changes until that entry is applied."""
        gone = self._gone_index()
        cut = _retention_cut(
            segments,
            applied_index=self._applied,
            snapshot_index=gone,
            now_ms=now_ms,
            retention_ms=self.config.retention_ms,
            retention_bytes=self.config.retention_bytes,
            max_timestamp_ms=self._max_timestamp,
        )
        if cut is None or cut <= gone:
            return None
        offset = self._index.end_of(cut)
        return offset if offset > self.log_start_offset else None

    def _gone_index(self) -> int:
        """The last applied index whose entries all lie below the logical log start (at
        least the snapshot index)."""
        index, start = self._index, self.log_start_offset
        if start >= index.end_offset:
            gone = index.last_index
        elif start <= index.start_offset:
            gone = index.first_index - 1
        else:
            gone = index.locate(start) - 1
        return max(self._snapshot_index, min(gone, self._applied))

    def _max_timestamp(self, lo: int, hi: int) -> int | None:
        # the part of a segment at or below the snapshot is gone already: ignore it
        return self._index.max_timestamp(max(lo, self._snapshot_index + 1), hi)
