"""A virtual-time asyncio event loop for client tests: ``loop.time()`` is a counter that jumps
to the next timer whenever nothing is ready, so a 60 s back-off takes no real time.

It proves the clock seam (client deadlines read ``loop.time()``, never ``time.monotonic()``)
the way the system simulation will use it. Only for coroutines that do no real I/O (pair it
with ``InProcessCluster``): the selector is polled without blocking.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if not ready and timeout is not None and timeout > 0:
            self._loop.virtual_s += timeout  # nothing to do until the next timer: jump there
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start_s: float = 1_000_000.0) -> None:
        self.virtual_s = start_s
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self.virtual_s


def run_virtual(coro: Coroutine[Any, Any, T], start_s: float = 1_000_000.0) -> T:
    """Run ``coro`` to completion on a fresh virtual-time loop."""
    loop = VirtualTimeLoop(start_s)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
