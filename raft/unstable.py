"""Entries and a snapshot this node holds but has not yet seen persisted.

Contract: the in-memory tail of the log (etcd-raft's ``unstable``). ``entries[i]`` has index
``offset + i``. Entries from ``in_progress`` on have not been handed out in a Ready yet;
entries in [offset, in_progress) were handed out and await ``on_persisted``. ``stable_to``
drops a persisted prefix, but only if the entry at that index still has the term that was
written (an entry may have been replaced meanwhile by a newer leader: thesis §3.5). No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from raft.types import Entry, Snapshot


class Unstable:
    __slots__ = ("entries", "in_progress", "offset", "snapshot", "snapshot_in_progress")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.snapshot_in_progress = False
        self.entries: list[Entry] = []
        self.offset = offset
        self.in_progress = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, index: int) -> int | None:
        if index < self.offset:
            snap = self.snapshot
            if snap is not None and snap.metadata.index == index:
                return snap.metadata.term
            return None
        i = index - self.offset
        if i < len(self.entries):
            return self.entries[i].term
        return None

    def has_next_entries(self) -> bool:
        return self.in_progress < self.offset + len(self.entries)

    def next_entries(self) -> list[Entry]:
        return self.entries[self.in_progress - self.offset :]

    def has_next_snapshot(self) -> bool:
        return self.snapshot is not None and not self.snapshot_in_progress

    def accept_in_progress(self) -> None:
        """Everything unstable now has been handed out in a Ready."""
        self.in_progress = self.offset + len(self.entries)
        if self.snapshot is not None:
            self.snapshot_in_progress = True

    def stable_to(self, index: int, term: int) -> None:
        t = self.maybe_term(index)
        if t is None or t != term or index < self.offset:
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1
        if self.in_progress < self.offset:
            self.in_progress = self.offset

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None
            self.snapshot_in_progress = False

    def restore(self, snapshot: Snapshot) -> None:
        self.offset = snapshot.metadata.index + 1
        self.in_progress = self.offset
        self.entries = []
        self.snapshot = snapshot
        self.snapshot_in_progress = False

    def truncate_and_append(self, ents: Sequence[Entry]) -> None:
        first = ents[0].index
        end = self.offset + len(self.entries)
        if first == end:
            self.entries.extend(ents)
        elif first <= self.offset:
            # Replaces everything unstable and possibly a stored suffix: the Ready carrying
            # these entries tells the driver to overwrite storage from ``first`` on.
            self.offset = first
            self.entries = list(ents)
            self.in_progress = first
        else:
            del self.entries[first - self.offset :]
            self.entries.extend(ents)
            if self.in_progress > first:
                self.in_progress = first

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]
