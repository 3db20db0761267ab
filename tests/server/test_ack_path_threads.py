"""The produce -> acknowledgement path on real threads (the production ThreadExecutor, the
runtime, DurableLog.sync): what the system simulation cannot see, since its executor runs
jobs on the loop. From a fresh-eye review (helper-21): the executor tests each failed on the
executor of 90fc4f5; the others pin down interleavings the review checked and found sound.
Interleavings are forced with events or a wrapper around the executor's ready queue (the
natural windows are a few bytecodes wide)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from raft.storage import DurableLog
from raft.types import HardState
from server.env import ThreadExecutor
from tests.raft.test_storage_power_loss_interleaved import (
    SIM_DIR,
    _InterleavingFs,
    _new_sim_disk,
    _sim_entries,
)

WAIT_S = 10.0  # bound on every wait a passing run needs
STUCK_S = 1.5  # how long a job that should already have run is given before "stuck"


# ---------------------------------------------------------------- executor: shutdown race


class _GatedReady:
    """Stands in for ThreadExecutor._ready. A lane put back by a worker after its burst (a put
    from a worker thread) waits until shutdown has put its stop markers: the window between
    the worker's lock release and its put, which ``thread.start()`` of a newly claimed worker
    widens in production."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.requeue_waiting = threading.Event()
        self.stop_marker_put = threading.Event()

    def put(self, item: Any) -> None:
        if item is None:
            self._real.put(None)
            self.stop_marker_put.set()
            return
        if threading.current_thread().name.startswith("replog-io"):
            self.requeue_waiting.set()
            # Let shutdown's markers in first if they can get in (the defect); with the put
            # made under the executor's lock they cannot, and this wait just times out.
            self.stop_marker_put.wait(0.5)
        self._real.put(item)

    def get(self) -> Any:
        return self._real.get()


def test_shutdown_during_a_burst_requeue_still_runs_the_lanes_queued_jobs() -> None:
    """Contract: ``shutdown`` runs the jobs already queued. A worker that used up its burst on
    lane g releases the lock, then puts g back on the ready queue. If ``shutdown`` (closing,
    one stop marker per worker) lands in between, g is queued *behind* the markers: every
    worker takes a marker and exits, ``shutdown`` returns, and g's remaining jobs never run
    and their outcomes are never delivered."""
    ran: list[int] = []

    async def main() -> None:
        ex = ThreadExecutor(max_workers=1, burst=1)
        gated = _GatedReady(ex._ready)
        ex._ready = gated  # type: ignore[assignment]
        first = ex.submit("g", lambda: ran.append(1))
        second = ex.submit("g", lambda: ran.append(2))  # queued before shutdown
        assert await asyncio.to_thread(gated.requeue_waiting.wait, WAIT_S)
        stopper = threading.Thread(target=ex.shutdown)
        stopper.start()
        stopper.join(WAIT_S)
        assert not stopper.is_alive()
        await asyncio.wait_for(first, WAIT_S)
        assert ran == [1, 2], f"shutdown returned but the queued job 2 never ran: ran={ran}"
        await asyncio.wait_for(second, STUCK_S)

    asyncio.run(main())


# ---------------------------------------------------------------- executor: thread start fails


class _StartFails:
    """Makes the ``n``-th ``threading.Thread.start`` of an executor worker raise, as it does
    when the process hits its thread limit (RuntimeError: can't start new thread)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int) -> None:
        self.count = 0
        real_start = threading.Thread.start

        def start(thread: threading.Thread) -> None:
            if thread.name.startswith("replog-io"):
                self.count += 1
                if self.count == fail_at:
                    raise RuntimeError("can't start new thread")
            real_start(thread)

        monkeypatch.setattr(threading.Thread, "start", start)


def test_a_worker_that_cannot_start_fails_the_executor_at_once_and_leaves_no_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers used to start on demand: a start that raised ("can't start new thread", at the
    process's thread limit) in ``submit`` left the lane registered with no worker ever to run
    it (the group's next fsync and its close never ran; shutdown hung), and in a worker after
    its burst it killed the worker before the lane was put back. Now every worker starts in
    the constructor: a failure there fails the broker's start, and the workers already
    started are stopped."""
    starts = _StartFails(monkeypatch, fail_at=3)
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(RuntimeError, match="can't start"):
        ThreadExecutor(max_workers=4)
    assert starts.count == 3
    left = [
        t for t in threading.enumerate() if t.ident not in before and t.name.startswith("replog-io")
    ]
    assert not left, left


