"""Small durable files written atomically: the hard state (+ bootstrap membership).

Contract: this module owns the atomic-file helper every small file of raft/storage uses, and
the encoding of the ``state`` file. It never touches segment files.

All I/O goes through the ``FileSystem`` seam (raft.storage.fs). Atomic write (the classic
recipe): write ``<name>.tmp``, fsync it, rename it over ``<name>``, fsync the directory. A crash leaves either the old or the new file, plus maybe a stray
``.tmp`` that :func:`remove_stale_temps` deletes at open: a temp file never wins, because it
is only ever read after the rename made it the real file. The content is one CRC32C frame
(raft.storage.frame), so a damaged file is reported as ``StorageCorruption`` rather than
decoded into nonsense.

The ``state`` file holds ``HardState`` (term, vote, commit) and the bootstrap ``ConfState``
the directory was created with (used by ``initial_state`` until a snapshot carries one).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

from raft.errors import StorageCorruption
from raft.storage.frame import FRAME_HEADER, check_frame, encode_frame
from raft.storage.fs import OS_FS, FileSystem, read_file, write_file_durably
from raft.types import ConfState, HardState

TEMP_SUFFIX = ".tmp"
STATE_FILE_NAME = "state"
_STATE_MAGIC = b"RLHS\x01"
_HARD_STATE = struct.Struct("<QQQ")
_COUNT = struct.Struct("<I")
_NODE = struct.Struct("<Q")


def write_atomic(path: Path, payload: bytes, *, fsync: bool, fs: FileSystem = OS_FS) -> None:
    """Replace ``path`` with one frame holding ``payload``, atomically.

    With ``fsync`` the new content is durable on return (temp fsynced, renamed, directory
    fsynced: ``write_file_durably``); without it the rename is still atomic and survives a
    process crash (the page cache does), but a power loss may bring back the old file.
    """
    data = encode_frame(payload)
    if fsync:
        write_file_durably(fs, path, data)
        return
    temp = path.with_name(path.name + TEMP_SUFFIX)
    fd = fs.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        offset = 0
        while offset < len(view):
            offset += fs.pwrite(fd, view[offset:], offset)
    finally:
        fs.close(fd)
    fs.replace(temp, path)


def read_atomic(path: Path, fs: FileSystem = OS_FS) -> bytes | None:
    """The payload of a file written by :func:`write_atomic`, or None if it does not exist.

    Raises ``StorageCorruption`` if the frame is damaged: a renamed file is always complete,
    so any damage here is not a torn write.
    """
    if not fs.exists(path):
        return None
    data = read_file(fs, path)
    length, problem = check_frame(data, 0)
    if problem is not None:
        raise StorageCorruption(str(path), problem.byte_offset, problem.detail)
    end = FRAME_HEADER.size + length
    if end != len(data):
        raise StorageCorruption(str(path), end, f"{len(data) - end} unexpected trailing bytes")
    return data[FRAME_HEADER.size : end]


def remove_stale_temps(
    directory: Path, logger: Callable[..., None], fs: FileSystem = OS_FS
) -> None:
    """Delete temp files left by an atomic write interrupted by a crash (not durable until
    the directory is fsynced; a temp file that comes back is removed again next time)."""
    for name in sorted(fs.listdir(directory)):
        if name.endswith(TEMP_SUFFIX):
            fs.unlink(directory / name)
            logger("stale_temp_removed", path=str(directory / name))


def encode_conf_state(conf: ConfState) -> bytes:
    parts = [_COUNT.pack(len(conf.voters))]
    parts.extend(_NODE.pack(node_id) for node_id in sorted(conf.voters))
    parts.append(_COUNT.pack(len(conf.learners)))
    parts.extend(_NODE.pack(node_id) for node_id in sorted(conf.learners))
    return b"".join(parts)


def decode_conf_state(data: bytes, offset: int) -> tuple[ConfState, int]:
    """Decode a ConfState at ``offset``; return it and the offset just past it."""
    groups: list[frozenset[int]] = []
    for _ in range(2):
        (count,) = _COUNT.unpack_from(data, offset)
        offset += _COUNT.size
        ids = [_NODE.unpack_from(data, offset + i * _NODE.size)[0] for i in range(count)]
        offset += count * _NODE.size
        groups.append(frozenset(ids))
    return ConfState(voters=groups[0], learners=groups[1]), offset


def encode_state(hs: HardState, bootstrap: ConfState) -> bytes:
    return (
        _STATE_MAGIC + _HARD_STATE.pack(hs.term, hs.vote, hs.commit) + encode_conf_state(bootstrap)
    )


def decode_state(path: Path, payload: bytes) -> tuple[HardState, ConfState]:
    if not payload.startswith(_STATE_MAGIC):
        raise StorageCorruption(str(path), FRAME_HEADER.size, "not a replog state file")
    try:
        offset = len(_STATE_MAGIC)
        term, vote, commit = _HARD_STATE.unpack_from(payload, offset)
        conf, end = decode_conf_state(payload, offset + _HARD_STATE.size)
    except struct.error as exc:
        raise StorageCorruption(str(path), FRAME_HEADER.size, f"truncated state: {exc}") from exc
    if end != len(payload):
        raise StorageCorruption(str(path), FRAME_HEADER.size + end, "trailing bytes in state")
    return HardState(term=term, vote=vote, commit=commit), conf


class HardStateFile:
    """The ``state`` file of one log directory."""

    def __init__(self, directory: Path, *, fsync: bool, fs: FileSystem = OS_FS) -> None:
        self.path = directory / STATE_FILE_NAME
        self._fsync = fsync
        self._fs = fs

    def exists(self) -> bool:
        return self._fs.exists(self.path)

    def load(self) -> tuple[HardState, ConfState] | None:
        payload = read_atomic(self.path, self._fs)
        if payload is None:
            return None
        return decode_state(self.path, payload)

    def store(self, hs: HardState, bootstrap: ConfState) -> None:
        """Durable on return when fsync is on (blocking: call it off the event loop);
        without fsync, written (survives a process crash) on return."""
        write_atomic(self.path, encode_state(hs, bootstrap), fsync=self._fsync, fs=self._fs)
