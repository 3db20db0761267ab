"""LazyFS's inodes and file data: dirty 4 KiB pages in memory over a backing file that holds
only what an ``fsync``/``fdatasync`` made durable (see model.py for the whole model).

Reads merge the two; a truncate below the backing size lowers ``bvalid`` so that bytes cut
away read as zeros when the file grows again, and the next fsync cuts them from the backing.
"""

from __future__ import annotations

import errno
import os
import time
from collections import OrderedDict
from dataclasses import dataclass

PAGE = 4096
STAGE = ".lazyfs-staging"
MAX_OPEN_BACKING = 128  # backing fds kept open between calls; a broker may hold many segments


def err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class Inode:
    def __init__(self, ino: int, is_dir: bool, mode: int) -> None:
        self.ino = ino
        self.is_dir = is_dir
        self.mode = mode  # with the S_IF* type bits
        self.uid = os.getuid()
        self.gid = os.getgid()
        now = time.time_ns()
        self.atime = self.mtime = self.ctime = now
        self.nlink = 0  # names in the current view
        self.opens = 0  # open handles
        self.refs = 0  # pending ops naming this inode: keeps its backing until they are applied
        # directories
        self.entries: dict[str, Inode] = {}
        self.hidden: dict[str, Inode] = {}  # libfuse's .fuse_hidden* names of open unlinked files
        self.parent: Inode | None = None  # current view, to refuse moving a dir into itself
        self.dparent: Inode | None = None  # durable parent; None: backing is STAGE/d/<ino>
        self.dname = ""
        # files: size in the current view, dirty pages, and what the backing file holds
        self.size = 0
        self.pages: dict[int, bytearray] = {}
        self.has_backing = False
        self.bsize = 0  # size of the backing file
        self.bvalid = 0  # backing bytes still part of the current content (<= size; truncate)

    @property
    def dirty(self) -> bool:
        return bool(self.pages) or self.size != self.bsize or self.bvalid != self.bsize


@dataclass(eq=False)
class Op:
    """A pending directory-entry change. ``dirs`` are the directories whose fsync makes it
    durable; ``target`` the inode named; ``replaced`` what a rename overwrote."""

    kind: str  # link | unlink | rename
    dirs: tuple[Inode, ...]
    names: tuple[str, ...]
    target: Inode
    replaced: Inode | None = None

    def inodes(self) -> list[Inode]:
        out = [*self.dirs, self.target]
        return [*out, self.replaced] if self.replaced is not None else out


class FileData:
    """The file-data half of ``Model``: ``STAGE/i/<ino>`` is each file's backing inode."""

    stage: str
    _fds: OrderedDict[int, int]

    def _file_bpath(self, f: Inode) -> str:
        return os.path.join(self.stage, "i", str(f.ino))

    def _bfd(self, f: Inode) -> int:
        fd = self._fds.get(f.ino)
        if fd is not None:
            self._fds.move_to_end(f.ino)
            return fd
        if not f.has_backing:
            # created on first need with the file's mode; O_EXCL: a stale link would be a bug
            fd = os.open(self._file_bpath(f), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            os.fchmod(fd, f.mode & 0o7777)
            f.has_backing = True
        else:
            fd = os.open(self._file_bpath(f), os.O_RDWR)
        self._fds[f.ino] = fd
        if len(self._fds) > MAX_OPEN_BACKING:
            os.close(self._fds.popitem(last=False)[1])
        return fd

    def _close_bfd(self, f: Inode) -> None:
        fd = self._fds.pop(f.ino, None)
        if fd is not None:
            os.close(fd)

    def _page(self, f: Inode, n: int) -> bytearray:
        page = f.pages.get(n)
        if page is None:
            page = bytearray(PAGE)
            start = n * PAGE
            if f.has_backing and start < f.bvalid:
                data = os.pread(self._bfd(f), min(PAGE, f.bvalid - start), start)
                page[: len(data)] = data
            f.pages[n] = page
        return page

    def read(self, f: Inode, size: int, offset: int) -> bytes:
        end = min(offset + size, f.size)
        if offset >= end:
            return b""
        buf = bytearray(end - offset)
        bend = min(end, f.bvalid)
        if f.has_backing and offset < bend:
            data = os.pread(self._bfd(f), bend - offset, offset)
            buf[: len(data)] = data
        for n in range(offset // PAGE, (end - 1) // PAGE + 1):
            page = f.pages.get(n)
            if page is not None:
                lo, hi = max(offset, n * PAGE), min(end, (n + 1) * PAGE)
                buf[lo - offset : hi - offset] = page[lo - n * PAGE : hi - n * PAGE]
        return bytes(buf)

    def write(self, f: Inode, data: bytes, offset: int) -> int:
        pos, view = offset, memoryview(data)
        while view:
            n, at = divmod(pos, PAGE)
            chunk = min(len(view), PAGE - at)
            self._page(f, n)[at : at + chunk] = view[:chunk]
            view, pos = view[chunk:], pos + chunk
        f.size = max(f.size, offset + len(data))
        f.mtime = f.ctime = time.time_ns()
        return len(data)

    def truncate(self, f: Inode, length: int) -> None:
        if f.is_dir:
            raise err(errno.EISDIR)
        if length < f.size:
            for n in [n for n in f.pages if n * PAGE >= length]:
                del f.pages[n]
            tail = f.pages.get(length // PAGE)
            if tail is not None:  # a later extension must read zeros, not the old bytes
                tail[length % PAGE :] = bytes(PAGE - length % PAGE)
            f.bvalid = min(f.bvalid, length)
        f.size = length
        f.mtime = f.ctime = time.time_ns()

    def fsync_file(self, f: Inode) -> None:
        """fsync and fdatasync alike: the file's data and size become durable."""
        if f.has_backing and not f.dirty:
            return
        fd = self._bfd(f)
        os.ftruncate(fd, f.bvalid)  # bytes truncated away must not come back on extension
        self.write_back(f, sorted(f.pages))
        os.ftruncate(fd, f.size)
        os.fsync(fd)
        f.pages.clear()
        f.bsize = f.bvalid = f.size

    def write_back(self, f: Inode, pages: list[int]) -> int:
        """Writes the given dirty pages (sorted) to the backing file, a run of adjacent pages
        per call (an fsync of a segment is then a few large writes); returns how many."""
        fd, written, i = self._bfd(f), 0, 0
        while i < len(pages):
            j = i + 1
            while j < len(pages) and pages[j] == pages[j - 1] + 1:
                j += 1
            start = pages[i] * PAGE
            end = min((pages[j - 1] + 1) * PAGE, f.size)
            if end > start:
                os.pwrite(fd, b"".join(f.pages[n] for n in pages[i:j])[: end - start], start)
                written += -(-(end - start) // PAGE)
            i = j
        return written
