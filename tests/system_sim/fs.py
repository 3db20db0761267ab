"""A simulated disk: the filesystem seam of the system simulation (raft/storage/fs.py).

API
---
- ``SimDisk(rng: random.Random, *, costs: DiskCosts | None = None)``: one broker's disk, in
  memory, surviving that broker's crashes.
  - ``mount() -> SimFileSystem``: a live view implementing ``raft.storage.fs.FileSystem``
    (own fd table). Mount again after a crash.
  - ``crash(torn: bool = False) -> None``: every mount dies (each call raises
    ``OSError(EIO, "crashed")``); unsynced state is discarded (see "Durability"). With
    ``torn=True`` each file keeps a random subset of its unsynced 4 KiB pages instead.
  - faults: ``fail_writes(err, *, probability=0.0, count=0, path_prefix=None)``,
    ``fail_syncs(err, *, probability=0.0, count=0, path_prefix=None)`` (``err`` an errno such as
    ``errno.EIO``/``errno.ENOSPC``; ``count`` = the next N matching ops fail, ``probability`` =
    each matching op fails with that chance, drawn from the disk's rng; both may be given),
    ``slow(path_prefix, seconds_per_sync, seconds_per_write=0.0)`` (one setting per prefix: a
    new call replaces it, zeros remove it; prefixes add up when several match),
    ``clear_faults()``.
  - cost: ``pending_cost_s`` (float) accumulates the virtual time the ops performed would have
    taken (``DiskCosts``; slow paths add their penalty). The executor reads and resets it.
  - counters: ``syncs``, ``dir_syncs``, ``writes``, ``bytes_written``, ``reads``,
    ``bytes_read``, ``ops``, ``loop_side_ops`` (ops made while ``in_executor`` is false, i.e. on
    the event loop; the SimExecutor sets ``in_executor`` around each job), ``crashes``,
    ``injected_errors``.
  - inspection for checkers/tests: ``files(durable=False) -> dict[str, bytes]`` (every regular
    file by path, current or durable view), ``dirs(durable=False) -> list[str]``.
- ``SimFileSystem``: the FileSystem protocol: ``open, close, dup, pread, pwrite, size,
  ftruncate, fsync, fdatasync, replace, unlink, listdir, makedirs, fsync_dir, exists, is_dir,
  rmtree``, with ``os`` semantics and ``OSError`` errnos (ENOENT, EEXIST, EBADF, ENOTDIR,
  EISDIR, ENOTEMPTY, EINVAL). ``alive`` tells whether the mount survived.

Model
-----
Inodes are objects: a file has ``current`` and ``durable`` bytearrays; a directory has
``current`` and ``durable`` name -> inode tables. Paths are normalised (``os.fspath`` +
``normpath``; relative paths resolve against "/") and resolved through current tables. An fd
refers to its inode, so an unlinked file stays readable through open fds (as on POSIX).

Durability: ``fsync``/``fdatasync`` copies a file's current bytes (size included) to durable;
``fsync_dir`` copies a directory's current table to durable. A crash walks the tree from the
root through *durable* tables, reverting each directory to its durable table and each file to
its durable bytes; whatever is reachable only through unsynced entries is gone. A directory
created by ``makedirs`` is therefore lost unless its parent is fsynced, and a file renamed
without ``fsync_dir`` is back under its old name (with its durable bytes). Rename is modelled
per directory: a cross-directory rename whose source directory was fsynced but not its target
loses the file, and the reverse keeps it in both places (each directory's table is its own).

Torn crash: for each file whose bytes differ from durable, the surviving size is uniform between
the durable and the current size, and each differing 4 KiB page below it is written back or not
independently (out-of-order writeback); a page not written back keeps its durable bytes, or
zeros past the durable size. Directory tables still revert exactly.

Faults: an injected write error (pwrite, ftruncate, file creation) or sync error (fsync,
fdatasync, fsync_dir) changes nothing and raises ``OSError(err)``. An fd matches a path prefix
by the path it was opened under. Costs never sleep: they are charged to ``pending_cost_s``.
"""

