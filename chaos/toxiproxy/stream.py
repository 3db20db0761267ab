"""Chunks, closable channels and the stages of a toxic chain.

Upstream Toxiproxy pipes each direction of a connection through a chain of goroutines joined
by Go channels and "interrupts" a goroutine to rewire the chain when a toxic is added, updated
or removed. Here each stage is an asyncio task and an interrupt is a cancellation. Whatever a
stage was holding when it was cancelled goes into its ``carry`` and is forwarded first when
the stage runs again, so rewiring never loses or reorders a byte (upstream's "don't drop any
data on the floor").
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaos.toxiproxy.toxics import ToxicWrapper

UPSTREAM = 0
DOWNSTREAM = 1
DIRECTIONS = ("upstream", "downstream")


def parse_direction(value: str) -> int:
    """Upstream accepts either name case-insensitively."""
    try:
        return DIRECTIONS.index(value.lower())
    except ValueError:
        raise ValueError(value) from None


@dataclass(slots=True)
class Chunk:
    data: bytes
    ts: float  # loop time the bytes were read from the source; latency counts from here


class Chan:
    """A bounded FIFO with one reader and one writer at a time that, like a Go channel, can be
    closed without blocking: the reader still gets what was buffered, then ``None``."""

    def __init__(self, cap: int = 1) -> None:
        self._items: deque[Chunk] = deque()
        self._cap = max(1, cap)
        self._closed = False
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def closed(self) -> bool:
        return self._closed

    def _notify(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    async def _wait(self, timeout: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiters.append(fut)
        timer = None if timeout is None else loop.call_later(timeout, _wake, fut)
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            if fut in self._waiters:
                self._waiters.remove(fut)

    def close(self) -> None:
        self._closed = True
        self._notify()

    async def put(self, item: Chunk) -> None:
        # The item is appended only after the last await, so a cancelled put never delivered
        # it and the caller may keep it in its carry.
        while len(self._items) >= self._cap and not self._closed:
            await self._wait()
        if self._closed:
            return  # nobody reads past a close; upstream would panic, dropping is kinder
        self._items.append(item)
        self._notify()

    async def get(self, timeout: float | None = None) -> Chunk | None:
        """The next chunk, None once closed and drained; TimeoutError after ``timeout`` s.

        The timeout is built in rather than taken from asyncio.wait_for, which on Python 3.11
        can swallow a cancellation that arrives as the get completes: an interrupt would
        then wait forever for the stage to stop."""
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while not self._items:
            if self._closed:
                return None
            if deadline is None:
                await self._wait()
            else:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise TimeoutError
                await self._wait(left)
        item = self._items.popleft()
        self._notify()
        return item

    def take_all(self) -> list[Chunk | None]:
        """Everything buffered, with a trailing ``None`` if the channel was closed."""
        items: list[Chunk | None] = list(self._items)
        self._items.clear()
        if self._closed:
            items.append(None)
        self._notify()
        return items


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Stage:
    """One toxic (or the hidden leading noop) running on one link."""

    def __init__(self, inq: Chan, out: Chan, wrapper: ToxicWrapper | None, state: Any) -> None:
        self.inq = inq
        self.out = out
        self.wrapper = wrapper
        self.state = state  # per-link toxic state (limit_data's byte count) survives restarts
        self.carry: deque[Chunk | None] = deque()
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def close(self) -> None:
        """End this stage's output: the stages after it drain and the link closes its
        destination, as upstream's ``stub.Close()``."""
        if not self.closed:
            self.closed = True
            self.out.close()

    async def interrupt(self) -> bool:
        """Stop the running pipe; False if the stage had already closed (upstream's
        ``InterruptToxic``)."""
        task = self.task
        if self.closed or task is None or task.done():
            return False
        task.cancel()
        # asyncio.wait, not await task: a cancelled task would re-raise CancelledError here.
        await asyncio.wait([task])
        return not self.closed

    async def _run(self) -> None:
        try:
            while self.carry:
                item = self.carry[0]
                if item is None:
                    self.close()
                    return
                await self.out.put(item)
                self.carry.popleft()
            wrapper = self.wrapper
            # Toxicity is rolled each time the stage (re)starts, as upstream's ToxicStub.Run.
            if wrapper is not None and random.random() < wrapper.toxicity:
                await wrapper.toxic.pipe(self)
            else:
                await noop_pipe(self)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug in a pipe must not leave the link hanging: end it.
            self.close()

    async def send(self, chunk: Chunk) -> None:
        try:
            await self.out.put(chunk)
        except asyncio.CancelledError:
            self.carry.append(chunk)
            raise


async def noop_pipe(stage: Stage) -> None:
    while True:
        chunk = await stage.inq.get()
        if chunk is None:
            stage.close()
            return
        await stage.send(chunk)
