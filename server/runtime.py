"""The ready loop: drives every Raft group hosted by this broker on one asyncio event loop.

Owns: the set of groups, ticking, the per-turn Ready pipeline, the fsync thread, failure isolation.
One loop turn (STYLE.md "The runtime"):
  1. take a Ready from every group that was touched (stepped, ticked, proposed to) since last turn;
  2. write its snapshot / entries / hard state to the group's log (buffered writes, no fsync yet) and
     hand its safe messages to the transport; the transport sends ONE batch per peer for all groups;
  3. fsync every log written in this turn in the fsync thread — one wait covers every group (group
     commit across groups); the loop keeps serving requests meanwhile;
  4. report ``on_persisted`` (which releases votes / append acks the core held back), apply committed
     entries, ``advance_apply``; groups that have more to do are touched again.
A group whose invariants break (InvariantViolation, StorageCorruption) is stopped and reported; the
broker keeps serving the others.
Never: block the loop on the disk or a peer; send a message the core has not released.

Quiescence (CockroachDB's idea; what makes 1,000 idle partitions cheap): a leader whose group
has nothing in flight (every member's match = last index = commit = applied) for two heartbeat
rounds stops ticking the group and tells its followers in the per-peer batch
(``quiesced_groups``); they stop ticking it too. Liveness is then watched per *node*, not per
group: every link carries a batch at least once per tick, and a follower whose leader's node
went silent for an election timeout wakes its groups with their election clocks advanced to the
timeout (so the failover costs one node-liveness timeout, not two). Any message for a group, a
proposal or any other touch wakes it. Quiescence only stops ticks, which Raft's safety never
depends on; a wrong guess costs an election, never data.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from raft.errors import InvariantViolation, StorageCorruption
from raft.rawnode import RawNode
from raft.storage import DurableLog
from raft.types import Entry, Message, MessageType, ReadState, Ready, Role, Snapshot, SoftState
from server.transport import PeerTransport


class Replica(Protocol):
    """What a group's state machine glue (partition or metadata) offers the runtime."""

    def on_log_append(self, entries: Sequence[Entry]) -> None: ...
    def on_snapshot(self, snapshot: Snapshot) -> None: ...
    def on_soft_state(self, soft: SoftState, term: int) -> None: ...
    def apply(self, entries: Sequence[Entry]) -> None: ...
    def on_persisted(self, last_index: int) -> None: ...
    def on_read_states(self, read_states: Sequence[ReadState]) -> None: ...
    def on_stopped(self, reason: BaseException | None) -> None: ...


class Group:
    __slots__ = (
        "failed",
        "group_id",
        "log",
        "node",
        "quiesced",
        "quiet_ticks",
        "replica",
        "unsynced",
    )

    def __init__(self, group_id: int, node: RawNode, log: DurableLog, replica: Replica) -> None:
        self.group_id = group_id
        self.node = node
        self.log = log
        self.replica = replica
        self.failed: BaseException | None = None
        self.unsynced = False  # a Ready of this group waits for a sync job to complete
        self.quiesced = False  # idle: not ticked (see Runtime's quiescence notes)
        self.quiet_ticks = 0  # consecutive leader ticks with nothing to replicate


def _sync_logs(logs: list[DurableLog]) -> None:
    for log in logs:
        log.sync()