# ---------------------------------------------------------------- executor: StopIteration


def test_a_job_raising_stop_iteration_still_settles_its_future() -> None:
    """``_settle`` calls ``fut.set_exception(StopIteration())``, which asyncio refuses with
    TypeError (raised inside the loop callback, logged, the future left pending): the awaiter
    waits forever. A job that calls ``next()`` on an exhausted iterator is enough.
    (Pre-existing: the previous executor settled futures the same way.)"""

    async def main() -> None:
        ex = ThreadExecutor()
        fut = ex.submit("g", next, iter(()))
        try:
            await asyncio.wait_for(fut, STUCK_S)
        except TimeoutError:
            pytest.fail("the future of a job that raised StopIteration never settled")
        except BaseException:
            pass  # settled with some error: fine
        finally:
            ex.shutdown()

    asyncio.run(main())


# ---------------------------------------------------------------- executor: checked sound


def test_stress_lanes_fifo_one_at_a_time_outcomes_in_order_and_all_delivered() -> None:
    """Many lanes, tiny bursts, more lanes than workers, random job lengths, BaseException
    outcomes mixed in, submits while workers finish: per lane the jobs never overlap, run in
    submission order, and every outcome reaches ``then`` exactly once, in order."""
    rng = random.Random(5)
    lanes = [f"group-{i}" for i in range(12)]
    jobs_per_lane = 60
    running: dict[str, int] = {lane: 0 for lane in lanes}
    ran: dict[str, list[int]] = {lane: [] for lane in lanes}
    overlap: list[str] = []
    guard = threading.Lock()
    delays = {
        (lane, i): rng.choice([0, 0, 0, 0.0002, 0.001])
        for lane in lanes
        for i in range(jobs_per_lane)
    }

    def job(lane: str, i: int) -> int:
        with guard:
            running[lane] += 1
            if running[lane] > 1:
                overlap.append(lane)
        ran[lane].append(i)
        if delays[(lane, i)]:
            time.sleep(delays[(lane, i)])
        with guard:
            running[lane] -= 1
        if i % 17 == 5:
            raise KeyboardInterrupt  # a BaseException: still delivered, lane goes on
        return i

    async def main() -> None:
        ex = ThreadExecutor(max_workers=3, burst=2)
        got: dict[str, list[int]] = {lane: [] for lane in lanes}
        done = asyncio.Event()
        total = len(lanes) * jobs_per_lane
        count = 0

        def then_for(lane: str, i: int) -> Callable[[Any, BaseException | None], None]:
            def then(result: Any, error: BaseException | None) -> None:
                nonlocal count
                got[lane].append(i if error is None else -i)
                assert (error is None) == (result == i)
                count += 1
                if count == total:
                    done.set()

            return then

        for i in range(jobs_per_lane):
            for lane in rng.sample(lanes, len(lanes)):
                ex.submit_then(lane, job, (lane, i), then_for(lane, i))
            if i % 7 == 0:
                await asyncio.sleep(0.001)  # let workers drain lanes so lanes go idle and restart
        await asyncio.wait_for(done.wait(), 30)
        ex.shutdown()
        assert not overlap
        for lane in lanes:
            assert ran[lane] == list(range(jobs_per_lane))
            assert [abs(v) for v in got[lane]] == list(range(jobs_per_lane)), lane
            assert all((v < 0) == (abs(v) % 17 == 5) for v in got[lane] if v)

    asyncio.run(main())


