"""Group commit: one fsync covers every append that arrived while the previous one ran.

Contract: ``GroupCommitter`` owns one daemon thread that does nothing but call ``sync()`` on
logs. ``submit(log)`` returns a ``concurrent.futures.Future`` that resolves once everything
appended to ``log`` before the submit is durable (or fails with the sync's exception). No
asyncio here: an asyncio runtime wraps the future with ``asyncio.wrap_future``.

Strategy: submits accumulate in a pending table (log -> futures) while the thread is busy.
When it is free it takes the whole table at once and syncs each log in it exactly once, then
resolves every future of that log. So N concurrent submitters cost about N / (submits per
fsync window) fsyncs instead of N -- the classic group commit, and the reason appending
many small batches costs little more than appending one big one. A submit arriving during an
fsync is not covered by it (the sync began before the submit) and waits for the next round.

``sync_many(logs)`` is the runtime's other tool: fsync a set of logs in one pass (optionally
in parallel on an executor), e.g. every dirty group at the end of a loop turn.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from typing import Protocol


class Syncable(Protocol):
    """What group commit needs of a log (``DurableLog`` satisfies it)."""

    @property
    def dirty(self) -> bool: ...

    def sync(self) -> None: ...


def _no_log(event: str, **fields: object) -> None:
    del event, fields


class GroupCommitter:
    """A dedicated fsync thread shared by any number of logs."""

    def __init__(
        self, *, name: str = "replog-group-commit", logger: Callable[..., None] | None = None
    ) -> None:
        self._log = logger if logger is not None else _no_log
        self._cond = threading.Condition()
        self._pending: dict[int, tuple[Syncable, list[Future[None]]]] = {}
        self._closing = False
        self._syncs_performed = 0
        self._rounds = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def syncs_performed(self) -> int:
        """How many ``log.sync()`` calls the thread has made (one per log per round)."""
        return self._syncs_performed

    @property
    def rounds(self) -> int:
        return self._rounds

    def submit(self, log: Syncable) -> Future[None]:
        """A future resolved when every append to ``log`` made before this call is durable."""
        future: Future[None] = Future()
        with self._cond:
            if self._closing:
                raise RuntimeError("GroupCommitter is closed")
            entry = self._pending.get(id(log))
            if entry is None:
                self._pending[id(log)] = (log, [future])
            else:
                entry[1].append(future)
            self._cond.notify()
        return future

    def close(self) -> None:
        """Finish every pending submit, then stop the thread. Idempotent."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def __enter__(self) -> GroupCommitter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        batch: dict[int, tuple[Syncable, list[Future[None]]]] = {}
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    if not self._pending:
                        return
                    batch, self._pending = self._pending, {}
                self._rounds += 1
                for key in list(batch):
                    log, futures = batch.pop(key)
                    try:
                        log.sync()
                    except BaseException as exc:  # every waiter learns of the failure
                        self._log("group_commit_sync_failed", error=repr(exc))
                        for future in futures:
                            future.set_exception(exc)
                        continue
                    self._syncs_performed += 1
                    for future in futures:
                        future.set_result(None)
        finally:
            # Only reached with work left if the loop itself broke: fail, never strand.
            with self._cond:
                leftovers = list(batch.values()) + list(self._pending.values())
                self._pending = {}
                self._closing = True
            for _log, futures in leftovers:
                for future in futures:
                    if not future.done():
                        future.set_exception(RuntimeError("group commit thread stopped"))


def sync_many(logs: Iterable[Syncable], *, executor: Executor | None = None) -> None:
    """Sync every log that is dirty, in one pass; with ``executor`` the fsyncs overlap.

    Raises the first failure after every sync has been attempted."""
    targets = [log for log in logs if log.dirty]
    errors: list[BaseException] = []
    if executor is None:
        for log in targets:
            try:
                log.sync()
            except Exception as exc:
                errors.append(exc)
    else:
        futures = [executor.submit(log.sync) for log in targets]
        for future in futures:
            failure = future.exception()
            if failure is not None:
                errors.append(failure)
    if errors:
        raise errors[0]
