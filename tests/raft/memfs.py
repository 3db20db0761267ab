"""An in-memory ``FileSystem`` that loses what was not made durable, for storage crash tests.

Semantics (the ones raft/storage must be correct under, see raft.storage.fs):
- file data written since the file's last ``fsync``/``fdatasync`` is lost by a power loss
  (``crash(power_loss=True)``); a process crash (``power_loss=False``) keeps everything, like a
  page cache;
- directory entries (create, rename, unlink) since that directory's last ``fsync_dir`` are lost
  by a power loss: the directory comes back as it was at its last ``fsync_dir``;
- ``fail`` injects ``OSError`` (ENOSPC by default) on the Nth call of an operation, after
  optionally writing a prefix of the data (a short write then the error).
Counts every call by operation name in ``calls`` (tests assert which ops ran where).
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from dataclasses import dataclass, field

from raft.storage.fs import PathArg


@dataclass
class _Inode:
    data: bytearray = field(default_factory=bytearray)
    durable: bytes = b""


def _norm(path: PathArg) -> str:
    return os.path.normpath(os.fspath(path))


class MemFS:
    def __init__(self) -> None:
        self._inodes: dict[int, _Inode] = {}
        self._next_inode = 1
        self._dirs: dict[str, dict[str, int]] = {"/": {}}
        self._durable_dirs: dict[str, dict[str, int]] = {"/": {}}
        self._fds: dict[int, int] = {}
        self._next_fd = 3
        self.calls: Counter[str] = Counter()
        self._faults: dict[str, tuple[int, int, int]] = {}  # op -> (nth call, errno, prefix)

    # -- fault injection ----------------------------------------------------------------------

    def fail(self, op: str, nth: int = 1, err: int = errno.ENOSPC, prefix_bytes: int = 0) -> None:
        """Make the ``nth`` next call of ``op`` raise ``OSError(err)`` (a pwrite first writes
        ``prefix_bytes`` of its data)."""
        self._faults[op] = (self.calls[op] + nth, err, prefix_bytes)

    def _count(self, op: str) -> tuple[int, int] | None:
        self.calls[op] += 1
        fault = self._faults.get(op)
        if fault is not None and fault[0] == self.calls[op]:
            del self._faults[op]
            return fault[1], fault[2]
        return None

    def _maybe_fail(self, op: str) -> None:
        fault = self._count(op)
        if fault is not None:
            raise OSError(fault[0], os.strerror(fault[0]))

    # -- crash ----------------------------------------------------------------------------

    def crash(self, *, power_loss: bool) -> None:
        """Every handle closes. With ``power_loss`` unsynced data and directory entries go."""
        self._fds.clear()
        if not power_loss:
            return
        self._dirs = {path: dict(entries) for path, entries in self._durable_dirs.items()}
        live = {inode for entries in self._dirs.values() for inode in entries.values()}
        for number in list(self._inodes):
            if number in live:
                inode = self._inodes[number]
                inode.data = bytearray(inode.durable)
            else:
                del self._inodes[number]

    # -- helpers for tests -----------------------------------------------------------------

    def read_bytes(self, path: PathArg) -> bytes:
        return bytes(self._inode_at(path).data)

    def write_bytes(self, path: PathArg, data: bytes, *, durable: bool = True) -> None:
        """Replace a file's content (as if damaged on disk), durably by default."""
        inode = self._inode_at(path)
        inode.data = bytearray(data)
        if durable:
            inode.durable = bytes(data)

    def names(self, path: PathArg) -> list[str]:
        return sorted(self._dirs[_norm(path)])

    def _inode_at(self, path: PathArg) -> _Inode:
        p = _norm(path)
        entries = self._dirs.get(os.path.dirname(p))
        if entries is None or os.path.basename(p) not in entries:
            raise FileNotFoundError(errno.ENOENT, "no such file", p)
        return self._inodes[entries[os.path.basename(p)]]

    def _parent(self, path: str) -> dict[str, int]:
        entries = self._dirs.get(os.path.dirname(path))
        if entries is None:
            raise FileNotFoundError(errno.ENOENT, "no such directory", os.path.dirname(path))
        return entries

    # -- FileSystem -----------------------------------------------------------------------

    def open(self, path: PathArg, flags: int, mode: int = 0o644) -> int:
        self._maybe_fail("open")
        p = _norm(path)
        entries = self._parent(p)
        name = os.path.basename(p)
        if name in entries:
            if flags & os.O_CREAT and flags & os.O_EXCL:
                raise FileExistsError(errno.EEXIST, "exists", p)
            number = entries[name]
            if flags & os.O_TRUNC:
                self._inodes[number].data = bytearray()
        elif flags & os.O_CREAT:
            number = self._next_inode
            self._next_inode += 1
            self._inodes[number] = _Inode()
            entries[name] = number
        else:
            raise FileNotFoundError(errno.ENOENT, "no such file", p)
        fd = self._next_fd
        self._next_fd += 1
        self._fds[fd] = number
        return fd

    def _fd(self, fd: int) -> _Inode:
        if fd not in self._fds:
            raise OSError(errno.EBADF, "bad file descriptor")
        return self._inodes[self._fds[fd]]

    def close(self, fd: int) -> None:
        self.calls["close"] += 1
        if fd not in self._fds:
            raise OSError(errno.EBADF, "bad file descriptor")
        del self._fds[fd]

    def dup(self, fd: int) -> int:
        self._maybe_fail("dup")
        inode = self._fds[fd]
        new = self._next_fd
        self._next_fd += 1
        self._fds[new] = inode
        return new

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        self._maybe_fail("pread")
        return bytes(self._fd(fd).data[offset : offset + length])

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        inode = self._fd(fd)
        fault = self._count("pwrite")
        payload = bytes(data)
        if fault is not None:
            payload = payload[: fault[1]]
        if len(inode.data) < offset:
            inode.data.extend(b"\0" * (offset - len(inode.data)))
        inode.data[offset : offset + len(payload)] = payload
        if fault is not None:
            raise OSError(fault[0], os.strerror(fault[0]))
        return len(payload)

    def size(self, fd: int) -> int:
        return len(self._fd(fd).data)

    def ftruncate(self, fd: int, length: int) -> None:
        self._maybe_fail("ftruncate")
        inode = self._fd(fd)
        if length <= len(inode.data):
            del inode.data[length:]
        else:
            inode.data.extend(b"\0" * (length - len(inode.data)))

    def fsync(self, fd: int) -> None:
        self._maybe_fail("fsync")
        inode = self._fd(fd)
        inode.durable = bytes(inode.data)

    def fdatasync(self, fd: int) -> None:
        self._maybe_fail("fdatasync")
        inode = self._fd(fd)
        inode.durable = bytes(inode.data)

    def replace(self, src: PathArg, dst: PathArg) -> None:
        self._maybe_fail("replace")
        s, d = _norm(src), _norm(dst)
        src_entries = self._parent(s)
        number = src_entries.pop(os.path.basename(s))
        self._parent(d)[os.path.basename(d)] = number

    def unlink(self, path: PathArg) -> None:
        self._maybe_fail("unlink")
        p = _norm(path)
        entries = self._parent(p)
        if os.path.basename(p) not in entries:
            raise FileNotFoundError(errno.ENOENT, "no such file", p)
        del entries[os.path.basename(p)]

    def listdir(self, path: PathArg) -> list[str]:
        self.calls["listdir"] += 1
        p = _norm(path)
        if p not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", p)
        return list(self._dirs[p])

    def makedirs(self, path: PathArg) -> None:
        self.calls["makedirs"] += 1
        p = _norm(path)
        parts: list[str] = []
        while p not in self._dirs:
            parts.append(p)
            p = os.path.dirname(p)
        for d in reversed(parts):
            self._dirs[d] = {}

    def fsync_dir(self, path: PathArg) -> None:
        self._maybe_fail("fsync_dir")
        p = _norm(path)
        self._durable_dirs[p] = dict(self._dirs[p])
        for d in self._dirs:  # subdirectories of p now exist durably
            if os.path.dirname(d) == p and d not in self._durable_dirs:
                self._durable_dirs[d] = {}

    def exists(self, path: PathArg) -> bool:
        p = _norm(path)
        return p in self._dirs or os.path.basename(p) in self._dirs.get(os.path.dirname(p), {})

    def is_dir(self, path: PathArg) -> bool:
        return _norm(path) in self._dirs

    def rmtree(self, path: PathArg) -> None:
        p = _norm(path)
        for d in [d for d in self._dirs if d == p or d.startswith(p + "/")]:
            del self._dirs[d]
