"""The runtime turn with fakes: real RawNodes over in-memory logs, a hand-driven executor, a
transport that only records. Each test names the #12 defect it guards."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from partition.errors import PartitionInvariantError
from raft.config import RaftConfig
from raft.memory import MemoryStorage
from raft.rawnode import RawNode
from raft.types import ConfState, Entry, HardState, ReadState, Snapshot, SoftState
from server.env import then_via_future
from server.runtime import Group, Runtime


class FakeLog(MemoryStorage):
    """MemoryStorage plus the DurableLog calls the runtime makes."""

    def __init__(self, voters: frozenset[int]) -> None:
        super().__init__(conf_state=ConfState(voters=voters))
        self.fail_append: OSError | None = None
        self.fail_sync: OSError | None = None
        self.syncs = 0
        self.closed = False

    def append(self, entries: Sequence[Entry]) -> None:
        if self.fail_append is not None:
            raise self.fail_append
        super().append(entries)

    def save_hard_state(self, hs: HardState) -> None:
        self.set_hard_state(hs)

    def sync(self) -> None:
        if self.closed:
            raise ValueError("log is closed")
        if self.fail_sync is not None:
            raise self.fail_sync
        self.syncs += 1

    def close(self) -> None:
        self.closed = True


class FakeReplica:
    def __init__(self, fail_apply: BaseException | None = None) -> None:
        self.applied: list[Entry] = []
        self.persisted: list[int] = []
        self.stopped: BaseException | None = None
        self.fail_apply = fail_apply

    def on_log_append(self, entries: Sequence[Entry]) -> None:
        pass

    def on_snapshot(self, snapshot: Snapshot) -> None:
        pass

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        pass

    def apply(self, entries: Sequence[Entry]) -> None:
        if self.fail_apply is not None and any(e.data for e in entries):
            raise self.fail_apply
        self.applied.extend(entries)

    def on_persisted(self, last_index: int) -> None:
        self.persisted.append(last_index)

    def on_read_states(self, read_states: Sequence[ReadState]) -> None:
        pass

    def on_stopped(self, reason: BaseException | None) -> None:
        self.stopped = reason


class ManualExecutor:
    """Jobs wait until the test runs them: the test decides when the disk answers."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = []

    def submit(self, lane: str, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.jobs.append((lane, fn, args, fut))
        return fut

    def submit_then(self, lane: str, fn: Callable[..., Any], args: Any, then: Any) -> None:
        then_via_future(self, lane, fn, args, then)

    def run_all(self, lane: str | None = None) -> None:
        keep = []
        for job in self.jobs:
            job_lane, fn, args, fut = job
            if lane is not None and job_lane != lane:
                keep.append(job)
                continue
            try:
                fut.set_result(fn(*args))
            except Exception as exc:
                fut.set_exception(exc)
        self.jobs = keep

    def shutdown(self) -> None:
        pass


class RecordingTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[int, Any]] = []

    def enqueue(self, group_id: int, msg: Any) -> None:
        self.sent.append((group_id, msg))

    def flush(self) -> None:
        pass

    def keepalive(self) -> None:
        pass

    def mark_quiesced(self, peer_id: int, group_id: int) -> None:
        pass


def make_runtime() -> tuple[Runtime, ManualExecutor]:
    executor = ManualExecutor()
    rt = Runtime(
        node_id=1,
        tick_ms=10,
        transport=RecordingTransport(),  # type: ignore[arg-type]
        executor=executor,
        log=_NullLog(),
        seed=7,
    )
    return rt, executor


class _NullLog:
    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *a, **k: None


def add_single_voter_group(
    rt: Runtime, group_id: int, replica: FakeReplica | None = None
) -> tuple[Group, FakeLog, FakeReplica]:
    log = FakeLog(frozenset({1}))
    node = RawNode(RaftConfig(node_id=1), log, rt.new_rng())
    replica = replica or FakeReplica()
    group = Group(group_id, node, log, replica)  # type: ignore[arg-type]
    rt.add_group(group)
    node.campaign()
    return group, log, replica


async def settle(rt: Runtime, executor: ManualExecutor, rounds: int = 6) -> None:
    """Turns and disk completions until nothing moves (callbacks run on the loop)."""
    for _ in range(rounds):
        rt.run_turn()
        executor.run_all()
        await asyncio.sleep(0)
        await asyncio.sleep(0)


