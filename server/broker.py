"""The broker: wires storage, Raft groups, replicas, transport and the gRPC services together.

Owns: the data directory layout, group lifecycle (create on assignment, open on restart, remove
when a topic is deleted), broker registration and heartbeats, reporting partition leaders to the
metadata group, retention, graceful shutdown (leadership moved away first).

Data directory:
  DIR/node.json                 {"node_id", "cluster_id"}: refuses to start on someone else's dir
  DIR/metadata/                 the metadata group's log (raft.storage.DurableLog)
  DIR/partitions/<group_id>/    one partition replica's log, plus group.json (topic, partition,
                                replicas) so a restart reopens it before metadata has caught up
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import grpc

from metadata import commands as mcmd
from metadata.state import MetadataState, PartitionAssignment
from partition.config import PartitionConfig
from partition.state import PartitionState
from raft.config import RaftConfig
from raft.rawnode import RawNode, Status
from raft.storage import DurableLog
from raft.types import ConfState, Role
from server.config import ServerConfig
from server.errors import BrokerError
from server.logsetup import get_logger
from server.metadata_replica import MetadataReplica
from server.partition_replica import PartitionReplica
from server.runtime import Group, Runtime, new_rng
from server.transport import PeerTransport
from wire import replog_pb2 as pb
from wire import replog_pb2_grpc as pb_grpc

METADATA_GROUP_ID = MetadataState.METADATA_GROUP_ID


def _now_ms() -> int:
    return int(time.time() * 1000)


def most_caught_up_voter(status: Status, self_id: int) -> int:
    """The other voter with the highest match index (0 if there is none): the transfer
    target that can take over soonest."""
    others = [v for v in status.conf_state.voters if v != self_id]
    if not others:
        return 0
    return max(others, key=lambda v: status.progress[v].match if v in status.progress else 0)


def preferred_priorities(replicas: tuple[int, ...]) -> dict[int, int]:
    """The first replica is the preferred leader: it gets the only non-zero priority."""
    return {r: (1 if i == 0 else 0) for i, r in enumerate(replicas)}


class Broker:
    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.node_id = cfg.node.node_id
        self.data_dir = Path(cfg.node.data_dir)
        self.log = get_logger(node_id=self.node_id)
        self.address = cfg.node.advertised_address or cfg.node.listen
        self.partitions: dict[int, PartitionReplica] = {}
        self.by_name: dict[tuple[str, int], int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._reconcile_scheduled = False
        self._opening: set[int] = set()
        self._layout_seen = -1
        self.stopping = False
        self.server: grpc.aio.Server | None = None

    # ------------------------------------------------------------------ addresses
    def peer_address(self, node_id: int) -> str | None:
        """Where this node dials ``node_id`` (a per-peer override wins, e.g. a proxy)."""
        override = self.cfg.node.peer_addresses.get(node_id)
        if override:
            return override
        return self.advertised(node_id) or None

    def advertised(self, node_id: int) -> str:
        """The address a client should use for ``node_id``."""
        if node_id == self.node_id:
            return self.address
        broker = self.metadata.state.brokers.get(node_id) if hasattr(self, "metadata") else None
        if broker is not None:
            return broker.address
        return self.cfg.node.voters.get(node_id, "")

    # ------------------------------------------------------------------ start
    def _check_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        marker = self.data_dir / "node.json"
        if marker.exists():
            info = json.loads(marker.read_text())
            if info.get("node_id") != self.node_id or info.get("cluster_id") != (
                self.cfg.node.cluster_id
            ):
                raise SystemExit(
                    f"data dir {self.data_dir} belongs to node {info.get('node_id')} of cluster "
                    f"'{info.get('cluster_id')}', not node {self.node_id} of "
                    f"'{self.cfg.node.cluster_id}': use another --data-dir"
                )
        else:
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(
                json.dumps({"node_id": self.node_id, "cluster_id": self.cfg.node.cluster_id})
            )
            os.replace(tmp, marker)

    def _raft_config(self, priority: int = 0) -> RaftConfig:
        r = self.cfg.raft
        return RaftConfig(
            node_id=self.node_id,
            election_ticks=r.election_ticks,
            heartbeat_ticks=r.heartbeat_ticks,
            max_size_per_msg=r.max_size_per_msg,
            max_inflight_msgs=r.max_inflight_msgs,
            max_inflight_bytes=r.max_inflight_bytes,
            pre_vote=r.pre_vote,
            check_quorum=r.check_quorum,
            priority=priority,
        )

    def _raft_logger(self, group_id: int) -> Any:
        log = self.log.bind(group_id=group_id)

        def emit(event: str, **fields: Any) -> None:
            log.info(event, **fields)

        return emit

    async def start(self) -> None:
        self._check_data_dir()
        self.transport = PeerTransport(
            node_id=self.node_id,
            cluster_id=self.cfg.node.cluster_id,
            resolve_address=self.peer_address,
            on_unreachable=lambda peer, groups: self.runtime.report_unreachable(peer, groups),
            outbox_max_messages=self.cfg.server.outbox_max_messages,
            backoff_ms=self.cfg.server.reconnect_backoff_ms,
            backoff_max_ms=self.cfg.server.reconnect_backoff_max_ms,
            max_message_bytes=self.cfg.server.grpc_max_message_bytes,
            log=self.log,
        )
        self.runtime = Runtime(
            node_id=self.node_id,
            tick_ms=self.cfg.raft.tick_ms,
            fsync=self.cfg.storage.fsync == "always",
            transport=self.transport,
            log=self.log,
            election_ticks=self.cfg.raft.election_ticks,
            quiesce=self.cfg.raft.quiesce,
        )
        self._open_metadata()
        for gdir in sorted((self.data_dir / "partitions").glob("*/group.json")):
            info = json.loads(gdir.read_text())
            self._open_partition(
                int(info["group_id"]),
                info["topic"],
                int(info["partition"]),
                tuple(info["replicas"]),
                dict(info.get("config", {})),
            )
        self.runtime.start()
        from server.service import PeerService, ReplogService

        opts = [
            ("grpc.max_send_message_length", self.cfg.server.grpc_max_message_bytes),
            ("grpc.max_receive_message_length", self.cfg.server.grpc_max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self.server = grpc.aio.server(options=opts)
        pb_grpc.add_ReplogServicer_to_server(ReplogService(self), self.server)
        pb_grpc.add_PeerServicer_to_server(PeerService(self), self.server)
        self.server.add_insecure_port(self.cfg.node.listen)
        await self.server.start()
        loop = asyncio.get_running_loop()
        for coro, name in (
            (self._register_and_heartbeat(), "broker-heartbeat"),
            (self._retention_loop(), "retention"),
        ):
            self._tasks.append(loop.create_task(coro, name=name))
        self.log.info(
            "broker_started",
            listen=self.cfg.node.listen,
            data_dir=str(self.data_dir),
            dc=self.cfg.node.dc,
            voters=sorted(self.cfg.node.voters),
            partitions=len(self.partitions),
            fsync=self.cfg.storage.fsync,
        )

    def _open_metadata(self) -> None:
        voters = frozenset(self.cfg.node.voters)
        conf = ConfState(voters=voters) if self.node_id in voters else ConfState()
        log = DurableLog(
            self.data_dir / "metadata",
            conf_state=conf,
            segment_bytes=self.cfg.storage.segment_bytes,
            fsync="always" if self.cfg.storage.fsync == "always" else "never",
            logger=self._raft_logger(METADATA_GROUP_ID),
        )
        state = MetadataState()
        snap = log.snapshot()
        if not snap.is_empty():
            state = MetadataState.restore(snap.data)
        node = RawNode(
            self._raft_config(),
            log,
            new_rng(self.runtime),
            logger=self._raft_logger(METADATA_GROUP_ID),
        )
        self.metadata = MetadataReplica(
            node=node,
            log=log,
            state=state,
            touch=self.runtime.touch,
            forward=self._forward_metadata,
            leader_address=self.advertised,
            on_change=self._schedule_reconcile,
            logger=self.log,
            group_id=METADATA_GROUP_ID,
            fallback_targets=sorted(self.cfg.node.voters),
        )
        self.runtime.add_group(Group(METADATA_GROUP_ID, node, log, self.metadata))

    def _partition_config(self, topic_config: dict[str, str]) -> PartitionConfig:
        d = self.cfg.partition
        return PartitionConfig(
            max_batch_bytes=int(topic_config.get("max.message.bytes", d.max_batch_bytes)),
            retention_ms=int(topic_config.get("retention.ms", d.retention_ms)),
            retention_bytes=int(topic_config.get("retention.bytes", d.retention_bytes)),
        )

    def _open_partition(
        self,
        group_id: int,
        topic: str,
        partition: int,
        replicas: tuple[int, ...],
        config: dict[str, str],
    ) -> PartitionReplica:
        loaded = self._load_partition(group_id, topic, partition, replicas, config)
        return self._register_partition(group_id, topic, partition, replicas, config, *loaded)

    def _load_partition(
        self,
        group_id: int,
        topic: str,
        partition: int,
        replicas: tuple[int, ...],
        config: dict[str, str],
    ) -> tuple[DurableLog, PartitionState, bool]:
        """The blocking part of opening a replica (files, fsyncs, replaying the retained log):
        runs in a worker thread for replicas created while the broker serves."""
        gdir = self.data_dir / "partitions" / str(group_id)
        fresh = not (gdir / "group.json").exists()
        gdir.mkdir(parents=True, exist_ok=True)
        if fresh:
            tmp = gdir / "group.json.tmp"
            tmp.write_text(
                json.dumps(
                    {
                        "group_id": group_id,
                        "topic": topic,
                        "partition": partition,
                        "replicas": list(replicas),
                        "config": config,
                    }
                )
            )
            os.replace(tmp, gdir / "group.json")
        log = DurableLog(
            gdir,
            conf_state=ConfState(voters=frozenset(replicas)),
            segment_bytes=int(config.get("segment.bytes", self.cfg.storage.segment_bytes)),
            fsync="always" if self.cfg.storage.fsync == "always" else "never",
            logger=self._raft_logger(group_id),
        )
        state = PartitionState(self._partition_config(config))
        snap = log.snapshot()
        if not snap.is_empty():
            state.restore(snap.data, snap.metadata.index)
        # Rebuild the offset tail from the retained log; committed entries are re-applied by the
        # Raft core (applied restarts at the snapshot index).
        lo, last = log.first_index(), log.last_index()
        while lo <= last:
            chunk = log.entries(lo, last + 1, 8 << 20)
            state.on_log_append(chunk)
            lo = chunk[-1].index + 1
        return log, state, fresh

    def _register_partition(
        self,
        group_id: int,
        topic: str,
        partition: int,
        replicas: tuple[int, ...],
        config: dict[str, str],
        log: DurableLog,
        state: PartitionState,
        fresh: bool,
    ) -> PartitionReplica:
        pcfg = self._partition_config(config)
        node = RawNode(
            self._raft_config(),
            log,
            new_rng(self.runtime),
            logger=self._raft_logger(group_id),
        )
        # Leadership prefers the first replica (placement rotates it): balanced leaders.
        node.set_priorities(preferred_priorities(replicas))
        replica = PartitionReplica(
            group_id=group_id,
            topic=topic,
            partition=partition,
            replicas=replicas,
            node=node,
            log=log,
            state=state,
            make_state=lambda: PartitionState(pcfg),
            touch=self.runtime.touch,
            leader_address=self.advertised,
            on_leader_change=self._report_leader,
            logger=self.log,
        )
        self.partitions[group_id] = replica
        self.by_name[(topic, partition)] = group_id
        self.runtime.add_group(Group(group_id, node, log, replica))
        if fresh and replicas and replicas[0] == self.node_id and log.last_index() == 0:
            node.campaign()  # the preferred leader starts an election at once: no timeout wait
        return replica

    def _close_partition(self, group_id: int, delete: bool) -> None:
        replica = self.partitions.pop(group_id, None)
        group = self.runtime.remove_group(group_id)
        if replica is None:
            return
        self.by_name.pop((replica.topic, replica.partition), None)
        replica.on_stopped(None)
        if group is not None:
            group.log.close()
        if delete:
            shutil.rmtree(self.data_dir / "partitions" / str(group_id), ignore_errors=True)
        self.log.info("partition_closed", group_id=group_id, deleted=delete)

    # ------------------------------------------------------------------ metadata-driven changes
    def _schedule_reconcile(self) -> None:
        if self._reconcile_scheduled:
            return
        self._reconcile_scheduled = True
        asyncio.get_running_loop().call_soon(self._reconcile)

    def _reconcile(self) -> None:
        self._reconcile_scheduled = False
        if self.stopping:
            return
        state = self.metadata.state
        if state.layout_version == self._layout_seen:
            return
        self._layout_seen = state.layout_version
        wanted: dict[int, PartitionAssignment] = {
            a.group_id: a for a in state.assignments_for(self.node_id)
        }
        to_open = []
        for group_id, a in wanted.items():
            replica = self.partitions.get(group_id)
            if replica is None:
                if group_id not in self._opening:
                    self._opening.add(group_id)
                    to_open.append((a, dict(state.topics[a.topic].config)))
            elif replica.replicas != a.replicas:
                # The preferred replica moved (a leadership transfer or a reassignment).
                replica.replicas = a.replicas
                replica.node.set_priorities(preferred_priorities(a.replicas))
                self.runtime.touch(group_id)
        known_groups = {a.group_id for a in state.all_assignments()}
        for group_id in list(self.partitions):
            if group_id not in wanted and group_id not in known_groups:
                # The topic was deleted (the metadata no longer knows the group at all).
                self._close_partition(group_id, delete=True)
        if self.metadata.role == Role.LEADER:
            self._add_learners_for_registered_brokers()
        if to_open:
            self.spawn(self._open_new_partitions(to_open), "open-partitions")

    async def _open_new_partitions(
        self, items: list[tuple[PartitionAssignment, dict[str, str]]]
    ) -> None:
        """Opens replicas assigned to this broker, the file work in a worker thread so the
        event loop keeps serving (a topic of 1,000 partitions means 1,000 directories)."""
        for a, config in items:
            try:
                if self.stopping:
                    return
                loaded = await asyncio.to_thread(
                    self._load_partition, a.group_id, a.topic, a.partition, a.replicas, config
                )
                current = self.metadata.state
                if a.group_id in {x.group_id for x in current.assignments_for(self.node_id)}:
                    self._register_partition(
                        a.group_id, a.topic, a.partition, a.replicas, config, *loaded
                    )
                else:
                    loaded[0].close()  # deleted or moved meanwhile
            except Exception as exc:
                self.log.exception("partition_open_failed", group_id=a.group_id, error=repr(exc))
            finally:
                self._opening.discard(a.group_id)

    def _add_learners_for_registered_brokers(self) -> None:
        """Brokers that are not metadata voters follow the metadata group as learners."""
        status = self.metadata.node.status()
        members = status.conf_state.voters | status.conf_state.learners
        from raft.types import ConfChange, ConfChangeType

        for node_id in self.metadata.state.brokers:
            if node_id not in members:
                with contextlib.suppress(Exception):
                    self.metadata.node.propose_conf_change(
                        ConfChange(ConfChangeType.ADD_LEARNER, node_id)
                    )
                    self.runtime.touch(METADATA_GROUP_ID)
                    self.log.info("metadata_learner_added", learner=node_id)
                return  # one membership change at a time

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Starts a named background task that is referenced until done (asyncio keeps only
        weak references), cancelled at shutdown, and whose crash is logged, never lost."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.log.error("task_crashed", task=name, error=repr(t.exception()))

        task.add_done_callback(done)

    def _report_leader(self, group_id: int, leader: int, term: int) -> None:
        self.spawn(
            self._propose_quietly(mcmd.UpdateLeader(group_id, leader, term)),
            f"report-leader-{group_id}",
        )

    async def _propose_quietly(self, cmd: object) -> None:
        try:
            await self.metadata.propose(cmd, timeout_s=10.0)
        except Exception as exc:
            self.log.warning("metadata_proposal_failed", command=type(cmd).__name__, error=str(exc))

    async def _forward_metadata(self, leader_id: int, data: bytes, hops: int) -> bytes:
        address = self.peer_address(leader_id)
        if not address:
            raise BrokerError(
                "LEADER_NOT_AVAILABLE", f"no address known for broker {leader_id}", retriable=True
            )
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address)
            self._channels[address] = channel
        stub = pb_grpc.PeerStub(channel)
        try:
            reply = await stub.ForwardMetadata(
                pb.ForwardMetadataRequest(
                    cluster_id=self.cfg.node.cluster_id, command=data, hops=hops
                ),
                timeout=5.0,
            )
        except grpc.aio.AioRpcError as exc:
            raise BrokerError(
                "LEADER_NOT_AVAILABLE",
                f"forwarding to metadata leader {leader_id} failed: {exc.code().name}",
                retriable=True,
            ) from None
        return bytes(reply.result)

    async def _register_and_heartbeat(self) -> None:
        registered = False
        interval = self.cfg.server.broker_heartbeat_ms / 1000
        while not self.stopping:
            try:
                if not registered:
                    await self.metadata.propose(
                        mcmd.RegisterBroker(
                            self.node_id,
                            self.address,
                            self.cfg.node.dc,
                            self.cfg.node.rack,
                            _now_ms(),
                        ),
                        timeout_s=5.0,
                    )
                    registered = True
                    self.log.info("broker_registered")
                else:
                    await self.metadata.propose(
                        mcmd.BrokerHeartbeat(self.node_id, _now_ms()), timeout_s=5.0
                    )
                self._resend_leader_reports()
            except Exception as exc:
                self.log.debug("broker_heartbeat_failed", error=str(exc))
                await asyncio.sleep(0.2)
                continue
            await asyncio.sleep(interval)

    def _resend_leader_reports(self) -> None:
        """Partitions this broker leads whose leadership the metadata does not show yet."""
        state = self.metadata.state
        for group_id, replica in self.partitions.items():
            if replica.role != Role.LEADER:
                continue
            try:
                a = state.assignment(group_id)
            except Exception:
                continue
            if a.leader != self.node_id or a.leader_term < replica.term:
                self._report_leader(group_id, self.node_id, replica.term)

    async def _retention_loop(self) -> None:
        interval = self.cfg.partition.retention_check_ms / 1000
        while not self.stopping:
            await asyncio.sleep(interval)
            for replica in list(self.partitions.values()):
                if replica.stopped is not None:
                    continue
                try:
                    replica.maybe_apply_retention()
                except Exception as exc:
                    self.log.error("retention_failed", group_id=replica.group_id, error=repr(exc))
            self._maybe_snapshot_metadata()

    def _maybe_snapshot_metadata(self) -> None:
        md = self.metadata
        if md.applied_since_snapshot < self.cfg.storage.snapshot_interval_entries:
            return
        from raft.types import Snapshot, SnapshotMetadata

        index = md.state.applied_index
        if index <= md.log.snapshot().metadata.index:
            return
        conf = md.node.status().conf_state
        md.log.save_snapshot(
            Snapshot(SnapshotMetadata(index, md.log.term(index), conf), md.state.snapshot())
        )
        md.log.compact(index)
        md.applied_since_snapshot = 0
        self.log.info("metadata_snapshot_taken", index=index)

    # ------------------------------------------------------------------ lookups for services
    def replica_for(self, topic: str, partition: int) -> PartitionReplica:
        group_id = self.by_name.get((topic, partition))
        if group_id is not None:
            return self.partitions[group_id]
        state = self.metadata.state
        t = state.topic(topic)  # raises UnknownTopic
        if not 0 <= partition < t.partitions:
            raise BrokerError(
                "UNKNOWN_PARTITION",
                f"topic '{topic}' has {t.partitions} partitions; partition {partition} does not "
                "exist",
                hint=f"use a partition in 0..{t.partitions - 1}",
                status=grpc.StatusCode.NOT_FOUND,
            )
        a = t.assignments[partition]
        from server.errors import not_leader

        leader = a.leader if a.leader != self.node_id else 0
        raise not_leader(
            f"partition {partition} of topic '{topic}'",
            leader,
            self.advertised(leader) if leader else "",
        )

    def log_group_status(self) -> None:
        """SIGUSR1: one log line per Raft group with its role, term, indexes and followers."""
        roles: dict[str, int] = {}
        for group in self.runtime.groups.values():
            key = f"{group.node.raft.role.name}{'-quiesced' if group.quiesced else ''}"
            roles[key] = roles.get(key, 0) + 1
        rt, tr = self.runtime, self.transport
        self.log.info(
            "groups_summary",
            groups=len(rt.groups),
            turns=rt.turns,
            fsync_passes=rt.fsync_passes,
            loop_stalls=rt.loop_stalls,
            peer_batches_sent=tr.sent_batches,
            peer_messages_dropped=tr.dropped_messages,
            **roles,
        )
        for group in self.runtime.groups.values():
            st = group.node.status()
            self.log.info(
                "group_status",
                group_id=group.group_id,
                role=st.role.name,
                term=st.term,
                leader_id=st.leader_id,
                commit=st.commit,
                applied=st.applied,
                first_index=st.first_index,
                last_index=st.last_index,
                failed=repr(group.failed) if group.failed else None,
                progress={
                    k: f"{v.state.name} match={v.match} next={v.next} active={v.recent_active}"
                    for k, v in st.progress.items()
                },
            )

    # ------------------------------------------------------------------ stop
    async def shutdown(self, graceful: bool = True) -> None:
        self.stopping = True
        if graceful:
            await self._transfer_leadership_away()
        tasks = [*self._tasks, *self._background]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.server is not None:
            await self.server.stop(grace=0.5)
        await self.runtime.stop()
        await self.transport.close()
        for ch in self._channels.values():
            await ch.close()
        for group in list(self.runtime.groups.values()):
            with contextlib.suppress(Exception):
                group.log.sync()
                group.log.close()
        self.log.info("broker_stopped")

    async def _transfer_leadership_away(self) -> None:
        deadline = time.monotonic() + self.cfg.server.shutdown_transfer_timeout_ms / 1000
        groups = [g for g in self.runtime.groups.values() if g.failed is None]
        while time.monotonic() < deadline:
            led = []
            for g in groups:
                st = g.node.status()
                if st.role != Role.LEADER:
                    continue
                best = most_caught_up_voter(st, self.node_id)
                if not best:
                    continue
                led.append(g)
                if st.lead_transferee == 0:
                    g.node.transfer_leadership(best)
                    self.runtime.touch(g.group_id)
            if not led:
                self.log.info("leadership_transferred_away")
                return
            await asyncio.sleep(0.05)
        self.log.warning("leadership_transfer_incomplete")


async def run_broker(cfg: ServerConfig) -> int:
    broker = Broker(cfg)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, broker.log_group_status)
    await stop.wait()
    broker.log.info("broker_stopping", reason="signal")
    await broker.shutdown(graceful=True)
    return 0
