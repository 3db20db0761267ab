"""The four seams between the broker's decisions and the world (DESIGN.md "server/").

Everything a broker decides (group registry and lifecycle, reconcile, both replica kinds, the
runtime turn, quiescence, the fsync pipeline, retention, snapshots, leadership transfer) reaches
the outside only through an ``Env``:

- **clock and timers**: the running asyncio event loop. Monotonic time is ``loop.time()``,
  timers are ``asyncio.sleep``/``call_later``. Production runs the default loop; the system
  simulation (tests/system_sim) runs the same code on a virtual-time loop. Wall-clock time, which
  only ever labels data (record timestamps, log lines) and never decides liveness or ordering
  across machines, comes from ``Env.wall_clock_ms``.
- **network**: ``Env.network``: peer links carrying Raft batches, and stubs for the few
  broker-to-broker RPCs (metadata forwarding, forwarded leadership transfers). Client requests
  enter through the service objects (server/service.py), which the production wiring registers
  on a grpc.aio server and the simulation calls directly.
- **filesystem**: ``Env.fs`` (raft/storage/fs.py), for the logs and the registry's files alike.
- **executor**: ``Env.executor`` runs blocking work (fsync, file creation, reads of old segments,
  snapshots, retention replay) off the event loop, FIFO per lane.

Nothing in the broker's decisions may call ``os``, ``time.time``, ``threading`` or open grpc
channels directly (grpc appears there only as status codes, in server/errors.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any, Protocol, TypeVar

from raft.storage.fs import OS_FS, FileSystem
from wire import replog_pb2 as pb

T = TypeVar("T")


class Executor(Protocol):
    def submit(self, lane: str, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Runs ``fn(*args)`` off the event loop. Jobs of one lane run one at a time in
        submission order (so their completions arrive in that order); different lanes may run
        concurrently. The future resolves on the event loop."""
        ...

    def submit_then(
        self,
        lane: str,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        then: Callable[[T | None, BaseException | None], None],
    ) -> None:
        """Like ``submit``, but the outcome goes straight to ``then(result, error)`` on the
        event loop, with no future in between (a future's callbacks run one loop iteration
        after it resolves: on the fsync path that hop sat in every replication round). Outcomes
        of one lane's ``submit_then`` jobs arrive in submission order; a ``submit`` job's awaiter
        may resume an iteration after a later ``submit_then`` callback of the same lane. After
        ``shutdown`` nothing more is reported (stop the users first, as the broker does); the
        test and simulation executors report a job cancelled at shutdown as
        ``asyncio.CancelledError``."""
        ...

    def shutdown(self) -> None: ...


def then_via_future(
    executor: Executor,
    lane: str,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    then: Callable[[T | None, BaseException | None], None],
) -> None:
    """``submit_then`` for executors whose only primitive is ``submit`` (tests, simulation):
    same outcome, one loop iteration later."""

    def done(fut: asyncio.Future[T]) -> None:
        if fut.cancelled():
            then(None, asyncio.CancelledError())
        elif fut.exception() is not None:
            then(None, fut.exception())
        else:
            then(fut.result(), None)

    executor.submit(lane, fn, *args).add_done_callback(done)


class Link(Protocol):
    """One directed peer link (this node -> peer). ``send`` resolves once the batch is handed
    to the network; it raises ``ConnectionError`` when the link is down (the transport then
    reports the peer unreachable for the batch's groups and reconnects with back-off)."""

    async def send(self, batch: pb.RaftBatch) -> None: ...
    async def close(self) -> None: ...


class Network(Protocol):
    def open_link(self, peer_id: int, address: str) -> Link: ...

    def peer_stub(self, address: str) -> Any:
        """An object with the methods of ``wire.replog_pb2_grpc.PeerStub`` (unary
        ``ForwardMetadata``), raising ``grpc.aio.AioRpcError`` on failure."""
        ...

    def replog_stub(self, address: str) -> Any:
        """An object with the methods of ``wire.replog_pb2_grpc.ReplogStub``."""
        ...

    async def close(self) -> None: ...


def system_wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Env:
    network: Network
    executor: Executor
    fs: FileSystem = OS_FS
    wall_clock_ms: Callable[[], int] = system_wall_clock_ms
    seed: int | None = None  # seeds every Raft group's election jitter (None: from the clock)
    extra: dict[str, Any] = field(default_factory=dict)


