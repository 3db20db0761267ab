"""Sans-IO Raft: a pure state machine per group, plus durable log storage (raft.storage)."""

from raft.confchange import apply_conf_change, validate_conf_change
from raft.config import RaftConfig
from raft.core import Raft
from raft.errors import (
    Compacted,
    ConfigError,
    GroupFailure,
    InvariantViolation,
    NotLeader,
    ProposalDropped,
    RaftError,
    SnapshotTemporarilyUnavailable,
    StorageCorruption,
    StorageFailed,
    Unavailable,
)
from raft.memory import MemoryStorage
from raft.progress import ProgressState
from raft.rawnode import RawNode, Status
from raft.storage_api import LogStorage
from raft.tracker import ProgressStatus
from raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMetadata,
    SoftState,
)

__all__ = [
    "NONE",
    "Compacted",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "ConfigError",
    "Entry",
    "EntryType",
    "GroupFailure",
    "HardState",
    "InvariantViolation",
    "LogStorage",
    "MemoryStorage",
    "Message",
    "MessageType",
    "NotLeader",
    "ProgressState",
    "ProgressStatus",
    "ProposalDropped",
    "Raft",
    "RaftConfig",
    "RaftError",
    "ReadState",
    "Ready",
    "RawNode",
    "Role",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotTemporarilyUnavailable",
    "SoftState",
    "Status",
    "StorageCorruption",
    "StorageFailed",
    "Unavailable",
    "apply_conf_change",
    "validate_conf_change",
]
