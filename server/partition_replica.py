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

Off the loop (issue #13): loading a replica (``load_partition_state``) and retention (replaying the
dropped entries into a snapshot, saving it, compacting) run in the executor on the group's lane,
so a 64 MiB segment of small batches never stalls the Raft loop (#12 defect 18).

Checkpoints (issue #13, server/checkpoint.py): every ``checkpoint_interval_bytes`` of applied
data the replica captures an immutable image of its state at the applied index (on the loop:
list slices, no encoding) and writes it on the group's executor lane. A restart restores the
newest usable checkpoint instead of replaying the retained log up to it, and starts the Raft
core with ``applied`` = its index, so neither the offset-index rebuild nor the re-apply pass
touches entries it covers. Checkpoints are never Raft snapshots (they are never shipped to a
follower). ``save_checkpoint`` writes one at clean shutdown.

Fetch wake-ups are proportional (#12 defect 20): a waiting fetch registers the offset it waits
for; an apply wakes only the waiters whose offset the new high watermark has passed.

The log start is a replicated decision (docs/architecture.md "Partition snapshots and
retention"). The retention pass (``maybe_apply_retention``) has two halves:

* *plan* (leader only, once it has applied an entry of its own term): the state plans a new log
  start by this replica's segments, sizes and wall clock (``PartitionState.plan_retention``) and
  the replica proposes it as a log-start control entry; one proposal in flight at a time.
  Applying it moves the logical log start on every replica, identically.
* *delete* (every replica, lazily): whole segments that lie below the *applied* logical log start
  are dropped (``PartitionState.retention_cut``), after a snapshot at the cut, as before. A
  follower never cuts on its own clock or sizes, and no replica ever deletes above the log
  start. The snapshot carries the replica's current logical log start, so a follower that
  installs it never exposes a lower one.

Reads are served by a leader only once it has applied an entry of its own term (its no-op):
every log-start decision committed by an earlier leader is applied by then, so a new leader
(or a restarted one) never serves records an earlier leader had already cut. A fetch that
arrives earlier waits (long-poll) and then answers LEADER_NOT_AVAILABLE (retriable).
A read that must be linearizable passes ``read_barrier`` first (ReadIndex: a majority confirms
the leadership after the read began, and the leader applies up to the confirmed index), so a
deposed leader that has not noticed yet never answers it.

Fetch reads off the loop (issue #13): ``fetch`` runs the state's lookup on the loop and serves
entries straight from the log's in-memory tail cache (no executor hop on the hot path); entries
older than the cache are read in the executor on the group's ``fetch-<group_id>`` lane (so
reads never queue behind the group's fsyncs) and the state assembles the answer on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from partition.checkpoint import CheckpointImage, CheckpointInvalid
from partition.header import encode_log_start
from partition.state import (
    Append,
    Appended,
    Duplicate,
    DuplicateOf,
    FetchResult,
    PartitionState,
    Rejected,
)
from raft.confchange import apply_conf_change
from raft.errors import Compacted, NotLeader, ProposalDropped
from raft.rawnode import RawNode
from raft.storage import DurableLog
from raft.types import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    ReadState,
    Role,
    Snapshot,
    SnapshotMetadata,
    SoftState,
)
from server.checkpoint import CheckpointStore
from server.env import Executor
from server.errors import BrokerError, not_leader, timed_out
from server.proposals import ProposalWaiters
from server.waits import answer_within, woken_within


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
        executor: Executor,
        wall_clock_ms: Callable[[], int],
        checkpoints: CheckpointStore | None = None,
        checkpoint_index: int = 0,
        conf_state: ConfState | None = None,
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
        self._executor = executor
        self._wall_clock_ms = wall_clock_ms
        self._waiters: ProposalWaiters[ProduceResult] = ProposalWaiters()
        # acks=leader: resolved when the entry is durable on this leader; offsets by index.
        self._leader_waiters: ProposalWaiters[ProduceResult] = ProposalWaiters()
        self._leader_offsets: dict[int, tuple[int, int]] = {}
        self._fetch_waiters: list[tuple[int, asyncio.Future[None]]] = []
        # ReadIndex requests in flight: context -> the read index the core confirmed.
        self._read_waiters: dict[bytes, asyncio.Future[int]] = {}
        self.stopped: BaseException | None = None
        self._retention_running = False
        interval = state.config.checkpoint_interval_bytes
        self._checkpoints = checkpoints if interval > 0 else None
        self._checkpoint_interval = interval
        self._applied_since_checkpoint = 0  # bytes of entry data applied since the last one
        self._checkpoint_running = False
        self.checkpoint_index = checkpoint_index  # index of the newest checkpoint written
        self._log_start_pending: tuple[int, int] | None = None  # (index, term) proposed
        # The first index the log serves from memory (its tail cache), for fetch.
        self._memory_from: Callable[[], int] = log.cached_from
        self._reader = _FetchReader(log, None)  # the hot path's (passes never interleave)
        # The membership as of the applied index, for checkpoints (the core restarts from it).
        # Tracked exactly as the core derives it: the starting ConfState plus each committed
        # CONF_CHANGE (an invalid one skipped), reset by an installed snapshot. None when
        # unknown (it started uninitialized: the core may adopt a membership without telling
        # us); a checkpoint then carries none and the restart derives it from the log.
        self._conf = conf_state if conf_state is not None and conf_state.voters else None

    @property
    def what(self) -> str:
        return f"partition {self.partition} of topic '{self.topic}'"

    # ------------------------------------------------------------------ runtime callbacks
    def on_log_append(self, entries: Sequence[Entry]) -> None:
        self.state.on_log_append(entries)

    def on_read_states(self, read_states: Sequence[ReadState]) -> None:
        for rs in read_states:
            fut = self._read_waiters.pop(rs.context, None)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)

    def _fail_reads(self, err: BrokerError) -> None:
        for fut in self._read_waiters.values():
            if not fut.done():
                fut.set_exception(err)
        self._read_waiters.clear()

    def on_snapshot(self, snapshot: Snapshot) -> None:
        conf = snapshot.metadata.conf_state
        self._conf = conf if conf.voters else None
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
            self._on_leader_change(self.group_id, self.node.id, term)
        if was_leader and soft.role != Role.LEADER:
            # acks=leader waiters can no longer be answered truthfully by us, and pending
            # ReadIndex requests die with the leadership they were asked of.
            self._leader_waiters.fail_all(self._not_leader())
            self._leader_offsets.clear()
            self._fail_reads(self._not_leader())
        self._wake_fetchers(None)  # they notice leadership moved

    def on_persisted(self, last_index: int) -> None:
        if not len(self._leader_waiters):
            return

        def outcome(index: int) -> ProduceResult:
            base, last = self._leader_offsets[index]
            return ProduceResult(base, last, self.state.log_start_offset, False)

        self._leader_waiters.resolve_through(last_index, outcome)
        # Every waiter through last_index is gone now, answered or not (a caller that timed
        # out or went away left its waiter done, and resolve_through skips those): drop their
        # offsets too, or they would stay until the next step-down.
        for index in [i for i in self._leader_offsets if i <= last_index]:
            del self._leader_offsets[index]

    def _wake_fetchers(self, high_watermark: int | None) -> None:
        """Wakes the fetches waiting below ``high_watermark`` (all of them if None)."""
        if not self._fetch_waiters:
            return
        keep = []
        for offset, fut in self._fetch_waiters:
            if high_watermark is None or offset < high_watermark:
                if not fut.done():
                    fut.set_result(None)
            elif not fut.done():
                keep.append((offset, fut))
        self._fetch_waiters = keep

    def apply(self, entries: Sequence[Entry]) -> None:
        applied_bytes = 0
        for entry in entries:
            result = self.state.apply(entry)
            applied_bytes += len(entry.data)
            if entry.type == EntryType.CONF_CHANGE and self._conf is not None:
                self._conf = next_conf_state(self._conf, entry)
            self._waiters.resolve(
                entry.index,
                entry.term,
                lambda result=result, index=entry.index: self._outcome(index, result),  # type: ignore[misc]
                self._not_leader,
            )
        self._wake_fetchers(self.state.high_watermark)
        if self._checkpoints is not None:
            self._applied_since_checkpoint += applied_bytes
            if self._applied_since_checkpoint >= self._checkpoint_interval:
                self._start_checkpoint()

    # ------------------------------------------------------------------ checkpoints
    def _start_checkpoint(self) -> tuple[int, asyncio.Future[int]] | None:
        """Captures the state at the applied index (on the loop: copies only) and writes it
        on the group's lane; None if one is being written, nothing is new, or stopped."""
        store = self._checkpoints
        if store is None or self._checkpoint_running or self.stopped is not None:
            return None
        if self.state.applied_index <= self.checkpoint_index:
            return None
        image = self.state.capture_checkpoint(self._conf)
        self._checkpoint_running = True
        self._applied_since_checkpoint = 0
        job = self._executor.submit(f"group-{self.group_id}", store.save, image)
        job.add_done_callback(lambda f: self._checkpoint_done(image, f))
        return image.index, job

    def _checkpoint_done(self, image: CheckpointImage, job: asyncio.Future[int]) -> None:
        self._checkpoint_running = False
        if job.cancelled():
            return
        error = job.exception()
        if error is not None:
            # Only an optimisation: the previous checkpoint (or a full replay) still works.
            self._log.error(
                "partition_checkpoint_failed",
                group_id=self.group_id,
                index=image.index,
                error=repr(error),
            )
            return
        self.checkpoint_index = max(self.checkpoint_index, image.index)
        self._log.info(
            "partition_checkpoint_written",
            group_id=self.group_id,
            index=image.index,
            entries=image.entries,
            size_bytes=job.result(),
        )

    async def save_checkpoint(self) -> int | None:
        """Writes a checkpoint at the applied index now (clean shutdown); returns its index,
        or None when there is nothing new to write (or checkpoints are disabled). Waits for
        one already being written first."""
        if self._checkpoints is None:
            return None
        lane = f"group-{self.group_id}"
        if self._checkpoint_running:
            await self._executor.submit(lane, _noop)  # FIFO lane: after the running one
        started = self._start_checkpoint()
        if started is None:
            return None
        index, job = started
        with contextlib.suppress(Exception):  # logged by _checkpoint_done
            await asyncio.shield(job)
            return index
        return None

    def _outcome(self, index: int, result: object) -> ProduceResult:
        if isinstance(result, Appended):
            return ProduceResult(
                result.base_offset, result.last_offset, self.state.log_start_offset, False
            )
        if isinstance(result, Duplicate):
            return ProduceResult(
                result.base_offset, result.last_offset, self.state.log_start_offset, True
            )
        if isinstance(result, Rejected):
            raise result.error
        # Control: cannot happen for a data proposal
        raise BrokerError("INTERNAL", f"proposal at index {index} applied as {result}")

    def on_stopped(self, reason: BaseException | None) -> None:
        self.stopped = reason or RuntimeError("replica stopped")
        err = BrokerError(
            "LEADER_NOT_AVAILABLE",
            f"{self.what} is not being served by this broker ({self.stopped})",
            retriable=True,
            hint="retry; metadata will point at another replica",
        )
        self._waiters.fail_all(err)
        self._leader_waiters.fail_all(err)
        self._leader_offsets.clear()
        self._fail_reads(err)
        self._wake_fetchers(None)

    # ------------------------------------------------------------------ produce
    def _not_leader(self) -> BrokerError:
        leader = self.leader_id if self.leader_id != self.node.id else 0
        return not_leader(self.what, leader, self._leader_address(leader) if leader else "")

    def ensure_leader(self) -> None:
        if self.stopped is not None:
            raise self._not_leader()
        if self.role != Role.LEADER:
            raise self._not_leader()

    @property
    def read_ready(self) -> bool:
        """A leader that has applied an entry of its own term: every decision of an earlier
        leader (log-start entries included) is applied, so its reads are current."""
        return (
            self.stopped is None
            and self.role == Role.LEADER
            and self.state.applied_term == self.term
            and self.term > 0
        )

    def ensure_readable(self) -> None:
        """``ensure_leader``, and the leader has applied an entry of its term (else
        LEADER_NOT_AVAILABLE, retriable): what a read (fetch, list offsets) needs."""
        if (
            self.role is Role.LEADER
            and self.stopped is None
            and self.term > 0
            and self.state.applied_term == self.term
        ):
            return  # the hot path
        self.ensure_leader()
        if not self.read_ready:
            raise BrokerError(
                "LEADER_NOT_AVAILABLE",
                f"{self.what}: the new leader has not applied its first entry yet",
                retriable=True,
                hint="retry after a short back-off",
            )

    async def read_barrier(self, timeout_s: float) -> None:
        """Linearizable read barrier (ReadIndex, Raft thesis §6.4). Afterwards this replica is
        a leader that a majority confirmed *after* the call began, and it has applied every
        entry committed before then, so its high watermark covers every acks=all append acknowledged
        before the call. A deposed leader that has not noticed yet cannot pass: the majority
        answers with a higher term (it steps down: NOT_LEADER) or not at all (REQUEST_TIMED_OUT,
        retriable). Costs one heartbeat round to the followers (it wakes a quiesced group)."""
        self.ensure_leader()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        ctx = f"{self.node.id}:{self.group_id}:{next(_READ_CONTEXTS)}".encode()
        fut: asyncio.Future[int] = loop.create_future()
        self._read_waiters[ctx] = fut
        self.node.read_index(ctx)
        self._touch(self.group_id)  # wakes a quiesced group; the runtime sends the heartbeats
        try:
            index = await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            raise timed_out(f"read barrier of {self.what}") from None
        finally:
            self._read_waiters.pop(ctx, None)
        while self.state.applied_index < index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise timed_out(f"read barrier of {self.what} (applying up to index {index})")
            await self._wait_applied(remaining)
            self.ensure_leader()
        self.ensure_readable()

    async def produce(self, batch: bytes, *, acks_leader: bool, timeout_s: float) -> ProduceResult:
        """Validates and decides idempotence BEFORE proposing (#12 defect 8): a duplicate is
        answered with its original offsets (never proposed again), and a batch the leader
        would reject is proposed and answered only when apply rejected it, so ``acks=leader``
        never reports as written a batch that apply refuses, and a deposed leader never
        rejects on the strength of an old log."""
        self.ensure_leader()
        admission = self.state.admit(batch, now_ms=self._wall_clock_ms())
        if isinstance(admission, Rejected):
            # Not answered here: this leader may have been deposed without noticing yet
            # (isolated, or quiesced so it never ran CheckQuorum) and judge by an old log; an
            # OUT_OF_ORDER_SEQUENCE from it made the producer bump its epoch and resend records
            # that were in fact written (duplicates: system simulation, default seed 153). A
            # rejection is decided by apply, on a committed entry: propose it and wait for that
            # (never acknowledged early, whatever the acks mode).
            stamped, base_offset, last_offset = self.state.stamp(batch)
            admission = Append(stamped, base_offset, last_offset)
            acks_leader = False
        if isinstance(admission, DuplicateOf):
            fut = self._duplicate_answer(admission)
        else:
            fut = self._propose(admission, acks_leader)
        self._touch(self.group_id)
        return await answer_within(fut, timeout_s, f"produce to {self.what}")

    def _duplicate_answer(self, dup: DuplicateOf) -> asyncio.Future[ProduceResult]:
        answer = ProduceResult(dup.base_offset, dup.last_offset, self.state.log_start_offset, True)
        if not dup.pending_index:
            fut: asyncio.Future[ProduceResult] = asyncio.get_running_loop().create_future()
            fut.set_result(answer)
            return fut
        # The original is in the log but not applied yet: answer when it is (whatever the
        # acks mode, so the answer is never ahead of the original's fate).
        return self._waiters.add(dup.pending_index, dup.pending_term, lambda _r: answer)

    def _propose(self, admission: Append, acks_leader: bool) -> asyncio.Future[ProduceResult]:
        try:
            index = self.node.propose(admission.data)
        except NotLeader:
            raise self._not_leader() from None
        except ProposalDropped as exc:
            raise BrokerError(
                "LEADER_NOT_AVAILABLE",
                f"{self.what}: {exc.reason}",
                retriable=True,
                hint="retry after a short back-off",
            ) from None
        term = self.node.term
        self.state.on_log_append((Entry(index, term, EntryType.NORMAL, admission.data),))
        if acks_leader:
            self._leader_offsets[index] = (admission.base_offset, admission.last_offset)
            return self._leader_waiters.add(index, term)
        return self._waiters.add(index, term)

    # ------------------------------------------------------------------ fetch
    def _read(self, lo: int, hi: int, max_bytes: int) -> Sequence[Entry]:
        return self.log.entries(lo, hi, max_bytes)

    def fetch_once(self, offset: int, max_bytes: int) -> FetchResult:
        """Blocking variant of :meth:`fetch`: reads old segments on the calling thread (tests
        and tools; the broker serves with ``fetch``)."""
        self.ensure_readable()
        return self.state.fetch(offset, max_bytes, self._read)

    def _fetch_pass(
        self, offset: int, max_bytes: int, got: dict[int, Entry] | None
    ) -> FetchResult | _FetchMiss:
        """One pass of the state's fetch on the loop, reading only memory: the log's tail
        cache and ``got`` (entries read in the executor earlier); a miss names what to read."""
        reader = self._reader if got is None else _FetchReader(self.log, got)
        reader.memory_from = self._memory_from()
        reader.miss = None
        try:
            return self.state.fetch(offset, max_bytes, reader.read)
        except _FetchMiss as miss:
            if miss is not reader.miss:
                raise
            return miss

    async def fetch(self, offset: int, max_bytes: int, *, any_replica: bool = False) -> FetchResult:
        """Applied, live batches from ``offset`` (``PartitionState.fetch``), without touching
        the disk on the loop: the state's lookup and the assembly run here; entries in the
        log's tail cache are served at once (no executor hop); older ones are read in the
        executor on the ``fetch-<group_id>`` lane and the state's pass is repeated with them
        (applied entries never change, so what was read stays valid). Raises
        OffsetOutOfRange like the state, and NOT_LEADER / LEADER_NOT_AVAILABLE
        (``ensure_readable``). ``any_replica``: this replica's own applied data, leader or not
        (server/replica_digest.py; never for consumers, who read through the leader)."""
        check = self._ensure_running if any_replica else self.ensure_readable
        check()
        got: dict[int, Entry] = {}
        lane = f"fetch-{self.group_id}"
        for _attempt in range(64):
            result = self._fetch_pass(offset, max_bytes, got)
            if isinstance(result, FetchResult):
                return result
            try:
                entries = await self._executor.submit(
                    lane, self.log.entries, result.lo, result.hi, result.max_bytes
                )
            except Compacted:
                got.clear()  # a snapshot install or a cut meanwhile: look again
                entries = []
            check()
            for entry in entries:
                got[entry.index] = entry
        raise BrokerError("INTERNAL", f"{self.what}: fetch at {offset} made no progress")

    def _ensure_running(self) -> None:
        if self.stopped is not None:
            raise BrokerError(
                "REPLICA_NOT_AVAILABLE",
                f"{self.what}: this replica is stopped ({self.stopped!r})",
                retriable=False,
                hint="see `replog cluster status` for the failed group",
            )

    async def fetch_stream(
        self, offset: int, max_bytes: int, max_wait_s: float, follow: bool
    ) -> AsyncIterator[FetchResult]:
        while True:
            if not self.read_ready and self.stopped is None and self.role == Role.LEADER:
                # a new leader: wait (long-poll) until it applied an entry of its term
                await self._wait_applied(max_wait_s)
            self.ensure_readable()
            first = self._fetch_pass(offset, max_bytes, None)  # the hot path: memory only
            if isinstance(first, FetchResult):
                result = first
            else:
                result = await self.fetch(offset, max_bytes)
            if result.batches or result.next_offset > offset:
                # (No batches but a later next_offset: committed entries no consumer sees, a
                # no-op or a log-start entry, were stepped over. Say so, or a stream parked at
                # them would wait for new data that may never come; the system simulation
                # found a final read stuck there, 5 brokers seed 324.)
                yield result
                offset = result.next_offset
                if not follow:
                    return
                continue
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._fetch_waiters.append((offset, fut))
            if not await woken_within(fut, max_wait_s) and not follow:
                yield result
                return
            if self.stopped is not None:
                raise self._not_leader()

    async def _wait_applied(self, max_wait_s: float) -> None:
        """Waits until the next apply (or leadership change), at most ``max_wait_s``."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._fetch_waiters.append((-1, fut))
        await woken_within(fut, max_wait_s)

    # ------------------------------------------------------------------ retention
    async def maybe_apply_retention(self) -> int | None:
        """One retention pass. On a leader that has applied an entry of its term, plans a new
        log start (its own segments, sizes and clock) and proposes it as a log-start control
        entry (``maybe_propose_log_start``). On every replica, drops the whole segments that lie
        below the *applied* logical log start; returns the new first index, or None. The
        replay, the snapshot write and the compaction run on the group's executor lane."""
        if self._retention_running or self.stopped is not None:
            return None
        segments = [(s.first_index, s.last_index, s.size_bytes) for s in self.log.segments()]
        self.maybe_propose_log_start(segments)
        cut = self.state.retention_cut(segments)
        if cut is None:
            return None
        log_start = self.state.log_start_offset
        self._retention_running = True
        try:
            first = await self._executor.submit(
                f"group-{self.group_id}", self._compact_at, cut, log_start
            )
        finally:
            self._retention_running = False
        if self.stopped is not None:
            return None
        self.state.on_compacted(first)
        self._log.info(
            "retention_applied",
            group_id=self.group_id,
            cut_index=cut,
            log_start_offset=self.state.log_start_offset,
        )
        return first

    def maybe_propose_log_start(self, segments: Sequence[tuple[int, int, int]]) -> int | None:
        """Leader only: proposes the log start retention allows now, if it advances the
        current one and no earlier proposal of this term is still unapplied; returns the
        proposed offset, or None."""
        if not self.read_ready:
            return None
        pending = self._log_start_pending
        if pending is not None:
            index, term = pending
            if term == self.term and self.state.applied_index < index:
                return None
            self._log_start_pending = None
        offset = self.state.plan_retention(segments, self._wall_clock_ms())
        if offset is None:
            return None
        data = encode_log_start(offset)
        try:
            index = self.node.propose(data)
        except (NotLeader, ProposalDropped) as exc:
            self._log.info("log_start_not_proposed", group_id=self.group_id, reason=repr(exc))
            return None
        term = self.node.term
        self.state.on_log_append((Entry(index, term, EntryType.NORMAL, data),))
        self._log_start_pending = (index, term)
        self._touch(self.group_id)
        self._log.info(
            "log_start_proposed",
            group_id=self.group_id,
            index=index,
            log_start_offset=offset,
            current=self.state.log_start_offset,
        )
        return offset

    def _compact_at(self, cut: int, log_start: int = 0) -> int:
        """Blocking (executor): snapshot at ``cut`` (saved durably first, carrying the logical
        log start ``log_start``), then drop segments."""
        self.log.save_snapshot(self._snapshot_at(cut, log_start))
        self.log.compact(cut)
        return self.log.first_index()

    def _snapshot_at(self, index: int, log_start: int = 0) -> Snapshot:
        """The partition state as of ``index``: the previous snapshot plus the entries up to
        it, with the logical log start raised to ``log_start`` (the live one)."""
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
        return Snapshot(
            SnapshotMetadata(index, self.log.term(index), conf), replay.snapshot(log_start)
        )


# ReadIndex contexts, unique within the process (the core keys pending reads by context).
_READ_CONTEXTS = itertools.count(1)


def _noop() -> None:
    return None


class _FetchReader:
    """The reader of one fetch pass on the loop: ``got`` (entries already read in the
    executor), else the log's tail cache; anything older raises a :class:`_FetchMiss`."""

    __slots__ = ("got", "log", "memory_from", "miss")

    def __init__(self, log: DurableLog, got: dict[int, Entry] | None) -> None:
        self.log = log
        self.memory_from = 0
        self.got = got
        self.miss: _FetchMiss | None = None

    def read(self, lo: int, hi: int, max_bytes: int) -> Sequence[Entry]:
        got = self.got
        if got and lo in got:
            out: list[Entry] = []
            total = 0
            i = lo
            while i < hi and i in got:
                e = got[i]
                if out and total + len(e.data) > max_bytes:
                    break
                out.append(e)
                total += len(e.data)
                i += 1
            return out
        if lo >= self.memory_from:
            return self.log.entries(lo, hi, max_bytes)  # the tail cache: no syscall
        self.miss = _FetchMiss(lo, hi, max_bytes)
        raise self.miss


class _FetchMiss(Exception):
    """Raised inside a fetch pass: entries [lo, hi) are not in memory (read them off the loop)."""

    def __init__(self, lo: int, hi: int, max_bytes: int) -> None:
        super().__init__(lo, hi, max_bytes)
        self.lo, self.hi, self.max_bytes = lo, hi, max_bytes


def next_conf_state(conf: ConfState, entry: Entry) -> ConfState:
    """The membership after a committed CONF_CHANGE entry, as the Raft core applies it (an
    invalid change is skipped: ``Raft._applied_conf``)."""
    try:
        return apply_conf_change(conf, ConfChange.decode(entry.data))
    except ValueError:
        return conf


@dataclass(frozen=True, slots=True)
class LoadedPartition:
    """What ``load_partition_state`` found: the state, the index it has applied through when
    that came from a checkpoint (None: the snapshot's; pass it to ``RawNode(applied=)``), and
    the membership as of the state's applied index (None: unknown, the core derives it)."""

    state: PartitionState
    applied: int | None
    conf_state: ConfState | None


def load_partition_state(
    log: DurableLog,
    make_state: Callable[[], PartitionState],
    checkpoints: CheckpointStore | None = None,
) -> LoadedPartition:
    """Blocking (executor): the partition state of a just-opened log.

    With a usable checkpoint at A (``checkpoints``, unless checkpoints are disabled in the
    partition config): the checkpoint's state, then the offset tail rebuilt from the entries
    after A only; start the Raft core with ``applied=A`` and the checkpoint's membership, and
    it hands out committed entries from A + 1. Otherwise: the snapshot, then the offset tail
    rebuilt from the whole retained log, and the core re-applies the committed entries after
    the snapshot. A checkpoint is usable when it lies within [snapshot index, last index] of
    this log and the log has its term at its index; an unusable one is logged
    (``partition_checkpoint_ignored``) and ignored."""
    state = make_state()
    snap = log.snapshot()
    snap_index = 0 if snap.is_empty() else snap.metadata.index
    lo, last = log.first_index(), log.last_index()
    applied: int | None = None
    conf: ConfState | None = snap.metadata.conf_state
    if checkpoints is not None and state.config.checkpoint_interval_bytes > 0:
        config = state.config
        image = checkpoints.load(
            keep=config.producer_state_keep, expiry_ms=config.producer_expiry_ms
        )
        if image is not None:
            reason = _checkpoint_misfit(image, log, snap_index)
            if reason is None:
                try:
                    state.restore_checkpoint(image, snap_index)
                    applied = image.index
                    lo = max(lo, applied + 1)
                except CheckpointInvalid as e:
                    reason = e.reason
                    state = make_state()
            if reason is not None:
                checkpoints.ignored(reason)
            elif image.conf_state.voters:
                conf = image.conf_state
            elif conf is not None and conf.voters:
                # written while the membership was unknown: derive it once from the log
                conf = _conf_through(log, conf, max(snap_index + 1, log.first_index()), image.index)
    if applied is None and not snap.is_empty():
        state.restore(snap.data, snap_index)
    while lo <= last:
        chunk = log.entries(lo, last + 1, 8 << 20)
        state.on_log_append(chunk)
        lo = chunk[-1].index + 1
    return LoadedPartition(state, applied, conf if conf is not None and conf.voters else None)


def _conf_through(log: DurableLog, conf: ConfState, lo: int, hi: int) -> ConfState:
    """``conf`` plus the CONF_CHANGE entries in [lo, hi] of the log."""
    while lo <= hi:
        chunk = log.entries(lo, hi + 1, 8 << 20)
        for e in chunk:
            if e.type == EntryType.CONF_CHANGE:
                conf = next_conf_state(conf, e)
        lo = chunk[-1].index + 1
    return conf


def _checkpoint_misfit(image: CheckpointImage, log: DurableLog, snap_index: int) -> str | None:
    """Why the checkpoint does not describe a prefix of this log (None: it does)."""
    first, last = log.first_index(), log.last_index()
    if image.index < snap_index:
        return (
            f"checkpoint at index {image.index} is older than the snapshot at index "
            f"{snap_index} (a retention cut or an installed snapshot since)"
        )
    if image.index < first - 1:
        return f"checkpoint at index {image.index} is below the log start {first}"
    if image.index > last:
        return f"checkpoint at index {image.index} is beyond the log's last index {last}"
    if image.index > snap_index and log.term(image.index) != image.term:
        return (
            f"the log has term {log.term(image.index)} at index {image.index}, the checkpoint "
            f"term {image.term}"
        )
    return None
