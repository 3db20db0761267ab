"""A simulated disk: a ``MemoryStorage`` the core reads, plus a model of what is durable.

Contract: the driver writes every Ready's snapshot / entries / hard state through
:meth:`SimDisk.write`. The write lands at once in ``storage`` (the page cache the core reads
back), but becomes *durable* only when its simulated fsync completes, ``fsync_steps`` later.
Fsyncs complete in write order (one queue, completion times never decrease), so the durable
state is always a prefix of the write history -- exactly what a real log with group commit
gives. :meth:`crash` throws away every write whose fsync has not completed, and
:meth:`recover` builds a fresh ``MemoryStorage`` from the durable state only.

Local compaction (:meth:`compact`) is durable at once (a real runtime writes the snapshot
file with its own fsync before it truncates) and is only ever taken at or below the durable
commit index, so a recovered node never sees a hard state that commits less than its
snapshot.

``forget_vote_on_recover`` is a fault knob for the bug-injection tests: a disk that loses
``HardState.vote`` across a restart (a real bug class: vote kept in memory only).
No randomness here: the caller passes latencies in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from raft.memory import MemoryStorage
from raft.types import ConfState, Entry, HardState, Snapshot


@dataclass(frozen=True, slots=True)
class PendingWrite:
    number: int
    done_at_step: int
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]
    hard_state: HardState | None


class SimDisk:
    def __init__(self, bootstrap: ConfState, forget_vote_on_recover: bool = False) -> None:
        self.bootstrap = bootstrap
        self.forget_vote_on_recover = forget_vote_on_recover
        self.durable_snapshot: Snapshot | None = None
        self.durable_entries: list[Entry] = []  # contiguous, after the durable snapshot
        self.durable_hard_state = HardState()
        self.pending: deque[PendingWrite] = deque()
        self.last_done_at_step = 0
        self.storage = MemoryStorage(conf_state=bootstrap, hard_state=HardState())

    # -- writes ---------------------------------------------------------------------------

    def write(
        self,
        number: int,
        now_step: int,
        fsync_steps: int,
        snapshot: Snapshot | None,
        entries: tuple[Entry, ...],
        hard_state: HardState | None,
    ) -> None:
        """Write into the page cache now; durable at ``now_step + fsync_steps`` (or later,
        if an earlier fsync is still running: completions are ordered)."""
        if snapshot is not None:
            # Even an index-0 snapshot matters: it carries the membership a joining node
            # must start from (the core sends one to a node with an empty log).
            self.storage.apply_snapshot(snapshot)
        if entries:
            self.storage.append(list(entries))
        if hard_state is not None:
            self.storage.set_hard_state(hard_state)
        has_write = bool(entries) or hard_state is not None or snapshot is not None
        done = now_step + (fsync_steps if has_write else 0)
        done = max(done, self.last_done_at_step)
        self.last_done_at_step = done
        self.pending.append(PendingWrite(number, done, snapshot, entries, hard_state))

    def complete_fsyncs(self, now_step: int) -> int | None:
        """Make durable every write whose fsync is done; return the highest Ready number
        that became durable (for ``on_persisted``), or None."""
        number: int | None = None
        while self.pending and self.pending[0].done_at_step <= now_step:
            w = self.pending.popleft()
            self._make_durable(w)
            number = w.number
        return number

    def _make_durable(self, w: PendingWrite) -> None:
        if w.snapshot is not None:
            snap_index = w.snapshot.metadata.index
            cur = self.durable_snapshot.metadata.index if self.durable_snapshot else -1
            if snap_index >= cur:
                self.durable_snapshot = w.snapshot
                self.durable_entries = []
        if w.entries:
            first = w.entries[0].index
            base = self._durable_snapshot_index()
            keep = max(0, first - base - 1)
            del self.durable_entries[keep:]
            for e in w.entries:
                if e.index > base:
                    self.durable_entries.append(e)
            self._check_contiguous()
        if w.hard_state is not None:
            self.durable_hard_state = w.hard_state

    def _durable_snapshot_index(self) -> int:
        return self.durable_snapshot.metadata.index if self.durable_snapshot else 0

    def _check_contiguous(self) -> None:
        base = self._durable_snapshot_index()
        for offset, e in enumerate(self.durable_entries):
            if e.index != base + 1 + offset:
                raise AssertionError(
                    f"sim disk: durable log not contiguous at {e.index}, expected "
                    f"{base + 1 + offset} (simulator bug, not a core bug)"
                )

    def durable_last_index(self) -> int:
        if self.durable_entries:
            return self.durable_entries[-1].index
        return self._durable_snapshot_index()

    # -- compaction -----------------------------------------------------------------------

    def compactable_index(self, applied: int) -> int:
        """Highest index a local snapshot may cover: applied, durable and durably committed."""
        return min(applied, self.durable_hard_state.commit, self.durable_last_index())

    def compact(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot | None:
        if index <= self._durable_snapshot_index() or index < self.storage.first_index():
            return None
        snap = self.storage.create_snapshot(index, conf_state, data)
        self.storage.compact(index)
        self.durable_snapshot = snap
        self.durable_entries = [e for e in self.durable_entries if e.index > index]
        if self.durable_entries and self.durable_entries[0].index != index + 1:
            self.durable_entries = []
        return snap

    # -- crash / recovery -----------------------------------------------------------------

    def crash(self) -> int:
        """Lose every write whose fsync has not completed; return how many were lost."""
        lost = len(self.pending)
        self.pending.clear()
        self.last_done_at_step = 0
        return lost

    def recover(self) -> MemoryStorage:
        """A fresh MemoryStorage holding only durable state (what a restarted process reads)."""
        hs = self.durable_hard_state
        if self.forget_vote_on_recover:
            hs = replace(hs, vote=0)
            self.durable_hard_state = hs
        conf = self.bootstrap
        if self.durable_snapshot is not None:
            conf = self.durable_snapshot.metadata.conf_state
        storage = MemoryStorage(conf_state=conf, hard_state=HardState())
        if self.durable_snapshot is not None:
            storage.apply_snapshot(self.durable_snapshot)
        if self.durable_entries:
            storage.append(list(self.durable_entries))
        storage.set_hard_state(hs)
        self.storage = storage
        return storage
