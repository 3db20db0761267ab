"""The read side of a Raft log, as the core sees it (etcd-raft's ``Storage``).

The core keeps not-yet-persisted entries itself (``unstable``); everything it has handed out
in a ``Ready`` and the driver has written is read back through this protocol. Implementations:
``raft.memory.MemoryStorage`` (tests, simulation, benchmarks) and
``raft.storage.DurableLog`` (segment files on disk). Reads must be synchronous and cheap:
recent entries are expected to be served from memory.
"""

from __future__ import annotations

from typing import Protocol

from raft.types import ConfState, Entry, HardState, Snapshot


class LogStorage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]:
        """The hard state and membership recovered at start (membership from the last
        snapshot plus any CONF_CHANGE entries after it are the core's business: it replays
        them; this returns the snapshot's ConfState, or the bootstrap one)."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi). Returns at least one entry if lo < hi even when it exceeds
        ``max_bytes``. Raises ``Compacted`` if lo < first_index(), ``Unavailable`` if
        hi > last_index() + 1."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; valid for first_index()-1 (the snapshot's term)
        through last_index(). Raises ``Compacted`` / ``Unavailable`` otherwise."""
        ...

    def first_index(self) -> int:
        """Index of the first entry still available (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry written (snapshot index if the log is empty)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot. May raise ``SnapshotTemporarilyUnavailable``."""
        ...
