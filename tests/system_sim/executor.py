"""The executor seam in simulation: blocking jobs run on the event loop at a virtual time.

API
---
- ``SimExecutor(loop=None, disk=None, *, base_delay_s=0.00005)``: implements
  ``server.env.Executor``. ``loop`` is the (virtual-time) event loop, or ``None`` to use the
  running loop at the first ``submit`` (a bound ``loop.time`` is accepted too). ``disk`` is the
  node's ``SimDisk`` (its ``pending_cost_s`` is each job's cost), or ``None`` (cost 0).
  - ``submit(lane, fn, *args) -> asyncio.Future``: FIFO per lane, lanes independent.
  - ``shutdown()``: at a simulated crash: every pending future is cancelled, queued jobs never
    run, later ``submit`` calls return an already-cancelled future.
  - counters: ``jobs_run``, ``busy_s`` (total virtual time charged, per lane in
    ``busy_s_by_lane``).

Timing
------
When a lane becomes free its next job starts: after ``base_delay_s`` (a thread hand-off) the
job's ``fn(*args)`` runs, synchronously on the loop, with ``disk.pending_cost_s`` reset to 0
before and read after; the future resolves (result or exception) after that cost, and only
then does the lane take its next job. So a slow fsync delays its own lane and no other one,
and a node that crashes while a job's cost is being "paid" never sees the job complete.

Note the fn's effects on the SimDisk happen when it runs (before the cost is paid): a crash
during the cost window finds the writes applied and, if the fn synced, durable — as a real
fsync that completed just before the power went. A crash before the fn ran (a queued job,
or within ``base_delay_s``) finds none of them. What the simulation does not model: a job
running concurrently with the loop (fn is atomic with respect to every task), so races between
a worker thread and the loop on shared objects cannot show up here.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from server.env import then_via_future
from tests.system_sim.fs import SimDisk

__all__ = ["SimExecutor"]

T = TypeVar("T")


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]


class _Lane:
    __slots__ = ("busy", "current", "handle", "queue")

    def __init__(self) -> None:
        self.queue: collections.deque[_Job] = collections.deque()
        self.busy = False
        self.current: _Job | None = None
        self.handle: asyncio.TimerHandle | asyncio.Handle | None = None


class SimExecutor:
    """See the module docstring."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | Callable[[], float] | None = None,
        disk: SimDisk | None = None,
        *,
        base_delay_s: float = 0.00005,
    ) -> None:
        if loop is not None and not isinstance(loop, asyncio.AbstractEventLoop):
            owner = getattr(loop, "__self__", None)  # a bound loop.time
            loop = owner if isinstance(owner, asyncio.AbstractEventLoop) else None
        self._loop: asyncio.AbstractEventLoop | None = loop
        self.disk = disk
        self.base_delay_s = base_delay_s
        self._lanes: dict[str, _Lane] = {}
        self._shut = False
        self.jobs_run = 0
        self.busy_s = 0.0
        self.busy_s_by_lane: dict[str, float] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def submit(self, lane: str, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        future: asyncio.Future[T] = self.loop.create_future()
        if self._shut:
            future.cancel()
            return future
        state = self._lanes.get(lane)
        if state is None:
            state = self._lanes[lane] = _Lane()
        state.queue.append(_Job(fn, args, future))
        if not state.busy:
            self._start_next(lane, state)
        return future

    def submit_then(
        self,
        lane: str,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        then: Callable[[T | None, BaseException | None], None],
    ) -> None:
        then_via_future(self, lane, fn, args, then)

    def _start_next(self, lane: str, state: _Lane) -> None:
        while state.queue and state.queue[0].future.cancelled():
            state.queue.popleft()  # the caller gave up before the job started: skip it
        if not state.queue or self._shut:
            state.busy = False
            state.current = None
            state.handle = None
            return
        state.busy = True
        job = state.queue.popleft()
        state.current = job
        state.handle = self.loop.call_later(self.base_delay_s, self._run_job, lane, state, job)

    def _run_job(self, lane: str, state: _Lane, job: _Job) -> None:
        if self._shut:
            return
        disk = self.disk
        ok = True
        result: Any = None
        error: BaseException | None = None
        if disk is not None:
            disk.pending_cost_s = 0.0
            disk.in_executor = True
        try:
            result = job.fn(*job.args)
        except Exception as exc:  # delivered through the future, as a thread pool does
            ok = False
            error = exc
        finally:
            cost = 0.0
            if disk is not None:
                cost = max(0.0, disk.pending_cost_s)
                disk.pending_cost_s = 0.0
                disk.in_executor = False
        self.jobs_run += 1
        self.busy_s += cost + self.base_delay_s
        self.busy_s_by_lane[lane] = self.busy_s_by_lane.get(lane, 0.0) + cost + self.base_delay_s
        state.handle = self.loop.call_later(
            cost, self._finish_job, lane, state, job, ok, result, error
        )

    def _finish_job(
        self,
        lane: str,
        state: _Lane,
        job: _Job,
        ok: bool,
        result: Any,
        error: BaseException | None,
    ) -> None:
        if self._shut:
            return
        if not job.future.done():
            if ok:
                job.future.set_result(result)
            else:
                assert error is not None
                job.future.set_exception(error)
        self._start_next(lane, state)

    def pending(self, lane: str | None = None) -> int:
        """Jobs queued or running (in one lane, or in all)."""
        lanes = [self._lanes[lane]] if lane is not None and lane in self._lanes else []
        if lane is None:
            lanes = list(self._lanes.values())
        return sum(len(s.queue) + (1 if s.busy else 0) for s in lanes)

    def shutdown(self) -> None:
        self._shut = True
        for state in self._lanes.values():
            if state.handle is not None:
                state.handle.cancel()
                state.handle = None
            if state.current is not None:
                state.current.future.cancel()
                state.current = None
            for job in state.queue:
                job.future.cancel()
            state.queue.clear()
            state.busy = False
