"""A virtual-time asyncio event loop: the clock-and-timers seam of the system simulation.

API
---
- ``VirtualTimeLoop(*, max_virtual_s=None, max_steps=None)``: an ``asyncio.SelectorEventLoop``
  whose ``time()`` is virtual (starts at 0.0) and which never sleeps. When nothing is ready it
  jumps the virtual clock to the next timer. Attributes: ``steps`` (loop iterations so far),
  ``virtual_time`` (same as ``time()``), ``max_virtual_s``/``max_steps`` (budgets; ``None`` =
  unbounded; may be changed while running). ``tasks_in_creation_order()`` lists unfinished
  tasks oldest first (``asyncio.all_tasks()`` is a set: iterating it, e.g. to cancel a
  crashed node's tasks, is NOT deterministic); ``task_seq(task)`` is a task's creation number.
  The loop installs its own task factory for this: do not replace it.
- ``run(main_coro_factory, *, max_virtual_s, max_steps, stats=None, debug=False) -> result``:
  creates a loop, runs ``main_coro_factory()`` to completion, cancels the tasks left behind,
  closes the loop and returns the coroutine's result. ``stats`` (a dict) receives ``steps``
  and ``virtual_s`` even when the run fails.
- ``new_loop(...)``: the loop alone (for callers that drive ``run_until_complete`` themselves).
- Exceptions (all ``SimulationError``): ``SimulationDeadlock`` (nothing ready and no timer, while
  the main coroutine still waits: every task is blocked forever), ``VirtualTimeExceeded``,
  ``StepBudgetExceeded``, ``ForbiddenInSimulation`` (``run_in_executor``,
  ``call_soon_threadsafe`` from another thread (from the loop's own thread it is a
  ``call_soon``: asyncio's async-generator finalizer uses it), real sockets/fds registered with
  the loop: all of them bypass a seam or bring in a thread, i.e. nondeterminism). Each carries ``steps`` and ``virtual_s``.

How
---
``SelectorEventLoop._run_once`` computes how long it may block (0 when callbacks are ready, the
delay to the earliest timer otherwise, ``None`` when there is nothing at all) and calls
``selector.select(timeout)``. ``_VirtualSelector.select`` advances the virtual clock by that
timeout (snapping to the timer's exact deadline so float rounding never leaves it a hair
short) and reports no I/O. The loop's self-pipe is the only fd ever registered; anything else
is refused, which catches a real grpc channel or socket created inside the simulation.

Determinism
-----------
The loop has no randomness: the ready queue is FIFO and timers fire in (deadline, heap) order,
which depends only on the program. Two things outside the loop can still break it and are the
runner's job: ``PYTHONHASHSEED`` must be fixed (``PYTHONHASHSEED=0``: iteration over a set or
dict of str/bytes keys built in different orders), and every random choice must come from a
seeded ``random.Random``. Task names (``Task-N``) come from a process-wide counter, so do not
put default task names in a trace that is compared across runs in one process.

What it cannot do: run threads (code that needs ``to_thread``/``run_in_executor`` must go
through the executor seam), real I/O, signal handlers, subprocesses. Blocking calls
(``time.sleep``) are not intercepted: they take real time and no virtual time.
"""

from __future__ import annotations

import asyncio
import itertools
import selectors
import threading
import weakref
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

__all__ = [
    "ForbiddenInSimulation",
    "SimulationDeadlock",
    "SimulationError",
    "StepBudgetExceeded",
    "VirtualTimeExceeded",
    "VirtualTimeLoop",
    "new_loop",
    "run",
]

T = TypeVar("T")

# Two timers this close together fire in the same loop iteration (asyncio's own rule uses the
# clock resolution; virtual time is exact, so this only absorbs float rounding).
_CLOCK_RESOLUTION_S = 1e-9


class SimulationError(Exception):
    """A simulation could not go on; carries where it stopped."""

    def __init__(self, message: str, *, steps: int = 0, virtual_s: float = 0.0) -> None:
        super().__init__(message)
        self.steps = steps
        self.virtual_s = virtual_s


class SimulationDeadlock(SimulationError):
    """Nothing is ready and no timer is pending, yet the main coroutine has not finished."""


class VirtualTimeExceeded(SimulationError):
    """The next timer lies beyond the virtual-time budget."""


class StepBudgetExceeded(SimulationError):
    """The loop ran more iterations than its step budget."""


class ForbiddenInSimulation(SimulationError):
    """Code bypassed a seam (threads, real sockets) inside the simulation."""


