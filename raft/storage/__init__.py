"""Durable Raft log storage: CRC32C-framed segment files, atomic hard state and snapshot
files, and group commit. I/O and threads live here; asyncio does not (the runtime wraps
``GroupCommitter`` futures itself)."""

from raft.storage.durable_log import DurableLog, FsyncPolicy
from raft.storage.group_commit import GroupCommitter, Syncable, sync_many
from raft.storage.hard_state import HardStateFile, read_atomic, write_atomic
from raft.storage.segment import SegmentInfo
from raft.storage.snapshot_file import SnapshotFile

__all__ = [
    "DurableLog",
    "FsyncPolicy",
    "GroupCommitter",
    "HardStateFile",
    "SegmentInfo",
    "SnapshotFile",
    "Syncable",
    "read_atomic",
    "sync_many",
    "write_atomic",
]
