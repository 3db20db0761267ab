"""Partition checkpoints on a (simulated) disk: a restart from a checkpoint reaches the state a
full replay of the retained log reaches; an unusable checkpoint is logged and ignored; the
replica writes one every ``checkpoint_interval_bytes`` and at shutdown (server/checkpoint.py)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from partition import Append, PartitionConfig, PartitionState
from raft.config import RaftConfig
from raft.rawnode import RawNode
from raft.storage import DurableLog
from raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMetadata,
)
from server.checkpoint import CHECKPOINT_FILE, CheckpointStore
from server.partition_replica import LoadedPartition, PartitionReplica, load_partition_state
from tests.partition.test_support import make_batch
from tests.raft.memfs import MemFS

CS = ConfState(voters=frozenset({1}))
DIR = "/data/partitions/7"


class Logger:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _log(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    info = warning = error = debug = _log

    def names(self) -> list[str]:
        return [e for e, _ in self.events]


def config(interval: int = 64 << 20) -> PartitionConfig:
    return PartitionConfig(checkpoint_interval_bytes=interval, segment_bytes=1 << 20)


def open_log(fs: MemFS) -> DurableLog:
    return DurableLog(DIR, conf_state=CS, fs=fs, segment_bytes=4096)


def write_log(fs: MemFS, ops: list[tuple[Any, ...]]) -> tuple[PartitionState, list[Entry]]:
    """A leader's log of ``ops`` (data / idempotent batches, no-ops, conf changes), appended,
    synced and applied; commit = last."""
    state = PartitionState(config())
    log = open_log(fs)
    entries: list[Entry] = []
    for i, o in enumerate(ops):
        index = len(entries) + 1
        if o[0] == "noop":
            e = Entry(index, 1, EntryType.NORMAL, b"")
        elif o[0] == "conf":
            cc = ConfChange(ConfChangeType.ADD_LEARNER, o[1])
            e = Entry(index, 1, EntryType.CONF_CHANGE, cc.encode())
        else:
            _, pid, seq, n = o
            batch = make_batch(n, pid=pid, epoch=0 if pid >= 0 else -1, seq=seq, ts=1000 + i)
            data, _, _ = state.stamp(batch)  # stamp, not admit: duplicates and gaps happen
            e = Entry(index, 1, EntryType.NORMAL, data)
        state.on_log_append([e])
        log.append([e])
        log.sync()
        state.apply(e)
        entries.append(e)
    log.save_hard_state(HardState(1, 1, len(entries)))
    log.sync()
    log.close()
    return state, entries


def conf_through(entries: list[Entry], index: int) -> ConfState:
    from server.partition_replica import next_conf_state

    conf = CS
    for e in entries[:index]:
        if e.type == EntryType.CONF_CHANGE:
            conf = next_conf_state(conf, e)
    return conf


def restart(fs: MemFS, store: CheckpointStore | None) -> tuple[PartitionState, LoadedPartition]:
    """Open as the broker does and drain the core until everything committed is applied."""
    log = open_log(fs)
    loaded = load_partition_state(log, lambda: PartitionState(config()), store)
    state = loaded.state
    node = RawNode(
        RaftConfig(node_id=1),
        log,
        random.Random(1),
        applied=loaded.applied,
        applied_conf_state=loaded.conf_state if loaded.applied is not None else None,
    )
    while node.has_ready():
        rd = node.ready()
        for e in rd.committed_entries:
            state.apply(e)
        if rd.committed_entries:
            node.advance_apply(rd.committed_entries[-1].index)
        node.on_persisted(rd.number)
    assert state.applied_index == log.last_index()
    if loaded.applied is not None:
        reference = RawNode(RaftConfig(node_id=1), log, random.Random(1))
        assert node.status().conf_state == reference.status().conf_state
    log.close()
    return state, loaded


def observable(state: PartitionState, fs: MemFS) -> tuple[Any, ...]:
    log = open_log(fs)
    fetched = []
    for offset in range(state.log_start_offset, state.high_watermark + 1):
        r = state.fetch(offset, 1 << 20, log.entries)
        fetched.append((offset, r.batches, r.next_offset))
    log.close()
    decisions = [
        state.admit(make_batch(1, pid=pid, epoch=0, seq=seq, ts=5000))
        for pid in range(3)
        for seq in range(8)
    ]
    return (
        state.snapshot(),
        state.log_start_offset,
        state.next_offset(),
        dict(state.producer_table()),
        fetched,
        decisions,
    )


op = st.one_of(
    st.tuples(st.just("data"), st.just(-1), st.just(-1), st.integers(1, 3)),
    st.tuples(st.just("idem"), st.integers(0, 2), st.integers(0, 6), st.integers(1, 3)),
    st.tuples(st.just("noop")),
    st.tuples(st.just("conf"), st.integers(2, 4)),
)


@settings(max_examples=25, deadline=None)
@given(ops=st.lists(op, min_size=1, max_size=25), data=st.data())
def test_restart_from_checkpoint_equals_full_replay(
    ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    fs = MemFS()
    _, entries = write_log(fs, ops)
    a = data.draw(st.integers(0, len(entries)), label="checkpoint index")
    # the state at a, as the live replica had it
    live = PartitionState(config())
    for e in entries[:a]:
        live.apply(e)
    logger = Logger()
    store = CheckpointStore(fs, DIR, 7, logger)
    store.save(live.capture_checkpoint(conf_through(entries, a)))
    fs.crash(power_loss=True)  # the checkpoint was written durably
    assert CHECKPOINT_FILE in fs.names(DIR)

    replayed, plain = restart(fs, None)
    restored, loaded = restart(fs, store)
    assert plain.applied is None
    assert loaded.applied == a and "partition_checkpoint_ignored" not in logger.names()
    assert observable(restored, fs) == observable(replayed, fs)


def checkpointed(n: int = 12) -> tuple[MemFS, list[Entry], CheckpointStore, Logger]:
    fs = MemFS()
    state, entries = write_log(fs, [("idem", 1, 2 * i, 2) for i in range(n)])
    logger = Logger()
    store = CheckpointStore(fs, DIR, 7, logger)
    store.save(state.capture_checkpoint(CS))
    return fs, entries, store, logger


def test_a_damaged_checkpoint_is_logged_and_ignored() -> None:
    fs, _, store, logger = checkpointed()
    path = f"{DIR}/{CHECKPOINT_FILE}"
    good = fs.read_bytes(path)
    fs.write_bytes(path, good[:40] + bytes([good[40] ^ 1]) + good[41:])
    replayed, _ = restart(fs, None)
    restored, loaded = restart(fs, store)
    assert loaded.applied is None
    event, fields = logger.events[-1]
    assert event == "partition_checkpoint_ignored" and "CRC" in fields["reason"]
    assert observable(restored, fs) == observable(replayed, fs)
    fs.write_bytes(path, b"")
    assert restart(fs, store)[1].applied is None


def test_a_checkpoint_older_than_a_retention_cut_is_ignored() -> None:
    fs, entries, store, logger = checkpointed()
    # checkpoint at 12; a later cut at 14 (the log grew, then retention took a snapshot)
    log = open_log(fs)
    state = PartitionState(config())
    state.on_log_append(entries)
    for e in entries:
        state.apply(e)
    more: list[Entry] = []
    for i in range(12, 16):
        data, _, _ = state.stamp(make_batch(2, pid=1, epoch=0, seq=2 * i, ts=2000))
        more.append(Entry(len(entries) + len(more) + 1, 1, EntryType.NORMAL, data))
        state.on_log_append(more[-1:])
        state.apply(more[-1])
    log.append(more)
    log.sync()
    log.save_hard_state(HardState(1, 1, 16))
    snap_state = PartitionState(config())
    for e in [*entries, *more][:14]:
        snap_state.apply(e)
    log.save_snapshot(Snapshot(SnapshotMetadata(14, 1, CS), snap_state.snapshot()))
    log.compact(14)
    log.close()
    restored, loaded = restart(fs, store)
    assert loaded.applied is None
    assert "older than the snapshot at index 14" in logger.events[-1][1]["reason"]
    assert observable(restored, fs) == observable(restart(fs, None)[0], fs)


def test_a_checkpoint_beyond_the_log_or_with_another_term_is_ignored() -> None:
    fs, _, store, logger = checkpointed()
    other = MemFS()
    state, _ = write_log(other, [("idem", 1, 2 * i, 2) for i in range(20)])
    store.save(state.capture_checkpoint(CS))  # from a longer log
    assert restart(fs, store)[1].applied is None
    assert "beyond the log's last index 12" in logger.events[-1][1]["reason"]


def test_disabled_checkpoints_are_not_read() -> None:
    fs, _, store, logger = checkpointed()
    log = open_log(fs)
    loaded = load_partition_state(log, lambda: PartitionState(config(-1)), store)
    log.close()
    assert loaded.applied is None and logger.events == []


# ----------------------------------------------------------------------------- the replica


class InlineExecutor:
    """Runs each job at once on the loop (the test's disk answers immediately)."""

    def __init__(self) -> None:
        self.lanes: list[str] = []

    def submit(self, lane: str, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        self.lanes.append(lane)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            fut.set_result(fn(*args))
        except Exception as e:
            fut.set_exception(e)
        return fut

    def shutdown(self) -> None:
        pass


def test_the_replica_writes_checkpoints_by_applied_bytes_and_at_shutdown() -> None:
    async def run() -> None:
        fs = MemFS()
        log = open_log(fs)
        logger = Logger()
        store = CheckpointStore(fs, DIR, 7, logger)
        cfg = config(interval=3000)
        loaded = load_partition_state(log, lambda: PartitionState(cfg), store)
        executor = InlineExecutor()
        replica = PartitionReplica(
            group_id=7,
            topic="t",
            partition=0,
            replicas=(1,),
            node=RawNode(RaftConfig(node_id=1), log, random.Random(1)),
            log=log,
            state=loaded.state,
            make_state=lambda: PartitionState(cfg),
            touch=lambda _g: None,
            leader_address=lambda _n: "",
            on_leader_change=lambda *_a: None,
            logger=logger,
            executor=executor,
            wall_clock_ms=lambda: 1000,
            checkpoints=store,
            conf_state=loaded.conf_state,
        )
        state = replica.state
        entries: list[Entry] = []
        for i in range(10):
            if i == 5:
                cc = ConfChange(ConfChangeType.ADD_LEARNER, 2)
                e = Entry(i + 1, 1, EntryType.CONF_CHANGE, cc.encode())
            else:
                batch = make_batch(8, pid=3, epoch=0, seq=8 * (i - (i > 5)), value=b"v" * 100)
                admission = state.admit(batch)
                assert isinstance(admission, Append)
                e = Entry(i + 1, 1, EntryType.NORMAL, admission.data)
            state.on_log_append([e])
            log.append([e])
            entries.append(e)
            replica.apply([e])
            await asyncio.sleep(0)  # the write's completion callback
        log.sync()
        written = [f["index"] for ev, f in logger.events if ev == "partition_checkpoint_written"]
        assert written and written == sorted(set(written))
        assert set(executor.lanes) == {"group-7"}
        assert await replica.save_checkpoint() == 10
        assert await replica.save_checkpoint() is None  # nothing new
        image = store.load(keep=5, expiry_ms=-1)
        assert image is not None and image.index == 10
        assert image.conf_state == ConfState(voters=frozenset({1}), learners=frozenset({2}))
        log.save_hard_state(HardState(1, 1, 10))
        log.sync()
        log.close()

    asyncio.run(run())
