"""The partition checkpoint file of one group directory (issue #13: bounded restart time).

Owns: the file ``checkpoint`` next to the group's Raft log, written durably through the
filesystem seam (``write_file_durably``: temp, fsync, rename, fsync dir) and read at open.
Every method here blocks: call it in the executor on the group's lane, never on the loop.
The encoding and what a checkpoint means live in partition/checkpoint.py; what to do with one
at restart in server/partition_replica.py (``load_partition_state``).

A checkpoint is only an optimisation. A file that is missing, damaged (CRC), of another
version, or that does not fit the log (older than a retention cut, beyond the log's end, or
with another term at its index) is logged loudly (``partition_checkpoint_ignored``) and
ignored: the restart replays the retained log as it would without it. It is never a Raft
snapshot and never leaves this broker (see partition/checkpoint.py for why).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from partition.checkpoint import CheckpointImage, CheckpointInvalid, decode, encode
from raft.storage.fs import FileSystem, read_file, write_file_durably

CHECKPOINT_FILE = "checkpoint"


class CheckpointStore:
    """Reads and writes one group's checkpoint file (blocking; executor only)."""

    def __init__(self, fs: FileSystem, directory: str | Path, group_id: int, logger: Any) -> None:
        self.fs = fs
        self.path = Path(directory) / CHECKPOINT_FILE
        self.group_id = group_id
        self._log = logger

    def save(self, image: CheckpointImage) -> int:
        """Encodes and durably replaces the checkpoint; returns the bytes written."""
        data = encode(image)
        write_file_durably(self.fs, self.path, data)
        return len(data)

    def load(self, *, keep: int, expiry_ms: int) -> CheckpointImage | None:
        """The stored checkpoint, or None (missing, or unusable: logged as ignored)."""
        if not self.fs.exists(self.path):
            return None
        try:
            data = read_file(self.fs, self.path)
            return decode(data, keep=keep, expiry_ms=expiry_ms)
        except CheckpointInvalid as e:
            self.ignored(e.reason)
        except OSError as e:
            self.ignored(f"unreadable: {os.strerror(e.errno) if e.errno else e}")
        return None

    def ignored(self, reason: str) -> None:
        self._log.warning(
            "partition_checkpoint_ignored",
            group_id=self.group_id,
            path=str(self.path),
            reason=reason,
            action="replaying the retained log instead (slower restart, same state)",
        )
