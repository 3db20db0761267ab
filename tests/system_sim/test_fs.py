"""The simulated disk: POSIX semantics, the durability rules, crashes (clean and torn), faults,
costs. The same semantic checks run against OsFileSystem in a temp dir, so the two agree."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from raft.storage.fs import OsFileSystem, read_file, write_file_durably
from tests.system_sim.fs import PAGE_SIZE, SimDisk, SimFileSystem

W = os.O_WRONLY | os.O_CREAT
RW = os.O_RDWR | os.O_CREAT


def _disk(seed: int = 0) -> tuple[SimDisk, SimFileSystem]:
    disk = SimDisk(random.Random(seed))
    return disk, disk.mount()


def _write(fs: SimFileSystem, path: str, data: bytes, *, sync: bool) -> None:
    fd = fs.open(path, W | os.O_TRUNC)
    fs.pwrite(fd, data, 0)
    if sync:
        fs.fsync(fd)
    fs.close(fd)


# ---------------------------------------------------------------------- semantics shared with os


@pytest.fixture(params=["sim", "os"])
def any_fs(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[object, str]:
    if request.param == "sim":
        return SimDisk(random.Random(0)).mount(), "/data"
    return OsFileSystem(), str(tmp_path / "data")


def test_semantics_match_os(any_fs: tuple[object, str]) -> None:
    fs, base = any_fs
    fs.makedirs(base)  # type: ignore[attr-defined]
    fs.makedirs(base)  # type: ignore[attr-defined]  # exists: fine
    a = f"{base}/a"
    fd = fs.open(a, RW)  # type: ignore[attr-defined]
    assert fs.pwrite(fd, b"hello", 0) == 5  # type: ignore[attr-defined]
    assert fs.pwrite(fd, b"XY", 8) == 2  # type: ignore[attr-defined]  # sparse: zero-fill
    assert fs.size(fd) == 10  # type: ignore[attr-defined]
    assert fs.pread(fd, 100, 0) == b"hello\0\0\0XY"  # type: ignore[attr-defined]
    assert fs.pread(fd, 3, 20) == b""  # type: ignore[attr-defined]
    fd2 = fs.dup(fd)  # type: ignore[attr-defined]
    fs.ftruncate(fd2, 4)  # type: ignore[attr-defined]
    assert fs.pread(fd, 10, 0) == b"hell"  # type: ignore[attr-defined]
    fs.ftruncate(fd2, 6)  # type: ignore[attr-defined]
    assert fs.pread(fd, 10, 0) == b"hell\0\0"  # type: ignore[attr-defined]
    fs.close(fd)  # type: ignore[attr-defined]
    fs.close(fd2)  # type: ignore[attr-defined]
    with pytest.raises(OSError) as e:
        fs.close(fd)  # type: ignore[attr-defined]
    assert e.value.errno == errno.EBADF

    with pytest.raises(FileExistsError):
        fs.open(a, W | os.O_EXCL)  # type: ignore[attr-defined]
    with pytest.raises(FileNotFoundError):
        fs.open(f"{base}/missing", os.O_RDONLY)  # type: ignore[attr-defined]
    with pytest.raises(FileNotFoundError):
        fs.open(f"{base}/no/such", W)  # type: ignore[attr-defined]
    with pytest.raises(NotADirectoryError):
        fs.open(f"{a}/x", W)  # type: ignore[attr-defined]
    with pytest.raises(IsADirectoryError):
        fs.open(base, os.O_WRONLY)  # type: ignore[attr-defined]
    ro = fs.open(a, os.O_RDONLY)  # type: ignore[attr-defined]
    with pytest.raises(OSError) as e:
        fs.pwrite(ro, b"x", 0)  # type: ignore[attr-defined]
    assert e.value.errno == errno.EBADF
    fs.close(ro)  # type: ignore[attr-defined]
    wo = fs.open(a, os.O_WRONLY | os.O_TRUNC)  # type: ignore[attr-defined]
    assert fs.size(wo) == 0  # type: ignore[attr-defined]
    with pytest.raises(OSError) as e:
        fs.pread(wo, 1, 0)  # type: ignore[attr-defined]
    assert e.value.errno == errno.EBADF
    fs.close(wo)  # type: ignore[attr-defined]

    # rename over an existing name, unlink, listdir
    b = f"{base}/b"
    _ = fs.open(b, W)  # type: ignore[attr-defined]
    fs.close(_)  # type: ignore[attr-defined]
    write_file_durably(fs, a, b"AAA")  # type: ignore[arg-type]
    fs.replace(a, b)  # type: ignore[attr-defined]
    assert read_file(fs, b) == b"AAA"  # type: ignore[arg-type]
    assert not fs.exists(a)  # type: ignore[attr-defined]
    fs.makedirs(f"{base}/sub/deeper")  # type: ignore[attr-defined]
    assert fs.listdir(base) == ["b", "sub"] or sorted(fs.listdir(base)) == ["b", "sub"]  # type: ignore[attr-defined]
    assert fs.is_dir(f"{base}/sub") and not fs.is_dir(b)  # type: ignore[attr-defined]
    with pytest.raises(IsADirectoryError):
        fs.replace(b, f"{base}/sub")  # type: ignore[attr-defined]
    with pytest.raises(OSError) as e:
        fs.replace(f"{base}/sub/deeper", f"{base}/sub")  # type: ignore[attr-defined]
    assert e.value.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EINVAL)
    with pytest.raises(NotADirectoryError):
        fs.listdir(b)  # type: ignore[attr-defined]
    with pytest.raises(FileNotFoundError):
        fs.listdir(f"{base}/nope")  # type: ignore[attr-defined]
    with pytest.raises(FileNotFoundError):
        fs.unlink(a)  # type: ignore[attr-defined]
    with pytest.raises(FileNotFoundError):
        fs.replace(a, b)  # type: ignore[attr-defined]
    with pytest.raises(OSError) as e:
        fs.unlink(f"{base}/sub")  # type: ignore[attr-defined]
    assert e.value.errno in (errno.EISDIR, errno.EPERM)
    with pytest.raises(FileExistsError):
        fs.makedirs(b)  # type: ignore[attr-defined]
    fs.unlink(b)  # type: ignore[attr-defined]
    fs.rmtree(f"{base}/sub")  # type: ignore[attr-defined]
    fs.rmtree(f"{base}/sub")  # type: ignore[attr-defined]  # missing: fine
    assert fs.listdir(base) == []  # type: ignore[attr-defined]
    fs.fsync_dir(base)  # type: ignore[attr-defined]


def test_paths_are_normalised() -> None:
    _, fs = _disk()
    fs.makedirs("data/x")
    _write(fs, "/data//x/./f", b"1", sync=False)
    assert fs.exists("/data/x/f")
    assert fs.exists(Path("data") / "x" / ".." / "x" / "f")
    assert fs.listdir("data") == ["x"]


def test_unlinked_file_stays_readable_through_open_fd() -> None:
    _d, fs = _disk()
    _write(fs, "/f", b"abc", sync=False)
    fd = fs.open("/f", os.O_RDONLY)
    fs.unlink("/f")
    assert fs.pread(fd, 3, 0) == b"abc"
    assert not fs.exists("/f")


# ---------------------------------------------------------------------- durability


def test_write_without_fsync_is_gone_after_crash() -> None:
    disk, fs = _disk()
    fs.makedirs("/d")
    fs.fsync_dir("/")
    fd = fs.open("/d/f", W)
    fs.fsync(fd)  # the empty file is durable...
    fs.fsync_dir("/d")  # ...and so is its name
    fs.pwrite(fd, b"unsynced", 0)
    disk.crash()
    with pytest.raises(OSError) as e:
        fs.size(fd)
    assert e.value.errno == errno.EIO
    fs2 = disk.mount()
    assert read_file(fs2, "/d/f") == b""


def test_new_file_without_fsync_dir_is_gone() -> None:
    disk, fs = _disk()
    _write(fs, "/f", b"data", sync=True)
    disk.crash()
    assert not disk.mount().exists("/f")


def test_makedirs_without_parent_fsync_is_gone() -> None:
    disk, fs = _disk()
    fs.makedirs("/a/b")
    _write(fs, "/a/b/f", b"x", sync=True)
    fs.fsync_dir("/a/b")
    fs.fsync_dir("/a")
    disk.crash()
    assert disk.mount().listdir("/") == []


def test_rename_without_fsync_dir_reverts_to_durable_names() -> None:
    disk, fs = _disk()
    _write(fs, "/state", b"old", sync=True)
    fs.fsync_dir("/")
    write_tmp = fs.open("/state.tmp", W)
    fs.pwrite(write_tmp, b"new", 0)
    fs.fsync(write_tmp)
    fs.close(write_tmp)
    fs.replace("/state.tmp", "/state")
    assert read_file(fs, "/state") == b"new"
    disk.crash()
    fs2 = disk.mount()
    assert read_file(fs2, "/state") == b"old"
    assert not fs2.exists("/state.tmp")  # created after the last fsync_dir


def test_fsync_dir_makes_the_rename_durable() -> None:
    disk, fs = _disk()
    _write(fs, "/state", b"old", sync=True)
    fs.fsync_dir("/")
    write_file_durably(fs, "/state", b"new")
    disk.crash()
    fs2 = disk.mount()
    assert read_file(fs2, "/state") == b"new"
    assert fs2.listdir("/") == ["state"]
    assert disk.files(durable=True) == {"/state": b"new"}


def test_unlink_without_fsync_dir_comes_back() -> None:
    disk, fs = _disk()
    _write(fs, "/seg", b"records", sync=True)
    fs.fsync_dir("/")
    fs.unlink("/seg")
    disk.crash()
    fs2 = disk.mount()
    assert read_file(fs2, "/seg") == b"records"
    fs2.unlink("/seg")
    fs2.fsync_dir("/")
    disk.crash()
    assert not disk.mount().exists("/seg")


def test_rmtree_durable_after_parent_fsync() -> None:
    disk, fs = _disk()
    fs.makedirs("/topics/t-0")
    _write(fs, "/topics/t-0/log", b"x", sync=True)
    fs.fsync_dir("/topics/t-0")
    fs.fsync_dir("/topics")
    fs.fsync_dir("/")
    fs.rmtree("/topics/t-0")
    disk.crash()
    fs2 = disk.mount()
    assert read_file(fs2, "/topics/t-0/log") == b"x"
    fs2.rmtree("/topics/t-0")
    fs2.fsync_dir("/topics")
    disk.crash()
    assert disk.mount().listdir("/topics") == []


def test_fdatasync_and_truncate_durability() -> None:
    disk, fs = _disk()
    fd = fs.open("/f", W)
    fs.fsync_dir("/")
    fs.pwrite(fd, b"0123456789", 0)
    fs.fdatasync(fd)
    fs.ftruncate(fd, 4)
    disk.crash()
    assert read_file(disk.mount(), "/f") == b"0123456789"


# ---------------------------------------------------------------------- torn crashes


def _pages(data: bytes) -> list[bytes]:
    return [data[i : i + PAGE_SIZE] for i in range(0, len(data), PAGE_SIZE)]


@pytest.mark.parametrize("seed", range(20))
def test_torn_append_keeps_a_subset_of_pages(seed: int) -> None:
    disk, fs = _disk(seed)
    synced = bytes([1]) * (PAGE_SIZE + 100)
    fd = fs.open("/log", W)
    fs.fsync_dir("/")
    fs.pwrite(fd, synced, 0)
    fs.fsync(fd)
    appended = bytes(range(256)) * (PAGE_SIZE * 6 // 256)
    fs.pwrite(fd, appended, len(synced))
    full = synced + appended
    disk.crash(torn=True)
    after = read_file(disk.mount(), "/log")
    assert len(synced) <= len(after) <= len(full)
    assert after[: len(synced)] == synced  # durable bytes are never lost
    for i, page in enumerate(_pages(after)):
        lo = i * PAGE_SIZE
        expected_new = full[lo : lo + len(page)]
        expected_old = synced[lo : lo + len(page)].ljust(len(page), b"\0")
        assert page in (expected_new, expected_old), f"page {i} is neither written nor zero"


def test_torn_crashes_vary_with_the_seed_and_repeat_with_it() -> None:
    def outcome(seed: int) -> bytes:
        disk, fs = _disk(seed)
        fd = fs.open("/log", W)
        fs.fsync_dir("/")
        fs.pwrite(fd, b"\xab" * PAGE_SIZE * 8, 0)
        disk.crash(torn=True)
        return read_file(disk.mount(), "/log")

    outcomes = [outcome(s) for s in range(10)]
    assert outcomes == [outcome(s) for s in range(10)]
    assert len(set(outcomes)) > 3
    # some page in the middle missing while a later one arrived: out-of-order writeback
    assert any(
        b"\0" * PAGE_SIZE in o[:-PAGE_SIZE] and o.rstrip(b"\0") != o[: o.find(b"\0" * PAGE_SIZE)]
        for o in outcomes
    )


def test_torn_crash_keeps_directory_rules() -> None:
    disk, fs = _disk(3)
    _write(fs, "/never-named", b"x" * 10_000, sync=False)
    disk.crash(torn=True)
    assert disk.mount().listdir("/") == []


# ---------------------------------------------------------------------- faults and costs


def test_injected_write_errors_by_count_and_prefix() -> None:
    disk, fs = _disk()
    fs.makedirs("/a")
    fs.makedirs("/b")
    disk.fail_writes(errno.ENOSPC, count=2, path_prefix="/a")
    with pytest.raises(OSError) as e:
        fs.open("/a/f", W)  # creating a file counts as a write
    assert e.value.errno == errno.ENOSPC
    assert not fs.exists("/a/f")
    fb = fs.open("/b/f", W)
    fs.pwrite(fb, b"ok", 0)  # another prefix: unaffected
    with pytest.raises(OSError):
        fs.open("/a/f", W)
    fd = fs.open("/a/f", W)  # the count is used up
    assert fs.pwrite(fd, b"fine", 0) == 4
    assert disk.injected_errors == 2


def test_injected_write_error_changes_nothing() -> None:
    disk, fs = _disk()
    fd = fs.open("/f", RW)
    fs.pwrite(fd, b"abc", 0)
    disk.fail_writes(errno.EIO, count=1)
    with pytest.raises(OSError) as e:
        fs.pwrite(fd, b"zzzzzz", 0)
    assert e.value.errno == errno.EIO
    assert fs.pread(fd, 10, 0) == b"abc"


def test_injected_sync_errors_leave_data_unsynced() -> None:
    disk, fs = _disk()
    fd = fs.open("/f", W)
    fs.fsync_dir("/")
    fs.pwrite(fd, b"data", 0)
    disk.fail_syncs(errno.EIO, count=1)
    with pytest.raises(OSError) as e:
        fs.fsync(fd)
    assert e.value.errno == errno.EIO
    disk.fail_syncs(errno.ENOSPC, count=1, path_prefix="/")
    with pytest.raises(OSError) as e:
        fs.fsync_dir("/")
    assert e.value.errno == errno.ENOSPC
    disk.crash()
    assert read_file(disk.mount(), "/f") == b""


def test_probabilistic_faults_are_seeded() -> None:
    def failures(seed: int) -> list[int]:
        disk, fs = _disk(seed)
        fd = fs.open("/f", W)
        disk.fail_syncs(errno.EIO, probability=0.3)
        out = []
        for i in range(50):
            try:
                fs.fsync(fd)
            except OSError:
                out.append(i)
        return out

    assert failures(1) == failures(1)
    assert 5 < len(failures(1)) < 30
    disk, fs = _disk()
    disk.fail_syncs(errno.EIO, probability=1.0)
    disk.clear_faults()
    fs.fsync_dir("/")


def test_costs_and_slow_paths_are_charged() -> None:
    disk, fs = _disk()
    fs.makedirs("/fast")
    fs.makedirs("/slow")
    disk.slow("/slow", seconds_per_sync=0.5)
    disk.pending_cost_s = 0.0
    fd = fs.open("/fast/f", W)
    fs.pwrite(fd, b"x" * 1_000_000, 0)
    fs.fsync(fd)
    fast = disk.pending_cost_s
    assert 0.0002 < fast < 0.01
    disk.pending_cost_s = 0.0
    fd = fs.open("/slow/f", W)
    fs.fsync(fd)
    fs.fsync_dir("/slow")
    assert disk.pending_cost_s == pytest.approx(1.0, abs=0.01)
    assert disk.syncs == 2 and disk.dir_syncs == 1
    assert disk.bytes_written == 1_000_000 and disk.writes == 1
    assert disk.loop_side_ops == disk.ops  # no executor set in_executor here
    disk.slow("/slow", seconds_per_sync=0.1)  # replaces the 0.5
    disk.pending_cost_s = 0.0
    fs.fsync(fd)
    assert disk.pending_cost_s == pytest.approx(0.1, abs=0.001)
    disk.slow("/slow", 0.0)  # removes it
    disk.pending_cost_s = 0.0
    fs.fsync(fd)
    assert disk.pending_cost_s < 0.001


def test_dead_mount_raises_eio_everywhere() -> None:
    disk, fs = _disk()
    disk.crash()
    for call in (
        lambda: fs.exists("/"),
        lambda: fs.listdir("/"),
        lambda: fs.open("/f", W),
        lambda: fs.makedirs("/x"),
    ):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EIO
    assert not fs.alive
    assert disk.mount().listdir("/") == []


@pytest.mark.parametrize("seed", range(30))
def test_incremental_sync_matches_a_naive_model(seed: int) -> None:
    """fsync copies only what changed since the last one; a naive twin copies everything."""
    rng = random.Random(seed)
    disk, fs = _disk(seed)
    fd = fs.open("/f", RW)
    fs.fsync_dir("/")
    current, durable = bytearray(), bytearray()
    for _ in range(60):
        op = rng.random()
        if op < 0.45:
            offset = rng.randint(0, len(current) + 3 * PAGE_SIZE)
            data = bytes([rng.randint(1, 255)]) * rng.randint(0, 2 * PAGE_SIZE)
            fs.pwrite(fd, data, offset)
            if len(current) < offset:
                current.extend(bytes(offset - len(current)))
            current[offset : offset + len(data)] = data
        elif op < 0.6:
            length = rng.randint(0, len(current) + PAGE_SIZE)
            fs.ftruncate(fd, length)
            del current[length:]
            current.extend(bytes(length - len(current)))
        elif op < 0.85:
            fs.fdatasync(fd)
            durable = bytearray(current)
        elif op < 0.9:
            fs.close(fd)
            fd = fs.open("/f", RW | os.O_TRUNC)
            current = bytearray()
        else:
            disk.crash()
            fs = disk.mount()
            fd = fs.open("/f", RW)
            current = bytearray(durable)
        assert fs.pread(fd, len(current) + 10, 0) == bytes(current)
        assert disk.files(durable=True)["/f"] == bytes(durable)