class Runtime:
    def __init__(
        self,
        *,
        node_id: int,
        tick_ms: int,
        fsync: bool,
        transport: PeerTransport,
        log: Any,
        election_ticks: int = 10,
        quiesce: bool = True,
        seed: int | None = None,
    ) -> None:
        self.node_id = node_id
        self.tick_s = tick_ms / 1000
        self.fsync = fsync
        self.transport = transport
        self.rng = random.Random(seed if seed is not None else time.time_ns() ^ node_id)
        self.groups: dict[int, Group] = {}
        self._touched: set[int] = set()
        self._wake = asyncio.Event()
        self._fsync_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fsync")
        self._tasks: list[asyncio.Task[None]] = []
        self._log = log
        self._running = False
        self.turns = 0
        self.fsync_passes = 0
        self.election_ticks = election_ticks
        self.peer_seen: dict[int, float] = {}  # node id -> loop time a batch last arrived
        self.quiesce = quiesce
        self.loop_stalls = 0

    # ------------------------------------------------------------------ groups
    def add_group(self, group: Group) -> None:
        self.groups[group.group_id] = group
        self.touch(group.group_id)

    def remove_group(self, group_id: int) -> Group | None:
        group = self.groups.pop(group_id, None)
        self._touched.discard(group_id)
        return group

    def touch(self, group_id: int) -> None:
        group = self.groups.get(group_id)
        if group is not None and group.quiesced:
            self.wake_group(group)
        self._touched.add(group_id)
        self._wake.set()

    def step(self, group_id: int, msg: Message) -> None:
        group = self.groups.get(group_id)
        if group is None or group.failed is not None:
            return  # unknown group (not created here yet, or deleted): Raft retransmits
        if group.quiesced:
            if msg.type == MessageType.HEARTBEAT_RESP and msg.term == group.node.raft.term:
                # A straggling answer to the heartbeats sent before quiescing: take note of
                # it (peer activity) but stay asleep.
                group.node.step(msg)
                return
            self.wake_group(group)
        try:
            group.node.step(msg)
        except (InvariantViolation, StorageCorruption) as exc:
            self._fail(group, exc)
            return
        self._touched.add(group_id)
        self._wake.set()

    def report_unreachable(self, peer_id: int, group_ids: set[int]) -> None:
        for gid in group_ids:
            group = self.groups.get(gid)
            if group is not None and group.failed is None:
                group.node.report_unreachable(peer_id)
                self._touched.add(gid)
        self._wake.set()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._running = True
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._ticker(), name="raft-ticker"))
        self._tasks.append(loop.create_task(self._ready_loop(), name="raft-ready-loop"))

    async def stop(self) -> None:
        self._running = False
        self._wake.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._fsync_pool.shutdown(wait=True)

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while self._running:
            next_at += self.tick_s
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_at = loop.time()  # fell behind: don't burst ticks to catch up
            lag = loop.time() - next_at
            if lag > self.tick_s / 2:
                # The loop was blocked (disk, GC, a long callback): visible in the logs, since
                # a stall longer than an election timeout costs leaderships.
                self.loop_stalls += 1
                self._log.warning("event_loop_stalled", lag_ms=round(lag * 1000, 1))
            self.tick_all(loop.time())
            self._wake.set()

    def tick_all(self, now: float) -> None:
        stale = {
            peer
            for peer, seen in self.peer_seen.items()
            if now - seen > self.election_ticks * self.tick_s
        }
        for gid, group in self.groups.items():
            if group.failed is not None:
                continue
            if group.quiesced:
                if stale and self._quiesced_needs_waking(group, stale):
                    self.wake_group(group, leader_lost=group.node.raft.role != Role.LEADER)
                else:
                    continue
            group.node.tick()
            self._touched.add(gid)
            if self.quiesce:
                self._maybe_quiesce(group)
        self.transport.keepalive()

    def _quiesced_needs_waking(self, group: Group, stale: set[int]) -> bool:
        r = group.node.raft
        if r.role == Role.LEADER:
            return any(p in stale for p in r.tracker.progress if p != self.node_id)
        return r.leader_id in stale

    def _maybe_quiesce(self, group: Group) -> None:
        r = group.node.raft
        if r.role != Role.LEADER:
            return
        log = r.log
        last = log.last_index()
        if (
            log.committed != last
            or log.applied != last
            or r.lead_transferee
            or r.read_only.pending
            or group.unsynced
            or any(pr.match != last for pr in r.tracker.progress.values())
        ):
            group.quiet_ticks = 0
            return
        group.quiet_ticks += 1
        if group.quiet_ticks < 2 * r.heartbeat_ticks + 1:
            return  # followers learn the final commit index from the heartbeats first
        group.quiesced = True
        for peer in r.tracker.progress:
            if peer != self.node_id:
                self.transport.mark_quiesced(peer, group.group_id)

    def on_quiesce_notice(self, from_node: int, group_ids: Sequence[int]) -> None:
        """A leader says these groups are idle: stop ticking them if we agree it leads them
        and we have everything it has committed."""
        for gid in group_ids:
            group = self.groups.get(gid)
            if group is None or group.failed is not None or group.quiesced:
                continue
            r = group.node.raft
            if (
                r.role == Role.FOLLOWER
                and r.leader_id == from_node
                and r.log.committed == r.log.last_index()
                and not group.unsynced
            ):
                group.quiesced = True

    def wake_group(self, group: Group, leader_lost: bool = False) -> None:
        group.quiesced = False
        group.quiet_ticks = 0
        r = group.node.raft
        if r.role == Role.LEADER:
            # Time stood still while quiesced; don't let the first CheckQuorum after waking
            # judge peers on activity flags from before the pause.
            r.election_elapsed = 0
            for pr in r.tracker.progress.values():
                pr.recent_active = True
        elif leader_lost:
            # The leader's node went silent for an election timeout already: start the
            # randomized part of the election timeout now rather than a whole new timeout.
            r.election_elapsed = max(r.election_elapsed, self.election_ticks)
        self._touched.add(group.group_id)

    def on_peer_batch(self, from_node: int, now: float) -> None:
        self.peer_seen[from_node] = now

    async def _ready_loop(self) -> None:
        while self._running:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.run_turn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in the loop itself: log loudly, keep serving
                self._log.exception("ready_loop_error", error=repr(exc))

    # ------------------------------------------------------------------ one turn
    async def run_turn(self) -> None:
        """One turn. Persistence is pipelined: the fsync of this turn's writes runs in the fsync
        thread while later turns go on; ``on_persisted`` for this turn's Readies is reported
        when it completes (jobs complete in submission order, so numbers only grow)."""
        self.turns += 1
        touched, self._touched = self._touched, set()
        to_sync: list[DurableLog] = []
        covered: list[tuple[Group, int, int]] = []  # (group, ready number, last entry index)
        for gid in touched:
            group = self.groups.get(gid)
            if group is None or group.failed is not None:
                continue
            try:
                if not group.node.has_ready():
                    continue
                rd = group.node.ready()
                self._write(group, rd)
                for msg in rd.messages:
                    self.transport.enqueue(gid, msg)
                self._apply(group, rd)
                needs_sync = rd.must_sync or bool(rd.entries) or rd.snapshot is not None
                if needs_sync:
                    to_sync.append(group.log)
                if needs_sync or group.unsynced:
                    # Must wait for this turn's sync job (or an earlier one still running).
                    group.unsynced = True
                    last = rd.entries[-1].index if rd.entries else 0
                    covered.append((group, rd.number, last))
                else:
                    group.node.on_persisted(rd.number)
                    if group.node.has_ready():
                        self._touched.add(gid)
            except (InvariantViolation, StorageCorruption) as exc:
                self._fail(group, exc)
        self.transport.flush()
        if covered:
            if to_sync and self.fsync:
                self.fsync_passes += 1
            job = self._fsync_pool.submit(_sync_logs, to_sync if self.fsync else [])
            loop = asyncio.get_running_loop()
            job.add_done_callback(lambda f: loop.call_soon_threadsafe(self._on_synced, f, covered))
        if self._touched:
            self._wake.set()

    def _apply(self, group: Group, rd: Ready) -> None:
        """Applies what the core handed out as committed in this Ready, in the same turn (the
        core only hands out entries that are committed and already persisted on this node, so
        applying never waits on this turn's own fsync job)."""
        if rd.snapshot is not None and not rd.snapshot.is_empty():
            # An installed snapshot is applied state (the replica restored it in _write).
            group.node.advance_apply(rd.snapshot.metadata.index)
        if rd.committed_entries:
            group.replica.apply(rd.committed_entries)
            group.node.advance_apply(rd.committed_entries[-1].index)
        if rd.read_states:
            group.replica.on_read_states(rd.read_states)

    def _on_synced(self, job: Future[None], covered: list[tuple[Group, int, int]]) -> None:
        error = job.exception()
        pending_numbers: dict[int, int] = {}
        for group, number, last in covered:
            if group.failed is not None:
                continue
            if error is not None:
                self._fail(group, error)
                continue
            try:
                group.node.on_persisted(number)
                if last:
                    group.replica.on_persisted(last)
            except (InvariantViolation, StorageCorruption) as exc:
                self._fail(group, exc)
                continue
            pending_numbers[group.group_id] = number
            self._touched.add(group.group_id)
        for group, number, _last in covered:
            if pending_numbers.get(group.group_id) == number:
                # No later turn of this group is waiting on a newer job.
                group.unsynced = group.node.raft.next_ready_number - 1 > number
        self._wake.set()

    def _write(self, group: Group, rd: Ready) -> None:
        if rd.snapshot is not None:
            # Persist even an index-0 snapshot: it carries the membership a new member needs.
            group.log.apply_snapshot(rd.snapshot)
            if not rd.snapshot.is_empty():
                group.replica.on_snapshot(rd.snapshot)
        if rd.entries:
            group.log.append(rd.entries)
            group.replica.on_log_append(rd.entries)
        if rd.hard_state is not None:
            group.log.save_hard_state(rd.hard_state)
        if rd.soft_state is not None:
            group.replica.on_soft_state(rd.soft_state, group.node.raft.term)

    def _fail(self, group: Group, exc: BaseException) -> None:
        group.failed = exc
        self._log.error(
            "group_failed", group_id=group.group_id, error=str(exc), kind=type(exc).__name__
        )
        with contextlib.suppress(Exception):
            group.replica.on_stopped(exc)


def new_rng(runtime: Runtime) -> random.Random:
    return random.Random(runtime.rng.getrandbits(64))
