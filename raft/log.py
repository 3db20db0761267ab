"""RaftLog: the log as the core sees it = durable storage + the unstable tail.

Contract: answers term/slice/first/last questions across ``LogStorage`` (persisted entries)
and ``Unstable`` (not yet persisted); tracks ``committed``, ``applying`` (handed out in a
Ready) and ``applied`` (reported by the driver). It never writes storage: the driver does,
from the Ready. No I/O of its own.

Invariants (raise ``InvariantViolation``):

* applied <= applying <= committed <= last_index; committed never decreases;
* an append never truncates a committed entry (Log Matching + Leader Completeness, §3.5/§3.6);
* committed entries are handed out only once persisted locally, so the state machine never
  runs ahead of this node's own durable log.

It also remembers the indexes of CONF_CHANGE entries above the commit index
(``conf_indexes``) so the core can apply each change when it commits without scanning every
committed entry on the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence

from raft.errors import (
    Compacted,
    InvariantViolation,
    SnapshotTemporarilyUnavailable,
    Unavailable,
)
from raft.storage_api import LogStorage
from raft.types import Entry, EntryType, Snapshot
from raft.unstable import Unstable

_CONF_CHANGE = EntryType.CONF_CHANGE


def limit_size(ents: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``ents`` within ``max_bytes`` (always at least one entry)."""
    if max_bytes is None or len(ents) <= 1:
        return ents
    total = 0
    for i, e in enumerate(ents):
        total += len(e.data) + 24
        if total > max_bytes and i > 0:
            return ents[:i]
    return ents


def restart_index(storage: LogStorage) -> int:
    """Where a restarted node's state machine stands when nothing else is known: the snapshot
    index, which may lie above first_index() - 1 when the storage keeps entries the snapshot
    covers (DurableLog compacts whole segments). Starting at first_index() - 1 would hand
    already-applied entries out again."""
    try:
        snap_index = storage.snapshot().metadata.index
    except SnapshotTemporarilyUnavailable:
        snap_index = 0
    return max(storage.first_index() - 1, snap_index)


class RaftLog:
    __slots__ = ("applied", "applying", "committed", "conf_indexes", "storage", "unstable")

    def __init__(self, storage: LogStorage, applied: int | None = None) -> None:
        """``applied``: the index the state machine already holds everything up to (e.g. a
        partition checkpoint, server/checkpoint.py); None means the restart point below.
        It must lie in [restart point, last stored index] (raises ``ValueError``): an entry
        the state machine applied was committed, so ``committed`` starts at least there."""
        self.storage = storage
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        base = restart_index(storage)
        if applied is None:
            applied = base
        elif not base <= applied <= last:
            raise ValueError(
                f"applied index {applied} at restart must lie between the restart point "
                f"{base} (snapshot index or first index - 1) and the last stored index {last}; "
                "the state machine's checkpoint does not belong to this log"
            )
        self.committed = applied
        self.applying = applied
        self.applied = applied
        self.conf_indexes: list[int] = []

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, len(unstable)={len(self.unstable.entries)})"
        )

    # -- bounds -----------------------------------------------------------------------------

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        u = self.unstable
        if u.entries:
            return u.offset + len(u.entries) - 1
        i = u.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def persisted_last_index(self) -> int:
        """Last index known durable locally (everything below the unstable tail)."""
        return self.unstable.offset - 1

    def term(self, index: int) -> int:
        """Term at ``index``; valid from first_index()-1 to last_index()."""
        t = self.unstable.maybe_term(index)
        if t is not None:
            return t
        first = self.first_index()
        if index < first - 1:
            raise Compacted(index, first)
        last = self.last_index()
        if index > last:
            raise Unavailable(index, last)
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except (Compacted, Unavailable):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (Compacted, Unavailable):
            return False

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """Election restriction (thesis §3.6.1): is (term, last_index) at least as recent?"""
        my_term = self.last_term()
        return term > my_term or (term == my_term and last_index >= self.last_index())

    # -- reading ----------------------------------------------------------------------------

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi) limited to ``max_bytes`` (at least one if lo < hi)."""
        if lo >= hi:
            return []
        first = self.first_index()
        if lo < first:
            raise Compacted(lo, first)
        last = self.last_index()
        if hi > last + 1:
            raise Unavailable(hi - 1, last)
        off = self.unstable.offset
        if lo >= off:
            return limit_size(self.unstable.slice(lo, hi), max_bytes)
        if hi <= off:
            return self.storage.entries(lo, hi, max_bytes)
        stored = self.storage.entries(lo, off, max_bytes)
        if len(stored) < off - lo:
            return stored
        return limit_size(stored + self.unstable.slice(off, hi), max_bytes)

    def find_conflict(self, ents: Sequence[Entry]) -> int:
        """Index of the first entry whose term differs from ours (or that we lack); 0 if none."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (i, term(i)) with i <= index and term(i) <= term (fast back-off, §5.3
        of the Raft paper's optimisation as implemented in etcd-raft)."""
        first = self.first_index()
        while index > 0:
            if index < first - 1:
                return index, 0
            t = self.term_or_zero(index)
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # -- writing ----------------------------------------------------------------------------

    def append(self, ents: Sequence[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise InvariantViolation(
                "log truncation",
                f"appends after the commit index {self.committed}",
                f"append after index {after}",
                "a leader sent entries conflicting with committed ones (election safety bug)",
            )
        ci = self.conf_indexes
        if ci and ci[-1] > after:
            self.conf_indexes = ci = [i for i in ci if i <= after]
        for e in ents:
            if e.type is _CONF_CHANGE:
                ci.append(e.index)
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: Sequence[Entry]
    ) -> int | None:
        """The follower's AppendEntries consistency check (§3.5). Returns the last index now
        known to match the leader, or None if (index, log_term) is not in our log."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        if ents:
            ci = self.find_conflict(ents)
            if ci:
                if ci <= self.committed:
                    raise InvariantViolation(
                        "entry conflict",
                        f"conflicts only above commit {self.committed}",
                        f"conflict at index {ci}",
                        "the leader's log disagrees with a committed entry",
                    )
                self.append(ents[ci - ents[0].index :])
        self.commit_to(min(committed, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index <= self.committed:
            return
        last = self.last_index()
        if index > last:
            raise InvariantViolation(
                "commit index",
                f"<= last index {last}",
                index,
                "the leader sent a commit index beyond what this node acknowledged",
            )
        self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        if index > self.committed and self.term_or_zero(index) == term:
            self.commit_to(index)
            return True
        return False

    def restore(self, snapshot: Snapshot) -> None:
        self.committed = snapshot.metadata.index
        if self.applying < self.committed:
            self.applying = self.committed
        self.conf_indexes = []
        self.unstable.restore(snapshot)

    # -- applying ---------------------------------------------------------------------------

    def apply_limit(self) -> int:
        return min(self.committed, self.persisted_last_index())

    def has_next_committed_entries(self) -> bool:
        return self.applying < self.apply_limit()

    def next_committed_entries(self) -> list[Entry]:
        hi = self.apply_limit()
        lo = self.applying + 1
        if lo > hi:
            return []
        ents = self.slice(lo, hi + 1)
        self.applying = hi
        return ents

    def applied_to(self, index: int) -> None:
        if index > self.committed or index > self.applying:
            raise InvariantViolation(
                "applied index",
                f"<= applying {self.applying} <= committed {self.committed}",
                index,
                "advance_apply called with an index never handed out in a Ready",
            )
        if index < self.applied:
            raise InvariantViolation(
                "applied index",
                f">= previous applied {self.applied}",
                index,
                "advance_apply called out of order",
            )
        self.applied = index