# ---------------------------------------------------------------- DurableLog.sync: checked sound


@pytest.mark.parametrize("hook_at", [1, 2, "in_state_store"])
def test_a_vote_recorded_while_an_earlier_sync_runs_is_durable_after_the_next_sync(
    hook_at: int | str,
) -> None:
    """The runtime reports Ready N+1 persisted (releasing a vote grant) once the job submitted
    after N+1's writes completes. Ready N+1's term/vote lands while job N (which captured the
    older hard state) is at any of its unlocked file operations; job N then writes its
    captured state and clears the pending flag only if nothing newer arrived. After job N+1, a
    power loss must keep the new term and vote."""
    disk = _new_sim_disk(hook_at)
    fs = _InterleavingFs(disk, crash_at=10**9, torn=False)
    log = DurableLog(SIM_DIR, fs=fs, segment_bytes=100_000)  # type: ignore[arg-type]
    fs.log = log
    log.append(_sim_entries(1, 5, 1, 100))
    log.save_hard_state(HardState(term=1, vote=1, commit=0))
    log.sync()
    log.append(_sim_entries(5, 7, 1, 100))
    log.save_hard_state(HardState(term=2, vote=2, commit=3))  # Ready N: job N captures this

    def ready_n_plus_1() -> None:
        log.append(_sim_entries(7, 9, 3, 100))
        log.save_hard_state(HardState(term=3, vote=3, commit=4))

    if hook_at == "in_state_store":
        # While job N writes its captured state file (``_state_lock`` held, which the loop
        # never takes): after it computed the pending flag, before ``_hs_written`` moves.
        store = log._state_file.store
        hooked: list[bool] = []

        def store_then_ready(hs: HardState, bootstrap: Any) -> None:
            if not hooked:
                hooked.append(True)
                ready_n_plus_1()
            store(hs, bootstrap)

        log._state_file.store = store_then_ready  # type: ignore[method-assign]
        log.sync()  # job N
        assert hooked
        log._state_file.store = store  # type: ignore[method-assign]
    else:
        # at job N's hook_at-th file operation made with no lock held (it has two here)
        fs.hook, fs.hook_at = ready_n_plus_1, hook_at
        log.sync()  # job N
        assert fs.hook is None
    log.sync()  # job N+1: Ready N+1 may now be reported persisted
    disk.crash(torn=False)
    reopened = DurableLog(SIM_DIR, fs=disk.mount(), segment_bytes=100_000)
    hs, _ = reopened.initial_state()
    assert (hs.term, hs.vote) == (3, 3), hs
    assert reopened.last_index() == 8
    assert reopened.entries(7, 9) == _sim_entries(7, 9, 3, 100)


# ---------------------------------------------------------------- runtime + real executor


