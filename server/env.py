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
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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

    def shutdown(self) -> None: ...


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

    A lane has at most one job running; when it finishes, the lane's next job is handed to the
    pool. So a group's fsyncs complete in order (its Ready numbers only grow) while different
    groups' fsyncs run in parallel (three concurrent fdatasyncs on this disk finish ~1.8x more
    per second than one) and a slow file holds up only its own lane. Lanes cost nothing when
    idle, so one per Raft group is fine for thousands of groups."""

    def __init__(self, max_workers: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="replog-io")
        self._lanes: dict[
            str, deque[tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]]]
        ] = {}

    def submit(self, lane: str, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        queue = self._lanes.get(lane)
        if queue is None:
            self._lanes[lane] = queue = deque()
            queue.append((fut, fn, args))
            self._start(loop, lane, queue)
        else:
            queue.append((fut, fn, args))
        return fut

    def _start(self, loop: asyncio.AbstractEventLoop, lane: str, queue: deque[Any]) -> None:
        fut, fn, args = queue[0]
        inner = loop.run_in_executor(self._pool, fn, *args)

        def done(f: asyncio.Future[Any]) -> None:
            queue.popleft()
            if not fut.done():
                if f.cancelled():
                    fut.cancel()
                elif f.exception() is not None:
                    fut.set_exception(f.exception())  # type: ignore[arg-type]
                else:
                    fut.set_result(f.result())
            if queue:
                self._start(loop, lane, queue)
            else:
                del self._lanes[lane]

        inner.add_done_callback(done)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
        self._lanes.clear()