from __future__ import annotations

import errno
import os
import random
from dataclasses import dataclass

PathArg = str | os.PathLike[str]  # as in raft/storage/fs.py (not imported: keeps this leaf)

__all__ = ["PAGE_SIZE", "DiskCosts", "SimDisk", "SimFileSystem"]

PAGE_SIZE = 4096


@dataclass(frozen=True)
class DiskCosts:
    """Virtual seconds charged per operation (an SSD-ish default)."""

    sync_s: float = 0.0002  # fsync / fdatasync / fsync_dir
    op_s: float = 0.000002  # any other call (open, rename, listdir, ...)
    write_s_per_byte: float = 1e-9  # ~1 GB/s
    read_s_per_byte: float = 0.5e-9  # ~2 GB/s


class _File:
    """``current[:dirty_lo] == durable[:dirty_lo]`` (both at least that long); ``dirty_lo`` is
    None when they are equal. So a sync copies only the bytes changed since the last one
    (an appended segment costs its appended bytes, not its size)."""

    __slots__ = ("current", "dirty_lo", "durable")

    def __init__(self) -> None:
        self.current = bytearray()
        self.durable = bytearray()
        self.dirty_lo: int | None = None

    def mark(self, offset: int) -> None:
        """Bytes from ``offset`` on may differ from durable (``offset`` <= current size)."""
        if self.dirty_lo is None or offset < self.dirty_lo:
            self.dirty_lo = offset

    def sync(self) -> None:
        lo = self.dirty_lo
        if lo is not None:
            self.durable[lo:] = self.current[lo:]
            self.dirty_lo = None


class _Dir:
    __slots__ = ("current", "durable")

    def __init__(self) -> None:
        self.current: dict[str, _Node] = {}
        self.durable: dict[str, _Node] = {}


_Node = _File | _Dir


@dataclass
class _Rule:
    err: int
    probability: float
    count: int
    path_prefix: str | None


@dataclass
class _Slow:
    path_prefix: str
    seconds_per_sync: float
    seconds_per_write: float


@dataclass
class _Fd:
    node: _Node
    path: str
    readable: bool
    writable: bool


def _norm(path: PathArg) -> str:
    p = os.fspath(path)
    if not isinstance(p, str):
        raise TypeError(f"paths are str, not {type(p).__name__}")
    if not p:
        raise FileNotFoundError(errno.ENOENT, "empty path", p)
    if not p.startswith("/"):
        p = "/" + p
    p = os.path.normpath(p)
    if p.startswith("//"):
        p = "/" + p.lstrip("/")
    return p


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def _oserror(code: int, message: str, path: str | None = None) -> OSError:
    # OSError(errno, strerror, filename) builds the matching subclass (FileNotFoundError, ...)
    if path is None:
        return OSError(code, message)
    return OSError(code, message, path)


def _matches(prefix: str | None, path: str) -> bool:
    if prefix is None:
        return True
    norm = _norm(prefix)
    return path == norm or path.startswith(norm.rstrip("/") + "/")


