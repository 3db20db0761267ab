"""The ``snapshot`` file: the most recent snapshot (metadata + state-machine bytes).

Contract: one atomic file per log directory, written with ``write_atomic`` (temp, fsync,
rename, fsync dir), so after a crash it is either the previous snapshot or the new one,
never a mix. What the log does around a snapshot (compaction, reset) is durable_log's
business; this module only encodes, stores and loads.

Layout of the payload: ``b"RLSN\\x01" [u64 index][u64 term][conf state][data...]``.
The whole snapshot is held in memory (``DurableLog.snapshot()`` returns it without I/O);
chunked snapshots for very large state machines are the runtime's concern.
"""

from __future__ import annotations

import struct
from pathlib import Path

from raft.errors import StorageCorruption
from raft.storage.frame import FRAME_HEADER
from raft.storage.fs import OS_FS, FileSystem
from raft.storage.hard_state import decode_conf_state, encode_conf_state, read_atomic, write_atomic
from raft.types import Snapshot, SnapshotMetadata

SNAPSHOT_FILE_NAME = "snapshot"
_MAGIC = b"RLSN\x01"
_POINT = struct.Struct("<QQ")


def encode_snapshot(snap: Snapshot) -> bytes:
    meta = snap.metadata
    return (
        _MAGIC + _POINT.pack(meta.index, meta.term) + encode_conf_state(meta.conf_state) + snap.data
    )


def decode_snapshot(path: Path, payload: bytes) -> Snapshot:
    if not payload.startswith(_MAGIC):
        raise StorageCorruption(str(path), FRAME_HEADER.size, "not a replog snapshot file")
    try:
        index, term = _POINT.unpack_from(payload, len(_MAGIC))
        conf, end = decode_conf_state(payload, len(_MAGIC) + _POINT.size)
    except struct.error as exc:
        raise StorageCorruption(str(path), FRAME_HEADER.size, f"truncated snapshot: {exc}") from exc
    return Snapshot(SnapshotMetadata(index=index, term=term, conf_state=conf), payload[end:])


class SnapshotFile:
    def __init__(self, directory: Path, *, fsync: bool, fs: FileSystem = OS_FS) -> None:
        self.path = directory / SNAPSHOT_FILE_NAME
        self._fsync = fsync
        self._fs = fs

    def exists(self) -> bool:
        return self._fs.exists(self.path)

    def load(self) -> Snapshot:
        """The stored snapshot, or an empty one (index 0) if none was ever saved."""
        payload = read_atomic(self.path, self._fs)
        if payload is None:
            return Snapshot()
        return decode_snapshot(self.path, payload)

    def store(self, snap: Snapshot) -> None:
        """Durable on return when fsync is on (blocking: call it off the event loop);
        without fsync, written (survives a process crash) on return."""
        write_atomic(self.path, encode_snapshot(snap), fsync=self._fsync, fs=self._fs)