class ThreadExecutor:
    """Production executor: lanes are FIFO queues over one shared thread pool.

    A lane has at most one job running, so a group's fsyncs complete in order (its Ready
    numbers only grow) while different groups' fsyncs run in parallel (three concurrent
    fdatasyncs on this disk finish ~1.8x more per second than one) and a slow file holds up
    only its own lane. The worker that finishes a lane's job runs the lane's next one at once,
    without a round trip through the event loop: under load the next fsync of a group is
    usually queued already, and waiting for a busy loop to start it put the loop's latency
    between every two fsyncs of the group (about 6 % of R3 throughput). A worker runs at most
    ``burst`` jobs of one lane in a row before it goes to the back of the pool's queue, so busy
    lanes cannot starve the others. Lanes cost nothing when idle, so one per Raft group is fine
    for thousands of groups. Completions are handed to the loop in each lane's order (see
    ``submit_then``)."""

    def __init__(self, max_workers: int = 8, burst: int = 8) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, not {max_workers}")
        self._burst = burst
        self._lock = threading.Lock()  # guards _lanes and _closing, and orders _ready's puts
        # lane -> queued jobs: (future, fn, args, then); exactly one of future/then is set
        self._lanes: dict[str, deque[tuple[Any, Callable[..., Any], tuple[Any, ...], Any]]] = {}
        self._closing = False
        # Lanes ready to run, for the workers. A SimpleQueue's put is one C call; the
        # ThreadPoolExecutor.submit it replaces (a Future, a work item, a semaphore, two locks)
        # cost a busy leader's loop ~2 % (docs/benchmarks.md). Every put happens under _lock,
        # so shutdown's stop markers come after every lane queued before it.
        self._ready: SimpleQueue[tuple[asyncio.AbstractEventLoop, str, deque[Any]] | None] = (
            SimpleQueue()
        )
        # All workers start here, not on demand: a thread that cannot start ("can't start new
        # thread") fails the broker's start, never a lane half-queued in the middle of a run.
        # An idle worker costs nothing but its stack (it blocks on _ready).
        self._threads = [
            threading.Thread(target=self._work, name=f"replog-io_{i}", daemon=True)
            for i in range(max_workers)
        ]
        try:
            for thread in self._threads:
                thread.start()
        except BaseException:
            self._stop([t for t in self._threads if t.ident is not None])
            raise

    def submit(self, lane: str, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._enqueue(loop, lane, (fut, fn, args, None))
        return fut

    def submit_then(
        self,
        lane: str,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        then: Callable[[T | None, BaseException | None], None],
    ) -> None:
        self._enqueue(asyncio.get_running_loop(), lane, (None, fn, args, then))

    def _enqueue(self, loop: asyncio.AbstractEventLoop, lane: str, job: tuple[Any, ...]) -> None:
        with self._lock:
            if self._closing:
                raise RuntimeError("the executor is shut down")
            queue = self._lanes.get(lane)
            if queue is not None:
                queue.append(job)
                return
            self._lanes[lane] = queue = deque((job,))
            self._ready.put((loop, lane, queue))

    def _work(self) -> None:
        while (item := self._ready.get()) is not None:
            self._run_lane(*item)

    def _run_lane(self, loop: asyncio.AbstractEventLoop, lane: str, queue: deque[Any]) -> None:
        """In a worker: run the lane's jobs in order (the head stays queued while it runs, so
        ``submit`` sees the lane busy); hand each outcome to the loop. After ``burst`` jobs
        the lane goes to the back of the queue, so busy lanes cannot starve the others."""
        ran = 0
        while True:
            fut, fn, args, then = queue[0]
            try:
                result, error = fn(*args), None
            except BaseException as exc:
                result, error = None, exc
            try:
                if then is not None:
                    loop.call_soon_threadsafe(then, result, error)
                else:
                    loop.call_soon_threadsafe(_settle, fut, result, error)
            except RuntimeError:  # the loop is closed: nobody waits for this any more
                pass
            ran += 1
            with self._lock:
                queue.popleft()
                if not queue:
                    del self._lanes[lane]
                    return
                if ran >= self._burst and not self._closing:
                    self._ready.put((loop, lane, queue))
                    return

    def shutdown(self) -> None:
        """Runs the jobs already queued, then stops the workers; a later submit raises."""
        with self._lock:
            self._closing = True
        self._stop(self._threads)
        self._lanes.clear()

    def _stop(self, threads: list[threading.Thread]) -> None:
        with self._lock:
            for _ in threads:
                self._ready.put(None)
        for thread in threads:
            thread.join()


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():  # the caller cancelled it; the job ran anyway
        return
    if isinstance(error, StopIteration):
        # A future refuses StopIteration (it would end the awaiting coroutine's frame
        # instead of raising in it): hand it over wrapped, as asyncio does for coroutines.
        wrapped = RuntimeError(f"the job raised StopIteration: {error!r}")
        wrapped.__cause__ = error
        error = wrapped
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
