"""The FUSE side of LazyFS: mfusepy callbacks over ``model.Model``, and the control socket.

Every callback takes one mutex (named so: an attribute called ``lock`` would be taken for
FUSE's POSIX-lock callback): the model is a plain data structure, and the kernel may send
requests from several libfuse threads while the control socket asks for a crash.

Kernel caching is switched off (``direct_io``, zero entry/attr/negative timeouts): after a
crash the kernel must not serve pages, sizes or names the filesystem has just forgotten.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import mfusepy

from chaos.lazyfs.model import Inode, Model

log = logging.getLogger("chaos.lazyfs")
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

F = TypeVar("F", bound=Callable[..., Any])


def locked(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: LazyOps, *args: Any) -> Any:
        with self._mutex:
            return method(self, *args)

    return wrapper  # type: ignore[return-value]


class LazyOps(mfusepy.Operations):
    use_ns = True

    def __init__(self, backing: str, control: str | None) -> None:
        self._mutex = threading.RLock()
        self.model = Model(backing)
        self.control = control
        self.handles: dict[int, tuple[Inode, int]] = {}  # fh -> (inode, open flags)
        self._next_fh = 1
        self._server: socket.socket | None = None

    # ----- mount set-up -----

    def init_with_config(self, conn_info: Any, config: Any) -> None:
        if config is not None:
            config.entry_timeout = config.attr_timeout = config.negative_timeout = 0.0
            config.ac_attr_timeout_set = 1
            config.ac_attr_timeout = 0.0
            config.direct_io = 1  # every read/write reaches us: no kernel page cache
            config.kernel_cache = config.auto_cache = 0
            # calls on handles come without a path: we go by handle throughout. hard_remove
            # stays off: libfuse then keeps an open unlinked file reachable under a
            # .fuse_hidden* name (the model treats that rename as the unlink), and fstat on it,
            # which the kernel sends without the handle, keeps working
            config.hard_remove = 0
            config.nullpath_ok = 1
        if self.control:
            self._start_control()

    def destroy(self, path: str) -> None:
        # a clean unmount writes everything back, as an OS does at shutdown
        with self._mutex:
            try:
                self.model.sync_all()
            except OSError:
                log.exception("lazyfs: writing back at unmount failed")
        if self._server is not None:
            self._server.close()
            if self.control:
                with_suppressed_unlink(self.control)

    # ----- handles -----

    def _add(self, node: Inode, flags: int) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = (node, flags)
        node.opens += 1
        return fh

    def _node(self, path: str | None, fh: int | None) -> Inode:
        if fh is not None and fh in self.handles:
            return self.handles[fh][0]
        if fh is not None or path is None:
            # a handle opened before a crash: its inode is gone with the unsynced state
            raise mfusepy.FuseOSError(errno.EIO)
        return self.model.lookup(path)

    def _drop(self, fh: int) -> None:
        entry = self.handles.pop(fh, None)
        if entry is not None:
            entry[0].opens -= 1
            self.model.collect(entry[0])

    # ----- attributes -----

    @locked
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        node = self._node(path, fh)
        if node.is_dir:
            nlink = 2 + sum(1 for c in node.entries.values() if c.is_dir)
            size = 4096
        else:
            nlink, size = node.nlink, node.size
        return {
            "st_mode": node.mode,
            "st_nlink": nlink,
            "st_size": size,
            "st_blocks": (size + 511) // 512,
            "st_uid": node.uid,
            "st_gid": node.gid,
            "st_atime": node.atime,
            "st_mtime": node.mtime,
            "st_ctime": node.ctime,
        }

    # mode, owner and times live in memory only: brokers do not depend on their durability

    @locked
    def chmod(self, path: str, mode: int, fh: int | None = None) -> int:
        node = self._node(path, fh)
        node.mode = stat.S_IFMT(node.mode) | (mode & 0o7777)
        return 0

    @locked
    def chown(self, path: str, uid: int, gid: int, fh: int | None = None) -> int:
        node = self._node(path, fh)
        if uid >= 0:
            node.uid = uid
        if gid >= 0:
            node.gid = gid
        return 0

    @locked
    def utimens(
        self, path: str, times: tuple[int | None, int | None] | None = None, fh: int | None = None
    ) -> int:
        node = self._node(path, fh)
        now = time.time_ns()
        atime, mtime = times if times else (now, now)
        node.atime = node.atime if atime is None else atime
        node.mtime = node.mtime if mtime is None else mtime
        return 0

    @locked
    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.model.backing)
        keys = (
            "f_bsize",
            "f_frsize",
            "f_blocks",
            "f_bfree",
            "f_bavail",
            "f_files",
            "f_ffree",
            "f_favail",
            "f_flag",
            "f_namemax",
        )
        return {k: getattr(st, k) for k in keys}

    @locked
    def access(self, path: str, amode: int) -> int:
        self.model.lookup(path)
        return 0

    # ----- directories -----

    @locked
    def mkdir(self, path: str, mode: int) -> int:
        self.model.create(path, mode, is_dir=True)
        return 0

    @locked
    def rmdir(self, path: str) -> int:
        self.model.remove(path, is_dir=True)
        return 0

    @locked
    def unlink(self, path: str) -> int:
        self.model.remove(path, is_dir=False)
        return 0

    @locked
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags & RENAME_EXCHANGE or flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise mfusepy.FuseOSError(errno.EINVAL)
        self.model.rename(old, new, noreplace=bool(flags & RENAME_NOREPLACE))
        return 0

    @locked
    def link(self, target: str, source: str) -> int:
        raise mfusepy.FuseOSError(errno.EPERM)  # hard links: not modelled

    @locked
    def symlink(self, target: str, source: str) -> int:
        raise mfusepy.FuseOSError(errno.EPERM)  # symlinks: not modelled

    @locked
    def opendir(self, path: str) -> int:
        node = self.model.lookup(path)
        if not node.is_dir:
            raise mfusepy.FuseOSError(errno.ENOTDIR)
        return self._add(node, os.O_RDONLY)

    @locked
    def readdir(self, path: str, fh: int) -> list[str]:
        node = self._node(path, fh)
        return [".", "..", *node.entries]

    @locked
    def releasedir(self, path: str, fh: int) -> int:
        self._drop(fh)
        return 0

    @locked
    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        self.model.fsync_dir(self._node(path, fh))
        return 0

    # ----- files -----

    @locked
    def create(self, path: str, mode: int, flags: int = os.O_RDWR) -> int:
        node = self.model.create(path, mode)
        return self._add(node, flags)

    @locked
    def open(self, path: str, flags: int) -> int:
        node = self.model.lookup(path)
        if node.is_dir:
            raise mfusepy.FuseOSError(errno.EISDIR)
        if flags & os.O_TRUNC and flags & (os.O_WRONLY | os.O_RDWR):
            self.model.truncate(node, 0)
        return self._add(node, flags)

    @locked
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self.model.read(self._node(path, fh), size, offset)

    @locked
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        node = self._node(path, fh)
        if fh in self.handles and self.handles[fh][1] & os.O_APPEND:
            offset = node.size  # ours is the size that counts: the kernel's may be stale
        return self.model.write(node, data, offset)

    @locked
    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        self.model.truncate(self._node(path, fh), length)
        return 0

    @locked
    def fsync(self, path: str, datasync: int, fh: int) -> int:
        self.model.fsync(self._node(path, fh))
        return 0

    @locked
    def flush(self, path: str, fh: int) -> int:
        return 0  # close() makes nothing durable

    @locked
    def release(self, path: str, fh: int) -> int:
        self._drop(fh)
        return 0

    # ----- control socket: one JSON line per command -----

    def _start_control(self) -> None:
        assert self.control is not None
        with_suppressed_unlink(self.control)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.control)
        server.listen(8)
        self._server = server
        threading.Thread(target=self._serve, args=(server,), daemon=True).start()

    def _serve(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed at unmount
            with conn:
                try:
                    line = conn.makefile("r").readline()
                    reply = self.command(line.split())
                except Exception as exc:  # the reply says why, the filesystem goes on
                    reply = {"ok": False, "error": repr(exc)}
                conn.sendall((json.dumps(reply) + "\n").encode())

    def command(self, words: list[str]) -> dict[str, Any]:
        if not words:
            return {"ok": False, "error": "empty command"}
        cmd, args = words[0], words[1:]
        with self._mutex:
            if cmd == "ping":
                return {"ok": True}
            if cmd == "status":
                return {"ok": True, **self.model.status()}
            if cmd == "sync":
                self.model.sync_all()
                return {"ok": True}
            if cmd == "crash":
                seed = int(args[0]) if args else None
                for node, _ in self.handles.values():
                    node.opens -= 1
                self.handles.clear()  # handles open across a crash now answer EIO
                return {"ok": True, **self.model.crash(seed)}
        return {"ok": False, "error": f"unknown command {cmd!r}"}


UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2


def _ns(ts: Any, now: int) -> int | None:
    """A timespec from utimensat in nanoseconds; None for UTIME_OMIT (leave as is)."""
    if ts.tv_nsec == UTIME_OMIT:
        return None
    return now if ts.tv_nsec == UTIME_NOW else ts.tv_sec * 10**9 + ts.tv_nsec


def with_suppressed_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class LazyFUSE(mfusepy.FUSE):
    """mfusepy's libfuse3 wrappers drop the file handle of truncate, chmod, chown and utimens
    (with ``nullpath_ok`` the path is then None: ftruncate on an unlinked file needs the
    handle) and the flags of rename (RENAME_NOREPLACE must not be ignored)."""

    def _args(self, path: bytes | None, fip: Any) -> tuple[str | None, int | None]:
        decoded = None if path is None else path.decode(self.encoding, self.errors)
        return decoded, (fip.contents.fh if fip else None)

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        decoded, fh = self._args(path, fip)
        return self.operations.truncate(decoded, length, fh)

    def chmod_fuse_3(self, path: bytes | None, mode: int, fip: Any) -> int:
        decoded, fh = self._args(path, fip)
        return self.operations.chmod(decoded, mode, fh)

    def chown_fuse_3(self, path: bytes | None, uid: int, gid: int, fip: Any) -> int:
        decoded, fh = self._args(path, fip)
        uid = -1 if uid == 0xFFFFFFFF else uid  # (uid_t)-1: leave unchanged
        gid = -1 if gid == 0xFFFFFFFF else gid
        return self.operations.chown(decoded, uid, gid, fh)

    def utimens_fuse_3(self, path: bytes | None, buf: Any, fip: Any) -> int:
        decoded, fh = self._args(path, fip)
        times = None
        if buf:
            now = time.time_ns()
            times = tuple(_ns(ts, now) for ts in (buf.contents.actime, buf.contents.modtime))
        return self.operations.utimens(decoded, times, fh)

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        return self.operations.rename(
            old.decode(self.encoding, self.errors), new.decode(self.encoding, self.errors), flags
        )


def _unmount_when_gone(parent: int, mountpoint: str) -> None:
    while _alive(parent):
        time.sleep(1.0)
    log.warning("lazyfs: process %d is gone, unmounting %s", parent, mountpoint)
    subprocess.run(["fusermount3", "-u", "-z", mountpoint], check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mount(
    mountpoint: str,
    backing: str,
    control: str | None,
    debug: bool = False,
    parent: int | None = None,
) -> None:
    """Serves until unmounted (``fusermount3 -u MOUNTPOINT``), or until ``parent`` is gone."""
    if parent is not None:
        watch = threading.Thread(target=_unmount_when_gone, args=(parent, mountpoint), daemon=True)
        watch.start()
    ops = LazyOps(backing, control)
    LazyFUSE(ops, mountpoint, foreground=True, debug=debug, fsname="lazyfs")
