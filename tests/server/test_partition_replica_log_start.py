"""PartitionReplica: the replicated log start (retention) and fetch reads off the loop.

A single-voter group driven by hand (the runtime's Ready loop, inline) on the in-memory
filesystem; the executor is a fake that runs jobs inline and marks them, so a test can tell
what ran on the "loop" and what in the "executor".
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest

from partition import OffsetOutOfRange, PartitionConfig, PartitionState
from partition.header import encode_log_start
from raft.config import RaftConfig
from raft.rawnode import RawNode
from raft.storage import DurableLog
from raft.types import ConfState, Entry, EntryType, Role, SoftState
from server.errors import BrokerError
from server.partition_replica import PartitionReplica, load_partition_state
from tests.partition.test_support import make_batch
from tests.raft.memfs import MemFS

DIR = "/data/g7"
CS = ConfState(voters=frozenset({1}))


class CountingFS(MemFS):
    """Counts the preads made outside the fake executor (= on the event loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_executor = False
        self.loop_preads = 0

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        if not self.in_executor:
            self.loop_preads += 1
        return super().pread(fd, length, offset)


class FakeExecutor:
    def __init__(self, fs: CountingFS) -> None:
        self.fs = fs
        self.lanes: list[str] = []

    def submit(self, lane: str, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        self.lanes.append(lane)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.fs.in_executor = True
        try:
            fut.set_result(fn(*args))
        except Exception as e:
            fut.set_exception(e)
        finally:
            self.fs.in_executor = False
        return fut

    def shutdown(self) -> None:
        pass


class Logger:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _log(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    info = warning = error = debug = _log

    def named(self, name: str) -> list[dict[str, Any]]:
        return [f for e, f in self.events if e == name]


class Group:
    """One replica with its log and core, driven like server/runtime.py does (inline)."""

    def __init__(
        self,
        fs: CountingFS,
        config: PartitionConfig,
        *,
        segment_bytes: int = 2048,
        cache_bytes: int = 1 << 20,
        clock_ms: int = 10**12,
    ) -> None:
        self.fs = fs
        self.config = config
        self.log = DurableLog(
            DIR, conf_state=CS, fs=fs, segment_bytes=segment_bytes, cache_bytes=cache_bytes
        )
        self.logger = Logger()
        self.executor = FakeExecutor(fs)
        self.clock_ms = clock_ms
        loaded = load_partition_state(self.log, lambda: PartitionState(config))
        self.node = RawNode(RaftConfig(node_id=1), self.log, random.Random(1))
        self.replica = PartitionReplica(
            group_id=7,
            topic="t",
            partition=0,
            replicas=(1,),
            node=self.node,
            log=self.log,
            state=loaded.state,
            make_state=lambda: PartitionState(config),
            touch=lambda _g: None,
            leader_address=lambda _n: "",
            on_leader_change=lambda *_a: None,
            logger=self.logger,
            executor=self.executor,
            wall_clock_ms=lambda: self.clock_ms,
        )

    def drive(self) -> None:
        node, log, replica = self.node, self.log, self.replica
        while node.has_ready():
            rd = node.ready()
            if rd.entries:
                log.append(rd.entries)
                replica.on_log_append(rd.entries)
            if rd.hard_state is not None:
                log.save_hard_state(rd.hard_state)
            if rd.soft_state is not None:
                replica.on_soft_state(rd.soft_state, node.term)
            log.sync()
            node.on_persisted(rd.number)
            if rd.committed_entries:
                replica.apply(rd.committed_entries)
                node.advance_apply(rd.committed_entries[-1].index)

    def elect(self) -> None:
        self.node.campaign()
        self.drive()
        assert self.replica.role == Role.LEADER and self.replica.read_ready

    async def produce(self, n: int, size: int = 200) -> None:
        for i in range(n):
            task = asyncio.ensure_future(
                self.replica.produce(
                    make_batch(1, ts=i, value=b"v" * size), acks_leader=False, timeout_s=5
                )
            )
            await asyncio.sleep(0)
            self.drive()
            await task


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_the_leader_proposes_the_log_start_and_deletes_only_below_it() -> None:
    async def main() -> None:
        g = Group(CountingFS(), PartitionConfig(retention_bytes=3000, retention_ms=-1))
        g.elect()
        await g.produce(40)
        assert len(g.log.segments()) > 3
        first_before = g.log.first_index()
        # pass 1: the plan is proposed; nothing is deleted before it is applied
        assert await g.replica.maybe_apply_retention() is None
        proposed = g.logger.named("log_start_proposed")
        assert len(proposed) == 1 and g.log.first_index() == first_before
        assert g.replica.state.log_start_offset == 0
        # one proposal at a time: nothing new while it is unapplied
        assert (
            g.replica.maybe_propose_log_start(
                [(s.first_index, s.last_index, s.size_bytes) for s in g.log.segments()]
            )
            is None
        )
        g.drive()  # commit + apply the control entry
        start = g.replica.state.log_start_offset
        assert start == proposed[0]["log_start_offset"] > 0
        # pass 2: delete the segments wholly below the log start (never above it)
        first = await g.replica.maybe_apply_retention()
        assert first is not None and first > first_before
        assert g.replica.state.log_start_offset == start
        assert g.replica.state.index_for_offset(start) >= g.log.first_index()
        assert g.log.snapshot().metadata.index == first - 1
        with pytest.raises(OffsetOutOfRange):
            await g.replica.fetch(start - 1, 1 << 20)
        got = await g.replica.fetch(start, 1 << 20)
        assert got.batches and got.log_start_offset == start
        # the snapshot carries the logical log start: a restart exposes it at once
        g.log.close()
        g2 = Group(g.fs, g.config)
        assert g2.replica.state.log_start_offset >= start
        g2.log.close()

    run(main())


def test_a_follower_never_cuts_on_its_own_clock_or_sizes() -> None:
    """A follower whose own segments and sizes would call for a cut does nothing until the
    leader's log-start entry is applied; then it deletes only below that log start."""

    async def main() -> None:
        config = PartitionConfig(retention_bytes=100, retention_ms=1)
        g = Group(CountingFS(), config)
        replica, log, state = g.replica, g.log, g.replica.state
        assert replica.role == Role.FOLLOWER
        index = 0

        def append(data: bytes) -> None:
            nonlocal index
            index += 1
            e = Entry(index, 1, EntryType.NORMAL, data)
            state.on_log_append([e])
            log.append([e])
            log.sync()
            replica.apply([e])

        append(b"")  # the leader's no-op
        for i in range(30):
            stamped, _b, _l = state.stamp(make_batch(1, ts=i, value=b"x" * 300))
            append(stamped)
        assert len(log.segments()) > 3
        assert await replica.maybe_apply_retention() is None  # no cut of its own
        assert log.first_index() == 1 and state.log_start_offset == 0
        assert not g.logger.named("log_start_proposed")
        # the leader (another layout) decided offset 12: entry 13 holds it
        append(encode_log_start(12))
        assert state.log_start_offset == 12
        first = await replica.maybe_apply_retention()
        assert first is not None and 1 < first <= 13  # whole segments below 12 only
        assert state.log_start_offset == 12
        assert await replica.maybe_apply_retention() is None  # nothing more below it
        log.close()

    run(main())


def test_a_new_leader_reads_only_after_applying_its_first_entry() -> None:
    async def main() -> None:
        g = Group(CountingFS(), PartitionConfig())
        g.elect()
        await g.produce(3)
        # as if a new term began and its no-op is not applied yet
        g.replica.on_soft_state(SoftState(leader_id=1, role=Role.LEADER), g.node.term + 1)
        assert not g.replica.read_ready
        with pytest.raises(BrokerError) as err:
            await g.replica.fetch(0, 1 << 20)
        assert err.value.code == "LEADER_NOT_AVAILABLE" and err.value.retriable
        assert g.replica.maybe_propose_log_start([(1, 2, 10**9), (3, 3, 0)]) is None
        g.log.close()

    run(main())


def test_fetch_reads_old_segments_in_the_executor_and_memory_on_the_loop() -> None:
    """Issue 13: the loop never preads a segment. Old entries (outside the log's tail cache)
    are read on the ``fetch-7`` lane; entries in the cache are served with no executor hop."""

    async def main() -> None:
        fs = CountingFS()
        g = Group(fs, PartitionConfig(), segment_bytes=4096, cache_bytes=2000)
        g.elect()
        await g.produce(60, size=150)
        state = g.replica.state
        hw = state.high_watermark
        reference = {}
        for offset in range(state.log_start_offset, hw + 1):
            reference[offset] = g.replica.fetch_once(offset, 700)  # blocking, for comparison
        fs.loop_preads = 0
        g.executor.lanes.clear()
        for offset, expected in reference.items():
            assert await g.replica.fetch(offset, 700) == expected
        assert fs.loop_preads == 0
        assert g.executor.lanes and set(g.executor.lanes) == {"fetch-7"}
        # the hot path: the newest records come from memory, no executor hop at all
        g.executor.lanes.clear()
        got = await g.replica.fetch(hw - 1, 1 << 20)
        assert got.batches and g.executor.lanes == [] and fs.loop_preads == 0
        # a fetch larger than one read: several executor reads, one answer
        expected_all = g.replica.fetch_once(0, 1 << 30)
        g.executor.lanes.clear()
        fs.loop_preads = 0
        assert await g.replica.fetch(0, 1 << 30) == expected_all
        assert g.executor.lanes and fs.loop_preads == 0
        g.log.close()

    run(main())


def test_an_acks_leader_produce_that_timed_out_leaves_no_offsets_behind() -> None:
    """A caller that timed out leaves its waiter done; once the entry is durable on the leader
    its offsets must go too (they stayed until the next step-down; fresh-eye review)."""

    async def main() -> None:
        g = Group(CountingFS(), PartitionConfig())
        g.elect()
        with pytest.raises(BrokerError) as info:
            await g.replica.produce(make_batch(1), acks_leader=True, timeout_s=0.001)
        assert info.value.code == "REQUEST_TIMED_OUT"
        assert len(g.replica._leader_offsets) == 1  # proposed, not yet durable
        g.drive()
        g.replica.on_persisted(g.log.last_index())
        assert g.replica._leader_offsets == {}
        # and a live acks=leader produce is still answered with its offsets
        task = asyncio.ensure_future(
            g.replica.produce(make_batch(2), acks_leader=True, timeout_s=5)
        )
        await asyncio.sleep(0)
        g.drive()
        g.replica.on_persisted(g.log.last_index())
        result = await task
        assert (result.last_offset - result.base_offset, result.duplicate) == (1, False)
        assert g.replica._leader_offsets == {}

    run(main())
