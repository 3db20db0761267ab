"""The filesystem seam: every byte raft/storage and the broker's group registry put on or read
from disk goes through a ``FileSystem``.

Production plugs in ``OsFileSystem`` (thin wrappers over ``os``). The system simulation
(tests/system_sim) plugs in a filesystem that keeps what was not made durable in memory and
discards it on a simulated crash:
  - file data written since the file's last ``fsync``/``fdatasync`` is not durable;
  - a directory entry created, renamed or unlinked since that directory's last ``fsync_dir``
    is not durable (so "write temp, fsync, rename" without ``fsync_dir`` loses the rename).
Code that wants something to survive a crash must therefore say so with these calls; nothing
here is durable by accident. It may also raise ``OSError`` (EIO, ENOSPC) from any write or sync,
and be slow: callers must treat every call as possibly failing.

Handles are small ints (file descriptors in production). ``flags`` are ``os.O_*`` values; the
simulated filesystem understands O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_EXCL.
Paths may be ``str`` or ``os.PathLike``.
"""

from __future__ import annotations

import os
import shutil
from typing import Protocol

PathArg = str | os.PathLike[str]


class FileSystem(Protocol):
    def open(self, path: PathArg, flags: int, mode: int = 0o644) -> int: ...
    def close(self, fd: int) -> None: ...
    def dup(self, fd: int) -> int: ...
    def pread(self, fd: int, length: int, offset: int) -> bytes: ...
    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int: ...
    def size(self, fd: int) -> int: ...
    def ftruncate(self, fd: int, length: int) -> None: ...
    def fsync(self, fd: int) -> None: ...
    def fdatasync(self, fd: int) -> None: ...
    def replace(self, src: PathArg, dst: PathArg) -> None: ...
    def unlink(self, path: PathArg) -> None: ...
    def listdir(self, path: PathArg) -> list[str]: ...
    def makedirs(self, path: PathArg) -> None:
        """Creates ``path`` and missing parents (no error if it exists). Not durable until
        ``fsync_dir`` of each parent that gained an entry."""
        ...

    def fsync_dir(self, path: PathArg) -> None: ...
    def exists(self, path: PathArg) -> bool: ...
    def is_dir(self, path: PathArg) -> bool: ...
    def rmtree(self, path: PathArg) -> None:
        """Removes a directory tree (missing is fine). Durable after ``fsync_dir`` of its parent."""
        ...


class OsFileSystem:
    """The production filesystem: ``os`` calls, nothing added."""

    def open(self, path: PathArg, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def dup(self, fd: int) -> int:
        return os.dup(fd)

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        return os.pread(fd, length, offset)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def replace(self, src: PathArg, dst: PathArg) -> None:
        os.replace(src, dst)

    def unlink(self, path: PathArg) -> None:
        os.unlink(path)

    def listdir(self, path: PathArg) -> list[str]:
        return os.listdir(path)

    def makedirs(self, path: PathArg) -> None:
        os.makedirs(path, exist_ok=True)

    def fsync_dir(self, path: PathArg) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def exists(self, path: PathArg) -> bool:
        return os.path.exists(path)

    def is_dir(self, path: PathArg) -> bool:
        return os.path.isdir(path)

    def rmtree(self, path: PathArg) -> None:
        shutil.rmtree(path, ignore_errors=True)


OS_FS: FileSystem = OsFileSystem()


def read_file(fs: FileSystem, path: PathArg) -> bytes:
    """The whole file (a convenience over open/pread/close)."""
    fd = fs.open(path, os.O_RDONLY)
    try:
        size = fs.size(fd)
        data = fs.pread(fd, size, 0)
        while len(data) < size:
            chunk = fs.pread(fd, size - len(data), len(data))
            if not chunk:
                break
            data += chunk
        return data
    finally:
        fs.close(fd)


def write_file_durably(fs: FileSystem, path: PathArg, payload: bytes) -> None:
    """Atomically replaces ``path`` with ``payload`` and makes it durable: write a temp file,
    fsync it, rename it over ``path``, fsync the directory (the rename is not durable before)."""
    path = os.fspath(path)
    temp = path + ".tmp"
    fd = fs.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(payload)
        offset = 0
        while offset < len(view):
            offset += fs.pwrite(fd, view[offset:], offset)
        fs.fsync(fd)
    finally:
        fs.close(fd)
    fs.replace(temp, path)
    fs.fsync_dir(os.path.dirname(path) or ".")
