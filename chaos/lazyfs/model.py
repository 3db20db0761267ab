"""LazyFS's durability model, independent of FUSE (``fs.py`` is the FUSE glue).

Two views of one tree:
  - the *current* view (what a running process sees: the page cache) lives in memory as a tree
    of ``Inode`` objects: directory entries, file sizes and dirty 4 KiB pages;
  - the *durable* image is the backing directory itself: after a crash, exactly what is there
    comes back.

A file's data reaches the backing file only on ``fsync``/``fdatasync`` of that file. A
directory entry change (create, mkdir, unlink, rmdir, rename) is queued as a pending op and
reaches the backing tree only on ``fsync`` of a directory it touches; so "write temp, fsync,
rename" without fsyncing the directory loses the rename, as POSIX allows.

Backing inodes: every file that has durable data has a hard link ``STAGE/i/<ino>`` (STAGE is a
hidden folder of the backing root), and its names in the tree are further hard links, so a
file can be durable while no durable name points at it (created and fsynced, directory not
fsynced) and survive a durable unlink while still open. A directory not durably linked keeps
its durable entries in ``STAGE/d/<ino>``. A crash wipes STAGE: what no durable name reaches
is gone, as on a real disk.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import stat
import time
from collections import OrderedDict

from chaos.lazyfs.data import STAGE, FileData, Inode, Op, err

HIDDEN = ".fuse_hidden"  # libfuse's names for open files that were unlinked


class Model(FileData):
    def __init__(self, backing: str) -> None:
        self.backing = os.path.abspath(backing)
        self.stage = os.path.join(self.backing, STAGE)
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._load()

    # ----- loading the durable image (start and crash) -----

    def _load(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        shutil.rmtree(self.stage, ignore_errors=True)
        os.makedirs(os.path.join(self.stage, "i"))
        os.makedirs(os.path.join(self.stage, "d"))
        self._next = 1
        self.pending: list[Op] = []
        self.root = self._new(True, stat.S_IFDIR | (os.stat(self.backing).st_mode & 0o7777))
        self.root.nlink = 1
        self._scan(self.root, self.backing, {})

    def _new(self, is_dir: bool, mode: int) -> Inode:
        node = Inode(self._next, is_dir, mode)
        self._next += 1
        return node

    def _scan(self, d: Inode, path: str, seen: dict[int, Inode]) -> None:
        for entry in os.scandir(path):
            if d is self.root and entry.name == STAGE:
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                sub = self._new(True, st.st_mode)
                sub.parent, sub.dparent, sub.dname, sub.nlink = d, d, entry.name, 1
                self._scan(sub, entry.path, seen)
            elif stat.S_ISREG(st.st_mode):
                sub = seen.get(st.st_ino)  # hard links in the image share one inode
                if sub is None:
                    sub = seen[st.st_ino] = self._new(False, st.st_mode)
                    os.link(entry.path, self._file_bpath(sub))
                    sub.has_backing = True
                    sub.size = sub.bsize = sub.bvalid = st.st_size
                sub.nlink += 1
            else:
                continue  # symlinks, fifos: not supported, left out of the view
            sub.mtime, sub.ctime = st.st_mtime_ns, st.st_ctime_ns
            d.entries[entry.name] = sub

    # ----- the current view: lookups and directory entries -----

    def lookup(self, path: str) -> Inode:
        node = self.root
        for part in path.split("/"):
            if not part:
                continue
            if not node.is_dir:
                raise err(errno.ENOTDIR)
            child = node.entries.get(part) or node.hidden.get(part)
            if child is None:
                raise err(errno.ENOENT)
            node = child
        return node

    def _split(self, path: str) -> tuple[Inode, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self.lookup(head)
        if not parent.is_dir:
            raise err(errno.ENOTDIR)
        if not name or name in (".", "..") or (parent is self.root and name == STAGE):
            raise err(errno.EINVAL)
        return parent, name

    def _queue(self, op: Op) -> None:
        for node in op.inodes():
            node.refs += 1
        self.pending.append(op)

    def create(self, path: str, mode: int, is_dir: bool = False) -> Inode:
        parent, name = self._split(path)
        if name in parent.entries:
            raise err(errno.EEXIST)
        node = self._new(is_dir, (stat.S_IFDIR if is_dir else stat.S_IFREG) | (mode & 0o7777))
        node.nlink = 1
        node.parent = parent if is_dir else None
        parent.entries[name] = node
        parent.mtime = node.mtime
        self._queue(Op("link", (parent,), (name,), node))
        return node

    def remove(self, path: str, is_dir: bool) -> None:
        parent, name = self._split(path)
        if parent.hidden.pop(name, None) is not None:
            return  # its unlink was queued when libfuse hid it
        node = parent.entries.get(name)
        if node is None:
            raise err(errno.ENOENT)
        if node.is_dir != is_dir:
            raise err(errno.EISDIR if node.is_dir else errno.ENOTDIR)
        if is_dir and node.entries:
            raise err(errno.ENOTEMPTY)
        del parent.entries[name]
        node.nlink -= 1
        parent.mtime = node.ctime = time.time_ns()
        self._queue(Op("unlink", (parent,), (name,), node))

    def rename(self, old: str, new: str, noreplace: bool = False) -> None:
        sdir, sname = self._split(old)
        node = sdir.entries.get(sname)
        if node is None:
            raise err(errno.ENOENT)
        ddir, dname = self._split(new)
        if dname.startswith(HIDDEN) and ddir is sdir:
            # libfuse unlinking an open file (fstat on it must keep working, so no hard_remove):
            # an unlink as far as durability goes, with a name only libfuse uses
            self.remove(old, node.is_dir)
            sdir.hidden[dname] = node
            return
        old_node = ddir.entries.get(dname)
        if old_node is node:
            return
        if old_node is not None:
            if noreplace:
                raise err(errno.EEXIST)
            if old_node.is_dir and not node.is_dir:
                raise err(errno.EISDIR)
            if node.is_dir and not old_node.is_dir:
                raise err(errno.ENOTDIR)
            if old_node.is_dir and old_node.entries:
                raise err(errno.ENOTEMPTY)
        if node.is_dir:
            walk: Inode | None = ddir
            while walk is not None:
                if walk is node:
                    raise err(errno.EINVAL)
                walk = walk.parent
            node.parent = ddir
        del sdir.entries[sname]
        ddir.entries[dname] = node
        if old_node is not None:
            old_node.nlink -= 1
        sdir.mtime = ddir.mtime = node.ctime = time.time_ns()
        dirs = (sdir,) if sdir is ddir else (sdir, ddir)
        self._queue(Op("rename", dirs, (sname, dname), node, old_node))

    def fsync(self, f: Inode) -> None:
        if f.is_dir:
            self.fsync_dir(f)
        else:
            self.fsync_file(f)

    # ----- directory fsync: pending entry ops reach the backing tree -----

    def _dir_bpath(self, d: Inode) -> str:
        if d is self.root:
            return self.backing
        if d.dparent is not None:
            return os.path.join(self._dir_bpath(d.dparent), d.dname)
        path = os.path.join(self.stage, "d", str(d.ino))
        os.makedirs(path, exist_ok=True)
        return path

    def fsync_dir(self, d: Inode) -> None:
        last = max((i for i, op in enumerate(self.pending) if d in op.dirs), default=-1)
        if last < 0:
            return
        # The ops of ``d`` up to the last, plus every earlier op sharing a directory with one
        # of those (transitively): each directory's ops then reach the image in their order.
        touched = {id(x) for x in self.pending[last].dirs}
        chosen = [last]
        for i in range(last - 1, -1, -1):
            if any(id(x) in touched for x in self.pending[i].dirs):
                chosen.append(i)
                touched.update(id(x) for x in self.pending[i].dirs)
        chosen.sort()
        chosen_set = set(chosen)
        done = [op for i, op in enumerate(self.pending) if i in chosen_set]
        self.pending = [op for i, op in enumerate(self.pending) if i not in chosen_set]
        for op in done:
            self._apply(op)
        # fsync the backing folders so the image also outlives a host crash; their paths are
        # taken now, since a later op of the batch may have renamed one
        for path in {self._dir_bpath(x) for op in done for x in op.dirs}:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        # Ops that only touch removed, unreachable directories can never show in the image:
        # dropping them frees what they hold (a deleted topic's segments, say) before a crash.
        dead = [op for op in self.pending if all(self._dead(x) for x in op.dirs)]
        if dead:
            self.pending = [op for op in self.pending if op not in dead]
        for op in done + dead:
            for node in op.inodes():
                node.refs -= 1
                self.collect(node)

    def _dead(self, d: Inode) -> bool:
        """Removed from the view, not open, and durably nowhere or inside a dead directory."""
        if d is self.root or d.nlink > 0 or d.opens > 0:
            return False
        return d.dparent is None or self._dead(d.dparent)

    def _stage_dir(self, d: Inode, path: str) -> None:
        """A directory losing its durable name keeps its durable entries, now orphans."""
        os.rename(path, os.path.join(self.stage, "d", str(d.ino)))
        d.dparent = None

    def _apply(self, op: Op) -> None:
        node = op.target
        if op.kind == "rename":
            src_dir, dst_dir = op.dirs[0], op.dirs[-1]
            src = os.path.join(self._dir_bpath(src_dir), op.names[0])
            dst = os.path.join(self._dir_bpath(dst_dir), op.names[1])
            if op.replaced is not None and op.replaced.is_dir and os.path.isdir(dst):
                self._stage_dir(op.replaced, dst)
            if os.path.lexists(src):
                os.replace(src, dst)
                if node.is_dir:
                    node.dparent, node.dname = dst_dir, op.names[1]
            else:  # its source name was in a dropped dead directory: the rename only links
                self._link(node, dst_dir, dst)
            return
        where = self._dir_bpath(op.dirs[0])
        path = os.path.join(where, op.names[0])
        if op.kind == "link":
            self._link(node, op.dirs[0], path)
        elif node.is_dir:
            if os.path.isdir(path):
                self._stage_dir(node, path)
        elif os.path.lexists(path):
            os.unlink(path)

    def _link(self, node: Inode, d: Inode, path: str) -> None:
        if node.is_dir:
            staged = os.path.join(self.stage, "d", str(node.ino))
            if os.path.isdir(staged):
                os.rename(staged, path)
            else:
                os.mkdir(path, node.mode & 0o7777)
            node.dparent, node.dname = d, os.path.basename(path)
        else:
            self._bfd(node)  # a name made durable before the data: an empty file, as on ext4
            tmp = os.path.join(self.stage, "link.tmp")
            os.link(self._file_bpath(node), tmp)
            os.replace(tmp, path)

    def collect(self, node: Inode) -> None:
        """Frees the backing of an inode nothing can reach any more (no name, handle or op)."""
        if node is self.root or node.nlink > 0 or node.opens > 0 or node.refs > 0:
            return
        if node.is_dir:
            if node.dparent is None:
                shutil.rmtree(os.path.join(self.stage, "d", str(node.ino)), ignore_errors=True)
        elif node.has_backing:
            self._close_bfd(node)
            os.unlink(self._file_bpath(node))
            node.has_backing = False
        node.pages.clear()

    # ----- the control commands -----

    def sync_all(self) -> None:
        while self.pending:
            self.fsync_dir(self.pending[-1].dirs[0])
        for f in self._files():
            self.fsync(f)

    def _files(self) -> list[Inode]:
        out, todo = [], [self.root]
        while todo:
            for child in todo.pop().entries.values():
                (todo if child.is_dir else out).append(child)
        return out

    def crash(self, torn_seed: int | None = None) -> dict[str, int]:
        """Loses everything not durable. With ``torn_seed``, each file first keeps a random
        prefix (in offset order) of its dirty pages, as a writeback cut short would."""
        lost_pages = sum(len(f.pages) for f in self._files())
        lost_ops = len(self.pending)
        kept = 0
        if torn_seed is not None:
            rng = random.Random(torn_seed)
            for f in self._files():
                if not f.pages or not f.has_backing:
                    continue
                pages = sorted(f.pages)[: rng.randint(0, len(f.pages))]
                kept += self.write_back(f, pages)
                os.fsync(self._bfd(f))
        self._load()
        return {"lost_pages": lost_pages - kept, "torn_pages_kept": kept, "lost_ops": lost_ops}

    def status(self) -> dict[str, int]:
        files = self._files()
        return {
            "pending_ops": len(self.pending),
            "dirty_files": sum(1 for f in files if f.dirty),
            "dirty_pages": sum(len(f.pages) for f in files),
        }
