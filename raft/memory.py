"""MemoryStorage: an in-memory ``LogStorage`` for tests, the simulator and benchmarks.

Contract: implements ``raft.storage_api.LogStorage`` plus the write side a driver uses to
persist a Ready (``append``, ``set_hard_state``, ``apply_snapshot``) and the compaction side
(``create_snapshot``, ``compact``). "Durable" here means "in this object": the simulator
models crashes by keeping or dropping whole MemoryStorage states. No I/O.

Layout: ``_ents[0]`` is a dummy entry at the snapshot's (index, term); real entries follow,
so ``_ents[i]`` has index ``snapshot index + i`` and slicing is plain list slicing.
"""

from __future__ import annotations

from collections.abc import Sequence

from raft.errors import Compacted, InvariantViolation, Unavailable
from raft.log import limit_size
from raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata

_EMPTY_CONF = ConfState()
_EMPTY_HARD = HardState()


class MemoryStorage:
    def __init__(
        self, conf_state: ConfState = _EMPTY_CONF, hard_state: HardState = _EMPTY_HARD
    ) -> None:
        self._hard_state = hard_state
        self._snapshot = Snapshot(SnapshotMetadata(0, 0, conf_state))
        self._ents: list[Entry] = [Entry(0, 0)]

    # -- LogStorage ---------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise Compacted(index, offset + 1)
        if index - offset >= len(self._ents):
            raise Unavailable(index, self.last_index())
        return self._ents[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise Compacted(lo, offset + 1)
        if hi > self.last_index() + 1:
            raise Unavailable(hi - 1, self.last_index())
        return limit_size(self._ents[lo - offset : hi - offset], max_bytes)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- write side -----------------------------------------------------------------------

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def append(self, entries: Sequence[Entry]) -> None:
        """Store ``entries``, replacing any stored entries from ``entries[0].index`` on."""
        if not entries:
            return
        first = self.first_index()
        start = entries[0].index
        if start > self.last_index() + 1:
            raise InvariantViolation(
                "storage append",
                f"entries starting at or before {self.last_index() + 1}",
                f"entries starting at {start}",
                "a gap in the log: the driver skipped a Ready's entries",
            )
        if start + len(entries) - 1 < first:
            return  # entirely compacted away already
        if start < first:
            entries = entries[first - start :]
            start = first
        offset = self._ents[0].index
        del self._ents[start - offset :]
        self._ents.extend(entries)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by ``snap`` (a follower installing the leader's snapshot)."""
        if snap.metadata.index < self._snapshot.metadata.index:
            return
        self._snapshot = snap
        self._ents = [Entry(snap.metadata.index, snap.metadata.term)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine at ``index`` (which must be stored)."""
        if index <= self._snapshot.metadata.index:
            return self._snapshot
        if index > self.last_index():
            raise Unavailable(index, self.last_index())
        snap = Snapshot(SnapshotMetadata(index, self.term(index), conf_state), data)
        self._snapshot = snap
        return snap

    def compact(self, index: int) -> None:
        """Drop entries up to and including ``index`` (keeping it as the dummy head)."""
        offset = self._ents[0].index
        if index <= offset:
            return
        if index > self.last_index():
            raise Unavailable(index, self.last_index())
        self._ents = self._ents[index - offset :]
