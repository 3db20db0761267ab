"""Raft safety invariants, checked incrementally after every simulation step.

Contract: the cluster driver reports facts as they happen (a node wrote entries, advanced its
commit index, became leader, applied an entry, installed a snapshot); this module keeps the
global record and raises :class:`Violation` the moment a fact contradicts it. Nothing here
drives the cluster or reads randomness.

The checks (Raft paper §5.2-§5.4, thesis §3.6):

* Election safety: at most one leader per term (``elections`` records every win).
* Log matching: two entries with the same index and term carry the same type and data.
* Commit stability: once some node commits index i with (term, data), every node that
  commits i commits the same entry.
* Leader completeness: a leader of term T holds every entry committed by a leader of a
  term < T (``commit_term`` = the lowest leader term seen committing the index).
* State machine safety: applied sequences are prefixes of one another. Each node keeps a
  hash chain over what it applied; the chain at index i must equal the global one.
  A snapshot carries the chain, so installing it is checked too.
"""

from __future__ import annotations

import hashlib

from raft.types import Entry

Digest = bytes
GENESIS: Digest = b"\x00" * 16


def chain(prev: Digest, entry: Entry) -> Digest:
    h = hashlib.blake2b(prev, digest_size=16)
    h.update(entry.index.to_bytes(8, "big"))
    h.update(entry.term.to_bytes(8, "big"))
    h.update(bytes([int(entry.type)]))
    h.update(entry.data)
    return h.digest()


class Violation(AssertionError):
    """A safety or liveness property failed. Carries the seed so the run can be replayed."""

    def __init__(self, seed: int, step: int, kind: str, detail: str) -> None:
        self.seed = seed
        self.step = step
        self.kind = kind
        self.detail = detail
        self.replay = f"python -m tests.sim --seeds {seed}:{seed + 1} --verbose"
        super().__init__(kind, detail)

    def __str__(self) -> str:
        return (
            f"seed {self.seed} step {self.step}: {self.kind}: {self.detail} (replay: {self.replay})"
        )


class Invariants:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.step = 0
        self.elections: dict[int, int] = {}  # term -> leader node_id
        self.entries: dict[tuple[int, int], tuple[int, bytes, int]] = {}  # (idx, term) -> ...
        self.committed: dict[int, tuple[int, int, bytes]] = {}  # index -> (term, type, data)
        self.commit_term: dict[int, int] = {}  # index -> lowest leader term committing it
        self.max_committed = 0
        self.applied_chain: dict[int, Digest] = {0: GENESIS}
        self.applied_data: dict[int, bytes] = {}

    def fail(self, kind: str, detail: str) -> Violation:
        return Violation(self.seed, self.step, kind, detail)

    # -- election safety ------------------------------------------------------------------

    def on_leader(self, node_id: int, term: int) -> bool:
        """Record that ``node_id`` is leader of ``term``; True the first time (a new win)."""
        prev = self.elections.get(term)
        if prev is None:
            self.elections[term] = node_id
            return True
        if prev != node_id:
            raise self.fail(
                "election safety",
                f"two leaders in term {term}: node {prev} and node {node_id}",
            )
        return False

    # -- log matching ---------------------------------------------------------------------

    def on_entries_written(self, node_id: int, entries: tuple[Entry, ...]) -> None:
        for e in entries:
            key = (e.index, e.term)
            seen = self.entries.get(key)
            val = (int(e.type), e.data, node_id)
            if seen is None:
                self.entries[key] = val
            elif seen[:2] != val[:2]:
                raise self.fail(
                    "log matching",
                    f"index {e.index} term {e.term}: node {seen[2]} has {seen[1]!r}, "
                    f"node {node_id} has {e.data!r}",
                )

    # -- commit ---------------------------------------------------------------------------

    def on_commit(
        self,
        node_id: int,
        leader_term: int | None,
        entries: list[Entry],
    ) -> None:
        """``entries``: the node's log entries newly covered by its commit index.
        ``leader_term`` is set when the node commits as leader of that term."""
        for e in entries:
            seen = self.committed.get(e.index)
            val = (e.term, int(e.type), e.data)
            if seen is None:
                self.committed[e.index] = val
                self.max_committed = max(self.max_committed, e.index)
            elif seen != val:
                raise self.fail(
                    "commit stability",
                    f"node {node_id} commits index {e.index} as term {e.term} "
                    f"{e.data!r}, but it was committed as term {seen[0]} {seen[2]!r}",
                )
            if leader_term is not None:
                cur = self.commit_term.get(e.index)
                if cur is None or leader_term < cur:
                    self.commit_term[e.index] = leader_term

    def check_leader_completeness(
        self, node_id: int, term: int, first_index: int, term_at: dict[int, int]
    ) -> None:
        """``term_at``: the new leader's log terms for indexes >= ``first_index``."""
        for index, cterm in self.commit_term.items():
            if cterm >= term or index < first_index:
                continue
            want = self.committed[index][0]
            have = term_at.get(index)
            if have != want:
                raise self.fail(
                    "leader completeness",
                    f"node {node_id} became leader of term {term} without index {index} "
                    f"(term {want}, committed in term {cterm}); it has term {have}",
                )

    # -- state machine safety -------------------------------------------------------------

    def on_apply(self, node_id: int, entry: Entry, digest: Digest) -> None:
        seen = self.applied_chain.get(entry.index)
        if seen is None:
            self.applied_chain[entry.index] = digest
            self.applied_data[entry.index] = entry.data
        elif seen != digest:
            raise self.fail(
                "state machine safety",
                f"node {node_id} applied index {entry.index} ({entry.data!r}) after a "
                f"history that differs from another node's "
                f"(first applied there: {self.applied_data.get(entry.index)!r})",
            )

    def on_snapshot_installed(self, node_id: int, index: int, digest: Digest) -> None:
        seen = self.applied_chain.get(index)
        if seen is None:
            self.applied_chain[index] = digest
        elif seen != digest:
            raise self.fail(
                "state machine safety",
                f"node {node_id} installed a snapshot at index {index} whose history "
                "differs from what other nodes applied",
            )
