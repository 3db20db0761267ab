"""Awaiting a waiter future with a deadline, in as few event-loop iterations as possible.

``asyncio.wait_for`` wraps the wait in extra callbacks (with ``shield``, a produce's answer
reached its handler three loop iterations after apply resolved it); on a busy broker loop every
iteration is latency on every request. Here the caller awaits the waiter itself and a timer
resolves or fails it: the task resumes one iteration after the waiter is resolved. Only for
waiters the caller owns alone (each produce or fetch creates its own): the timer completes the
future, so nothing else may be waiting on it.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from server.errors import timed_out

T = TypeVar("T")


async def answer_within(fut: asyncio.Future[T], timeout_s: float, what: str) -> T:
    """A waiter's answer (a produce's), or REQUEST_TIMED_OUT naming ``what`` after ``timeout_s``. Awaits the
    waiter itself (each caller has its own; ProposalWaiters never resolves one twice), with a
    timer that fails it: the task resumes one loop iteration after apply resolves it, where
    ``wait_for(shield(fut))`` took three (shield's callback, wait_for's, then the task), each
    an iteration of a busy loop on every acknowledgement."""
    if fut.done():
        return fut.result()

    def expire() -> None:
        if not fut.done():
            fut.set_exception(timed_out(what))

    timer = asyncio.get_running_loop().call_later(timeout_s, expire)
    try:
        return await fut
    finally:
        timer.cancel()


async def woken_within(fut: asyncio.Future[None], timeout_s: float) -> bool:
    """Waits for a fetch waiter (``_wake_fetchers`` resolves it); False if ``timeout_s``
    passed first. The timer resolves the waiter itself, so a wake-up reaches the fetch one loop
    iteration after the apply that caused it (``wait_for`` took two); a resolved waiter is
    dropped from the list at the next wake-up, as a cancelled one was."""
    expired = False

    def expire() -> None:
        nonlocal expired
        if not fut.done():
            expired = True
            fut.set_result(None)

    timer = asyncio.get_running_loop().call_later(timeout_s, expire)
    try:
        await fut
    finally:
        timer.cancel()
    return not expired
