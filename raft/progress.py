"""Per-follower replication progress and its in-flight window (thesis §3.5, §10.2).

Contract: plain mutable bookkeeping owned by the leader's tracker; no I/O, no messages.

The states (etcd-raft's "progress state machine")::

    PROBE ──(APP_RESP ok)──▶ REPLICATE ──(reject / unreachable)──▶ PROBE
      │                                                             ▲
      └──(next below first index)──▶ SNAPSHOT ──(snapshot done)─────┘

* PROBE: at most one APP per heartbeat interval (``probe_sent``) until the follower's match
  is found; rejections walk ``next`` back using the follower's hints (fast back-off).
* REPLICATE: ``next`` advances optimistically after each send (pipelining); the
  ``Inflights`` window (count AND bytes) bounds what is unacknowledged.
* SNAPSHOT: paused until the runtime reports the snapshot finished (or an APP_RESP shows the
  follower is past it).
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """FIFO of (last index, bytes) of APP messages not yet acknowledged."""

    __slots__ = ("_buf", "bytes", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int = 0) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._buf: deque[tuple[int, int]] = deque()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._buf)

    def add(self, last_index: int, nbytes: int) -> None:
        self._buf.append((last_index, nbytes))
        self.bytes += nbytes

    def free_le(self, index: int) -> None:
        """Forget every message whose last index is <= ``index`` (acknowledged)."""
        buf = self._buf
        while buf and buf[0][0] <= index:
            self.bytes -= buf.popleft()[1]

    def free_first_one(self) -> None:
        if self._buf:
            self.free_le(self._buf[0][0])

    def full(self) -> bool:
        return len(self._buf) >= self.max_count or (
            self.max_bytes > 0 and self.bytes >= self.max_bytes
        )

    def reset(self) -> None:
        self._buf.clear()
        self.bytes = 0


class Progress:
    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "state",
    )

    def __init__(
        self, match: int, next_index: int, inflights: Inflights, is_learner: bool = False
    ) -> None:
        self.match = match
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.recent_active = False
        self.probe_sent = False
        self.inflights = inflights
        self.is_learner = is_learner

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
            f"inflight={len(self.inflights)})"
        )

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def sent_entries(self, count: int, nbytes: int) -> None:
        """Account for an APP just sent with ``count`` entries starting at ``next``."""
        if self.state == ProgressState.REPLICATE:
            if count:
                last = self.next + count - 1
                self.next = last + 1
                self.inflights.add(last, nbytes)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged ``index``; returns whether match moved."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the APP after ``rejected``; returns False if it is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True
