"""Value types shared by every part of the Raft core and its drivers.

Contract: everything here is a frozen, slotted dataclass or an enum. Nothing here does I/O,
reads a clock or keeps mutable state. The runtime (server/), the durable storage
(raft/storage) and the simulator (tests/sim) speak to the core only in these types.

Naming: a Raft *index* is always called ``index``; log *offsets* belong to partition/.
Node ids are positive ints; 0 means "none" (no leader known, no vote cast).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

NONE = 0
"""The node id that means "nobody" (no vote, no known leader)."""


class EntryType(IntEnum):
    NORMAL = 0
    """Application data. An empty NORMAL entry is the leader's no-op at the start of its term."""
    CONF_CHANGE = 1
    """``data`` is an encoded :class:`ConfChange` (see ``ConfChange.encode``)."""


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Bytes this entry counts for against ``max_size_per_msg`` and in-flight byte limits."""
        return len(self.data) + 24


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class MessageType(IntEnum):
    APP = 1  # leader -> follower: entries (possibly none) after (log_term, index)
    APP_RESP = 2  # follower -> leader: index = last matching index, or reject + hints
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7  # leader -> follower: commit (capped at the follower's match), context
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9  # leader -> follower: install ``snapshot``
    SNAPSHOT_STATUS = 10  # local only: runtime reports a snapshot send finished / failed
    TIMEOUT_NOW = 11  # leader -> transfer target: campaign now, skipping PreVote
    READ_INDEX = 12  # follower -> leader: ask for a read index for ``context``
    READ_INDEX_RESP = 13  # leader -> follower: ``index`` is the read index for ``context``
    TRANSFER_LEADER = 14  # follower -> leader: forwarded transfer request (from_ = target)
    UNREACHABLE = 15  # local only: runtime reports a peer unreachable


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership of a group. One-at-a-time changes: ``voters`` and ``learners`` are
    disjoint; a change adds, promotes or removes exactly one node (Raft thesis §4.1)."""

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.metadata.index == 0


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    to: int
    from_: int
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it leaves (thesis §3.8)."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile facts the runtime cares about; not persisted."""

    leader_id: int = NONE
    role: Role = Role.FOLLOWER


@dataclass(frozen=True, slots=True)
class ReadState:
    """``index`` is safe to serve a linearizable read for ``context`` once applied >= index."""

    index: int
    context: bytes


class ConfChangeType(IntEnum):
    ADD_LEARNER = 0
    ADD_VOTER = 1  # adds a new voter, or promotes an existing learner
    REMOVE_NODE = 2


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        return bytes([int(self.type)]) + self.node_id.to_bytes(8, "big") + self.context

    @staticmethod
    def decode(data: bytes) -> ConfChange:
        if len(data) < 9:
            raise ValueError(f"conf change needs >= 9 bytes, got {len(data)}")
        return ConfChange(ConfChangeType(data[0]), int.from_bytes(data[1:9], "big"), data[9:])


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything the driver must do, in this order (the loop contract).

    1. Persist ``snapshot`` (if any), then ``entries`` (they replace any stored entries from
       ``entries[0].index`` on: a suffix truncation), then ``hard_state`` (if not None).
       ``must_sync`` says whether an fsync is required before step 3 (thesis §3.8: votes and
       log entries must be durable before the node answers for them).
    2. Send ``messages``. They never depend on anything in *this* Ready being durable: the core
       holds back votes and append acknowledgements until ``on_persisted(number)`` and releases
       them in a later Ready. A leader's appends to followers may leave before its own disk
       write (thesis §10.2.1); the leader counts itself toward commit only once persisted.
    3. Apply ``committed_entries`` in order (they are durable on a quorum); serve
       ``read_states`` once applied >= their index.
    4. Call ``RawNode.advance(ready)`` (= ``on_persisted(number)`` + ``advance_apply``).
       Storage may be written asynchronously: call ``on_persisted(number)`` when it is durable
       and ``advance_apply(index)`` when applied, in any order, as long as numbers only grow.
    """

    number: int
    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    committed_entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    must_sync: bool = False
