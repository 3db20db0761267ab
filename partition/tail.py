"""The producer state after the unapplied tail: what the leader decides with at stamp time.

Contract: pure, no I/O. Owns a small overlay over the applied :class:`ProducerTable`: the
entries of the producers that batches in the tail (appended to the log, not yet applied)
change, and the log time after the tail. It uses the very functions apply uses
(``producers.decide`` / ``producers.advanced``), so for a batch proposed now, the stamp-time
decision equals the apply-time one whenever the log below it is committed unchanged
(#12 defect 8: the leader never proposes a batch apply would answer as a duplicate or
reject, and ``acks=leader`` never reports one as written). If the tail is replaced by another
leader's entries, apply's decision (the authority) stands and the proposer learns of it then.

Strategy: the overlay is brought up to date lazily, when the leader decides (followers never
pay for it): it simulates the tail entries it has not seen yet, in index order. Applying a
tail entry makes the overlay's record of a producer redundant once that producer's last
simulated batch is applied, so it is dropped then; a truncation at or below what the overlay
has simulated resets it to the applied table.
"""

from __future__ import annotations

from partition.errors import OutOfOrderSequence, ProducerFenced
from partition.producers import (
    BatchMetadata,
    LogTime,
    ProducerEntry,
    ProducerTable,
    advanced,
    decide,
    is_expired,
)
from wire.batch import BatchHeader

__all__ = ["ProducerTail"]


class ProducerTail:
    __slots__ = ("_headers", "_last_touch", "_now", "_overlay", "_upto")

    def __init__(self, table: ProducerTable, applied_index: int) -> None:
        self._headers: dict[int, tuple[BatchHeader, int, int]] = {}
        """Data entries above the applied index: header, base offset, last offset."""
        self._overlay: dict[int, ProducerEntry] = {}
        self._last_touch: dict[int, int] = {}
        self._now = table.log_time
        self._upto = applied_index

    def reset(self, table: ProducerTable, applied_index: int) -> None:
        """Forget the simulation: the overlay describes the applied table again."""
        self._overlay.clear()
        self._last_touch.clear()
        self._now = table.log_time
        self._upto = applied_index

    def on_append(
        self, index: int, header: BatchHeader, base_offset: int, last_offset: int
    ) -> None:
        """A data entry above the applied index entered the log."""
        self._headers[index] = (header, base_offset, last_offset)

    def on_truncate(self, index: int, table: ProducerTable, applied_index: int) -> None:
        """Entries >= ``index`` left the log (a new leader overwrote them)."""
        for i in [i for i in self._headers if i >= index]:
            del self._headers[i]
        if index <= self._upto:
            self.reset(table, applied_index)

    def on_applied(self, index: int, header: BatchHeader | None, table: ProducerTable) -> None:
        """``table`` now includes entry ``index`` (whose header is ``header``, None for a
        control entry)."""
        self._headers.pop(index, None)
        if index >= self._upto:
            self.reset(table, index)
            return
        if header is not None and self._last_touch.get(header.producer_id) == index:
            del self._last_touch[header.producer_id]
            del self._overlay[header.producer_id]

    def decide(
        self, header: BatchHeader, table: ProducerTable, last_index: int
    ) -> BatchMetadata | None:
        """Apply's decision for ``header`` if it were appended after ``last_index`` now."""
        self._catch_up(table, last_index)
        pid = header.producer_id
        entry = self._overlay[pid] if pid in self._overlay else table.get(pid)
        return decide(entry, header, self._now, table.expiry_ms)

    def _catch_up(self, table: ProducerTable, last_index: int) -> None:
        expiry_ms = table.expiry_ms
        for index in range(self._upto + 1, last_index + 1):
            found = self._headers.get(index)
            if found is None:
                continue  # a control entry
            h, base, last = found
            before: LogTime = self._now
            self._now = before.after(h.max_timestamp)
            pid = h.producer_id
            if pid < 0:
                continue
            entry = self._overlay[pid] if pid in self._overlay else table.get(pid)
            if entry is not None and is_expired(entry, before, expiry_ms):
                entry = None  # apply would have dropped it by now
            try:
                original = decide(entry, h, before, expiry_ms)
            except (OutOfOrderSequence, ProducerFenced):
                continue
            if original is None:
                self._overlay[pid] = advanced(entry, h, base, last, self._now.newest_ms, table.keep)
                self._last_touch[pid] = index
        self._upto = max(self._upto, last_index)
