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
        self._waiters: dict[int, tuple[int, asyncio.Future[T]]] = {}

    def __len__(self) -> int:
        return len(self._waiters)

    def add(self, index: int, term: int) -> asyncio.Future[T]:
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiters[index] = (term, fut)
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
        waiter = self._waiters.pop(index, None)
        if waiter is None:
            return
        proposed_term, fut = waiter
        if fut.done():
            return
        if term != proposed_term:
            fut.set_exception(overwritten())
            return
        try:
            fut.set_result(outcome())
        except Exception as exc:
            fut.set_exception(exc)

    def resolve_through(self, index: int, outcome: Callable[[int], T]) -> None:
        """Resolves every waiter at or below ``index`` (acks=leader: durable on the leader)."""
        for idx in [i for i in self._waiters if i <= index]:
            _term, fut = self._waiters.pop(idx)
            if not fut.done():
                fut.set_result(outcome(idx))

    def fail_all(self, error: BaseException) -> None:
        waiters, self._waiters = self._waiters, {}
        for _term, fut in waiters.values():
            if not fut.done():
                fut.set_exception(error)
