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
import errno
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from metadata.state import MetadataState, PartitionAssignment
from partition.errors import OffsetOutOfRange, PartitionInvariantError
from partition.state import PartitionState
from raft import core as raft_core
from raft.log import RaftLog
from raft.storage import durable_log as durable_log_mod
from raft.storage.durable_log import DurableLog
from raft.types import Message
from server import node as node_mod
from server import runtime as runtime_mod
from server.node import BrokerNode
from server.reconcile import Plan
from server.runtime import Group, Runtime
from tests.system_sim.cluster import BrokerSettings
from tests.system_sim.faults import FaultProfile
from tests.system_sim.fs import SimDisk, _Dir, _File
from tests.system_sim.runner import Budget, SeedResult, run_seed
from tests.system_sim.workload import WorkloadConfig

__all__ = [
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
        state = restore(cls, data)
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
        self: Runtime, group: Group, number: int, last: int, job: asyncio.Future[None]
    ) -> None:
        group.jobs_in_flight -= 1
        error = None if job.cancelled() else job.exception()
        if error is not None:
            covered = [g for g in self.groups.values() if g.jobs_in_flight > 0 or g is group]
            for g in covered:
                self._fail(g, error)
            return
        if group.failed is not None or group.removed:
            return
        if job.cancelled():
            self._fail(group, RuntimeError("persistence job cancelled"))
            return
        try:
            group.node.on_persisted(number)
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
    0 ms), so a consumer reset to "latest" skipped records."""
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


# ---------------------------------------------------------------------------- #16 retention


def _patch_16(stack: contextlib.ExitStack) -> None:
    """partition/ before 52ab9ea: after a crash between saving a retention snapshot and
    deleting its segments, the next pass replays entries at or below the snapshot, which
    ``apply`` refused ("apply order"), and retention_cut did not drop the stale segments
    first: every later pass fails, the log grows without limit."""
    original_apply = PartitionState.apply
    from partition import state as state_mod

    def apply(self: PartitionState, entry: Any) -> Any:
        if entry.index <= self._snapshot_index and entry.index != self._applied + 1:
            raise PartitionInvariantError(
                "apply order",
                self._applied + 1,
                entry.index,
                "entries must be applied in index order, exactly once",
            )
        return original_apply(self, entry)

    def retention_cut(self: PartitionState, segments: Any, now_ms: int) -> int | None:
        return state_mod._retention_cut(
            segments,
            applied_index=self._applied,
            now_ms=now_ms,
            retention_ms=self.config.retention_ms,
            retention_bytes=self.config.retention_bytes,
            max_timestamp_ms=self._index.max_timestamp,
        )

    stack.enter_context(swap(PartitionState, "apply", apply))
    stack.enter_context(swap(PartitionState, "retention_cut", retention_cut))


# ---------------------------------------------------------------------------- registry

PATCHES: dict[int, Callable[[contextlib.ExitStack], None]] = {
    1: _patch_1,
    2: _patch_2,
    3: _patch_3,
    4: _patch_4,
    6: _patch_6,
    7: _patch_7,
    9: _patch_9,
    16: _patch_16,
}


@contextlib.contextmanager
def putback(defect: int) -> Iterator[None]:
    """Puts issue 12's ``defect`` back for the duration (see each ``_patch_N``)."""
    with contextlib.ExitStack() as stack:
        PATCHES[defect](stack)
        yield


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
    # extra harness context (e.g. the page-cache model), entered with or without the patch
    harness: Callable[[], contextlib.AbstractContextManager[Any]] | None = None
    # extra checker: (node_hook factory) -> (hook, verdict(result) -> violations)
    sampler: Callable[[], tuple[Callable[[BrokerNode], None], Callable[[], list[str]]]] | None = (
        None
    )


def run_target(target: Target, seed: int) -> SeedResult:
    hook: Callable[[BrokerNode], None] | None = None
    verdict: Callable[[], list[str]] | None = None
    if target.sampler is not None:
        hook, verdict = target.sampler()
    with target.harness() if target.harness is not None else contextlib.nullcontext():
        result = run_seed(
            seed,
            target.brokers,
            1,
            target.profile,
            budget=target.budget,
            settings=target.settings,
            workload=target.workload,
            node_hook=hook,
        )
    if verdict is not None:
        result.violations.extend(verdict())
    return result


def hunt(target: Target, seeds: int, *, defect: int | None = None) -> tuple[int | None, list[str]]:
    """Runs seeds ``first_seed .. first_seed + seeds - 1`` in order (with ``defect`` put back
    when given) and stops at the first violating one: (seed, violations) or (None, [])."""
    for seed in range(target.first_seed, target.first_seed + seeds):
        with putback(defect) if defect is not None else contextlib.nullcontext():
            result = run_target(target, seed)
        if result.violations:
            return seed, result.violations
    return None, []


_ = (errno, durable_log_mod, runtime_mod, PartitionAssignment)

# Whole-cluster crashes (SIGKILL and power loss of every broker) soon after topics are created
# and written: a restarted broker replays its metadata only up to its lazily written commit
# index, so its state is older than the groups on its disk.
WHOLE_CLUSTER = FaultProfile(
    "whole-cluster",
    mean_gap_s=1.0,
    weights={"kill_all": 3, "power_loss_all": 1, "kill_one": 1},
    down_s=(0.2, 1.5),
)

TARGETS: dict[int, Target] = {
    1: Target(profile=WHOLE_CLUSTER),
    # metadata snapshots every 10 entries (compaction keeps the active segment, so entries the
    # snapshot covers stay on disk), then restarts
    2: Target(profile="crashy", settings=BrokerSettings(snapshot_interval_entries=10)),
}