def data_entries(replica: FakeReplica) -> list[bytes]:
    return [e.data for e in replica.applied if e.data]


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def test_a_failed_sync_fails_only_its_own_group() -> None:
    """Guards #12 defect 4: a sync job that raised (a topic deleted under load closed its log)
    used to fail every group of that job, the metadata replica included."""

    async def body() -> None:
        rt, ex = make_runtime()
        a, log_a, rep_a = add_single_voter_group(rt, 10)
        b, _log_b, rep_b = add_single_voter_group(rt, 11)
        await settle(rt, ex)
        assert a.node.role.name == "LEADER" and b.node.role.name == "LEADER"
        a.node.propose(b"a1")
        b.node.propose(b"b1")
        rt.touch(10)
        rt.touch(11)
        log_a.close()  # deleted under load: its pending sync now raises
        await settle(rt, ex)
        assert a.failed is not None and "closed" in str(a.failed)
        assert rep_a.stopped is a.failed
        assert b.failed is None
        assert data_entries(rep_b) == [b"b1"]
        b.node.propose(b"b2")
        rt.touch(11)
        await settle(rt, ex)
        assert data_entries(rep_b) == [b"b1", b"b2"]

    run(body)


def test_a_state_machine_invariant_error_stops_one_group_and_the_turn_goes_on() -> None:
    """Guards #12 defect 5: PartitionInvariantError escaped per-group isolation and aborted the
    whole turn for every group."""

    async def body() -> None:
        rt, ex = make_runtime()
        bad = FakeReplica(fail_apply=PartitionInvariantError("apply order", 1, 2, "a test"))
        a, _la, _ra = add_single_voter_group(rt, 10, bad)
        b, _lb, rep_b = add_single_voter_group(rt, 11)
        await settle(rt, ex)
        a.node.propose(b"poison")
        b.node.propose(b"fine")
        rt.touch(10)
        rt.touch(11)
        await settle(rt, ex)
        assert isinstance(a.failed, PartitionInvariantError)
        assert b.failed is None and data_entries(rep_b) == [b"fine"]
        assert 10 in rt.failed_groups() and 11 not in rt.failed_groups()

    run(body)


def test_fail_group_stops_one_group_from_outside_its_turn() -> None:
    """The transport reports a message it could not encode through ``fail_group`` (not in a
    turn): that group stops like any other failed group, the others keep committing, and an
    unknown group id is ignored."""

    async def body() -> None:
        rt, ex = make_runtime()
        a, _la, rep_a = add_single_voter_group(rt, 10)
        b, _lb, rep_b = add_single_voter_group(rt, 11)
        await settle(rt, ex)
        error = ValueError("Value out of range: -1")
        rt.fail_group(10, error)
        rt.fail_group(99, error)
        assert a.failed is error and rep_a.stopped is error
        assert rt.failed_groups() == {10: error}
        b.node.propose(b"after")
        rt.touch(11)
        await settle(rt, ex)
        assert data_entries(rep_b) == [b"after"]

    run(body)


def test_a_failed_disk_write_acknowledges_nothing() -> None:
    """Guards #12 defect 12: an OSError from log.append escaped the turn, the group was not
    marked failed, and a later Ready with no entries was reported persisted at once, releasing
    a held acknowledgement for data that never reached the disk."""

    async def body() -> None:
        rt, ex = make_runtime()
        a, log_a, rep_a = add_single_voter_group(rt, 10)
        await settle(rt, ex)
        applied_before = len(rep_a.applied)
        persisted_before = list(rep_a.persisted)
        log_a.fail_append = OSError(errno.ENOSPC, "No space left on device")
        a.node.propose(b"lost")
        rt.touch(10)
        await settle(rt, ex)
        assert isinstance(a.failed, OSError)
        # Time passes, more proposals arrive: nothing is driven, nothing is acknowledged.
        for _ in range(20):
            rt.tick_all(0.0)
        await settle(rt, ex)
        assert len(rep_a.applied) == applied_before
        assert b"lost" not in data_entries(rep_a)
        assert rep_a.persisted == persisted_before

    run(body)


