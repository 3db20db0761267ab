"""Durable Raft log storage: CRC32C-framed segment files and atomic hard state and snapshot
files, behind the ``FileSystem`` seam (raft.storage.fs). I/O and threads live here; asyncio does
not: the runtime calls ``DurableLog.sync()`` for every log a loop turn wrote, in one job of its
worker thread (that is the group commit: one job covers every group's appends of a turn)."""

from raft.storage.durable_log import DurableLog, FsyncPolicy
from raft.storage.fs import OS_FS, FileSystem, OsFileSystem, read_file, write_file_durably
from raft.storage.hard_state import HardStateFile, read_atomic, write_atomic
from raft.storage.segment import SegmentInfo
from raft.storage.snapshot_file import SnapshotFile

__all__ = [
    "OS_FS",
    "DurableLog",
    "FileSystem",
    "FsyncPolicy",
    "HardStateFile",
    "OsFileSystem",
    "SegmentInfo",
    "SnapshotFile",
    "read_atomic",
    "read_file",
    "write_atomic",
    "write_file_durably",
]
