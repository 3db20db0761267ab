"""Proposal waiters: one mechanism for both replica kinds (partition and metadata).

A waiter is registered at the log index and term a proposal was appended at. When the entry at
that index is applied, the waiter resolves with the state machine's outcome if the entry is
ours (same term) and fails with "not leader" if another leader's entry took the index. When the
replica stops or loses leadership, every waiter fails. Futures are resolved at most once and
never after they were cancelled by a timed-out caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ProposalWaiters(Generic[T]):
    def __init__(self) -> None:
        self._waiters: dict[int, list[tuple[int, asyncio.Future[T], Callable[[T], T] | None]]] = {}

    def __len__(self) -> int:
        return len(self._waiters)

    def add(
        self, index: int, term: int, transform: Callable[[T], T] | None = None
    ) -> asyncio.Future[T]:
        """Waits for the entry at (``index``, ``term``). Several callers may wait for one entry
        (a retried batch waits for its original); ``transform`` adapts the shared outcome."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(index, []).append((term, fut, transform))
        return fut

    def resolve(
        self,
        index: int,
        term: int,
        outcome: Callable[[], T],
        overwritten: Callable[[], BaseException],
    ) -> None:
        """The entry (``index``, ``term``) was applied; ``outcome()`` gives the result or raises
        the typed rejection (called only if somebody waits for this index)."""
        waiters = self._waiters.pop(index, None)
        if not waiters:
            return
        try:
            result: T | None = outcome()
            error: BaseException | None = None
        except Exception as exc:
            result, error = None, exc
        for proposed_term, fut, transform in waiters:
            if fut.done():
                continue
            if term != proposed_term:
                fut.set_exception(overwritten())
            elif error is not None:
                fut.set_exception(error)
            else:
                assert result is not None
                fut.set_result(transform(result) if transform else result)

    def resolve_through(self, index: int, outcome: Callable[[int], T]) -> None:
        """Resolves every waiter at or below ``index`` (acks=leader: durable on the leader)."""
        for idx in [i for i in self._waiters if i <= index]:
            for _term, fut, transform in self._waiters.pop(idx):
                if not fut.done():
                    result = outcome(idx)
                    fut.set_result(transform(result) if transform else result)

    def fail_all(self, error: BaseException) -> None:
        waiters, self._waiters = self._waiters, {}
        for entries in waiters.values():
            for _term, fut, _transform in entries:
                if not fut.done():
                    fut.set_exception(error)
