"""BrokerNode: one broker's decisions, wired to the world only through ``server.env.Env``.

Owns: group lifecycle (open on assignment or restart, delete only on a committed delete; see
server/reconcile.py), the metadata replica and the partition replicas, broker registration and
heartbeats, reporting partition leaders to the metadata group, retention and metadata snapshots
(run off the loop), graceful shutdown (leadership moved away first), group status.

The same class runs in production (server/broker.py adds the grpc.aio server, grpc links, the
thread-pool executor and ``os``) and in the system simulation (tests/system_sim plugs in a
virtual-time loop, a simulated network and a simulated disk). No ``os``, ``time``, threads,
sockets or grpc channels here (grpc appears only as status codes, via server/errors.py).

Start-up order: claim the data directory, open the metadata log, open every partition described
on disk (each in isolation: a replica that cannot open is reported as failed and the broker
starts anyway, #12 defect 13), start the runtime and background tasks. Reconcile acts on the
metadata state as it is applied, but deletes nothing before this replica has caught up with the
metadata leader (``metadata_caught_up``), which happens when its own registration is applied here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from metadata import commands as mcmd
from metadata.state import MetadataState, PartitionAssignment
from partition.config import PartitionConfig, topic_config
from partition.state import PartitionState
from raft.config import RaftConfig
from raft.rawnode import RawNode, Status
from raft.storage import DurableLog
from raft.types import ConfChange, ConfChangeType, ConfState, Role, Snapshot, SnapshotMetadata
from server.checkpoint import CheckpointStore
from server.config import ServerConfig
from server.env import Env
from server.errors import BrokerError, not_leader
from server.liveness import BrokerLiveness
from server.logsetup import get_logger
from server.metadata_replica import MetadataReplica
from server.partition_replica import LoadedPartition, PartitionReplica, load_partition_state
from server.reconcile import plan
from server.registry import GroupRegistry, GroupSpec
from server.runtime import Group, Runtime
from server.transport import PeerTransport
from wire import replog_pb2 as pb

METADATA_GROUP_ID = MetadataState.METADATA_GROUP_ID


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


class BrokerNode:
    def __init__(self, cfg: ServerConfig, env: Env) -> None:
        self.cfg = cfg
        self.env = env
        self.node_id = cfg.node.node_id
        self.log = get_logger(node_id=self.node_id)
        self.address = cfg.node.advertised_address or cfg.node.listen
        self.partitions: dict[int, PartitionReplica] = {}
        self.by_name: dict[tuple[str, int], int] = {}
        self.open_failures: dict[int, BaseException] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._reconcile_scheduled = False
        self._opening: set[int] = set()
        self._deleting: set[int] = set()
        self._layout_seen = -1
        self.metadata_caught_up = False
        self.liveness = BrokerLiveness(cfg.server.broker_session_timeout_ms / 1000)
        self.stopping = False
        self.started = False
        self.registry = GroupRegistry(
            cfg.node.data_dir,
            env.fs,
            fsync=cfg.storage.fsync,
            segment_bytes=cfg.storage.segment_bytes,
            raft_logger=self._raft_logger,
        )
        self.transport = PeerTransport.from_config(
            cfg,
            network=env.network,
            resolve_address=self.peer_address,
            on_unreachable=lambda peer, groups: self.runtime.report_unreachable(peer, groups),
            on_snapshot_status=lambda peer, gid, ok: self.runtime.report_snapshot(peer, gid, ok),
            on_message_failed=lambda gid, exc: self.runtime.fail_group(gid, exc),
            log=self.log,
        )
        self.runtime = Runtime(
            node_id=self.node_id,
            tick_ms=cfg.raft.tick_ms,
            transport=self.transport,
            executor=env.executor,
            log=self.log,
            election_ticks=cfg.raft.election_ticks,
            heartbeat_ticks=cfg.raft.heartbeat_ticks,
            quiesce=cfg.raft.quiesce,
            seed=env.seed,
        )
        from server.peer_inbox import PeerInbox
        from server.service import PeerService, ReplogService

        self.peer_inbox = PeerInbox.from_config(cfg, self.runtime, self.log)
        self.replog_service = ReplogService(self)
        self.peer_service = PeerService(self)

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
        metadata = getattr(self, "metadata", None)
        broker = metadata.state.brokers.get(node_id) if metadata is not None else None
        if broker is not None:
            return broker.address
        return self.cfg.node.voters.get(node_id, "")

    def _raft_config(self, priority: int = 0, *, broadcast_commit: bool = True) -> RaftConfig:
        return self.cfg.raft.to_raft_config(
            self.node_id, priority, broadcast_commit=broadcast_commit
        )

    def _raft_logger(self, group_id: int) -> Callable[..., None]:
        log = self.log.bind(group_id=group_id)

        def emit(event: str, **fields: Any) -> None:
            log.info(event, **fields)

        return emit

    async def _io(self, lane: str, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.env.executor.submit(lane, fn, *args)

    # ------------------------------------------------------------------ start
    async def start(self) -> None:
        self.registry.clock = asyncio.get_running_loop().time
        await self._io("registry", self.registry.claim, self.node_id, self.cfg.node.cluster_id)
        await self._open_metadata()
        specs, errors = await self._io("registry", self.registry.list_groups)
        for group_id, exc in errors.items():
            self._record_open_failure(group_id, exc)
        for spec in specs:
            await self._open_partition(spec)
        self.runtime.start()
        loop = asyncio.get_running_loop()
        for coro, name in (
            (self._register_and_heartbeat(), "broker-heartbeat"),
            (self._housekeeping_loop(), "housekeeping"),
        ):
            self._tasks.append(loop.create_task(coro, name=name))
        self.started = True
        self.log.info(
            "broker_started",
            listen=self.cfg.node.listen,
            data_dir=self.cfg.node.data_dir,
            dc=self.cfg.node.dc,
            voters=sorted(self.cfg.node.voters),
            partitions=len(self.partitions),
            failed_to_open=sorted(self.open_failures),
            fsync=self.cfg.storage.fsync,
        )

    async def _open_metadata(self) -> None:
        voters = frozenset(self.cfg.node.voters)
        conf = ConfState(voters=voters) if self.node_id in voters else ConfState()

        def load() -> tuple[DurableLog, MetadataState]:
            log = self.registry.open_metadata_log(conf, METADATA_GROUP_ID)
            snap = log.snapshot()
            state = MetadataState.restore(snap.data) if not snap.is_empty() else MetadataState()
            return log, state

        log, state = await self._io("registry", load)
        node = RawNode(
            self._raft_config(),
            log,
            self.runtime.new_rng(),
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
            on_broker_heard=self._on_broker_heard,
            on_leadership=self._on_metadata_leadership,
            incarnation=f"{self.runtime.rng.getrandbits(48):012x}",
        )
        self.runtime.add_group(Group(METADATA_GROUP_ID, node, log, self.metadata))

    # ------------------------------------------------------------------ liveness (#12 defect 19)
    def _on_metadata_leadership(self, leader: bool) -> None:
        if leader:
            state = self.metadata.state
            self.liveness.on_became_leader(
                asyncio.get_running_loop().time(),
                list(state.brokers),
                [n for n, b in state.brokers.items() if b.fenced],
            )

    def _on_broker_heard(self, node_id: int) -> None:
        self.liveness.on_heartbeat(node_id, asyncio.get_running_loop().time())

    async def _fence_or_unfence(self) -> None:
        """On the metadata leader: turn liveness flips into replicated SetBrokerFenced."""
        if self.metadata.role != Role.LEADER:
            return
        brokers = self.metadata.state.brokers
        self.liveness.sync_committed({n: not b.fenced for n, b in brokers.items()})
        for node_id, alive in self.liveness.changes(asyncio.get_running_loop().time()):
            try:
                await self.metadata.propose(mcmd.SetBrokerFenced(node_id, not alive), 5.0)
                self.log.info("broker_liveness_changed", broker=node_id, alive=alive)
            except Exception as exc:
                self.liveness.retry(node_id)
                self.log.warning("broker_fence_failed", broker=node_id, error=str(exc))

    def _partition_config(self, overrides: dict[str, str]) -> PartitionConfig:
        """The topic's overrides over the broker's defaults, checked by the same function the
        metadata applies at creation (#12 defect 13): a topic that exists can open."""
        d = self.cfg.partition
        return topic_config(
            overrides,
            PartitionConfig(
                max_batch_bytes=d.max_batch_bytes,
                retention_ms=d.retention_ms,
                retention_bytes=d.retention_bytes,
                checkpoint_interval_bytes=d.checkpoint_interval_bytes,
            ),
        )

    def _record_open_failure(self, group_id: int, exc: BaseException) -> None:
        self.open_failures[group_id] = exc
        self.log.error(
            "partition_open_failed", group_id=group_id, error=str(exc), kind=type(exc).__name__
        )

    async def _open_partition(self, spec: GroupSpec) -> PartitionReplica | None:
        """Opens one replica (file work in the executor). Any failure stops this replica only."""
        try:
            pcfg = self._partition_config(spec.config)

            def load() -> tuple[DurableLog, LoadedPartition, bool, CheckpointStore]:
                log, fresh = self.registry.open_partition_log(spec)
                try:
                    store = CheckpointStore(self.env.fs, log.directory, spec.group_id, self.log)
                    loaded = load_partition_state(log, lambda: PartitionState(pcfg), store)
                    return log, loaded, fresh, store
                except BaseException:
                    log.close()
                    raise

            log, loaded, fresh, store = await self._io(f"group-{spec.group_id}", load)
        except Exception as exc:
            self._record_open_failure(spec.group_id, exc)
            return None
        self.open_failures.pop(spec.group_id, None)
        return self._register_partition(spec, pcfg, log, loaded.state, fresh, store, loaded)

    def _register_partition(
        self,
        spec: GroupSpec,
        pcfg: PartitionConfig,
        log: DurableLog,
        state: PartitionState,
        fresh: bool,
        checkpoints: CheckpointStore | None = None,
        loaded: LoadedPartition | None = None,
    ) -> PartitionReplica:
        # From a checkpoint: the core hands out only the entries after it (server/checkpoint.py)
        applied = loaded.applied if loaded is not None else None
        node = RawNode(
            # A partition's followers serve no reads (every read is the leader's, behind its
            # high watermark), so they learn a new commit index from the next append or
            # heartbeat instead of an empty append per write: under steady produce that halves
            # the peer messages per write (docs/benchmarks.md). The metadata group broadcasts:
            # its followers act on what they apply (reconcile).
            self._raft_config(broadcast_commit=False),
            log,
            self.runtime.new_rng(),
            logger=self._raft_logger(spec.group_id),
            applied=applied,
            applied_conf_state=loaded.conf_state if applied is not None and loaded else None,
        )
        # Leadership prefers the first replica (placement rotates it): balanced leaders.
        node.set_priorities(preferred_priorities(spec.replicas))
        replica = PartitionReplica(
            group_id=spec.group_id,
            topic=spec.topic,
            partition=spec.partition,
            replicas=spec.replicas,
            node=node,
            log=log,
            state=state,
            make_state=lambda: PartitionState(pcfg),
            touch=self.runtime.touch,
            leader_address=self.advertised,
            on_leader_change=self._report_leader,
            logger=self.log,
            executor=self.env.executor,
            wall_clock_ms=self.env.wall_clock_ms,
            checkpoints=checkpoints,
            checkpoint_index=applied or 0,
            conf_state=loaded.conf_state if loaded is not None else None,
        )
        self.partitions[spec.group_id] = replica
        self.by_name[(spec.topic, spec.partition)] = spec.group_id
        self.runtime.add_group(Group(spec.group_id, node, log, replica))
        if fresh and spec.replicas and spec.replicas[0] == self.node_id and log.last_index() == 0:
            node.campaign()  # the preferred leader starts an election at once: no timeout wait
        return replica

    async def _close_partition(self, group_id: int, delete: bool) -> None:
        replica = self.partitions.pop(group_id, None)
        group = self.runtime.remove_group(group_id)
        if replica is not None:
            self.by_name.pop((replica.topic, replica.partition), None)
            replica.on_stopped(None)
        if group is not None:
            # After the group's in-flight persistence jobs (same FIFO lane): #12 defect 4.
            with contextlib.suppress(Exception):
                await self.runtime.close_log(group)
        if delete:
            await self._io(f"group-{group_id}", self.registry.delete_group, group_id)
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
        local = {gid: r.replicas for gid, r in self.partitions.items()}
        for gid in self.open_failures:
            local.setdefault(gid, ())
        decided = plan(
            state,
            self.node_id,
            local,
            self._opening | self._deleting,
            self.metadata_caught_up,
        )
        for a in decided.update_replicas:
            replica = self.partitions.get(a.group_id)
            if replica is None:
                continue
            # The preferred replica moved (a leadership transfer or a reassignment).
            replica.replicas = a.replicas
            replica.node.set_priorities(preferred_priorities(a.replicas))
            self.runtime.touch(a.group_id)
        for group_id in decided.delete:
            if group_id in self._deleting:
                continue
            self._deleting.add(group_id)
            self.open_failures.pop(group_id, None)
            self.spawn(self._delete_partition(group_id), f"delete-partition-{group_id}")
        to_open = [(a, dict(state.topics[a.topic].config)) for a in decided.open]
        for a, _config in to_open:
            self._opening.add(a.group_id)
        if self.metadata.role == Role.LEADER:
            self._add_learners_for_registered_brokers()
        if to_open:
            self.spawn(self._open_new_partitions(to_open), "open-partitions")

    async def _delete_partition(self, group_id: int) -> None:
        try:
            await self._close_partition(group_id, delete=True)
        finally:
            self._deleting.discard(group_id)

    async def _open_new_partitions(
        self, items: list[tuple[PartitionAssignment, dict[str, str]]]
    ) -> None:
        """Opens replicas assigned to this broker, the file work in the executor so the event
        loop keeps serving (a topic of 1,000 partitions means 1,000 directories)."""
        for a, config in items:
            try:
                if self.stopping:
                    return
                current = {x.group_id for x in self.metadata.state.assignments_for(self.node_id)}
                if a.group_id not in current or a.group_id in self.partitions:
                    continue  # deleted or moved meanwhile
                await self._open_partition(
                    GroupSpec(a.group_id, a.topic, a.partition, a.replicas, config)
                )
            finally:
                self._opening.discard(a.group_id)

    def _add_learners_for_registered_brokers(self) -> None:
        """Brokers that are not metadata voters follow the metadata group as learners."""
        status = self.metadata.node.status()
        members = status.conf_state.voters | status.conf_state.learners
        for node_id in self.metadata.state.brokers:
            if node_id not in members:
                try:
                    self.metadata.node.propose_conf_change(
                        ConfChange(ConfChangeType.ADD_LEARNER, node_id)
                    )
                except Exception as exc:
                    self.log.info("metadata_learner_deferred", learner=node_id, error=str(exc))
                    return
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
        stub = self.env.network.peer_stub(address)
        try:
            reply = await stub.ForwardMetadata(
                pb.ForwardMetadataRequest(
                    cluster_id=self.cfg.node.cluster_id, command=data, hops=hops
                ),
                timeout=5.0,
            )
        except Exception as exc:  # the network seam's failure (grpc.aio.AioRpcError)
            code = getattr(exc, "code", None)
            name = code().name if callable(code) else type(exc).__name__
            raise BrokerError(
                "LEADER_NOT_AVAILABLE",
                f"forwarding to metadata leader {leader_id} failed: {name}",
                retriable=True,
            ) from None
        return bytes(reply.result)

    async def _register_and_heartbeat(self) -> None:
        registered = False
        interval = self.cfg.server.broker_heartbeat_ms / 1000
        while not self.stopping:
            try:
                if not registered:
                    index, _ = await self.metadata.propose_indexed(
                        mcmd.RegisterBroker(
                            self.node_id,
                            self.address,
                            self.cfg.node.dc,
                            self.cfg.node.rack,
                            self.env.wall_clock_ms(),
                        ),
                        timeout_s=5.0,
                    )
                    registered = True
                    self.log.info("broker_registered", index=index)
                    self.spawn(self._catch_up(index), "metadata-catch-up")
                else:
                    await self.metadata.propose(
                        mcmd.BrokerHeartbeat(self.node_id, self.env.wall_clock_ms()),
                        timeout_s=5.0,
                    )
                self._resend_leader_reports()
                await self._fence_or_unfence()
            except Exception as exc:
                self.log.debug("broker_heartbeat_failed", error=str(exc))
                await asyncio.sleep(0.2)
                continue
            await asyncio.sleep(interval)

    async def _catch_up(self, index: int) -> None:
        """Once this replica has applied its own registration (committed after everything the
        cluster had committed when it started), its metadata is current: reconcile may now
        create fresh replicas and delete deleted ones (server/reconcile.py)."""
        while not self.stopping:
            try:
                await self.metadata.wait_applied(index, timeout_s=5.0)
                break
            except BrokerError:
                continue
        if self.stopping:
            return
        self.metadata_caught_up = True
        self.log.info("metadata_caught_up", index=index)
        self._layout_seen = -1  # re-plan: what was held back until now may proceed
        self._schedule_reconcile()

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

    async def _housekeeping_loop(self) -> None:
        interval = self.cfg.partition.retention_check_ms / 1000
        while not self.stopping:
            await asyncio.sleep(interval)
            for replica in list(self.partitions.values()):
                if replica.stopped is not None or self.stopping:
                    continue
                try:
                    await replica.maybe_apply_retention()
                except Exception as exc:
                    self.log.error("retention_failed", group_id=replica.group_id, error=repr(exc))
            try:
                await self._maybe_snapshot_metadata()
            except Exception as exc:
                self.log.error("metadata_snapshot_failed", error=repr(exc))

    async def _maybe_snapshot_metadata(self) -> None:
        md = self.metadata
        if md.applied_since_snapshot < self.cfg.storage.snapshot_interval_entries:
            return
        index = md.state.applied_index
        if index <= md.log.snapshot().metadata.index:
            return
        conf = md.node.status().conf_state
        snap = Snapshot(SnapshotMetadata(index, md.log.term(index), conf), md.state.snapshot())

        def save() -> None:
            md.log.save_snapshot(snap)
            md.log.compact(index)

        await self._io(f"group-{METADATA_GROUP_ID}", save)
        md.applied_since_snapshot = 0
        self.log.info("metadata_snapshot_taken", index=index)

    # ------------------------------------------------------------------ lookups for services
    def live_brokers(self) -> frozenset[int]:
        return frozenset(self.metadata.state.live_brokers())

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
        leader = a.leader if a.leader != self.node_id else 0
        raise not_leader(
            f"partition {partition} of topic '{topic}'",
            leader,
            self.advertised(leader) if leader else "",
        )

    def status(self) -> dict[int, dict[str, Any]]:
        """Per group: role, term, leader, indexes and failure (None when healthy)."""
        out: dict[int, dict[str, Any]] = {}
        for group in self.runtime.groups.values():
            st = group.node.status()
            out[group.group_id] = {
                "role": st.role.name,
                "term": st.term,
                "leader_id": st.leader_id,
                "commit": st.commit,
                "applied": st.applied,
                "first_index": st.first_index,
                "last_index": st.last_index,
                "quiesced": group.quiesced,
                "failed": repr(group.failed) if group.failed else None,
            }
        for group_id, exc in self.open_failures.items():
            out.setdefault(group_id, {"role": "NONE", "failed": repr(exc)})
        return out

    def log_group_status(self) -> None:
        """SIGUSR1: one log line per Raft group with its role, term, indexes and followers."""
        roles: dict[str, int] = {}
        for group in self.runtime.groups.values():
            key = f"{group.node.role.name}{'-quiesced' if group.quiesced else ''}"
            roles[key] = roles.get(key, 0) + 1
        rt, tr = self.runtime, self.transport
        self.log.info(
            "groups_summary",
            groups=len(rt.groups),
            turns=rt.turns,
            sync_jobs=rt.sync_jobs,
            loop_stalls=rt.loop_stalls,
            failed=len(rt.failed_groups()) + len(self.open_failures),
            peer_batches_sent=tr.sent_batches,
            peer_messages_dropped=tr.dropped_messages,
            **roles,
        )
        for group_id, info in sorted(self.status().items()):
            self.log.info("group_status", group_id=group_id, **info)

    # ------------------------------------------------------------------ stop
    async def stop(self, graceful: bool = True) -> None:
        self.stopping = True
        if graceful:
            await self.transfer_leadership_away()
        tasks = [*self._tasks, *self._background]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.runtime.stop()
        await self.transport.close()
        for group in list(self.runtime.groups.values()):
            with contextlib.suppress(Exception):
                await self._io(group.lane, group.log.sync)
            replica = self.partitions.get(group.group_id)
            if replica is not None and group.failed is None:
                try:  # a restart then resumes from here instead of replaying the log
                    await replica.save_checkpoint()
                except Exception as exc:
                    self.log.warning("checkpoint_failed", group_id=group.group_id, error=repr(exc))
            with contextlib.suppress(Exception):
                await self.runtime.close_log(group)
        self.log.info("broker_stopped")

    def abandon(self) -> None:
        """A crash (simulation): every task cancelled at once; nothing awaited, nothing written."""
        self.stopping = True
        self.runtime.abandon()
        for t in [*self._tasks, *self._background]:
            t.cancel()
        self.transport.abandon()

    async def transfer_leadership_away(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.server.shutdown_transfer_timeout_ms / 1000
        groups = [g for g in self.runtime.groups.values() if g.failed is None]
        while loop.time() < deadline:
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
