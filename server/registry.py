"""The group registry: this broker's data-directory layout and the durable files that describe it.

Owns (all through the filesystem seam, all blocking — callers run these in the executor):
  DIR/node.json                 {"node_id", "cluster_id"}: refuses to start on someone else's dir
  DIR/metadata/                 the metadata group's log (raft.storage.DurableLog)
  DIR/partitions/<group_id>/    one partition replica's log, plus group.json (topic, partition,
                                replicas, topic config) so a restart reopens it before the
                                metadata group has caught up
Rules:
- Every file and directory entry that a restart relies on is made durable before it is relied
  on: node.json and group.json are written temp + fsync + rename + fsync(dir); a new group's
  directory entry is made durable by fsyncing ``partitions/`` (#12 defect 11).
- A group's directory is created (and its group.json durable) before its log holds anything, so
  a crash can leave an empty group directory, never a log without its description.
- A group.json that cannot be read is reported (``RegistryError``), never skipped silently.
- Deletion (``delete_group``) removes the directory and fsyncs ``partitions/``; whether a group
  may be deleted at all is decided elsewhere (server/reconcile.py), from committed metadata only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raft.storage import DurableLog
from raft.storage.fs import FileSystem, read_file, write_file_durably
from raft.types import ConfState


class RegistryError(Exception):
    """A registry file is unreadable or belongs to someone else; says which and what to do."""


@dataclass(frozen=True)
class GroupSpec:
    group_id: int
    topic: str
    partition: int
    replicas: tuple[int, ...]
    config: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "group_id": self.group_id,
                "topic": self.topic,
                "partition": self.partition,
                "replicas": list(self.replicas),
                "config": self.config,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, where: str, data: bytes) -> GroupSpec:
        try:
            info = json.loads(data)
            return cls(
                int(info["group_id"]),
                str(info["topic"]),
                int(info["partition"]),
                tuple(int(r) for r in info["replicas"]),
                {str(k): str(v) for k, v in dict(info.get("config", {})).items()},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(
                f"{where} is not a valid group description ({exc!r}); restore it from a replica "
                "or remove the directory to let the replica be rebuilt from its peers"
            ) from None


class GroupRegistry:
    def __init__(
        self,
        data_dir: str,
        fs: FileSystem,
        *,
        fsync: str,
        segment_bytes: int,
        raft_logger: Callable[[int], Callable[..., None]],
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.data_dir = os.fspath(data_dir)
        self.fs = fs
        self.fsync = "always" if fsync == "always" else "never"
        self.segment_bytes = segment_bytes
        self._raft_logger = raft_logger
        # The logs' monotonic clock (when to write a lazily flushed commit index): the event
        # loop's time, set by the node at start, so the simulation's virtual time rules it too.
        self.clock = clock
        self.partitions_dir = os.path.join(self.data_dir, "partitions")

    # ------------------------------------------------------------------ node
    def claim(self, node_id: int, cluster_id: str) -> None:
        """Creates the layout, or checks that the directory is this node's."""
        fs = self.fs
        parent = os.path.dirname(os.path.abspath(self.data_dir))
        if not fs.exists(self.data_dir):
            fs.makedirs(self.data_dir)
            fs.fsync_dir(parent)
        marker = os.path.join(self.data_dir, "node.json")
        if fs.exists(marker):
            try:
                info = json.loads(read_file(fs, marker))
            except ValueError as exc:
                raise RegistryError(
                    f"{marker} is unreadable ({exc}); it names the node and cluster owning "
                    "this directory: fix it or use another --data-dir"
                ) from None
            if info.get("node_id") != node_id or info.get("cluster_id") != cluster_id:
                raise RegistryError(
                    f"data dir {self.data_dir} belongs to node {info.get('node_id')} of cluster "
                    f"'{info.get('cluster_id')}', not node {node_id} of '{cluster_id}': use "
                    "another --data-dir"
                )
        else:
            write_file_durably(
                fs, marker, json.dumps({"node_id": node_id, "cluster_id": cluster_id}).encode()
            )
        if not fs.exists(self.partitions_dir):
            fs.makedirs(self.partitions_dir)
            fs.fsync_dir(self.data_dir)

    def open_metadata_log(self, conf_state: ConfState, group_id: int) -> DurableLog:
        return DurableLog(
            os.path.join(self.data_dir, "metadata"),
            conf_state=conf_state,
            segment_bytes=self.segment_bytes,
            fsync=self.fsync,
            logger=self._raft_logger(group_id),
            fs=self.fs,
            **self._clock_arg(),
        )

    # ------------------------------------------------------------------ partitions
    def group_dir(self, group_id: int) -> str:
        return os.path.join(self.partitions_dir, str(group_id))

    def list_groups(self) -> tuple[list[GroupSpec], dict[int, RegistryError]]:
        """Every described group on disk, plus the ones whose description is unreadable."""
        specs: list[GroupSpec] = []
        errors: dict[int, RegistryError] = {}
        for name in sorted(self.fs.listdir(self.partitions_dir), key=_numeric_first):
            gdir = os.path.join(self.partitions_dir, name)
            if not name.isdigit() or not self.fs.is_dir(gdir):
                continue
            path = os.path.join(gdir, "group.json")
            if not self.fs.exists(path):
                continue  # created, crashed before its description was durable: nothing in it
            try:
                spec = GroupSpec.from_json(path, read_file(self.fs, path))
            except (RegistryError, OSError) as exc:
                errors[int(name)] = RegistryError(str(exc))
                continue
            specs.append(spec)
        return specs, errors

    def open_partition_log(self, spec: GroupSpec) -> tuple[DurableLog, bool]:
        """Opens (creating durably if new) a partition replica's log; returns (log, fresh)."""
        fs = self.fs
        gdir = self.group_dir(spec.group_id)
        marker = os.path.join(gdir, "group.json")
        fresh = not fs.exists(marker)
        if fresh:
            if not fs.exists(gdir):
                fs.makedirs(gdir)
                fs.fsync_dir(self.partitions_dir)
            write_file_durably(fs, marker, spec.to_json())
        log = DurableLog(
            gdir,
            conf_state=ConfState(voters=frozenset(spec.replicas)),
            segment_bytes=int(spec.config.get("segment.bytes", self.segment_bytes)),
            fsync=self.fsync,
            logger=self._raft_logger(spec.group_id),
            fs=fs,
            **self._clock_arg(),
        )
        return log, fresh

    def _clock_arg(self) -> dict[str, Callable[[], float]]:
        return {"clock": self.clock} if self.clock is not None else {}

    def delete_group(self, group_id: int) -> None:
        self.fs.rmtree(self.group_dir(group_id))
        self.fs.fsync_dir(self.partitions_dir)


def _numeric_first(name: str) -> tuple[int, Any]:
    return (0, int(name)) if name.isdigit() else (1, name)
