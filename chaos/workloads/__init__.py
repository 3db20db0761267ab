"""Workloads of a chaos run: clients that drive the cluster and record every operation in the
history (shapes as chaos/checkers expects them, see chaos/history.py and chaos/checkers).

Contract: a workload creates its topics in ``setup``, runs worker coroutines until the run's
stop event is set (``run``), and after the heal reads the final state (``final``: drains of
every partition from the beginning, final topic lists). Every client call is bounded by
``Context.op_timeout_s``; an operation whose outcome is unknown is completed as ``info`` and
its logical process is retired (a process has at most one operation outstanding, ever).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import Any

from chaos.history import HistoryWriter

__all__ = ["WORKLOADS", "Context", "Pacer", "Workload", "make_workload"]


class Pacer:
    """Spaces operations of all workers to ``rate`` per second in total; never bursts more
    than one second's worth after a stall (a healed cluster is not flooded)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / max(rate, 0.001)
        self.next = time.monotonic()

    async def wait(self) -> None:
        now = time.monotonic()
        self.next = max(self.next + self.interval, now - 1.0)
        if self.next > now:
            await asyncio.sleep(self.next - now)


@dataclass
class Context:
    history: HistoryWriter
    bootstrap: str
    client_kwargs: dict[str, Any]
    node_addresses: dict[int, str]  # node id -> the client proxy in front of it
    replicas: int
    rate: float
    rng: random.Random
    op_timeout_s: float = 10.0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    pacer: Pacer | None = None
    _process_ids: Any = field(default_factory=lambda: itertools.count())
    _values: Any = field(default_factory=lambda: itertools.count(1))
    ops: int = 0  # completions recorded, for progress lines

    def __post_init__(self) -> None:
        self.pacer = self.pacer or Pacer(self.rate)

    def new_process(self) -> int:
        return int(next(self._process_ids))

    def next_value(self) -> int:
        return int(next(self._values))

    def invoke(self, process: int | str, f: str, value: Any = None, **fields: Any) -> Any:
        return self.history.invoke(process, f, value, **fields)

    def complete(self, inv: Any, typ: str, value: Any = None, **fields: Any) -> Any:
        self.ops += 1
        return self.history.complete(inv, typ, value, **fields)

    async def paced(self) -> bool:
        """Wait for the next slot; False once the run is stopping."""
        if self.stop.is_set():
            return False
        assert self.pacer is not None
        await self.pacer.wait()
        return not self.stop.is_set()


class Workload:
    name = ""
    # (topic, partitions) whose records the final drain reads; nemeses add topics they write
    topics: list[tuple[str, int]]

    def __init__(self, ctx: Context, partitions: int, workers: int) -> None:
        self.ctx = ctx
        self.partitions = partitions
        self.workers = workers
        self.topics = []

    async def setup(self) -> None:
        """Create the workload's topics (bounded)."""

    async def run(self) -> None:
        """Run workers until ``ctx.stop`` is set."""

    async def probe(self, deadline: float) -> dict[str, Any]:
        """After the heal: one acknowledged record per partition (liveness)."""
        return {"ok": True}

    async def final(self) -> None:
        """Read and record the final state."""

    async def close(self) -> None:
        """Release clients (bounded)."""


def make_workload(name: str, ctx: Context, partitions: int, workers: int) -> Workload:
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(sorted(WORKLOADS))}")
    module, cls = WORKLOADS[name]
    mod = __import__(f"chaos.workloads.{module}", fromlist=[cls])
    return getattr(mod, cls)(ctx, partitions, workers)  # type: ignore[no-any-return]


WORKLOADS: dict[str, tuple[str, str]] = {
    "queue": ("queue", "QueueWorkload"),
    "cdc": ("queue", "CdcWorkload"),
    "log": ("log", "LogWorkload"),
    "metadata": ("metadata", "MetadataWorkload"),
}
