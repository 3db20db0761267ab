"""One partition replica on this broker: glue between the Raft group and partition.PartitionState.

Owns: produce waiters (resolved when the proposal's entry is applied, or for acks=leader when it is
durable on the leader), fetch long-poll wake-ups, retention and the snapshot taken when retention
drops segments. No record is decoded here: the leader validates a batch's header and CRC, stamps its
base offset and proposes the bytes.

Snapshots (design note): a partition's Raft snapshot is taken exactly at the last index of the newest
segment retention drops, and holds the partition state *at that index* (log start offset, producer
table), rebuilt by replaying the dropped entries' headers. So after compaction the Raft log starts at
snapshot index + 1, every retained record stays readable, and a restart replays the retained log to
rebuild the offset index and producer table (which therefore survive restarts and leader changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from partition.state import (
    Appended,
    Duplicate,
    FetchResult,
    PartitionState,
    Rejected,
)
from raft.confchange import apply_conf_change
from raft.errors import NotLeader, ProposalDropped
from raft.rawnode import RawNode
from raft.storage import DurableLog
from raft.types import (
    ConfChange,
    Entry,
    EntryType,
    ReadState,
    Role,
    Snapshot,
    SnapshotMetadata,
    SoftState,
)
from server.errors import BrokerError, not_leader, timed_out


@dataclass(frozen=True, slots=True)
class ProduceResult:
    base_offset: int
    last_offset: int
    log_start_offset: int
    duplicate: bool


class PartitionReplica:
    def __init__(
        self,
        *,
        group_id: int,
        topic: str,
        partition: int,
        replicas: tuple[int, ...],
        node: RawNode,
        log: DurableLog,
        state: PartitionState,
        make_state: Callable[[], PartitionState],
        touch: Callable[[int], None],
        leader_address: Callable[[int], str],
        on_leader_change: Callable[[int, int, int], None],
        logger: Any,
    ) -> None:
        self.group_id = group_id
        self.topic = topic
        self.partition = partition
        self.node = node
        self.log = log
        self.state = state
        self._make_state = make_state
        self._touch = touch
        self._leader_address = leader_address
        self._on_leader_change = on_leader_change
        self._log = logger
        self.replicas = replicas  # first = preferred leader (updated by the broker)
        self.role = Role.FOLLOWER
        self.leader_id = 0
        self.term = 0
        self._waiters: dict[int, tuple[int, asyncio.Future[ProduceResult]]] = {}
        self._leader_waiters: dict[int, tuple[int, int, asyncio.Future[ProduceResult]]] = {}
        self._data_event = asyncio.Event()
        self.stopped: BaseException | None = None

    @property
    def what(self) -> str:
        return f"partition {self.partition} of topic '{self.topic}'"

    # ------------------------------------------------------------------ runtime callbacks
    def on_log_append(self, entries: Sequence[Entry]) -> None:
        self.state.on_log_append(entries)

    def on_read_states(self, read_states: Sequence[ReadState]) -> None:
        pass  # partitions serve reads from the leader's applied state; no ReadIndex here yet

    def on_snapshot(self, snapshot: Snapshot) -> None:
        self.state = self._make_state()
        self.state.restore(snapshot.data, snapshot.metadata.index)
        self._log.info(
            "partition_snapshot_installed",
            group_id=self.group_id,
            index=snapshot.metadata.index,
            log_start_offset=self.state.log_start_offset,
        )

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        was_leader = self.role == Role.LEADER
        self.role, self.leader_id, self.term = soft.role, soft.leader_id, term
        if soft.role == Role.LEADER and not was_leader:
            self._on_leader_change(self.group_id, self.node.raft.id, term)
        if was_leader and soft.role != Role.LEADER:
            # acks=leader waiters can no longer be answered truthfully by us.
            for _idx, (_t, _b, fut) in list(self._leader_waiters.items()):
                if not fut.done():
                    fut.set_exception(self._not_leader())
            self._leader_waiters.clear()
        self._data_event.set()  # wake fetchers so they notice leadership moved
        self._data_event = asyncio.Event()

    def on_persisted(self, last_index: int) -> None:
        if not self._leader_waiters:
            return
        for idx in [i for i in self._leader_waiters if i <= last_index]:
            base, last, fut = self._leader_waiters.pop(idx)
            if not fut.done():
                fut.set_result(ProduceResult(base, last, self.state.log_start_offset, False))

    def apply(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            result = self.state.apply(entry)
            waiter = self._waiters.pop(entry.index, None)
            if waiter is None:
                continue
            term, fut = waiter
            if fut.done():
                continue
            if entry.term != term:
                # Our proposal was overwritten by another leader's entry at this index.
                fut.set_exception(self._not_leader())
            elif isinstance(result, Appended):
                fut.set_result(
                    ProduceResult(
                        result.base_offset, result.last_offset, self.state.log_start_offset, False
                    )
                )
            elif isinstance(result, Duplicate):
                fut.set_result(
                    ProduceResult(
                        result.base_offset, result.last_offset, self.state.log_start_offset, True
                    )
                )
            elif isinstance(result, Rejected):
                fut.set_exception(result.error)
            else:  # Control: cannot happen for a data proposal
                fut.set_exception(
                    BrokerError("INTERNAL", f"proposal at index {entry.index} applied as {result}")
                )
        self._data_event.set()
        self._data_event = asyncio.Event()

    def on_stopped(self, reason: BaseException | None) -> None:
        self.stopped = reason or RuntimeError("replica stopped")
        err = BrokerError(
            "LEADER_NOT_AVAILABLE",
            f"{self.what} is not being served by this broker ({self.stopped})",
            retriable=True,
            hint="retry; metadata will point at another replica",
        )
        for _t, fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(err)
        for _b, _l, fut in self._leader_waiters.values():
            if not fut.done():
                fut.set_exception(err)
        self._waiters.clear()
        self._leader_waiters.clear()
        self._data_event.set()

    # ------------------------------------------------------------------ produce
    def _not_leader(self) -> BrokerError:
        leader = self.leader_id if self.leader_id != self.node.raft.id else 0
        return not_leader(self.what, leader, self._leader_address(leader) if leader else "")

    def ensure_leader(self) -> None:
        if self.stopped is not None:
            raise self._not_leader()
        if self.role != Role.LEADER:
            raise self._not_leader()

    async def produce(self, batch: bytes, *, acks_leader: bool, timeout_s: float) -> ProduceResult:
        self.ensure_leader()
        stamped, base_offset, last_offset = self.state.stamp(batch)
        try:
            index = self.node.propose(stamped)
        except NotLeader:
            raise self._not_leader() from None
        except ProposalDropped as exc:
            raise BrokerError(
                "LEADER_NOT_AVAILABLE",
                f"{self.what}: {exc.reason}",
                retriable=True,
                hint="retry after a short back-off",
            ) from None
        term = self.node.raft.term
        self.state.on_log_append((Entry(index, term, EntryType.NORMAL, stamped),))
        fut: asyncio.Future[ProduceResult] = asyncio.get_running_loop().create_future()
        if acks_leader:
            self._leader_waiters[index] = (base_offset, last_offset, fut)
        else:
            self._waiters[index] = (term, fut)
        self._touch(self.group_id)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except TimeoutError:
            raise timed_out(f"produce to {self.what}") from None

    # ------------------------------------------------------------------ fetch
    def _read(self, lo: int, hi: int, max_bytes: int) -> Sequence[Entry]:
        return self.log.entries(lo, hi, max_bytes)

    def fetch_once(self, offset: int, max_bytes: int) -> FetchResult:
        self.ensure_leader()
        return self.state.fetch(offset, max_bytes, self._read)

    async def fetch_stream(
        self, offset: int, max_bytes: int, max_wait_s: float, follow: bool
    ) -> AsyncIterator[FetchResult]:
        while True:
            event = self._data_event
            result = self.fetch_once(offset, max_bytes)
            if result.batches:
                yield result
                offset = result.next_offset
                if not follow:
                    return
                continue
            try:
                await asyncio.wait_for(event.wait(), max_wait_s)
            except TimeoutError:
                if not follow:
                    yield result
                    return
            if self.stopped is not None:
                raise self._not_leader()

    # ------------------------------------------------------------------ retention
    def maybe_apply_retention(self, now_ms: int | None = None) -> int | None:
        """Drop whole segments that retention allows; returns the new first index, or None."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        segments = [(s.first_index, s.last_index, s.size_bytes) for s in self.log.segments()]
        cut = self.state.retention_cut(segments, now_ms)
        if cut is None:
            return None
        snapshot = self._snapshot_at(cut)
        self.log.save_snapshot(snapshot)
        self.log.compact(cut)
        self.state.on_compacted(self.log.first_index())
        self._log.info(
            "retention_applied",
            group_id=self.group_id,
            cut_index=cut,
            log_start_offset=self.state.log_start_offset,
        )
        return self.log.first_index()

    def _snapshot_at(self, index: int) -> Snapshot:
        """The partition state as of ``index``: the previous snapshot plus the entries up to it."""
        replay = self._make_state()
        previous = self.log.snapshot()  # index 0 = the bootstrap one: membership, no state
        conf = previous.metadata.conf_state
        if not previous.is_empty():
            replay.restore(previous.data, previous.metadata.index)
        lo = self.log.first_index()
        conf_entries: list[Entry] = []
        while lo <= index:
            chunk = self.log.entries(lo, index + 1, 8 << 20)
            replay.on_log_append(chunk)
            for e in chunk:
                replay.apply(e)
                if e.type == EntryType.CONF_CHANGE:
                    conf_entries.append(e)
            lo = chunk[-1].index + 1
        for e in conf_entries:
            with contextlib.suppress(ValueError):  # the core skipped invalid changes too
                conf = apply_conf_change(conf, ConfChange.decode(e.data))
        return Snapshot(SnapshotMetadata(index, self.log.term(index), conf), replay.snapshot())