class _ModelLog:
    """FakeLog (tests/server/test_runtime.py) with a durability model: ``sync`` (in a worker
    thread) makes durable what was written when it *started*, after a random delay, while the
    loop keeps writing."""

    def __init__(self, voters: frozenset[int], rng: random.Random) -> None:
        from tests.server.test_runtime import FakeLog

        self.inner = FakeLog(voters)
        self._guard = threading.Lock()
        self._rng = rng
        self.written_last = 0
        self.written_vote: tuple[int, int] = (0, 0)
        self.durable_last = 0
        self.durable_vote: tuple[int, int] = (0, 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def append(self, entries: Any) -> None:
        self.inner.append(entries)
        with self._guard:
            self.written_last = entries[-1].index

    def save_hard_state(self, hs: HardState) -> None:
        self.inner.save_hard_state(hs)
        with self._guard:
            self.written_vote = (hs.term, hs.vote)

    def sync(self) -> None:
        with self._guard:
            last, vote = self.written_last, self.written_vote
            delay = self._rng.choice([0, 0, 0.0003, 0.002])
        if delay:
            time.sleep(delay)
        with self._guard:
            self.durable_last = max(self.durable_last, last)
            self.durable_vote = vote


def test_runtime_on_a_real_executor_reports_only_what_a_completed_sync_made_durable() -> None:
    """Single-voter groups (commit = own fsync) driven by the production ThreadExecutor, with
    producers proposing while syncs run in worker threads and tiny bursts force lanes through
    the requeue path: every applied (acknowledged) entry, every replica ``on_persisted(last)``
    and every core ``on_persisted(n)`` is covered by a sync that had completed, numbers never
    go backwards, and everything proposed is applied."""
    from raft.config import RaftConfig
    from raft.rawnode import RawNode
    from server.runtime import Group, Runtime
    from tests.server.test_runtime import FakeReplica, RecordingTransport, _NullLog

    rng = random.Random(11)
    problems: list[str] = []

    class CheckingReplica(FakeReplica):
        def __init__(self, log: _ModelLog) -> None:
            super().__init__()
            self.log = log

        def apply(self, entries: Any) -> None:
            for e in entries:
                if e.index > self.log.durable_last:
                    problems.append(f"applied {e.index} > durable {self.log.durable_last}")
            super().apply(entries)

        def on_persisted(self, last_index: int) -> None:
            if last_index > self.log.durable_last:
                problems.append(f"on_persisted({last_index}) > durable {self.log.durable_last}")
            if self.persisted and last_index < self.persisted[-1]:
                problems.append(f"on_persisted went back {self.persisted[-1]} -> {last_index}")
            super().on_persisted(last_index)

    async def main() -> None:
        ex = ThreadExecutor(max_workers=3, burst=2)
        rt = Runtime(
            node_id=1,
            tick_ms=5,
            transport=RecordingTransport(),  # type: ignore[arg-type]
            executor=ex,
            log=_NullLog(),
            seed=3,
        )
        groups = []
        for gid in range(6):
            log = _ModelLog(frozenset({1}), random.Random(rng.getrandbits(32)))
            node = RawNode(RaftConfig(node_id=1), log, rt.new_rng())  # type: ignore[arg-type]
            replica = CheckingReplica(log)
            persisted_numbers: list[int] = []
            real_on_persisted = node.on_persisted

            def on_persisted(
                n: int,
                _real: Any = real_on_persisted,
                _seen: list[int] = persisted_numbers,
                _log: _ModelLog = log,
            ) -> None:
                if _seen and n < _seen[-1]:
                    problems.append(f"node.on_persisted went back {_seen[-1]} -> {n}")
                if _log.written_vote != (0, 0) and _log.durable_vote[0] < 1:
                    problems.append("a Ready reported persisted before its term/vote was durable")
                _seen.append(n)
                _real(n)

            node.on_persisted = on_persisted  # type: ignore[method-assign]
            group = Group(gid, node, log, replica)  # type: ignore[arg-type]
            rt.add_group(group)
            node.campaign()
            groups.append((group, replica))
        rt.start()
        try:
            for _ in range(200):
                if all(g.node.role.name == "LEADER" for g, _ in groups):
                    break
                await asyncio.sleep(0.005)
            sent = 0
            for round_ in range(150):
                for group, _ in groups:
                    for _ in range(rng.randint(0, 3)):
                        group.node.propose(f"{group.group_id}:{round_}".encode())
                        sent += 1
                    rt.touch(group.group_id)
                await asyncio.sleep(rng.choice([0, 0, 0.0005]))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if sum(len([e for e in r.applied if e.data]) for _, r in groups) == sent:
                    break
                await asyncio.sleep(0.01)
        finally:
            await rt.stop()
            ex.shutdown()
        assert not problems, problems[:5]
        assert all(g.failed is None for g, _ in groups)
        assert sum(len([e for e in r.applied if e.data]) for _, r in groups) == sent

    asyncio.run(main())