def test_a_ready_is_reported_persisted_only_after_the_jobs_before_it() -> None:
    """Persistence completes in Ready order per group: a Ready with nothing of its own to write
    waits behind the job still in flight (otherwise on_persisted would release earlier
    acknowledgements before their fsync)."""

    async def body() -> None:
        rt, ex = make_runtime()
        a, log_a, rep_a = add_single_voter_group(rt, 10)
        await settle(rt, ex)
        a.node.propose(b"x")
        rt.touch(10)
        rt.run_turn()  # writes x, submits its sync
        assert any(lane == a.lane for lane, *_ in ex.jobs)
        rt.tick_all(0.0)  # a later Ready (ticks) without entries
        rt.run_turn()
        assert b"x" not in data_entries(rep_a)  # not committed: its sync has not run
        syncs_before = log_a.syncs
        ex.run_all()
        await settle(rt, ex)
        assert log_a.syncs > syncs_before
        assert data_entries(rep_a) == [b"x"]

    run(body)


def test_a_quiesced_leader_cut_off_from_its_peers_steps_down() -> None:
    """A leader whose peers' nodes fell silent used to wake (on_wake resets its CheckQuorum
    clock), re-quiesce three ticks later because its followers' progress still looked caught
    up, wake again on the next tick, and so on: it never reached CheckQuorum and stayed a
    zombie leader of an old term, answering ListOffsets and Fetch with a stale high
    watermark after the real leader had moved on (system simulation, default seed 973: an
    acknowledged record "lost" from a final read served by the isolated broker). A leader
    must not quiesce while a peer of the group is silent, so CheckQuorum runs."""
    from raft.types import Message, MessageType, Role

    async def scenario() -> None:
        rt, executor = make_runtime()
        log = FakeLog(frozenset({1, 2, 3}))
        node = RawNode(RaftConfig(node_id=1), log, rt.new_rng())
        group = Group(5, node, log, FakeReplica())  # type: ignore[arg-type]
        rt.add_group(group)
        node.campaign()
        await settle(rt, executor)
        for kind in (MessageType.PRE_VOTE_RESP, MessageType.VOTE_RESP):
            rt.step(
                5,
                Message(kind, to=1, from_=2, term=node.term + (kind == MessageType.PRE_VOTE_RESP)),
            )
            await settle(rt, executor)
        assert node.role == Role.LEADER
        last = log.last_index()
        for peer in (2, 3):
            rt.step(5, Message(MessageType.APP_RESP, to=1, from_=peer, term=node.term, index=last))
        await settle(rt, executor)
        now = 0.0
        for peer in (2, 3):
            rt.on_peer_batch(peer, now)
        for _ in range(10):  # peers answer heartbeats: the idle leader quiesces
            now += rt.tick_s
            rt.tick_all(now)
            for peer in (2, 3):
                rt.on_peer_batch(peer, now)
                rt.step(5, Message(MessageType.HEARTBEAT_RESP, to=1, from_=peer, term=node.term))
            await settle(rt, executor)
        assert group.quiesced
        for _ in range(200):  # 2 s of silence from both peers: 40 election timeouts
            now += rt.tick_s
            rt.tick_all(now)
            await settle(rt, executor)
            if node.role != Role.LEADER:
                break
        assert node.role != Role.LEADER

    run(scenario)


def test_a_leader_with_one_silent_peer_of_two_stays_quiet_and_leads() -> None:
    """One replica of three down: the leader still hears a majority, so the group stays
    quiesced (no CPU for 1,000 idle partitions while a broker is away) and keeps its leader."""
    from raft.types import Message, MessageType, Role

    async def scenario() -> None:
        rt, executor = make_runtime()
        log = FakeLog(frozenset({1, 2, 3}))
        node = RawNode(RaftConfig(node_id=1), log, rt.new_rng())
        group = Group(5, node, log, FakeReplica())  # type: ignore[arg-type]
        rt.add_group(group)
        node.campaign()
        await settle(rt, executor)
        for kind in (MessageType.PRE_VOTE_RESP, MessageType.VOTE_RESP):
            term = node.term + (kind == MessageType.PRE_VOTE_RESP)
            rt.step(5, Message(kind, to=1, from_=2, term=term))
            await settle(rt, executor)
        last = log.last_index()
        for peer in (2, 3):
            rt.step(5, Message(MessageType.APP_RESP, to=1, from_=peer, term=node.term, index=last))
        await settle(rt, executor)
        now = 0.0
        rt.on_peer_batch(3, now)  # node 3 is heard once, then goes silent for good
        for _ in range(200):
            now += rt.tick_s
            rt.tick_all(now)
            rt.on_peer_batch(2, now)
            if not group.quiesced:
                rt.step(5, Message(MessageType.HEARTBEAT_RESP, to=1, from_=2, term=node.term))
            await settle(rt, executor)
        assert node.role == Role.LEADER
        assert group.quiesced

    run(scenario)
