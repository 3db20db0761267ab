"""LazyFS (chaos/lazyfs): what survives a crash is exactly what was made durable.

Each test mounts a fresh LazyFS, acts through plain ``os`` calls on the mount, calls ``crash``
and looks at what is left. Without FUSE these tests fail (they never skip): a power-loss nemesis
that cannot run must not look like one that passed.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.lazyfs import LazyFS, fuse_unavailable_reason
from raft.storage.fs import OS_FS, write_file_durably

PAGE = 4096


@pytest.fixture
def lazy(tmp_path: Path) -> Iterator[LazyFS]:
    reason = fuse_unavailable_reason()
    if reason is not None:
        pytest.fail(f"LazyFS (power-loss nemesis) cannot run here: {reason}", pytrace=False)
    fs = LazyFS(str(tmp_path / "mnt"), str(tmp_path / "backing"))
    fs.start()
    try:
        yield fs
    finally:
        fs.stop()


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def put(path: Path, data: bytes, sync: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def names(path: Path) -> list[str]:
    return sorted(os.listdir(path))


def test_file_data_needs_file_fsync(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    put(m / "synced", b"kept", sync=True)
    put(m / "unsynced", b"lost")
    fsync_dir(m)  # both names durable, only one file's data
    assert (m / "unsynced").read_bytes() == b"lost"  # the page cache view before the crash
    lazy.crash()
    assert (m / "synced").read_bytes() == b"kept"
    assert (m / "unsynced").read_bytes() == b""  # the name survived, the data did not


def test_fdatasync_makes_data_and_size_durable(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    fd = os.open(m / "f", os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"x" * 10_000, 0)
    os.fdatasync(fd)
    os.close(fd)
    fsync_dir(m)
    lazy.crash()
    assert (m / "f").read_bytes() == b"x" * 10_000


def test_new_file_fsynced_without_directory_fsync_is_gone(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    put(m / "new", b"data", sync=True)
    assert names(m) == ["new"]
    lazy.crash()
    assert names(m) == []


def test_rename_over_old_file_needs_directory_fsync(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    put(m / "state", b"old", sync=True)
    fsync_dir(m)
    put(m / "state.tmp", b"new", sync=True)
    os.replace(m / "state.tmp", m / "state")
    assert (m / "state").read_bytes() == b"new"
    lazy.crash()
    assert names(m) == ["state"]
    assert (m / "state").read_bytes() == b"old"  # the rename was never made durable

    put(m / "state.tmp", b"new", sync=True)
    os.replace(m / "state.tmp", m / "state")
    fsync_dir(m)
    lazy.crash()
    assert names(m) == ["state"]
    assert (m / "state").read_bytes() == b"new"


def test_unlink_needs_directory_fsync(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    put(m / "a", b"a", sync=True)
    put(m / "b", b"b", sync=True)
    fsync_dir(m)
    os.unlink(m / "a")
    os.unlink(m / "b")
    fsync_dir(m)
    put(m / "b", b"b2", sync=True)  # a new file under an unlinked name, dir not synced again
    lazy.crash()
    assert names(m) == []
    put(m / "c", b"c", sync=True)
    fsync_dir(m)
    os.unlink(m / "c")
    lazy.crash()
    assert (m / "c").read_bytes() == b"c"


def test_directory_listing_merges_pending_changes(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    for name in ("a", "b", "c"):
        put(m / name, name.encode(), sync=True)
    fsync_dir(m)
    os.unlink(m / "a")
    os.rename(m / "b", m / "d")
    put(m / "e", b"e")
    assert names(m) == ["c", "d", "e"]
    assert names(lazy.backing) == [".lazyfs-staging", "a", "b", "c"]  # the durable image
    with pytest.raises(FileNotFoundError):
        os.stat(m / "a")
    lazy.crash()
    assert names(m) == ["a", "b", "c"]


def test_truncate_and_ftruncate(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    put(m / "f", b"y" * 10_000, sync=True)
    fsync_dir(m)
    os.truncate(m / "f", 100)
    assert os.path.getsize(m / "f") == 100
    lazy.crash()
    assert (m / "f").read_bytes() == b"y" * 10_000  # the truncate was not synced

    fd = os.open(m / "f", os.O_RDWR)
    os.ftruncate(fd, 5000)
    os.ftruncate(fd, 9000)  # the extension reads zeros, not the bytes cut before
    assert os.pread(fd, 9000, 0) == b"y" * 5000 + bytes(4000)
    os.fsync(fd)
    os.close(fd)
    lazy.crash()
    assert (m / "f").read_bytes() == b"y" * 5000 + bytes(4000)


def test_open_with_o_trunc_is_not_durable_until_fsync(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    put(m / "f", b"old contents", sync=True)
    fsync_dir(m)
    put(m / "f", b"new")
    assert (m / "f").read_bytes() == b"new"
    lazy.crash()
    assert (m / "f").read_bytes() == b"old contents"


def test_pwrite_at_offsets_against_a_reference(lazy: LazyFS) -> None:
    """Random pwrite/ftruncate/fsync over page boundaries: reads match a bytearray, and after
    a crash the file is the reference as of the last fsync."""
    m = Path(lazy.mountpoint)
    rng = random.Random(7)
    fd = os.open(m / "f", os.O_RDWR | os.O_CREAT, 0o644)
    fsync_dir(m)
    ref, durable = bytearray(), b""
    for step in range(300):
        roll = rng.random()
        if roll < 0.7:
            off = rng.randrange(0, 5 * PAGE)
            data = rng.randbytes(rng.randrange(1, 2 * PAGE))
            os.pwrite(fd, data, off)
            if off > len(ref):
                ref.extend(bytes(off - len(ref)))
            ref[off : off + len(data)] = data
        elif roll < 0.85:
            size = rng.randrange(0, 6 * PAGE)
            os.ftruncate(fd, size)
            del ref[size:]
            ref.extend(bytes(size - len(ref)))
        else:
            os.fsync(fd)
            durable = bytes(ref)
        assert os.fstat(fd).st_size == len(ref), step
        assert os.pread(fd, len(ref) + 10, 0) == ref, step
    os.close(fd)
    lazy.crash()
    assert (m / "f").read_bytes() == durable


def test_o_append_writes_at_the_end(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    put(m / "log", b"abc")
    fd = os.open(m / "log", os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"def")
    other = os.open(m / "log", os.O_WRONLY)
    os.pwrite(other, b"XYZ!", 6)  # grows the file behind the appender's back
    os.write(fd, b"ghi")
    os.close(other)
    os.fsync(fd)
    os.close(fd)
    assert (m / "log").read_bytes() == b"abcdefXYZ!ghi"


def test_open_handle_survives_unlink(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    put(m / "f", b"durable", sync=True)
    fsync_dir(m)
    fd = os.open(m / "f", os.O_RDWR)
    os.unlink(m / "f")
    fsync_dir(m)
    assert names(m) == []
    os.pwrite(fd, b"DUR", 0)
    os.ftruncate(fd, 5)
    os.fsync(fd)
    assert os.pread(fd, 100, 0) == b"DURab"
    assert os.fstat(fd).st_size == 5
    os.close(fd)
    lazy.crash()
    assert names(m) == []


def test_directories_need_their_parent_fsynced(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    os.mkdir(m / "d")
    put(m / "d" / "f", b"f", sync=True)
    fsync_dir(m / "d")
    lazy.crash()
    assert names(m) == []  # d itself was never made durable in its parent

    os.mkdir(m / "d")
    fsync_dir(m)
    put(m / "d" / "f", b"f", sync=True)
    lazy.crash()
    assert names(m) == ["d"]
    assert names(m / "d") == []  # f's name needed an fsync of d

    put(m / "d" / "f", b"f", sync=True)
    fsync_dir(m / "d")
    os.unlink(m / "d" / "f")
    os.rmdir(m / "d")
    fsync_dir(m)  # the rmdir is durable, the unlink inside d is not: d goes all the same
    lazy.crash()
    assert names(m) == []


def test_rename_across_directories(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    os.mkdir(m / "a")
    os.mkdir(m / "b")
    fsync_dir(m)
    put(m / "a" / "x", b"x", sync=True)
    fsync_dir(m / "a")
    os.rename(m / "a" / "x", m / "b" / "x")
    lazy.crash()
    assert (names(m / "a"), names(m / "b")) == (["x"], [])
    os.rename(m / "a" / "x", m / "b" / "x")
    fsync_dir(m / "b")  # one rename, durable as a whole: never in both or in neither
    lazy.crash()
    assert (names(m / "a"), names(m / "b")) == ([], ["x"])
    assert (m / "b" / "x").read_bytes() == b"x"


def test_handles_open_across_a_crash_fail(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    put(m / "f", b"f", sync=True)
    fsync_dir(m)
    fd = os.open(m / "f", os.O_RDWR)
    try:
        lazy.crash()
        with pytest.raises(OSError) as err:
            os.pwrite(fd, b"late", 0)
        assert err.value.errno == errno.EIO
    finally:
        os.close(fd)
    assert (m / "f").read_bytes() == b"f"


def test_torn_crash_keeps_a_prefix_of_dirty_pages(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    put(m / "f", b"", sync=True)
    fsync_dir(m)
    fd = os.open(m / "f", os.O_WRONLY)
    pages = [bytes([65 + i]) * PAGE for i in range(8)]
    os.write(fd, b"".join(pages))
    os.close(fd)
    kept = lazy.crash(torn_seed=3)["torn_pages_kept"]
    assert 0 <= kept <= 8
    assert (m / "f").read_bytes() == b"".join(pages[:kept])
    seen = {lazy_crash_prefix(lazy, m, pages, seed) for seed in range(12)}
    assert len(seen) > 1  # different seeds tear at different places


def lazy_crash_prefix(lazy: LazyFS, m: Path, pages: list[bytes], seed: int) -> int:
    fd = os.open(m / "f", os.O_WRONLY | os.O_TRUNC)
    os.fsync(fd)
    os.write(fd, b"".join(pages))
    os.close(fd)
    kept: int = lazy.crash(torn_seed=seed)["torn_pages_kept"]
    assert (m / "f").read_bytes() == b"".join(pages[:kept])
    return kept


def test_replog_write_file_durably_survives_and_a_plain_write_does_not(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    os.mkdir(m / "data")
    fsync_dir(m)
    write_file_durably(OS_FS, m / "data" / "checkpoint", b"v1")
    write_file_durably(OS_FS, m / "data" / "checkpoint", b"v2")
    put(m / "data" / "plain", b"not synced")  # what a storage.fsync=never write amounts to
    lazy.crash()
    assert names(m / "data") == ["checkpoint"]
    assert (m / "data" / "checkpoint").read_bytes() == b"v2"


def test_nemesis_sigkill_crash_restart(lazy: LazyFS) -> None:
    """The power-loss nemesis on a process: SIGKILL it mid-stream, crash, start it again."""
    m = Path(lazy.mountpoint)
    script = textwrap.dedent(
        """
        import os, sys
        from raft.storage.fs import OS_FS, write_file_durably
        d = sys.argv[1]
        n = int(open(os.path.join(d, "count")).read()) if os.path.exists(os.path.join(d, "count")) else 0
        write_file_durably(OS_FS, os.path.join(d, "count"), str(n + 1).encode())
        fd = os.open(os.path.join(d, "scratch"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        while True:
            os.write(fd, b"x" * 1000)
            if n >= 0:
                print("ready", n + 1, flush=True)
                n = -1
        """
    )
    repo = Path(__file__).resolve().parents[2]
    for expected in (1, 2):
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(m)], cwd=repo, stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().split() == ["ready", str(expected)]
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert os.path.getsize(m / "scratch") > 0
        lazy.crash()
        assert names(m) == ["count"]  # scratch never had its directory fsynced
        assert (m / "count").read_bytes() == str(expected).encode()


def test_clean_unmount_writes_everything_back(tmp_path: Path) -> None:
    reason = fuse_unavailable_reason()
    if reason is not None:
        pytest.fail(f"LazyFS (power-loss nemesis) cannot run here: {reason}", pytrace=False)
    fs = LazyFS(str(tmp_path / "mnt"), str(tmp_path / "backing")).start()
    try:
        os.mkdir(Path(fs.mountpoint) / "d")
        put(Path(fs.mountpoint) / "d" / "f", b"written back")
    finally:
        fs.stop()
    assert not os.path.ismount(fs.mountpoint)
    assert (tmp_path / "backing" / "d" / "f").read_bytes() == b"written back"
    # mounting the same image again shows it
    with LazyFS(str(tmp_path / "mnt"), str(tmp_path / "backing")) as again:
        assert names(Path(again.mountpoint) / "d") == ["f"]


def test_check_command_reports_fuse() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chaos.lazyfs", "check"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, f"FUSE unusable for LazyFS: {done.stdout}{done.stderr}"


def test_rmtree_needs_the_parent_fsynced(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    os.makedirs(m / "topic" / "p0")
    put(m / "topic" / "p0" / "seg", b"s" * 9000, sync=True)
    for d in (m / "topic" / "p0", m / "topic", m):
        fsync_dir(d)
    shutil.rmtree(m / "topic")
    lazy.crash()
    assert (m / "topic" / "p0" / "seg").read_bytes() == b"s" * 9000
    shutil.rmtree(m / "topic")
    fsync_dir(m)
    assert lazy.status()["pending_ops"] == 0  # nothing left queued inside the removed tree
    assert names(Path(lazy.backing) / ".lazyfs-staging" / "d") == []  # nor held on disk
    lazy.crash()
    assert names(m) == []


def test_rename_over_a_file_still_open(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    put(m / "state", b"old", sync=True)
    fsync_dir(m)
    reader = os.open(m / "state", os.O_RDONLY)
    try:
        put(m / "state.tmp", b"new", sync=True)
        os.replace(m / "state.tmp", m / "state")
        assert names(m) == ["state"]  # libfuse's .fuse_hidden* name for the old file is hidden
        assert os.pread(reader, 10, 0) == b"old"
        assert os.fstat(reader).st_size == 3
        lazy.crash()
    finally:
        os.close(reader)
    assert (m / "state").read_bytes() == b"old"


def tree(root: Path, contents: bool = True) -> dict[str, bytes | None]:
    """Every folder (None) and file (its bytes; b"" without ``contents``) under ``root``."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out[os.path.join(rel, d)] = None
        for f in filenames:
            out[os.path.join(rel, f)] = (Path(dirpath) / f).read_bytes() if contents else b""
    return out


def test_random_operations_match_a_real_filesystem(lazy: LazyFS, tmp_path: Path) -> None:
    """The same random operations on the mount and on a real folder leave the same tree; after
    ``sync`` a crash loses nothing; after a crash without it the mount works on what is left."""
    m, ref = Path(lazy.mountpoint), tmp_path / "ref"
    ref.mkdir()
    rng = random.Random(11)
    for step in range(300):
        now = tree(ref, contents=False)
        dirs = [".", *sorted(p for p, v in now.items() if v is None)]
        files = sorted(p for p, v in now.items() if v is not None)
        d, roll = rng.choice(dirs), rng.random()
        f = rng.choice(files) if files else None
        data = rng.randbytes(rng.randrange(0, 3 * PAGE))
        off = rng.randrange(0, 9000)
        over = rng.choice(files) if files and rng.random() < 0.3 else os.path.join(d, f"r{step}")
        for root in (m, ref):
            if roll < 0.2 or f is None:
                put(root / d / f"f{step}", data)
            elif roll < 0.35:
                fd = os.open(root / f, os.O_WRONLY | (os.O_APPEND if step % 2 else 0))
                os.pwrite(fd, data, off)
                os.close(fd)
            elif roll < 0.42:
                os.truncate(root / f, off)
            elif roll < 0.5:
                os.unlink(root / f)
            elif roll < 0.58:
                os.mkdir(root / d / f"d{step}")
            elif roll < 0.62 and d != "." and not os.listdir(root / d):
                os.rmdir(root / d)
            elif roll < 0.75:
                os.replace(root / f, root / over)
            elif roll < 0.82 and d != ".":
                os.rename(root / d, root / f"m{step}")
            elif roll < 0.9 and root == m:
                fsync_dir(m / d)
            elif root == m:
                fd = os.open(m / f, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
        if step % 5 == 0:
            assert tree(m) == tree(ref), step
        if step % 97 == 96:
            lazy.sync()
            lazy.crash()
            assert tree(m) == tree(ref), f"sync then crash lost something at step {step}"
        elif step % 131 == 130:
            lazy.crash()
            shutil.rmtree(ref)
            shutil.copytree(m, ref)


def test_ctl_command_line(lazy: LazyFS) -> None:
    put(Path(lazy.mountpoint) / "f", b"dirty")
    run = [sys.executable, "-m", "chaos.lazyfs", "ctl", lazy.control]
    repo = Path(__file__).resolve().parents[2]
    status = subprocess.run([*run, "status"], capture_output=True, text=True, cwd=repo)
    assert status.returncode == 0, status.stderr
    assert '"pending_ops": 1' in status.stdout and '"dirty_pages": 1' in status.stdout
    crash = subprocess.run([*run, "crash", "5"], capture_output=True, text=True, cwd=repo)
    assert crash.returncode == 0, crash.stderr
    assert names(Path(lazy.mountpoint)) == []


def test_random_operations_lose_exactly_what_was_not_synced(lazy: LazyFS) -> None:
    """One folder, random creates/writes/truncates/renames/unlinks/fsyncs and crashes, checked
    against a small oracle of the rules: data is durable at its file's fsync, entry changes
    at the folder's fsync, in order."""
    m, rng = Path(lazy.mountpoint), random.Random(5)
    cur: dict[str, int] = {}  # name -> inode, as processes see it
    dur: dict[str, int] = {}  # name -> inode, in the durable image
    pending: list[tuple[str, ...]] = []
    data: dict[int, bytearray] = {}
    durable: dict[int, bytes] = {}
    for step in range(400):
        roll, name = rng.random(), f"n{rng.randrange(6)}"
        if roll < 0.25:
            put(m / name, payload := rng.randbytes(rng.randrange(0, 3 * PAGE)))
            if name not in cur:
                cur[name] = step
                durable[step] = b""
                pending.append(("link", name, str(step)))
            data[cur[name]] = bytearray(payload)
        elif roll < 0.4 and name in cur:
            off, payload = rng.randrange(0, 10_000), rng.randbytes(rng.randrange(1, 5000))
            fd = os.open(m / name, os.O_WRONLY)
            os.pwrite(fd, payload, off)
            os.close(fd)
            buf = data[cur[name]]
            buf.extend(bytes(max(0, off - len(buf))))
            buf[off : off + len(payload)] = payload
        elif roll < 0.47 and name in cur:
            size = rng.randrange(0, 10_000)
            os.truncate(m / name, size)
            del data[cur[name]][size:]
            data[cur[name]].extend(bytes(size - len(data[cur[name]])))
        elif roll < 0.6 and name in cur:
            fd = os.open(m / name, os.O_RDONLY)
            (os.fdatasync if step % 2 else os.fsync)(fd)
            os.close(fd)
            durable[cur[name]] = bytes(data[cur[name]])
        elif roll < 0.68 and name in cur:
            os.unlink(m / name)
            del cur[name]
            pending.append(("unlink", name))
        elif roll < 0.8 and name in cur:
            new = f"n{rng.randrange(6)}"
            os.replace(m / name, m / new)
            if new != name:
                cur[new] = cur.pop(name)
                pending.append(("rename", name, new))
        elif roll < 0.92:
            fsync_dir(m)
            for op in pending:
                if op[0] == "link":
                    dur[op[1]] = int(op[2])
                elif op[0] == "unlink":
                    del dur[op[1]]
                else:
                    dur[op[2]] = dur.pop(op[1])
            pending.clear()
        else:
            lazy.crash()
            cur, pending = dict(dur), []
            data = {ino: bytearray(durable[ino]) for ino in dur.values()}
        assert tree(m) == {f"./{n}": bytes(data[i]) for n, i in cur.items()}, step


def test_times_and_mode(lazy: LazyFS) -> None:
    m = Path(lazy.mountpoint)
    put(m / "f", b"")
    os.utime(m / "f", ns=(1_000_000_001, 2_000_000_002))
    st = os.stat(m / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_001, 2_000_000_002)
    os.utime(m / "f")  # UTIME_NOW
    assert os.stat(m / "f").st_mtime_ns > 2_000_000_002
    os.chmod(m / "f", 0o600)
    assert os.stat(m / "f").st_mode & 0o777 == 0o600