class SimDisk:
    """See the module docstring."""

    def __init__(self, rng: random.Random, *, costs: DiskCosts | None = None) -> None:
        self.rng = rng
        self.costs = costs or DiskCosts()
        self.root = _Dir()
        self.mounts: list[SimFileSystem] = []
        self.pending_cost_s = 0.0
        self.in_executor = False
        self._write_rules: list[_Rule] = []
        self._sync_rules: list[_Rule] = []
        self._slow: list[_Slow] = []
        # counters
        self.syncs = 0
        self.dir_syncs = 0
        self.writes = 0
        self.bytes_written = 0
        self.reads = 0
        self.bytes_read = 0
        self.ops = 0
        self.loop_side_ops = 0
        self.crashes = 0
        self.injected_errors = 0

    # ------------------------------------------------------------------ mounts and crashes

    def mount(self) -> SimFileSystem:
        fs = SimFileSystem(self)
        self.mounts = [m for m in self.mounts if m.alive]
        self.mounts.append(fs)
        return fs

    def crash(self, torn: bool = False) -> None:
        """Power loss / SIGKILL: unsynced state is discarded (torn: partially written back)."""
        self.crashes += 1
        for m in self.mounts:
            m._die()
        self.mounts = []
        self.pending_cost_s = 0.0
        seen: set[int] = set()
        stack: list[_Dir] = [self.root]
        while stack:
            d = stack.pop()
            if id(d) in seen:
                continue
            seen.add(id(d))
            d.current = dict(d.durable)
            # sorted: the order of rng draws must not depend on insertion order
            for name in sorted(d.current):
                node = d.current[name]
                if isinstance(node, _Dir):
                    stack.append(node)
                elif id(node) not in seen:
                    seen.add(id(node))
                    self._revert_file(node, torn)

    def _revert_file(self, f: _File, torn: bool) -> None:
        dirty_lo = f.dirty_lo
        if dirty_lo is None:
            return
        f.dirty_lo = None
        if not torn:
            f.current = bytearray(f.durable)
            return
        old, new = f.durable, f.current
        lo, hi = sorted((len(old), len(new)))
        size = self.rng.randint(lo, hi)
        result = bytearray(old[:size])
        if len(result) < size:
            result.extend(bytes(size - len(result)))
        first_page = (dirty_lo // PAGE_SIZE) * PAGE_SIZE  # pages below it are equal
        for start in range(first_page, size, PAGE_SIZE):
            end = min(size, start + PAGE_SIZE)
            # past the new size (a truncation) the page keeps what it had
            written = bytes(new[start:end]) + bytes(result[start + len(new[start:end]) : end])
            if result[start:end] == written:
                continue
            if self.rng.random() < 0.5:
                result[start:end] = written
        f.current = result
        f.durable = bytearray(result)

    # ------------------------------------------------------------------ faults

    def fail_writes(
        self,
        err: int = errno.EIO,
        *,
        probability: float = 0.0,
        count: int = 0,
        path_prefix: str | None = None,
    ) -> None:
        """Makes matching pwrite/ftruncate/create calls raise ``OSError(err)``."""
        self._write_rules.append(_Rule(err, probability, count, path_prefix))

    def fail_syncs(
        self,
        err: int = errno.EIO,
        *,
        probability: float = 0.0,
        count: int = 0,
        path_prefix: str | None = None,
    ) -> None:
        """Makes matching fsync/fdatasync/fsync_dir calls raise ``OSError(err)``."""
        self._sync_rules.append(_Rule(err, probability, count, path_prefix))

    def slow(
        self, path_prefix: str, seconds_per_sync: float, seconds_per_write: float = 0.0
    ) -> None:
        """Each sync (write) of a path under ``path_prefix`` costs that much more virtual time.
        Replaces the previous setting for the same prefix; zeros remove it."""
        key = _norm(path_prefix)
        self._slow = [s for s in self._slow if _norm(s.path_prefix) != key]
        if seconds_per_sync > 0.0 or seconds_per_write > 0.0:
            self._slow.append(_Slow(path_prefix, seconds_per_sync, seconds_per_write))

    def clear_faults(self) -> None:
        self._write_rules.clear()
        self._sync_rules.clear()
        self._slow.clear()

    def _maybe_fail(self, rules: list[_Rule], path: str, what: str) -> None:
        for rule in rules:
            if not _matches(rule.path_prefix, path):
                continue
            fire = False
            if rule.count > 0:
                rule.count -= 1
                fire = True
            elif rule.probability > 0.0 and self.rng.random() < rule.probability:
                fire = True
            if fire:
                self.injected_errors += 1
                raise _oserror(rule.err, f"injected {what} error: {os.strerror(rule.err)}", path)
        rules[:] = [r for r in rules if r.count > 0 or r.probability > 0.0]

    def _slow_penalty(self, path: str, *, sync: bool) -> float:
        total = 0.0
        for s in self._slow:
            if _matches(s.path_prefix, path):
                total += s.seconds_per_sync if sync else s.seconds_per_write
        return total

    def _charge(self, seconds: float) -> None:
        self.ops += 1
        if not self.in_executor:
            self.loop_side_ops += 1
        self.pending_cost_s += seconds

    # ------------------------------------------------------------------ inspection

    def files(self, durable: bool = False) -> dict[str, bytes]:
        """Every regular file by path (current view, or what a crash would leave now)."""
        out: dict[str, bytes] = {}
        self._walk(self.root, "", durable, out, None)
        return out

    def dirs(self, durable: bool = False) -> list[str]:
        out: list[str] = ["/"]
        self._walk(self.root, "", durable, None, out)
        return sorted(out)

    def _walk(
        self,
        d: _Dir,
        prefix: str,
        durable: bool,
        files: dict[str, bytes] | None,
        dirs: list[str] | None,
    ) -> None:
        table = d.durable if durable else d.current
        for name in sorted(table):
            node = table[name]
            path = f"{prefix}/{name}"
            if isinstance(node, _Dir):
                if dirs is not None:
                    dirs.append(path)
                self._walk(node, path, durable, files, dirs)
            elif files is not None:
                files[path] = bytes(node.durable if durable else node.current)


class SimFileSystem:
    """One mount of a ``SimDisk``: implements raft.storage.fs.FileSystem."""

    def __init__(self, disk: SimDisk) -> None:
        self.disk = disk
        self.alive = True
        self._fds: dict[int, _Fd] = {}
        self._next_fd = 3

    def _die(self) -> None:
        self.alive = False
        self._fds.clear()

    # ------------------------------------------------------------------ helpers

    def _check(self, cost: float = 0.0) -> None:
        if not self.alive:
            raise OSError(errno.EIO, "crashed")
        self.disk._charge(self.disk.costs.op_s + cost)

    def _lookup(self, path: str) -> _Node | None:
        """The node at ``path`` or None; ENOTDIR when a parent component is a file."""
        node: _Node = self.disk.root
        for part in _split(path):
            if not isinstance(node, _Dir):
                raise _oserror(errno.ENOTDIR, "Not a directory", path)
            child = node.current.get(part)
            if child is None:
                return None
            node = child
        return node

    def _parent(self, path: str) -> tuple[_Dir, str]:
        parts = _split(path)
        if not parts:
            raise _oserror(errno.EBUSY, "the root has no parent", path)
        parent = self._lookup("/" + "/".join(parts[:-1]))
        if parent is None:
            raise _oserror(errno.ENOENT, "No such file or directory", path)
        if not isinstance(parent, _Dir):
            raise _oserror(errno.ENOTDIR, "Not a directory", path)
        return parent, parts[-1]

    def _fd(self, fd: int) -> _Fd:
        try:
            return self._fds[fd]
        except KeyError:
            raise _oserror(errno.EBADF, f"Bad file descriptor {fd}") from None

    def _new_fd(self, entry: _Fd) -> int:
        fd = self._next_fd
        self._next_fd += 1
        self._fds[fd] = entry
        return fd

    # ------------------------------------------------------------------ files

    def open(self, path: PathArg, flags: int, mode: int = 0o644) -> int:
        self._check()
        p = _norm(path)
        access = flags & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
        readable = access in (os.O_RDONLY, os.O_RDWR)
        writable = access in (os.O_WRONLY, os.O_RDWR)
        parent, name = self._parent(p) if p != "/" else (None, "")
        node = self._lookup(p)
        if node is not None:
            if flags & os.O_CREAT and flags & os.O_EXCL:
                raise _oserror(errno.EEXIST, "File exists", p)
            if isinstance(node, _Dir):
                if writable:
                    raise _oserror(errno.EISDIR, "Is a directory", p)
                return self._new_fd(_Fd(node, p, True, False))
            if flags & os.O_TRUNC and writable and node.current:
                self.disk._maybe_fail(self.disk._write_rules, p, "write")
                node.mark(0)
                del node.current[:]
        else:
            if not flags & os.O_CREAT:
                raise _oserror(errno.ENOENT, "No such file or directory", p)
            assert parent is not None
            self.disk._maybe_fail(self.disk._write_rules, p, "write")
            node = _File()
            parent.current[name] = node
        return self._new_fd(_Fd(node, p, readable, writable))

    def close(self, fd: int) -> None:
        self._check()
        self._fd(fd)
        del self._fds[fd]

    def dup(self, fd: int) -> int:
        self._check()
        entry = self._fd(fd)
        return self._new_fd(_Fd(entry.node, entry.path, entry.readable, entry.writable))

    def _file(self, fd: int, *, write: bool) -> tuple[_Fd, _File]:
        entry = self._fd(fd)
        if isinstance(entry.node, _Dir):
            raise _oserror(errno.EISDIR, "Is a directory", entry.path)
        if write and not entry.writable:
            raise _oserror(errno.EBADF, f"fd {fd} is not open for writing", entry.path)
        if not write and not entry.readable:
            raise _oserror(errno.EBADF, f"fd {fd} is not open for reading", entry.path)
        return entry, entry.node

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        self._check()
        if length < 0 or offset < 0:
            raise _oserror(errno.EINVAL, "negative length or offset")
        _entry, f = self._file(fd, write=False)
        data = bytes(f.current[offset : offset + length])
        self.disk.reads += 1
        self.disk.bytes_read += len(data)
        self.disk.pending_cost_s += len(data) * self.disk.costs.read_s_per_byte
        return data

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        self._check()
        if offset < 0:
            raise _oserror(errno.EINVAL, "negative offset")
        entry, f = self._file(fd, write=True)
        self.disk._maybe_fail(self.disk._write_rules, entry.path, "write")
        raw = bytes(data)
        end = offset + len(raw)
        if raw or offset > len(f.current):
            f.mark(min(offset, len(f.current)))
        if len(f.current) < offset:
            f.current.extend(bytes(offset - len(f.current)))
        f.current[offset:end] = raw
        self.disk.writes += 1
        self.disk.bytes_written += len(raw)
        self.disk.pending_cost_s += len(raw) * self.disk.costs.write_s_per_byte
        self.disk.pending_cost_s += self.disk._slow_penalty(entry.path, sync=False)
        return len(raw)

    def size(self, fd: int) -> int:
        self._check()
        entry = self._fd(fd)
        if isinstance(entry.node, _Dir):
            return 4096
        return len(entry.node.current)

    def ftruncate(self, fd: int, length: int) -> None:
        self._check()
        if length < 0:
            raise _oserror(errno.EINVAL, "negative length")
        entry = self._fd(fd)
        if isinstance(entry.node, _Dir) or not entry.writable:
            raise _oserror(errno.EINVAL, "Invalid argument", entry.path)
        f = entry.node
        self.disk._maybe_fail(self.disk._write_rules, entry.path, "write")
        if length != len(f.current):
            f.mark(min(length, len(f.current)))
        if length <= len(f.current):
            del f.current[length:]
        else:
            f.current.extend(bytes(length - len(f.current)))

    def _sync_fd(self, fd: int) -> None:
        entry = self._fd(fd)
        self.disk.pending_cost_s += self.disk.costs.sync_s
        self.disk.pending_cost_s += self.disk._slow_penalty(entry.path, sync=True)
        self.disk._maybe_fail(self.disk._sync_rules, entry.path, "sync")
        node = entry.node
        if isinstance(node, _Dir):
            self.disk.dir_syncs += 1
            node.durable = dict(node.current)
        else:
            self.disk.syncs += 1
            node.sync()

    def fsync(self, fd: int) -> None:
        self._check()
        self._sync_fd(fd)

    def fdatasync(self, fd: int) -> None:
        self._check()
        self._sync_fd(fd)

    # ------------------------------------------------------------------ names

    def replace(self, src: PathArg, dst: PathArg) -> None:
        self._check()
        s, d = _norm(src), _norm(dst)
        src_parent, src_name = self._parent(s)
        node = src_parent.current.get(src_name)
        if node is None:
            raise _oserror(errno.ENOENT, "No such file or directory", s)
        dst_parent, dst_name = self._parent(d)
        if s == d:
            return
        existing = dst_parent.current.get(dst_name)
        if isinstance(node, _Dir):
            if d.startswith(s.rstrip("/") + "/"):
                raise _oserror(errno.EINVAL, "cannot move a directory into itself", d)
            if existing is not None and not isinstance(existing, _Dir):
                raise _oserror(errno.ENOTDIR, "Not a directory", d)
            if isinstance(existing, _Dir) and existing.current:
                raise _oserror(errno.ENOTEMPTY, "Directory not empty", d)
        elif isinstance(existing, _Dir):
            raise _oserror(errno.EISDIR, "Is a directory", d)
        if existing is node:
            return  # two names of one inode: POSIX rename does nothing
        del src_parent.current[src_name]
        dst_parent.current[dst_name] = node

    def unlink(self, path: PathArg) -> None:
        self._check()
        p = _norm(path)
        parent, name = self._parent(p)
        node = parent.current.get(name)
        if node is None:
            raise _oserror(errno.ENOENT, "No such file or directory", p)
        if isinstance(node, _Dir):
            raise _oserror(errno.EISDIR, "Is a directory", p)
        del parent.current[name]

    def listdir(self, path: PathArg) -> list[str]:
        self._check()
        p = _norm(path)
        node = self._lookup(p)
        if node is None:
            raise _oserror(errno.ENOENT, "No such file or directory", p)
        if not isinstance(node, _Dir):
            raise _oserror(errno.ENOTDIR, "Not a directory", p)
        return sorted(node.current)

    def makedirs(self, path: PathArg) -> None:
        self._check()
        p = _norm(path)
        node: _Node = self.disk.root
        walked = ""
        parts = _split(p)
        for i, part in enumerate(parts):
            walked += "/" + part
            assert isinstance(node, _Dir)
            child = node.current.get(part)
            if child is None:
                child = _Dir()
                node.current[part] = child
            elif not isinstance(child, _Dir):
                last = i == len(parts) - 1
                raise _oserror(
                    errno.EEXIST if last else errno.ENOTDIR,
                    "File exists" if last else "Not a directory",
                    walked,
                )
            node = child

    def fsync_dir(self, path: PathArg) -> None:
        self._check()
        p = _norm(path)
        node = self._lookup(p)
        if node is None:
            raise _oserror(errno.ENOENT, "No such file or directory", p)
        if not isinstance(node, _Dir):
            raise _oserror(errno.ENOTDIR, "Not a directory", p)
        self.disk.pending_cost_s += self.disk.costs.sync_s
        self.disk.pending_cost_s += self.disk._slow_penalty(p, sync=True)
        self.disk._maybe_fail(self.disk._sync_rules, p, "sync")
        self.disk.dir_syncs += 1
        node.durable = dict(node.current)

    def exists(self, path: PathArg) -> bool:
        self._check()
        try:
            return self._lookup(_norm(path)) is not None
        except OSError:
            return False

    def is_dir(self, path: PathArg) -> bool:
        self._check()
        try:
            return isinstance(self._lookup(_norm(path)), _Dir)
        except OSError:
            return False

    def rmtree(self, path: PathArg) -> None:
        self._check()
        p = _norm(path)
        try:
            node = self._lookup(p)
        except OSError:
            return
        if not isinstance(node, _Dir):
            return  # shutil.rmtree(ignore_errors=True) leaves a file alone
        if p == "/":
            node.current.clear()
            return
        parent, name = self._parent(p)
        del parent.current[name]
