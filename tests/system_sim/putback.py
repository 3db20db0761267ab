"""Put-back defects: issue 12's defects restored by patches that live in the tests, so that
``test_putback.py`` can show the system simulation finds each of them (issue 13, "It must
catch what was missed").

Contract: :func:`putback(defect)` is a context manager that swaps functions, methods or
attributes of the product (never a switch in the product) so that it behaves as it did before
the fix of issue 12's defect ``defect``, and restores every one of them on exit. Each patch
restores the ORIGINAL behaviour as closely as the current code allows (the commit that fixed
it is named in each patch's docstring). :data:`TARGETS` holds, per defect, the targeted
configuration under which the simulation exposes it (fault profile, broker settings, workload,
budget, and when a defect needs one, an extra checker and a node hook that samples the nodes).
:func:`hunt` runs seeds sequentially and stops at the first violating one.

Also here: what the simulation itself lacks for some defects, kept out of the shared harness
files: :func:`page_cache_survives_sigkill` (a SIGKILL keeps written pages, as a real kernel
does: needed to see #9, fsync=never) and checkers that sample the nodes while they run
(retention keeps cutting, #16; partition snapshots stay bounded, #17).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from metadata.state import MetadataState
from partition.errors import OffsetOutOfRange, PartitionInvariantError
from partition.state import FetchResult, PartitionState
from raft import core as raft_core
from raft.log import RaftLog
from raft.storage.durable_log import DurableLog
from raft.types import Message
from server import node as node_mod
from server.node import BrokerNode
from server.reconcile import Plan
from server.runtime import Group, Runtime
from tests.system_sim.cluster import BrokerSettings
from tests.system_sim.faults import FaultProfile
from tests.system_sim.fs import SimDisk, _Dir, _File
from tests.system_sim.runner import Budget, SeedResult, run_seed
from tests.system_sim.workload import WorkloadConfig

__all__ = [
    "Harness",
    "InjectApplyError",
    "KeepLoadOnDeletedTopic",
    "LateProduceCopy",
    "LinkSizeLimit",
    "PageCache",
    "RaftOptions",
    "ProducerChurn",
    "VoteCrash",
    "RetentionKeepsCutting",
    "SlowPeerLinks",
    "detected",
    "TARGETS",
    "Target",
    "hunt",
    "page_cache_survives_sigkill",
    "putback",
    "run_target",
    "swap",
]


# ---------------------------------------------------------------------------- plumbing


@contextlib.contextmanager
def swap(obj: Any, name: str, value: Any) -> Iterator[None]:
    """``obj.name = value`` for the duration; the old attribute restored on exit."""
    had = name in vars(obj) if isinstance(obj, type) else hasattr(obj, name)
    old = getattr(obj, name) if had else None
    if isinstance(obj, type) and name in vars(obj):
        old = vars(obj)[name]  # keep staticmethod/classmethod wrappers as they were
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)


# ---------------------------------------------------------------------------- #1 reconcile


def _plan_before_fix(
    state: MetadataState,
    node_id: int,
    local: Mapping[int, tuple[int, ...]],
    opening: set[int],
    caught_up: bool,
) -> Plan:
    """server/reconcile.py before 251fd4e (Broker._reconcile): a local group that no
    assignment of the (possibly stale) replayed state names is deleted, and missing replicas
    are opened, whether or not the metadata replica has caught up and whatever next_group_id
    says."""
    del caught_up
    wanted = {a.group_id: a for a in state.assignments_for(node_id)}
    known = {a.group_id for a in state.all_assignments()}
    out = Plan()
    for group_id, a in sorted(wanted.items()):
        replicas = local.get(group_id)
        if replicas is None:
            if group_id not in opening:
                out.open.append(a)
        elif replicas != a.replicas:
            out.update_replicas.append(a)
    for group_id in sorted(local):
        if group_id not in wanted and group_id not in known:
            out.delete.append(group_id)
    return out


def _patch_1(stack: contextlib.ExitStack) -> None:
    stack.enter_context(swap(node_mod, "plan", _plan_before_fix))


# ---------------------------------------------------------------------------- #2 restart index


def _patch_2(stack: contextlib.ExitStack) -> None:
    """raft/log.py before 3d844de: applied/committed restart at ``first_index - 1``, not at the
    snapshot index (compaction keeps whole segments, so entries the snapshot covers are handed
    out again). The metadata's later defence (27330ff: skip entries at or below the restored
    snapshot) is removed too, so those entries meet ``MetadataState.apply`` as they did."""
    original_init = RaftLog.__init__

    def init(self: RaftLog, storage: Any, applied: int | None = None) -> None:
        original_init(self, storage, applied)
        if applied is None:
            base = storage.first_index() - 1
            self.committed = self.applying = self.applied = base

    restore = MetadataState.__dict__["restore"].__func__

    def restore_without_defence(cls: type[MetadataState], data: bytes) -> MetadataState:
        state: MetadataState = restore(cls, data)
        state._snapshot_index = 0
        return state

    stack.enter_context(swap(RaftLog, "__init__", init))
    stack.enter_context(swap(MetadataState, "restore", classmethod(restore_without_defence)))


# ---------------------------------------------------------------------------- #3 vote order


def _patch_3(stack: contextlib.ExitStack) -> None:
    """raft/core.py before 3d844de: the grant goes through send() before self.vote is set, so
    hold_tag() sees no unpersisted change (a grant at the node's current term) and the grant
    leaves before the vote is durable."""
    mt = raft_core._MT

    def handle_vote_request(self: Any, m: Message) -> None:
        resp_type = mt.VOTE_RESP if m.type is mt.VOTE else mt.PRE_VOTE_RESP
        if self.can_grant_vote(m):
            self.send(Message(resp_type, m.from_, self.id, m.term))
            if m.type is mt.VOTE:
                self.election_elapsed = 0
                self.vote = m.from_
            self.report("vote_granted", candidate=m.from_, vote_type=m.type.name)
        else:
            self.send(Message(resp_type, m.from_, self.id, self.term, reject=True))

    stack.enter_context(swap(raft_core.Raft, "handle_vote_request", handle_vote_request))


# ---------------------------------------------------------------------------- #4 shared sync job


def _patch_4(stack: contextlib.ExitStack) -> None:
    """server/runtime.py before 251fd4e: one persistence job per turn for every group (here:
    one shared lane), a failed job fails every group it covered (here: every group with a job
    in flight), and deleting a topic closed its log at once, while a job still listed it
    (``ValueError: log ... is closed`` fails the metadata replica and every other group)."""

    original_group_init = Group.__init__

    def group_init(self: Group, *args: Any, **kwargs: Any) -> None:
        original_group_init(self, *args, **kwargs)
        self.lane = "sync-all-groups"

    def on_synced(
        self: Runtime,
        group: Group,
        number: int,
        last: int,
        error: BaseException | None,
        behind: list[int] | None = None,
    ) -> None:
        # (The runtime hands the job's outcome over as ``error`` since 99008a3; the defect is
        # about what a failed shared job does, not how its outcome arrives.)
        group.jobs_in_flight -= 1
        cancelled = isinstance(error, asyncio.CancelledError)
        if error is not None and not cancelled:
            covered = [g for g in self.groups.values() if g.jobs_in_flight > 0 or g is group]
            for g in covered:
                self._fail(g, error)
            return
        if group.failed is not None or group.removed:
            return
        if cancelled:
            self._fail(group, RuntimeError("persistence job cancelled"))
            return
        try:
            group.node.on_persisted((behind[0] if behind else 0) or number)
            if last:
                group.replica.on_persisted(last)
        except Exception as exc:
            self._fail(group, exc)
            return
        self._touched.add(group.group_id)
        self._wake.set()

    async def close_log(self: Runtime, group: Group) -> None:
        group.log.close()  # at once, on the loop: a queued job may still list this log

    stack.enter_context(swap(Group, "__init__", group_init))
    stack.enter_context(swap(Runtime, "_on_synced", on_synced))
    stack.enter_context(swap(Runtime, "close_log", close_log))


# ---------------------------------------------------------------------------- #6 snapshot report


def _patch_6(stack: contextlib.ExitStack) -> None:
    """Before 74bdd7e only the simulation of tests/sim called report_snapshot: the broker never
    told the core whether a snapshot reached its follower."""

    def report_snapshot(self: Runtime, peer_id: int, group_id: int, ok: bool) -> None:
        return None

    stack.enter_context(swap(Runtime, "report_snapshot", report_snapshot))


# ---------------------------------------------------------------------------- #7 out of range


def _patch_7(stack: contextlib.ExitStack) -> None:
    """partition/state.py before 11a6985: a fetch above the high watermark (a new leader's
    trails its predecessor's until its no-op commits) answered OFFSET_OUT_OF_RANGE; and the
    consumer before 60d0cdd applied auto_offset_reset at once (here: its retry window is
    0 ms), so a consumer reset to "latest" skipped records. Also back: any leader serves
    reads at once (before 05ca412, a new leader did not wait to apply an entry of its term)."""
    original_fetch = PartitionState.fetch

    def fetch(self: PartitionState, offset: int, max_bytes: int, read: Any) -> Any:
        start, hw = self.log_start_offset, self._hw
        if offset < start or offset > hw:
            raise OffsetOutOfRange(offset, start, hw)
        return original_fetch(self, offset, max_bytes, read)

    from client.config import ConsumerConfig

    original_post_init = getattr(ConsumerConfig, "__post_init__", None)

    def post_init(self: Any) -> None:
        if original_post_init is not None:
            original_post_init(self)
        object.__setattr__(self, "out_of_range_retry_ms", 0.0)

    stack.enter_context(swap(PartitionState, "fetch", fetch))
    stack.enter_context(swap(ConsumerConfig, "__post_init__", post_init))
    from server.partition_replica import PartitionReplica

    if hasattr(PartitionReplica, "ensure_readable"):
        # 05ca412 later made a new leader refuse reads until it applied an entry of its term
        # (its high watermark is then current): before, any leader served fetches.
        stack.enter_context(
            swap(PartitionReplica, "ensure_readable", PartitionReplica.ensure_leader)
        )
        # ... and made a fetch stream opened on such a leader wait (long-poll) for that apply
        # first: fetch_stream without that wait.
        stack.enter_context(swap(PartitionReplica, "fetch_stream", _fetch_stream_at_once))


async def _fetch_stream_at_once(
    self: Any, offset: int, max_bytes: int, max_wait_s: float, follow: bool
) -> Any:
    """server/partition_replica.py ``fetch_stream`` without its first step (05ca412: a new
    leader's stream waits until the leader applied an entry of its term)."""
    while True:
        self.ensure_readable()
        first = self._fetch_pass(offset, max_bytes, None)
        result = first if isinstance(first, FetchResult) else await self.fetch(offset, max_bytes)
        if result.batches or result.next_offset > offset:
            yield result
            offset = result.next_offset
            if not follow:
                return
            continue
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._fetch_waiters.append((offset, fut))
        try:
            await asyncio.wait_for(fut, max_wait_s)
        except TimeoutError:
            if not follow:
                yield result
                return
        finally:
            if not fut.done():
                fut.cancel()
        if self.stopped is not None:
            raise self._not_leader()


# ---------------------------------------------------------------------------- #9 fsync=never


def _patch_9(stack: contextlib.ExitStack) -> None:
    """Before 01a52a9/3d844de, ``storage.fsync=never`` wrote term and vote only at close(): no
    sync job ran in "never" mode, and save_hard_state only buffered the change."""
    original_save = DurableLog.save_hard_state
    original_sync = DurableLog.sync

    def save_hard_state(self: DurableLog, hs: Any) -> None:
        if self._fsync:
            original_save(self, hs)
            return
        with self._hs_lock:
            self._check_usable()
            self._hs = hs  # recorded in memory only: written at close()

    def sync(self: DurableLog) -> None:
        if self._fsync:
            original_sync(self)
            return
        hs = self._hs  # entries were written by append; no state written here
        self._hs = self._hs_written
        try:
            original_sync(self)
        finally:
            self._hs = hs

    stack.enter_context(swap(DurableLog, "save_hard_state", save_hard_state))
    stack.enter_context(swap(DurableLog, "sync", sync))


@contextlib.contextmanager
def page_cache_survives_sigkill() -> Iterator[None]:
    """The simulated disk treats a SIGKILL like a power loss (everything unsynced is lost).
    A real kernel keeps a killed process's written pages. For ``fsync=never`` that difference
    is the whole point (#12 defect 9: "never" may lose data on power loss, it must not break
    election safety on a process crash), so this model makes everything written durable
    before a plain crash (``torn=False``); a power loss (``torn=True``) is unchanged."""
    original_crash = SimDisk.crash

    def crash(self: SimDisk, torn: bool = False) -> None:
        if not torn:
            _promote(self.root, set())
        original_crash(self, torn)

    with swap(SimDisk, "crash", crash):
        yield


def _promote(d: _Dir, seen: set[int]) -> None:
    if id(d) in seen:
        return
    seen.add(id(d))
    d.durable = dict(d.current)
    for node in d.current.values():
        if isinstance(node, _Dir):
            _promote(node, seen)
        elif isinstance(node, _File) and id(node) not in seen:
            seen.add(id(node))
            node.durable = bytearray(node.current)
            node.dirty_lo = None


# ---------------------------------------------------------------------------- #5 isolation


def _run_turn_partition_errors_escape(self: Runtime) -> None:
    """server/runtime.py's turn as before 251fd4e: a group is stopped only for Raft's own
    ``InvariantViolation``/``StorageCorruption``; ``PartitionInvariantError`` and
    ``MetadataInvariantViolation`` (not subclasses of those then) and anything else escape
    the turn: the rest of the turn (groups after it, the transport flush) is skipped, the
    group is not failed and may raise again next turn."""
    from metadata.errors import MetadataInvariantViolation
    from raft.errors import GroupFailure

    self.turns += 1
    touched, self._touched = self._touched, set()
    for gid in touched:
        group = self.groups.get(gid)
        if group is None or group.failed is not None:
            continue
        try:
            self._drive(group)
        except GroupFailure as exc:
            if isinstance(exc, PartitionInvariantError | MetadataInvariantViolation):
                raise
            self._fail(group, exc)
    self.transport.flush()
    if self._touched:
        self._wake.set()


def _patch_5(stack: contextlib.ExitStack) -> None:
    stack.enter_context(swap(Runtime, "run_turn", _run_turn_partition_errors_escape))


# ---------------------------------------------------------------------------- #10 producer id


def _patch_10(stack: contextlib.ExitStack) -> None:
    """client/producer.py before 6b1f6ad: OUT_OF_ORDER_SEQUENCE for the oldest unacknowledged
    batch (the broker does not know the producer's previous batch, e.g. it expired) made the
    producer drop its producer id (``_reset_producer_id``): the next seal asks InitProducerId
    for a FRESH id and reseals the partition's pending batches from sequence 0 under it. No
    epoch is bumped, so nothing fences the old id: a delayed copy of a batch sent under it
    can still land after its resealed successor (a duplicate, or a reorder). Here: the fix's
    ``_bump_epoch`` is swapped for that old reset."""
    from client.producer import Producer

    async def reset_producer_id(self: Producer, stale_producer_id: int, stale_epoch: int) -> None:
        del stale_epoch
        async with self._pid_lock:
            if self._producer_id == stale_producer_id:
                self._producer_id = -1
                self._producer_epoch = -1

    stack.enter_context(swap(Producer, "_bump_epoch", reset_producer_id))


# ---------------------------------------------------------------------------- #12 disk errors


def _run_turn_without_isolation(self: Runtime) -> None:
    """server/runtime.py's turn as before 251fd4e in the one respect that matters here: only
    Raft's own failures (``raft.errors.GroupFailure``) stop a group; anything else a group
    raises (an OSError from a write) escapes the turn: the group is not failed, the rest of
    the turn (other groups, the transport flush) is skipped, and _ready_loop logs it."""
    from raft.errors import GroupFailure

    self.turns += 1
    touched, self._touched = self._touched, set()
    for gid in touched:
        group = self.groups.get(gid)
        if group is None or group.failed is not None:
            continue
        try:
            self._drive(group)
        except GroupFailure as exc:
            self._fail(group, exc)
    self.transport.flush()
    if self._touched:
        self._wake.set()


def _patch_12(stack: contextlib.ExitStack) -> None:
    """Before 5ca435a/251fd4e: ``Segment.append`` recorded frame positions before its pwrite
    (a failed write leaves positions for bytes never written, so a later truncation cuts at
    the wrong offset); the log had no failed state (an OSError is raised as is, and the next
    call carries on); and the runtime did not fail a group on an OSError from ``log.append``
    (it escaped the turn), so a later Ready with no entries was reported persisted at once,
    releasing the append acknowledgement of entries the disk never got."""
    from raft.storage.segment import Segment, pwrite_all

    def append(self: Segment, frames: Any, terms: Any) -> None:
        position = self.size_bytes
        for frame in frames:
            self.positions.append(position)
            position += len(frame)
        self.terms.extend(terms)
        old_size, self.size_bytes = self.size_bytes, position
        pwrite_all(self.fs, self.fd, b"".join(frames), old_size)

    def fail(self: DurableLog, operation: str, exc: OSError) -> OSError:
        return exc  # no failed state: raised as is, later calls go on

    stack.enter_context(swap(Segment, "append", append))
    stack.enter_context(swap(DurableLog, "_fail", fail))
    stack.enter_context(swap(Runtime, "run_turn", _run_turn_without_isolation))


# ---------------------------------------------------------------------------- #14 peer batches


def _patch_14(stack: contextlib.ExitStack) -> None:
    """server/transport.py before 3c6e5e6: a turn's messages for a peer (and whatever queued
    behind them) merge into ONE RaftBatch with no byte bound, a snapshot travels whole, no
    message is refused for its size, and a batch the link refused (gRPC RESOURCE_EXHAUSTED)
    is lost with every message in it - heartbeats and votes of other groups included -
    without report_unreachable or a snapshot status."""
    from server.transport import PeerTransport

    original_init = PeerTransport.__init__
    unbounded = 1 << 62

    def init(self: PeerTransport, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._max_batch_bytes = unbounded
        self._chunk_bytes = unbounded
        self._max_message_bytes = unbounded
        self._outbox_max_bytes = unbounded

    def drop(self: PeerTransport, peer: Any, lost: list[Any], reason: str) -> None:
        self.dropped_messages += sum(len(out.items) for out in lost)

    stack.enter_context(swap(PeerTransport, "__init__", init))
    stack.enter_context(swap(PeerTransport, "_drop", drop))


# ---------------------------------------------------------------------------- #16 retention


def _patch_16(stack: contextlib.ExitStack) -> None:
    """partition/ before 52ab9ea: after a crash between saving a retention snapshot and
    deleting its segments, the next pass replays entries at or below the snapshot, which
    ``apply`` refused ("apply order"), and retention_cut did not drop the stale segments
    first: every later pass fails, the log grows without limit."""
    original_apply = PartitionState.apply

    def apply(self: PartitionState, entry: Any) -> Any:
        if entry.index <= self._snapshot_index and entry.index != self._applied + 1:
            raise PartitionInvariantError(
                "apply order",
                self._applied + 1,
                entry.index,
                "entries must be applied in index order, exactly once",
            )
        return original_apply(self, entry)

    def retention_cut(self: PartitionState, segments: Any, now_ms: int | None = None) -> int | None:
        # the replica's physical cut without "segments at or below the snapshot go first,
        # and never cut below the snapshot"
        from partition.retention import physical_cut

        return physical_cut(
            segments,
            applied_index=self._applied,
            snapshot_index=0,
            gone_index=self._gone_index(),
        )

    stack.enter_context(swap(PartitionState, "apply", apply))
    stack.enter_context(swap(PartitionState, "retention_cut", retention_cut))


# ---------------------------------------------------------------------------- #17 snapshots


def _patch_17(stack: contextlib.ExitStack) -> None:
    """partition/producers.py before 3da22cb: producer ids never expire (the table, and so
    every partition snapshot, keeps every producer id the partition ever saw; each
    ``replog produce`` run is a new one). (The other half of the defect, the skipped-entry
    list in the snapshot, is not put back: the current snapshot format has no field for it.)"""
    from partition.producers import ProducerTable

    original_init = ProducerTable.__init__

    def init(self: ProducerTable, keep: int, expiry_ms: int = -1) -> None:
        original_init(self, keep, -1)

    stack.enter_context(swap(ProducerTable, "__init__", init))


# ---------------------------------------------------------------------------- registry

PATCHES: dict[int, Callable[[contextlib.ExitStack], None]] = {
    1: _patch_1,
    2: _patch_2,
    3: _patch_3,
    4: _patch_4,
    5: _patch_5,
    6: _patch_6,
    7: _patch_7,
    9: _patch_9,
    10: _patch_10,
    12: _patch_12,
    14: _patch_14,
    16: _patch_16,
    17: _patch_17,
}


@contextlib.contextmanager
def putback(defect: int) -> Iterator[None]:
    """Puts issue 12's ``defect`` back for the duration (see each ``_patch_N``)."""
    with contextlib.ExitStack() as stack:
        PATCHES[defect](stack)
        yield


# ---------------------------------------------------------------------------- harnesses


class Harness:
    """What a target adds to one seed's run, in the tests only: a context entered around the
    run (with or without the patch), a hook called with every BrokerNode built, and extra
    checks evaluated after the run (violations as strings, as checkers.py reports them)."""

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def hook(self, node: BrokerNode) -> None:
        return None

    def verdict(self) -> list[str]:
        return []

    def filter(self, violations: list[str]) -> list[str]:
        """The run's violations minus what the harness's own fault explains."""
        return violations


class InjectApplyError(Harness):
    """A fault injection for #12 defect 5: the first partition replica on broker ``node_id``
    that applies entries after ``after_s`` virtual seconds raises a
    ``PartitionInvariantError`` from its apply, once (as a state-machine bug would). The
    designed outcome (docs/architecture.md, "one failure model") is that THAT group on that
    broker stops and shows as failed, and nothing else is harmed; so the violations naming
    that group on that broker are expected and filtered out, and any other violation is a
    finding."""

    def __init__(self, node_id: int = 1, after_s: float = 4.0) -> None:
        self.node_id, self.after_s = node_id, after_s
        self.injected: tuple[int, int] | None = None  # (group, node)

    @contextlib.contextmanager
    def _ctx(self) -> Iterator[None]:
        from server.partition_replica import PartitionReplica

        original = PartitionReplica.apply
        harness = self

        def apply(self: PartitionReplica, entries: Any) -> None:
            if (
                harness.injected is None
                and entries
                and self.node.id == harness.node_id
                and asyncio.get_running_loop().time() >= harness.after_s
            ):
                harness.injected = (self.group_id, harness.node_id)
                raise PartitionInvariantError(
                    "injected apply failure", "a healthy state machine", "a bug", "test fault"
                )
            original(self, entries)

        with swap(PartitionReplica, "apply", apply):
            yield

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self._ctx()

    def filter(self, violations: list[str]) -> list[str]:
        if self.injected is None:
            return violations
        group, node = self.injected
        own = (f"group {group} on node {node}:", f"group {group} node {node} ")
        return [v for v in violations if not any(o in v for o in own)]


class _Combined(Harness):
    def __init__(self, *parts: Harness) -> None:
        self.parts = parts

    @contextlib.contextmanager
    def _ctx(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for p in self.parts:
                stack.enter_context(p.context())
            yield

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self._ctx()

    def hook(self, node: BrokerNode) -> None:
        for p in self.parts:
            p.hook(node)

    def verdict(self) -> list[str]:
        return [v for p in self.parts for v in p.verdict()]


class PageCache(Harness):
    """See :func:`page_cache_survives_sigkill`."""

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return page_cache_survives_sigkill()


def _sampling_task(node: BrokerNode, period_s: float, sample: Callable[[float], None]) -> None:
    """Samples ``node`` every ``period_s`` virtual seconds until it is abandoned (crash or the
    end of the seed); started from the node hook, i.e. on the simulation's loop."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        while not node.stopping:
            await asyncio.sleep(period_s)
            if node.stopping or getattr(node, "runtime", None) is None:
                continue
            sample(loop.time())

    asyncio.get_running_loop().create_task(run(), name=f"putback-sampler-{node.node_id}")


class RetentionKeepsCutting(Harness):
    """Checker (#12 defect 16): retention keeps working. Every retention pass of every
    replica is watched (``PartitionReplica._compact_at``, the pass's executor job: snapshot,
    then segment deletion); a replica whose last ``failures`` passes in a row raised while
    retention would still cut (``PartitionState.retention_cut`` over its segments, sampled
    every ``period_s``) is a violation: its log grows past retention.bytes for good. (A
    merely slow pass, e.g. behind a slow disk, is not a failure.)"""

    def __init__(
        self, period_s: float = 0.25, failures: int = 3, crash_p: float = 0.0, down_s: float = 0.3
    ) -> None:
        self.period_s = period_s
        self.failures = failures
        self.crash_p = crash_p
        self.down_s = down_s
        self.crashes = 0
        self.found: dict[tuple[int, int], str] = {}
        self.failed_in_a_row: dict[int, tuple[int, str]] = {}  # id(replica) -> (n, last error)
        self.clusters: list[Any] = []
        self.rng = random.Random(0)  # re-seeded from each cluster's seed

    @contextlib.contextmanager
    def _ctx(self) -> Iterator[None]:
        from server.partition_replica import PartitionReplica
        from tests.system_sim.cluster import SimCluster, derive_rng

        original = PartitionReplica._compact_at
        original_cluster_init = SimCluster.__init__
        harness = self

        def cluster_init(self: SimCluster, *args: Any, **kwargs: Any) -> None:
            original_cluster_init(self, *args, **kwargs)
            harness.clusters.append(self)
            harness.rng = derive_rng(self.seed, "retention-crash")

        def crash_now(node_id: int) -> None:
            cluster = harness.clusters[-1]
            slot = cluster.brokers[node_id]
            if slot.node is None:
                return
            harness.crashes += 1
            cluster.crash(node_id)

            async def restart() -> None:
                await asyncio.sleep(harness.down_s)
                await cluster.restart(node_id)

            asyncio.get_running_loop().create_task(restart(), name=f"retention-crash-{node_id}")

        def compact_at(self: PartitionReplica, cut: int, *args: Any) -> int:
            if harness.crash_p and harness.rng.random() < harness.crash_p:
                # The fault: the process dies between saving the retention snapshot (its file
                # written durably: the first step of DurableLog.save_snapshot) and deleting
                # the segments it covers (the second step).
                self.log._write_snapshot_file(self._snapshot_at(cut, *args), "save_snapshot")
                asyncio.get_running_loop().call_soon(crash_now, self.node.id)
                raise RuntimeError("crashed between the retention snapshot and compaction")
            try:
                first = original(self, cut, *args)
            except Exception as exc:
                n, _ = harness.failed_in_a_row.get(id(self), (0, ""))
                harness.failed_in_a_row[id(self)] = (n + 1, repr(exc)[:160])
                raise
            harness.failed_in_a_row.pop(id(self), None)
            return first

        with contextlib.ExitStack() as stack:
            stack.enter_context(swap(PartitionReplica, "_compact_at", compact_at))
            stack.enter_context(swap(SimCluster, "__init__", cluster_init))
            yield

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self._ctx()

    def hook(self, node: BrokerNode) -> None:
        def sample(now: float) -> None:
            for group_id, replica in list(node.partitions.items()):
                n, error = self.failed_in_a_row.get(id(replica), (0, ""))
                if n < self.failures or replica.stopped is not None:
                    continue
                state = replica.state
                try:
                    segments = [
                        (s.first_index, s.last_index, s.size_bytes) for s in replica.log.segments()
                    ]
                    cut = state.retention_cut(segments, replica._wall_clock_ms())
                except Exception:
                    continue
                if cut is None:
                    continue
                self.found.setdefault(
                    (node.node_id, group_id),
                    f"[retention_progress] retention failing: group {group_id} "
                    f"({replica.topic}/{replica.partition}) on node {node.node_id} at "
                    f"t={now:.3f}: {n} passes in a row failed ({error}) while a cut to {cut} "
                    f"is due; log {sum(s[2] for s in segments)} bytes for "
                    f"retention.bytes={state.config.retention_bytes}",
                )

        _sampling_task(node, self.period_s, sample)

    def verdict(self) -> list[str]:
        return [self.found[k] for k in sorted(self.found)]


class VoteCrash(Harness):
    """A finer forget-vote fault (as tests/sim's vote-crash profile): when a broker hands a
    vote GRANT to its transport, it is SIGKILLed right after that turn (``delay_s`` later,
    before the persistence job of that turn has run), with probability ``p``, during the
    first ``until_s`` virtual seconds, and restarted ``down_s`` later. With the grant held
    until its vote is durable (the fix), such a crash never forgets a vote that left."""

    def __init__(
        self, p: float = 0.5, until_s: float = 10.0, down_s: float = 0.05, delay_s: float = 2e-5
    ) -> None:
        self.p, self.until_s, self.down_s, self.delay_s = p, until_s, down_s, delay_s
        self.clusters: list[Any] = []
        self.crashes = 0
        self.rng = random.Random(0)  # re-seeded from each cluster's seed

    @contextlib.contextmanager
    def _capture(self) -> Iterator[None]:
        from tests.system_sim.cluster import SimCluster, derive_rng

        original = SimCluster.__init__
        harness = self

        def init(self: SimCluster, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            harness.clusters.append(self)
            harness.rng = derive_rng(self.seed, "vote-crash")

        with swap(SimCluster, "__init__", init):
            yield

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self._capture()

    def hook(self, node: BrokerNode) -> None:
        from raft.types import MessageType

        cluster = self.clusters[-1]
        original = node.transport.enqueue
        harness = self

        def crash(node_id: int) -> None:
            slot = cluster.brokers[node_id]
            if slot.node is not node:
                return  # crashed or replaced meanwhile
            harness.crashes += 1
            cluster.crash(node_id)

            async def restart() -> None:
                await asyncio.sleep(harness.down_s)
                await cluster.restart(node_id)

            asyncio.get_running_loop().create_task(restart(), name=f"vote-crash-restart-{node_id}")

        def enqueue(group_id: int, msg: Message) -> None:
            original(group_id, msg)
            if (
                msg.type == MessageType.VOTE_RESP
                and not msg.reject
                and cluster.now() < harness.until_s
                and harness.rng.random() < harness.p
            ):
                asyncio.get_running_loop().call_later(harness.delay_s, crash, node.node_id)

        node.transport.enqueue = enqueue  # type: ignore[method-assign]


class LateProduceCopy(Harness):
    """A targeted fault for #12 defect 10: a Produce request that opens a producer session on
    a partition (an idempotent batch at base sequence 0) is, with probability ``p``, also
    copied by the network (a duplicated packet); the original goes on as usual and the copy
    is held back. It is delivered, to the broker the original went to, only once the same
    client has since been answered OUT_OF_ORDER_SEQUENCE on that partition and then had a
    fresh (non-duplicate) batch appended there: the moment a copy that travelled under the
    producer's previous session lands after its resealed successor. Producer ids expire
    after ``expiry_ms`` of log time (``PartitionConfig.producer_expiry_ms``, set here as the
    simulation's topics cannot): a producer idle on a partition is forgotten there, and its
    next batch is answered OUT_OF_ORDER_SEQUENCE (the session the defect mishandled).

    With epoch fencing (the fix) the copy meets the producer's bumped epoch on that
    partition (it just wrote there) and is refused with PRODUCER_FENCED; under a fresh
    producer id the old id is unknown (expired) on the broker, so sequence 0 opens a new
    session and the copy is appended a second time (``no_duplicates``)."""

    def __init__(self, p: float = 1.0, expiry_ms: int = 300) -> None:
        self.p, self.expiry_ms = p, expiry_ms
        self.held: dict[tuple[Any, str, int], tuple[str, Any, Any]] = {}
        self.out_of_order: set[tuple[Any, str, int]] = set()
        self.copies_held = 0
        self.copies_delivered: list[str] = []  # outcome of each delivered copy
        self.rng = random.Random(0)  # re-seeded from each cluster's seed

    @contextlib.contextmanager
    def _ctx(self) -> Iterator[None]:
        import grpc

        from client.connection import to_replog_error
        from client.errors import OutOfOrderSequence
        from partition.config import PartitionConfig
        from tests.system_sim.cluster import SimCluster, derive_rng
        from tests.system_sim.network import SimStub
        from wire.batch import read_header

        harness = self
        original_call = SimStub._call_unary
        original_cluster_init = SimCluster.__init__
        original_post_init = PartitionConfig.__post_init__

        def cluster_init(self: SimCluster, *args: Any, **kwargs: Any) -> None:
            original_cluster_init(self, *args, **kwargs)
            harness.rng = derive_rng(self.seed, "late-produce-copy")
            harness.held.clear()
            harness.out_of_order.clear()

        def post_init(self: PartitionConfig) -> None:
            original_post_init(self)
            object.__setattr__(self, "producer_expiry_ms", harness.expiry_ms)

        async def deliver(stub: SimStub, m: Any, request: Any, metadata: Any) -> None:
            try:
                response = await original_call(stub, m, request, 2.0, metadata)
            except grpc.aio.AioRpcError as exc:
                harness.copies_delivered.append(type(to_replog_error(exc)).__name__)
            except Exception as exc:
                harness.copies_delivered.append(type(exc).__name__)
            else:
                harness.copies_delivered.append("duplicate" if response.duplicate else "appended")

        async def call_unary(
            self: SimStub, m: Any, request: Any, timeout: float | None, metadata: Any
        ) -> Any:
            if m.name != "Produce" or self._owner is not None:
                return await original_call(self, m, request, timeout, metadata)
            key = (self._src, request.topic, request.partition)
            try:
                header = read_header(request.batch)
            except Exception:
                header = None
            if (
                header is not None
                and header.producer_id >= 0
                and header.base_sequence == 0
                and key not in harness.held
                and harness.rng.random() < harness.p
            ):
                copy = type(request)()
                copy.CopyFrom(request)
                harness.held[key] = (self._address, copy, metadata)
                harness.copies_held += 1
            try:
                response = await original_call(self, m, request, timeout, metadata)
            except grpc.aio.AioRpcError as exc:
                if isinstance(to_replog_error(exc), OutOfOrderSequence) and key in harness.held:
                    harness.out_of_order.add(key)
                raise
            if key in harness.out_of_order and not response.duplicate:
                harness.out_of_order.discard(key)
                address, copy, md = harness.held.pop(key)
                stub = SimStub(self._net, self._src, address, "Replog", None)
                asyncio.get_running_loop().create_task(
                    deliver(stub, m, copy, md), name="late-produce-copy"
                )
            return response

        with contextlib.ExitStack() as stack:
            stack.enter_context(swap(SimStub, "_call_unary", call_unary))
            stack.enter_context(swap(SimCluster, "__init__", cluster_init))
            stack.enter_context(swap(PartitionConfig, "__post_init__", post_init))
            yield

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self._ctx()


class SlowPeerLinks(Harness):
    """Broker-to-broker links slow (``delay_s``, one way, on every pair; the simulated
    network's default is 0.2-2 ms), client links as fast as ever: a client can learn of a new
    leader (a NOT_LEADER redirect from the deposed one, which hears of it with the new
    leader's first append) and reach it well before that leader's first entry has
    committed, which takes a further round trip between brokers. Until then the new leader's
    high watermark is the commit index it knew when it was elected, which trails its
    predecessor's by about one broker round trip: a consumer positioned at the old leader's
    high watermark asks the new leader for offsets above its own (#12 defect 7). The message
    faults of the nemesis apply to client links only (a pair's own faults replace the
    default)."""

    def __init__(self, delay_s: tuple[float, float] = (0.08, 0.2)) -> None:
        self.delay_s = delay_s
        self.clusters: list[Any] = []

    @contextlib.contextmanager
    def _capture(self) -> Iterator[None]:
        from tests.system_sim.cluster import SimCluster

        original = SimCluster.__init__
        harness = self

        def init(self: SimCluster, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            harness.clusters.append(self)

        with swap(SimCluster, "__init__", init):
            yield

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self._capture()

    def hook(self, node: BrokerNode) -> None:
        from tests.system_sim.network import Faults

        cluster = self.clusters[-1]
        for other in cluster.brokers:
            if other == node.node_id:
                continue
            for a, b in ((node.node_id, other), (other, node.node_id)):
                cluster.net.set_faults(Faults(delay_s=self.delay_s), a, b)


class KeepLoadOnDeletedTopic(Harness):
    """Delete under load, harder: producers keep choosing the doomed topic until its delete
    has completed (and ``linger_s`` after), so its replicas are closed by the delete while
    their Raft groups still have persistence jobs in flight. (The workload otherwise stops
    writing to a topic the moment its delete is invoked.)"""

    def __init__(self, linger_s: float = 0.5) -> None:
        self.linger_s = linger_s

    @contextlib.contextmanager
    def _ctx(self) -> Iterator[None]:
        from tests.system_sim.workload import Workload, _error

        harness = self

        async def delete_topic(self: Workload, plan: Any) -> None:
            self.history.invoke("admin", "delete_topic", plan.name, self.now())
            try:
                await self.admin().delete_topic(plan.name)
            except Exception as exc:
                plan.deleted = True
                self.history.info("admin", "delete_topic", plan.name, self.now())
                self.history.info("admin", "delete_error", _error(exc), self.now())
                return
            await asyncio.sleep(harness.linger_s)
            plan.deleted = True
            self.history.ok("admin", "delete_topic", plan.name, self.now())

        with swap(Workload, "delete_topic", delete_topic):
            yield

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self._ctx()


class ProducerChurn(Harness):
    """Checker (#12 defect 17): partition snapshots stay bounded by the producers that are
    live. The workload gains short-lived idempotent producers (a new producer id each, as
    every ``replog produce`` run is), one every ``gap_s``, each writing a few records to
    partition 0 of the first topic; producers expire after ``expiry_ms`` of log time
    (``PartitionConfig.producer_expiry_ms``, a configuration value set here because the
    simulation's topics cannot set it). Every ``period_s`` each live replica's snapshot
    (``PartitionState.snapshot()``, what retention and catch-up would write and send) is
    measured; one longer than ``64 + 160 * max_live`` bytes (160: one producer entry with
    its five recent batches), where ``max_live`` counts the producers that can be live within
    one expiry window, is a violation."""

    ENTRY_BYTES = 160
    HEAD_BYTES = 64

    def __init__(self, gap_s: float = 0.15, expiry_ms: int = 1500, period_s: float = 0.5) -> None:
        self.gap_s, self.expiry_ms, self.period_s = gap_s, expiry_ms, period_s
        # workload producers (<= 3), the probe, churners within an expiry window (+ slack)
        self.max_live = 3 + 1 + int((expiry_ms / 1000 + 1.0) / gap_s) + 3
        self.found: dict[tuple[int, int], str] = {}

    @contextlib.contextmanager
    def _ctx(self) -> Iterator[None]:
        from client import Producer
        from client.config import ProducerConfig
        from partition.config import PartitionConfig
        from tests.system_sim.history import Ack, Send
        from tests.system_sim.workload import Workload

        harness = self
        original_start = Workload.start
        original_post_init = PartitionConfig.__post_init__

        def post_init(self: PartitionConfig) -> None:
            original_post_init(self)
            object.__setattr__(self, "producer_expiry_ms", harness.expiry_ms)

        async def churn(self: Workload) -> None:
            n = 0
            while not self._stop.is_set():
                await asyncio.sleep(harness.gap_s)
                topics = [t for t in self.live_topics() if not t.doomed]
                if not topics:
                    continue
                name = f"churn-{n}"
                n += 1
                producer = Producer(
                    self.cluster.bootstrap(),
                    ProducerConfig(
                        acks="all",
                        linger_ms=0.0,
                        delivery_timeout_ms=5_000.0,
                        request_timeout_ms=self.cfg.request_timeout_ms,
                        metadata_timeout_ms=5_000.0,
                        retry_backoff_ms=20.0,
                        retry_backoff_max_ms=500.0,
                    ),
                    **self._client_kwargs(name),
                )
                try:
                    for i in range(self.rng.randint(1, 3)):
                        send = Send(topics[0].name, 0, f"{name}:{i}:".encode(), "all", True, i)
                        self.history.invoke(name, "send", send, self.now())
                        try:
                            md = await producer.send_and_wait(send.topic, send.value, partition=0)
                        except Exception as exc:
                            self.history.info(name, "send", (send, repr(exc)[:200]), self.now())
                            break
                        ack = Ack(md.topic, md.partition, md.offset)
                        self.history.ok(name, "send", (send, ack), self.now())
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(producer.close(), 5.0)

        def start(self: Workload, fault_s: float) -> None:
            original_start(self, fault_s)
            task = asyncio.get_running_loop().create_task(churn(self), name="churn")
            self._tasks.append(task)

        with contextlib.ExitStack() as stack:
            stack.enter_context(swap(PartitionConfig, "__post_init__", post_init))
            stack.enter_context(swap(Workload, "start", start))
            yield

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self._ctx()

    def hook(self, node: BrokerNode) -> None:
        bound = self.HEAD_BYTES + self.ENTRY_BYTES * self.max_live

        def sample(now: float) -> None:
            for group_id, replica in list(node.partitions.items()):
                if replica.stopped is not None:
                    continue
                try:
                    size = len(replica.state.snapshot())
                except Exception:
                    continue
                if size > bound:
                    self.found.setdefault(
                        (node.node_id, group_id),
                        f"[snapshot_bounded] partition snapshot too large: group {group_id} "
                        f"({replica.topic}/{replica.partition}) on node {node.node_id} at "
                        f"t={now:.3f}: {size} bytes > {bound} (at most {self.max_live} live "
                        f"producers within producer_expiry_ms={self.expiry_ms})",
                    )

        _sampling_task(node, self.period_s, sample)

    def verdict(self) -> list[str]:
        return [self.found[k] for k in sorted(self.found)]


class LinkSizeLimit(Harness):
    """The simulated network enforces no message size; gRPC does. Every peer link here
    refuses a RaftBatch over ``limit`` bytes as gRPC does (the call fails,
    RESOURCE_EXHAUSTED: a ConnectionError for the transport), and every broker is configured
    with that limit (``server.grpc_max_message_bytes``; the transport derives its batch
    bound, a quarter of it, and snapshot chunks from it; partition batches capped at
    16 KiB). 128 KiB: the config wants room for one append (raft.max_size_per_msg +
    partition.max_batch_bytes + 64 KiB)."""

    def __init__(self, limit: int = 128 * 1024) -> None:
        self.limit = limit
        self.refused = 0

    @contextlib.contextmanager
    def _ctx(self) -> Iterator[None]:
        from dataclasses import replace

        from tests.system_sim.network import SimLink

        original_send = SimLink.send
        original_config = BrokerSettings.server_config
        harness = self

        async def send(self: SimLink, batch: Any) -> None:
            size = batch.ByteSize()
            if size > harness.limit:
                await asyncio.sleep(0)
                harness.refused += 1
                raise ConnectionError(
                    f"RESOURCE_EXHAUSTED: received message larger than max ({size} vs. "
                    f"{harness.limit})"
                )
            await original_send(self, batch)

        def server_config(self: BrokerSettings, *args: Any, **kwargs: Any) -> Any:
            cfg = original_config(self, *args, **kwargs)
            return replace(
                cfg,
                server=replace(
                    cfg.server,
                    grpc_max_message_bytes=harness.limit,
                    max_peer_batch_bytes=0,
                    snapshot_chunk_bytes=0,
                ),
                partition=replace(cfg.partition, max_batch_bytes=16 * 1024),
            )

        with contextlib.ExitStack() as stack:
            stack.enter_context(swap(SimLink, "send", send))
            stack.enter_context(swap(BrokerSettings, "server_config", server_config))
            yield

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self._ctx()


class RaftOptions(Harness):
    """Broker configuration the simulation's BrokerSettings do not expose: ``[raft]`` options
    (here pre_vote and check_quorum). Raft's safety (one leader per term) holds with or
    without them; without pre-vote, candidates raise terms freely, so a broker often learns a
    term without voting in it and then grants a vote at its current term: the case #12
    defect 3 mishandled."""

    def __init__(self, **raft: Any) -> None:
        self.raft = raft

    @contextlib.contextmanager
    def _ctx(self) -> Iterator[None]:
        from dataclasses import replace

        original_config = BrokerSettings.server_config
        harness = self

        def server_config(self: BrokerSettings, *args: Any, **kwargs: Any) -> Any:
            cfg = original_config(self, *args, **kwargs)
            return replace(cfg, raft=replace(cfg.raft, **harness.raft))

        with swap(BrokerSettings, "server_config", server_config):
            yield

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self._ctx()


@dataclass
class _VoteEpisode:
    """One run of :class:`SplitVoteAcrossRestart`'s schedule on one group."""

    group: int
    leader: int  # X: leads the group at term0 when the episode starts
    a: int  # the candidate whose vote request X receives first
    c: int  # the candidate whose vote request X receives after its restart
    term0: int
    started: float
    phase: str = "cut"  # cut -> learn -> grant -> down -> voted
    phase_at: float = 0.0
    term: int = 0  # the candidates' term (term0 + 1)
    # vote requests to X held in the network: sender -> (message bytes, cluster id, version)
    held: dict[int, tuple[bytes, str, int]] = field(default_factory=dict)
    old_node: Any = None  # X's process that granted A's vote
    vote_after_restart: int = -1  # X's vote in the group when C's request reaches it
    second_leader: bool = False


class SplitVoteAcrossRestart(Harness):
    """A targeted schedule for #12 defect 3 (a vote grant that leaves before the vote is
    durable). Every step is a fault a real network or machine can produce: messages of one
    Raft group lost on some links, vote requests delayed in the network (and delivered to the
    receiver's next process), one SIGKILL and a restart. Raft must stay safe under all of it:
    no message is forged, changed or delivered twice. (Messages are lost one by one, as in
    Raft's network model; the product's gRPC streams would lose whole batches, and Raft's
    safety depends on neither.)

    Setup: the workload gains a topic ``quiet`` (1 partition, 3 replicas) that no client writes,
    so its replicas' logs stay equal; its group ``g`` is the target. Brokers run with pre-vote
    on and check-quorum off (``RaftOptions``) and without quiescence (``BrokerSettings``), so
    a leader keeps its leadership and grants pre-votes while it hears from nobody, and a
    stale leader learns a newer term from an append response. The schedule, once ``g`` has a
    leader X with followers A and C whose logs match X's:

    1. cut: X's messages of ``g`` to A and C are lost except vote responses, all of ``g``'s
       messages between A and C are lost, and vote requests of ``g`` to X are held in the
       network. A and C time out, win their pre-votes with X's pre-vote grant (X still leads
       and, without check-quorum, grants pre-votes) and both become candidates at term T =
       term0 + 1: a split vote only X could decide.
    2. learn: X's messages to A flow again; A answers X's heartbeat of term0 with an append
       response of term T, and X steps down to follower at T **without a vote** (the state in
       which a grant is made at the voter's current term).
    3. grant: once that term is durable on X, A's vote request (held so far) is delivered; X
       grants it. X is SIGKILLed 20 µs after the grant reaches its transport (as
       :class:`VoteCrash`); A becomes leader at T (its messages to X and C are lost from now).
    4. down/voted: X restarts ``down_s`` later; the moment ``g`` is open on it, C's vote
       request (held in the network since step 1) is delivered. With the grant held until
       the vote is durable (the fix), X restarts with its vote for A and rejects C. With the
       grant sent first (the defect), the kill came before the vote's fsync: X restarts at T
       without a vote, grants C, and C becomes a second leader of term T
       (``one_leader_per_term``).
    5. ``settle_s`` later every message flows again (the held requests not delivered are lost).

    A step whose precondition does not hold (e.g. A and C reach different terms, or C's
    election timer fired again before X restarted) ends the episode with every message flowing
    again; the next one starts ``gap_s`` later. ``counts`` records what happened (the steps
    reached, and whether X came back at T with its vote for A (``vote kept``) or with none
    (``vote forgotten``))."""

    QUIET_TOPIC = "quiet"

    def __init__(
        self,
        start_s: float = 0.5,
        gap_s: float = 0.7,
        down_s: float = 0.02,
        settle_s: float = 0.3,
        period_s: float = 0.002,
        delay_s: float = 2e-5,
    ) -> None:
        self.start_s, self.gap_s, self.down_s = start_s, gap_s, down_s
        self.settle_s, self.period_s, self.delay_s = settle_s, period_s, delay_s
        self.ep: _VoteEpisode | None = None
        self.counts: dict[str, int] = {}
        self.clusters: list[Any] = []

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    # ------------------------------------------------------------------ the network's part

    def _fate(self, ep: _VoteEpisode, src: int, dst: int, mtype: int) -> str:
        """What the network does with one message of the target group, src -> dst: "pass",
        "drop" (lost) or "hold" (delayed until the schedule delivers it, or lost)."""
        from raft.types import MessageType as MT

        x, a, c = ep.leader, ep.a, ep.c
        if {src, dst} == {a, c}:
            return "drop"
        if dst == x and mtype == MT.VOTE:
            return "hold"
        if src == x:
            votes = (MT.PRE_VOTE_RESP, MT.VOTE_RESP)
            if dst == a and ep.phase != "cut":
                return "pass"
            return "pass" if mtype in votes or ep.phase == "voted" else "drop"
        if src == a and dst == x and ep.phase in ("grant", "down", "voted"):
            return "drop"  # the new leader's appends: X must meet C's request first
        return "pass"

    @contextlib.contextmanager
    def _ctx(self) -> Iterator[None]:
        from tests.system_sim.cluster import SimCluster
        from tests.system_sim.network import SimNetwork
        from tests.system_sim.workload import TopicPlan, Workload
        from wire import replog_pb2 as pb

        harness = self
        original_deliver = SimNetwork._deliver_batch
        original_setup = Workload.setup
        original_start = Workload.start
        original_cluster_init = SimCluster.__init__

        def cluster_init(self: SimCluster, *args: Any, **kwargs: Any) -> None:
            original_cluster_init(self, *args, **kwargs)
            harness.clusters.append(self)
            harness.ep = None

        def deliver(self: SimNetwork, node: Any, incarnation: int, data: bytes, link: Any) -> None:
            ep = harness.ep
            ends = {ep.leader, ep.a, ep.c} if ep is not None else set()
            if ep is None or link.src not in ends or node.node_id not in ends:
                original_deliver(self, node, incarnation, data, link)
                return
            batch = pb.RaftBatch.FromString(data)
            keep = []
            for m in batch.messages:
                if m.group_id != ep.group:
                    keep.append(m)
                    continue
                fate = harness._fate(ep, link.src, node.node_id, m.type)
                if fate == "pass":
                    keep.append(m)
                    continue
                harness._count("dropped" if fate == "drop" else "held")
                if fate == "hold":
                    ep.held[link.src] = (
                        m.SerializeToString(),
                        batch.cluster_id,
                        batch.protocol_version,
                    )
            if len(keep) == len(batch.messages):
                original_deliver(self, node, incarnation, data, link)
                return
            out = pb.RaftBatch()
            out.CopyFrom(batch)
            del out.messages[:]
            out.messages.extend(keep)
            original_deliver(self, node, incarnation, out.SerializeToString(), link)

        async def setup(self: Workload) -> None:
            await original_setup(self)
            # not in self.topics: no producer or consumer uses it
            await self.create_topic(TopicPlan(harness.QUIET_TOPIC, 1, {}))

        def start(self: Workload, fault_s: float) -> None:
            original_start(self, fault_s)
            task = asyncio.get_running_loop().create_task(
                harness._control(self), name="split-vote-schedule"
            )
            self._tasks.append(task)

        with contextlib.ExitStack() as stack:
            stack.enter_context(swap(SimCluster, "__init__", cluster_init))
            stack.enter_context(swap(SimNetwork, "_deliver_batch", deliver))
            stack.enter_context(swap(Workload, "setup", setup))
            stack.enter_context(swap(Workload, "start", start))
            yield

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self._ctx()

    # ------------------------------------------------------------------ the process's part

    def hook(self, node: BrokerNode) -> None:
        from raft.types import MessageType

        cluster = self.clusters[-1]
        original = node.transport.enqueue
        harness = self

        def crash() -> None:
            ep = harness.ep
            slot = cluster.brokers[node.node_id]
            if ep is None or slot.node is not node:
                return
            harness._count("killed after grant")
            cluster.crash(node.node_id)

            async def restart() -> None:
                await asyncio.sleep(harness.down_s)
                await cluster.restart(node.node_id)

            asyncio.get_running_loop().create_task(restart(), name="split-vote-restart")

        def enqueue(group_id: int, msg: Message) -> None:
            original(group_id, msg)
            ep = harness.ep
            if (
                ep is not None
                and ep.phase == "grant"
                and node.node_id == ep.leader
                and group_id == ep.group
                and msg.type == MessageType.VOTE_RESP
                and msg.to == ep.a
                and msg.term == ep.term
                and not msg.reject
            ):
                ep.old_node = node
                harness._set_phase(ep, "down", cluster.now())
                asyncio.get_running_loop().call_later(harness.delay_s, crash)

        node.transport.enqueue = enqueue  # type: ignore[method-assign]

    # ------------------------------------------------------------------ the schedule

    def _set_phase(self, ep: _VoteEpisode, phase: str, now: float) -> None:
        ep.phase, ep.phase_at = phase, now
        self._count(f"phase {phase}")

    @staticmethod
    def _raft(cluster: Any, node_id: int, group: int) -> Any:
        slot = cluster.brokers.get(node_id)
        node = slot.node if slot is not None else None
        runtime = getattr(node, "runtime", None) if node is not None else None
        g = runtime.groups.get(group) if runtime is not None else None
        if g is None or g.failed is not None:
            return None
        return g.node.raft

    def _quiet_group(self, cluster: Any) -> tuple[int, tuple[int, ...]] | None:
        for node in cluster.nodes():
            md = getattr(node, "metadata", None)
            topic = md.state.topics.get(self.QUIET_TOPIC) if md is not None else None
            if topic is not None and topic.assignments:
                a = topic.assignments[0]
                return a.group_id, a.replicas
        return None

    def _begin(self, cluster: Any, rng: random.Random, now: float) -> _VoteEpisode | None:
        from raft.types import Role

        found = self._quiet_group(cluster)
        if found is None or len(found[1]) != 3:
            return None
        group, replicas = found
        rafts = {i: self._raft(cluster, i, group) for i in replicas}
        if any(r is None for r in rafts.values()):
            return None
        leaders = [i for i, r in rafts.items() if r.role is Role.LEADER]
        if len(leaders) != 1:
            return None
        x = leaders[0]
        lead = rafts[x]
        last = lead.log.last_index()
        if lead.log.committed != last:
            return None
        for i, r in rafts.items():
            if r.term != lead.term or r.log.last_index() != last:
                return None
            if i != x and (r.role is not Role.FOLLOWER or r.leader_id != x):
                return None
        a, c = rng.sample([i for i in replicas if i != x], 2)
        self._count("episodes")
        return _VoteEpisode(group, x, a, c, lead.term, now, phase_at=now)

    def _deliver_held(self, cluster: Any, ep: _VoteEpisode, src: int) -> bool:
        from wire import replog_pb2 as pb

        held = ep.held.pop(src, None)
        target = cluster.net._nodes.get(ep.leader)
        if held is None or target is None or not target.attached:
            return False
        raw, cluster_id, version = held
        batch = pb.RaftBatch(
            cluster_id=cluster_id, protocol_version=version, from_node=src, to_node=ep.leader
        )
        batch.messages.append(pb.RaftMessage.FromString(raw))
        target.handlers.deliver_batch(batch)
        return True

    def _end(self, ep: _VoteEpisode, why: str, now: float) -> None:
        self._count(f"end: {why}")
        self.ep = None
        self._next_try = now + self.gap_s

    async def _control(self, wl: Any) -> None:
        from tests.system_sim.cluster import derive_rng

        cluster = wl.cluster
        rng = derive_rng(cluster.seed, "split-vote")
        loop = asyncio.get_running_loop()
        self._next_try = loop.time() + self.start_s
        try:
            await self._schedule(cluster, rng, wl._stop)
        finally:
            self.ep = None  # every message flows again; what is still held is lost

    async def _schedule(self, cluster: Any, rng: random.Random, stop: asyncio.Event) -> None:
        from raft.types import Role

        loop = asyncio.get_running_loop()
        while not stop.is_set():
            await asyncio.sleep(self.period_s)
            now = loop.time()
            ep = self.ep
            if ep is None:
                if now >= self._next_try:
                    self.ep = self._begin(cluster, rng, now)
                    if self.ep is None:
                        self._next_try = now + 0.05
                continue
            x = self._raft(cluster, ep.leader, ep.group)
            ra = self._raft(cluster, ep.a, ep.group)
            rc = self._raft(cluster, ep.c, ep.group)
            if ra is None or rc is None:
                self._end(ep, "a candidate went away", now)
                continue
            if ep.phase == "cut":
                if x is None or x.role is not Role.LEADER:
                    self._end(ep, "X lost its leadership", now)
                elif ra.term > ep.term0 + 1 or rc.term > ep.term0 + 1:
                    self._end(ep, "A and C at different terms", now)
                elif (
                    ra.role is Role.CANDIDATE
                    and rc.role is Role.CANDIDATE
                    and ra.term == rc.term == ep.term0 + 1
                ):
                    ep.term = ep.term0 + 1
                    self._set_phase(ep, "learn", now)
                elif now - ep.phase_at > 2.0:
                    self._end(ep, "no split vote", now)
            elif ep.phase == "learn":
                if x is None or ra.term != ep.term or rc.term != ep.term:
                    self._end(ep, "terms moved while X learned", now)
                elif (
                    x.role is Role.FOLLOWER
                    and x.term == ep.term
                    and x.vote == 0
                    and x.handed_hard_state.term == ep.term
                    and x.persisted_number >= x.durable_wait_number
                ):
                    self._set_phase(ep, "grant", now)
                    if not self._deliver_held(cluster, ep, ep.a):
                        self._end(ep, "A's request not held", now)
                elif x.term != ep.term0 and (x.term != ep.term or x.vote != 0):
                    self._end(ep, "X moved on", now)
                elif now - ep.phase_at > 0.5:
                    self._end(ep, "X did not learn the term", now)
            elif ep.phase == "grant":
                if now - ep.phase_at > 0.5:
                    self._end(ep, "no grant to A", now)
            elif ep.phase == "down":
                slot = cluster.brokers[ep.leader]
                if slot.node is None or slot.node is ep.old_node or x is None:
                    if now - ep.phase_at > 1.0:
                        self._end(ep, "X did not come back", now)
                    continue
                if rc.role is not Role.CANDIDATE or rc.term != ep.term:
                    self._end(ep, "C moved on before X came back", now)
                    continue
                ep.vote_after_restart = x.vote if x.term == ep.term else -1
                self._count("vote forgotten" if ep.vote_after_restart == 0 else "vote kept")
                self._set_phase(ep, "voted", now)
                if not self._deliver_held(cluster, ep, ep.c):
                    self._end(ep, "C's request not held", now)
            elif ep.phase == "voted":
                if rc.role is Role.LEADER and rc.term == ep.term and not ep.second_leader:
                    ep.second_leader = True
                    self._count("second leader")
                if now - ep.phase_at > self.settle_s:
                    self._end(ep, "done", now)


# ---------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """The configuration that exposes one defect."""

    profile: FaultProfile | str = "crashy"
    brokers: int = 3
    settings: BrokerSettings = field(default_factory=BrokerSettings)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    budget: Budget = field(default_factory=Budget)
    first_seed: int = 0
    # a fresh Harness per run (extra faults, models or checks that live in the tests)
    harness: Callable[[], Harness] | None = None
    # a violation counts as the detection only if it contains one of these (empty: any)
    expect: tuple[str, ...] = ()


def run_target(target: Target, seed: int) -> SeedResult:
    harness = target.harness() if target.harness is not None else Harness()
    with harness.context():
        result = run_seed(
            seed,
            target.brokers,
            1,
            target.profile,
            budget=target.budget,
            settings=target.settings,
            workload=target.workload,
            node_hook=harness.hook,
        )
    result.violations.extend(harness.verdict())
    result.violations = harness.filter(result.violations)
    return result


def detected(target: Target, violations: list[str]) -> bool:
    if not target.expect:
        return bool(violations)
    return any(e in v for v in violations for e in target.expect)


def hunt(target: Target, seeds: int, *, defect: int | None = None) -> tuple[int | None, list[str]]:
    """Runs seeds ``first_seed .. first_seed + seeds - 1`` in order (with ``defect`` put back
    when given) and stops at the first one whose violations count as a detection (see
    ``Target.expect``): (seed, violations) or (None, [])."""
    for seed in range(target.first_seed, target.first_seed + seeds):
        with putback(defect) if defect is not None else contextlib.nullcontext():
            result = run_target(target, seed)
        if detected(target, result.violations):
            return seed, result.violations
    return None, []


# Whole-cluster crashes (SIGKILL and power loss of every broker) soon after topics are created
# and written: a restarted broker replays its metadata only up to its lazily written commit
# index, so its state is older than the groups on its disk.
WHOLE_CLUSTER = FaultProfile(
    "whole-cluster",
    mean_gap_s=1.0,
    weights={"kill_all": 3, "power_loss_all": 1, "kill_one": 1},
    down_s=(0.2, 1.5),
)

QUIET = FaultProfile("quiet", mean_gap_s=2.0, weights={"quiet": 1})

TARGETS: dict[int, Target] = {
    1: Target(profile=WHOLE_CLUSTER),
    # metadata snapshots every 10 entries (compaction keeps the active segment, so entries the
    # snapshot covers stay on disk), then restarts
    2: Target(profile="crashy", settings=BrokerSettings(snapshot_interval_entries=10)),
    # no nemesis; a topic no client writes, pre-vote on, check-quorum off, no quiescence, and
    # SplitVoteAcrossRestart's schedule on its group: a split vote that only its stale
    # leader X decides, X's grant to the first candidate followed by a SIGKILL, and the other
    # candidate's vote request delivered when X is back
    3: Target(
        profile=QUIET,
        settings=BrokerSettings(quiesce=False),
        budget=Budget(fault_s=6.0, join_share=0.0),
        harness=lambda: _Combined(
            RaftOptions(pre_vote=True, check_quorum=False), SplitVoteAcrossRestart()
        ),
        expect=("one_leader_per_term",),
    ),
    # every disk slow (a deep shared lane), every seed deletes a topic, and producers keep
    # writing to it until the delete completed
    4: Target(
        profile=FaultProfile(
            "slow-disks", mean_gap_s=0.7, weights={"slow_disk": 1}, slow_sync_s=(0.02, 0.1)
        ),
        workload=WorkloadConfig(doomed_topic_share=1.0, producers=(2, 3)),
        budget=Budget(join_share=0.0),
        harness=KeepLoadOnDeletedTopic,
        expect=("group failed",),
    ),
    # no nemesis at all: the one fault is a PartitionInvariantError raised once by the apply
    # of one partition replica on broker 1 (InjectApplyError); that group failing there is
    # the designed outcome and filtered out, anything else is the finding
    5: Target(
        profile=FaultProfile("quiet", mean_gap_s=2.0, weights={"quiet": 1}),
        harness=InjectApplyError,
        expect=("[liveness]", "[groups_healthy]", "[acked_records_survive]"),
    ),
    # followers cut off (isolated, one-way cuts, heavy drops) behind small retention limits,
    # so leaders send snapshots and some are lost; no leadership transfers (a leader change
    # would unpause the follower)
    6: Target(
        profile=FaultProfile(
            "lagging",
            mean_gap_s=0.8,
            weights={"isolate_one": 2, "message_faults": 2, "one_way": 1},
            max_drop=0.4,
            partition_s=(1.0, 3.0),
        ),
        workload=WorkloadConfig(
            retention_share=1.0, retention_bytes=(2000, 5000), admin_gap_s=1000.0, send_gap_s=0.02
        ),
        expect=("group stuck",),
    ),
    # leaders change often (kills, a transfer every 0.3 s on average) over slow links between
    # brokers and fast client links (SlowPeerLinks): a consumer reaches a new leader before
    # its first entry commits, while its high watermark trails the consumer's position
    # (which it read from the old leader); elections 1 s (20 ticks) to suit 80-200 ms links
    7: Target(
        profile=FaultProfile(
            "failover", mean_gap_s=1.0, weights={"kill_one": 1, "quiet": 1}, down_s=(0.5, 2.0)
        ),
        workload=WorkloadConfig(
            retention_share=0.0,
            doomed_topic_share=0.0,
            admin_gap_s=0.3,
            consumers=(2, 2),
            producers=(2, 3),
            partitions=(1, 2),
            seek_share=0.0,
        ),
        settings=BrokerSettings(election_ticks=20),
        budget=Budget(join_share=0.0),
        harness=lambda: SlowPeerLinks((0.08, 0.2)),
        expect=("consumer skipped records", "consumer went backwards"),
    ),
    # fsync=never, plain SIGKILLs only (no power loss), and a disk model in which a killed
    # process's written pages survive (PageCache): election safety must hold
    9: Target(
        profile=FaultProfile(
            "sigkill",
            mean_gap_s=0.6,
            weights={"kill_one": 3, "kill_minority": 2, "kill_all": 1},
            down_s=(0.2, 1.0),
        ),
        settings=BrokerSettings(fsync="never"),
        budget=Budget(fault_s=5.0, max_cpu_s=60.0),
        harness=PageCache,
        expect=("one_leader_per_term",),
    ),
    # no nemesis; producer ids expire after 300 ms of log time (a producer idle on a
    # partition is forgotten there: OUT_OF_ORDER_SEQUENCE, a new session), and the network
    # keeps a copy of each session's first Produce request (sequence 0) and delivers it once
    # the producer's next session has written there (LateProduceCopy): under a fresh
    # producer id it is appended again, under a bumped epoch it is fenced
    10: Target(
        profile=FaultProfile("quiet", mean_gap_s=2.0, weights={"quiet": 1}),
        workload=WorkloadConfig(retention_share=0.0),
        harness=LateProduceCopy,
        expect=("duplicate under idempotence", "producer order"),
    ),
    # the disk profile: EIO/ENOSPC on writes and syncs, slow fsyncs, kills and power losses
    12: Target(
        profile="disk",
        expect=("StorageCorruption", "acked record", "group failed", "group stuck"),
    ),
    # every link refuses batches over 160 KiB (gRPC's RESOURCE_EXHAUSTED, LinkSizeLimit, and
    # every broker configured with that limit), Raft appends of up to 64 KiB, heavy produce
    # load on 3-4 partitions per topic, and followers that fall behind (kills, isolation):
    # catching up several groups in one turn exceeds the limit
    14: Target(
        profile=FaultProfile(
            "catch-up",
            mean_gap_s=1.0,
            weights={"kill_one": 2, "isolate_one": 2},
            down_s=(1.0, 3.0),
            partition_s=(1.0, 3.0),
        ),
        workload=WorkloadConfig(
            value_bytes=(500, 2000),
            send_gap_s=0.01,
            producers=(3, 3),
            retention_share=0.0,
            partitions=(3, 4),
        ),
        settings=BrokerSettings(max_size_per_msg=64 * 1024),
        budget=Budget(fault_s=6.0),
        harness=lambda: LinkSizeLimit(160 * 1024),
        expect=("group stuck", "[liveness]", "[acked_records_survive]", "group failed"),
    ),
    # every topic has a small retention.bytes, retention checked every 100 ms, and a fault
    # the nemesis cannot aim: a process killed between writing a retention snapshot and
    # deleting its segments (5 % of the passes), plus ordinary kills
    16: Target(
        profile=FaultProfile("kills", mean_gap_s=1.5, weights={"kill_one": 1, "quiet": 2}),
        workload=WorkloadConfig(retention_share=1.0, retention_bytes=(2000, 5000), send_gap_s=0.02),
        settings=BrokerSettings(retention_check_ms=100),
        harness=lambda: RetentionKeepsCutting(crash_p=0.05),
        expect=("retention_progress",),
    ),
    # short-lived producers (a new producer id every 150 ms), producer ids expiring after
    # 1.5 s of log time, a 20 s fault phase: the snapshot must stay within what the live
    # producers need
    17: Target(
        profile=FaultProfile("kills", mean_gap_s=1.5, weights={"kill_one": 1, "quiet": 1}),
        budget=Budget(fault_s=20.0),
        harness=ProducerChurn,
        expect=("snapshot_bounded",),
    ),
}


def verify(defect: int, bound: int) -> dict[str, Any]:
    """The whole check of one defect: the first detecting seed with the patch (within
    ``bound`` seeds from ``first_seed``), then the same configuration without the patch on
    every seed up to that one. Returns a JSON-able dict."""
    target = TARGETS[defect]
    seed, violations = hunt(target, bound, defect=defect)
    negative: list[tuple[int, list[str]]] = []
    if seed is not None:
        for clean in range(target.first_seed, seed + 1):
            result = run_target(target, clean)
            if result.violations:
                negative.append((clean, result.violations[:5]))
    return {
        "defect": defect,
        "bound": bound,
        "first_seed": target.first_seed,
        "seed": seed,
        "seeds_needed": None if seed is None else seed - target.first_seed + 1,
        "violations": violations[:5],
        "negative": negative,
    }


def main(argv: list[str]) -> int:
    """``python -m tests.system_sim.putback DEFECT BOUND``: prints :func:`verify`'s result as
    one JSON line. Seeds replay only under a fixed PYTHONHASHSEED; without one set, this
    re-executes itself with PYTHONHASHSEED=0 (as the simulation's CLI does)."""
    import json
    import os
    import subprocess
    import sys

    if os.environ.get("PYTHONHASHSEED") is None:
        env = dict(os.environ, PYTHONHASHSEED="0")
        return subprocess.call([sys.executable, "-m", "tests.system_sim.putback", *argv], env=env)
    defect, bound = int(argv[0]), int(argv[1])
    print(json.dumps(verify(defect, bound)))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