def _fileobj_to_fd(fileobj: Any) -> int:
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"invalid file descriptor: {fd}")
    return fd


class _VirtualSelector(selectors.BaseSelector):
    """Never reports I/O; ``select(timeout)`` advances the owning loop's virtual clock."""

    def __init__(self) -> None:
        self._keys: dict[int, selectors.SelectorKey] = {}
        self._loop: VirtualTimeLoop | None = None
        self.accept_registrations = True  # only while the loop sets up its self-pipe

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not self.accept_registrations:
            raise ForbiddenInSimulation(
                f"real I/O registered with the simulation loop ({fileobj!r}): a socket, pipe or "
                "grpc channel bypasses the network seam; use SimNetwork's stubs and links",
                **self._where(),
            )
        if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
            raise ValueError(f"invalid events: {events!r}")
        fd = _fileobj_to_fd(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (fd {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = _fileobj_to_fd(fileobj)
        try:
            return self._keys.pop(fd)
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = _fileobj_to_fd(fileobj)
        if fd not in self._keys:
            raise KeyError(f"{fileobj!r} is not registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        fd = _fileobj_to_fd(fileobj)
        try:
            return self._keys[fd]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return dict(self._keys)

    def close(self) -> None:
        self._keys.clear()

    def _where(self) -> dict[str, Any]:
        loop = self._loop
        if loop is None:
            return {}
        return {"steps": loop.steps, "virtual_s": loop.virtual_time}

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self._loop
        assert loop is not None, "the selector belongs to a VirtualTimeLoop"
        if timeout is None:
            raise SimulationDeadlock(
                "simulation deadlock: no callback is ready and no timer is pending, but the "
                f"main coroutine has not finished (virtual time {loop.virtual_time:.6f} s, "
                f"step {loop.steps}); blocked tasks:\n{loop.describe_tasks()}",
                **self._where(),
            )
        if timeout > 0:
            loop._advance_to_next_timer(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """See the module docstring."""

    def __init__(self, *, max_virtual_s: float | None = None, max_steps: int | None = None) -> None:
        self._virtual_now = 0.0
        self._owner_thread = threading.get_ident()
        self.steps = 0
        self.max_virtual_s = max_virtual_s
        self.max_steps = max_steps
        selector = _VirtualSelector()
        super().__init__(selector)
        selector._loop = self
        selector.accept_registrations = False
        self._clock_resolution = _CLOCK_RESOLUTION_S
        # creation order of every task: asyncio.all_tasks() is a set (iteration order follows
        # object addresses), so anything that walks tasks must sort by this to stay deterministic
        self._task_seq: weakref.WeakKeyDictionary[asyncio.Task[Any], int] = (
            weakref.WeakKeyDictionary()
        )
        self._next_task_seq = itertools.count()
        self.set_task_factory(self._make_task)

    def _make_task(
        self, loop: asyncio.AbstractEventLoop, coro: Any, context: Any = None, **kwargs: Any
    ) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, context=context, **kwargs)
        self._task_seq[task] = next(self._next_task_seq)
        return task

    def task_seq(self, task: asyncio.Task[Any]) -> int:
        """The task's creation number on this loop (-1 for a task made elsewhere)."""
        return self._task_seq.get(task, -1)

    def tasks_in_creation_order(self) -> list[asyncio.Task[Any]]:
        """Unfinished tasks, oldest first: use this, never ``asyncio.all_tasks()`` (a set), to
        cancel a crashed node's tasks deterministically."""
        tasks = [t for t in asyncio.all_tasks(self) if not t.done()]
        tasks.sort(key=self.task_seq)
        return tasks

    # ------------------------------------------------------------------ the clock

    def time(self) -> float:
        return self._virtual_now

    @property
    def virtual_time(self) -> float:
        return self._virtual_now

    def _advance_to_next_timer(self, timeout: float) -> None:
        target = self._virtual_now + timeout
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        if scheduled:
            when = scheduled[0].when()
            if when <= target + _CLOCK_RESOLUTION_S:
                target = max(self._virtual_now, when)
        if self.max_virtual_s is not None and target > self.max_virtual_s:
            raise VirtualTimeExceeded(
                f"virtual-time budget exceeded: the next timer is at {target:.9f} s, the budget "
                f"is {self.max_virtual_s} s (step {self.steps})",
                steps=self.steps,
                virtual_s=self._virtual_now,
            )
        self._virtual_now = target

    # ------------------------------------------------------------------ iterations

    def _run_once(self) -> None:
        self.steps += 1
        if self.max_steps is not None and self.steps > self.max_steps:
            raise StepBudgetExceeded(
                f"step budget exceeded: {self.max_steps} loop iterations "
                f"(virtual time {self._virtual_now:.6f} s)",
                steps=self.steps,
                virtual_s=self._virtual_now,
            )
        # asyncio fires a timer up to one clock resolution early. A real clock moves on anyway;
        # a virtual one would not, and a task that recomputes "time left" (a producer's linger:
        # created + linger - now > 0 by a rounding error) would spin forever at one instant.
        # So the clock moves to the earliest such timer's deadline before it fires.
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        if scheduled:
            when = scheduled[0].when()
            if self._virtual_now < when < self._virtual_now + _CLOCK_RESOLUTION_S:
                self._virtual_now = when
        super()._run_once()  # type: ignore[misc]

    def describe_tasks(self, limit: int = 40) -> str:
        """One line per unfinished task, oldest first."""
        lines = []
        for task in self.tasks_in_creation_order():
            frames = task.get_stack(limit=1)
            where = (
                f"{frames[0].f_code.co_filename}:{frames[0].f_lineno} {frames[0].f_code.co_name}"
                if frames
                else "?"
            )
            lines.append(f"  {task.get_name()}: {task.get_coro()!r} at {where}")
        if len(lines) > limit:
            lines = [*lines[:limit], f"  ... and {len(lines) - limit} more"]
        return "\n".join(lines) or "  (no tasks)"

    # ------------------------------------------------------------------ forbidden

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> Any:  # type: ignore[override]
        raise ForbiddenInSimulation(
            f"run_in_executor({func!r}) inside the simulation: blocking work must go through "
            "the executor seam (Env.executor.submit); threads make the run nondeterministic",
            steps=self.steps,
            virtual_s=self._virtual_now,
        )

    def call_soon_threadsafe(  # type: ignore[override]
        self, callback: Callable[..., Any], *args: Any, context: Any = None
    ) -> Any:
        # asyncio itself calls this from the loop's thread (the async-generator finalizer hook
        # schedules ``aclose()`` with it): that is a plain call_soon. Another thread is not.
        if threading.get_ident() == self._owner_thread:
            return self.call_soon(callback, *args, context=context)
        raise ForbiddenInSimulation(
            f"call_soon_threadsafe({callback!r}) from another thread: nothing may run on "
            "another thread inside the simulation",
            steps=self.steps,
            virtual_s=self._virtual_now,
        )

    def add_signal_handler(self, sig: int, callback: Callable[..., Any], *args: Any) -> None:  # type: ignore[override]
        raise ForbiddenInSimulation("signal handlers inside the simulation")


def new_loop(
    *, max_virtual_s: float | None = None, max_steps: int | None = None
) -> VirtualTimeLoop:
    return VirtualTimeLoop(max_virtual_s=max_virtual_s, max_steps=max_steps)


# Bounds the clean-up after the main coroutine (cancelled tasks may still await a little).
_CLEANUP_STEPS = 100_000
_CLEANUP_VIRTUAL_S = 3600.0


def _cancel_leftovers(loop: VirtualTimeLoop) -> None:
    loop.max_steps = loop.steps + _CLEANUP_STEPS
    loop.max_virtual_s = loop.virtual_time + _CLEANUP_VIRTUAL_S
    tasks = loop.tasks_in_creation_order()
    if tasks:
        for task in tasks:
            task.cancel()
        try:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        except SimulationError:
            pass  # a task refused to die; closing the loop is all that is left
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
    except SimulationError:
        pass


def run(
    main_coro_factory: Callable[[], Coroutine[Any, Any, T]],
    *,
    max_virtual_s: float | None = None,
    max_steps: int | None = None,
    stats: dict[str, Any] | None = None,
    debug: bool = False,
) -> T:
    """Runs ``main_coro_factory()`` on a fresh ``VirtualTimeLoop`` and returns its result.

    Raises the coroutine's exception, or a ``SimulationError`` when the simulation deadlocks or
    exceeds a budget. Tasks still running when the main coroutine ends are cancelled (and
    given a bounded number of steps to finish), then the loop is closed.
    """
    loop = VirtualTimeLoop(max_virtual_s=max_virtual_s, max_steps=max_steps)
    loop.set_debug(debug)
    asyncio.set_event_loop(loop)
    try:
        try:
            return loop.run_until_complete(main_coro_factory())
        finally:
            if stats is not None:
                stats["steps"] = loop.steps
                stats["virtual_s"] = loop.virtual_time
            _cancel_leftovers(loop)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
