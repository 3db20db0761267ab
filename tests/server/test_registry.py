"""The group registry's files survive a power loss the moment they are relied on (#12 defect
11: node.json and group.json were written without fsync or rename, and partitions/ was never
fsynced), and an unreadable group description is reported, not skipped."""

from __future__ import annotations

import os
import random

import pytest

from raft.storage.fs import FileSystem
from raft.types import Entry
from server.registry import GroupRegistry, GroupSpec, RegistryError
from tests.system_sim.fs import SimDisk


def registry(fs: FileSystem) -> GroupRegistry:
    return GroupRegistry(
        "/data", fs, fsync="always", segment_bytes=1 << 20, raft_logger=lambda gid: _quiet
    )


def _quiet(event: str, **fields: object) -> None:
    pass


def test_a_created_group_and_its_synced_entries_survive_a_power_loss() -> None:
    """Guards #12 defect 11 (and, through it, defect 1: a group whose directory entry was
    lost at a power loss could not be reopened at start-up)."""
    disk = SimDisk(random.Random(1))
    reg = registry(disk.mount())
    reg.claim(1, "c")
    spec = GroupSpec(1000, "orders", 0, (1, 2, 3), {"retention.ms": "1000"})
    log, fresh = reg.open_partition_log(spec)
    assert fresh
    log.append([Entry(1, 1, data=b"acknowledged")])
    log.sync()  # what an acknowledgement waits for
    disk.crash()  # power loss: whatever was not fsynced (data) or dir-fsynced (entries) is gone
    reg = registry(disk.mount())
    reg.claim(1, "c")  # node.json survived and is ours
    specs, errors = reg.list_groups()
    assert specs == [spec] and errors == {}
    log, fresh = reg.open_partition_log(spec)
    assert not fresh
    assert [e.data for e in log.entries(1, 2)] == [b"acknowledged"]


def test_a_deleted_group_stays_deleted_after_a_power_loss() -> None:
    disk = SimDisk(random.Random(2))
    reg = registry(disk.mount())
    reg.claim(1, "c")
    log, _ = reg.open_partition_log(GroupSpec(1000, "gone", 0, (1,), {}))
    log.close()
    reg.delete_group(1000)
    disk.crash()
    assert registry(disk.mount()).list_groups() == ([], {})


def test_a_data_dir_of_another_node_is_refused_and_a_damaged_description_reported() -> None:
    fs = SimDisk(random.Random(3)).mount()
    reg = registry(fs)
    reg.claim(1, "c")
    with pytest.raises(RegistryError, match="belongs to node 1"):
        registry(fs).claim(2, "c")
    reg.open_partition_log(GroupSpec(1000, "t", 0, (1,), {}))[0].close()
    fd = fs.open("/data/partitions/1000/group.json", os.O_WRONLY | os.O_TRUNC)
    fs.pwrite(fd, b"{not json", 0)
    fs.close(fd)
    specs, errors = registry(fs).list_groups()
    assert specs == [] and list(errors) == [1000]
    assert "group.json" in str(errors[1000]) and "restore it" in str(errors[1000])
