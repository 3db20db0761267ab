"""The virtual-time loop: virtual clock, budgets, deadlock detection, determinism, and the
asyncio primitives the broker and client rely on."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import pytest

from tests.system_sim.loop import (
    ForbiddenInSimulation,
    SimulationDeadlock,
    StepBudgetExceeded,
    VirtualTimeExceeded,
    VirtualTimeLoop,
    run,
)


def test_sleep_jumps_virtual_time_without_real_time() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(3600.0)
        return start, loop.time()

    t0 = time.monotonic()
    start, end = run(main, max_virtual_s=10_000)
    assert start == 0.0
    assert end == pytest.approx(3600.0)
    assert end >= 3600.0  # the timer's deadline exactly, never a rounding hair short
    assert time.monotonic() - t0 < 2.0


def test_timers_fire_at_their_exact_deadlines() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []
        for delay in (0.3, 0.1, 0.2, 0.1):
            loop.call_later(delay, lambda d=delay: fired.append((f"t{d}", loop.time())))
        await asyncio.sleep(1.0)
        return fired

    fired = run(main, max_virtual_s=10)
    assert [name for name, _ in fired] == ["t0.1", "t0.1", "t0.2", "t0.3"]
    for name, when in fired:
        assert when >= float(name[1:])
        assert when == pytest.approx(float(name[1:]))


def _trace_program(seed: int) -> list[str]:
    async def worker(i: int, rng: random.Random, trace: list[str], q: asyncio.Queue[int]) -> None:
        loop = asyncio.get_running_loop()
        for j in range(20):
            r = rng.random()
            if r < 0.3:
                await asyncio.sleep(0)
            elif r < 0.6:
                await asyncio.sleep(rng.uniform(0, 0.01))
            elif r < 0.8:
                await q.put(i * 100 + j)
            else:
                try:
                    v = await asyncio.wait_for(q.get(), timeout=rng.uniform(0, 0.005))
                    trace.append(f"{loop.time():.9f} w{i} got {v}")
                except TimeoutError:
                    trace.append(f"{loop.time():.9f} w{i} timeout")
            trace.append(f"{loop.time():.9f} w{i} step {j}")

    async def main() -> list[str]:
        rng = random.Random(seed)
        trace: list[str] = []
        q: asyncio.Queue[int] = asyncio.Queue()
        async with asyncio.TaskGroup() as tg:
            for i in range(30):
                tg.create_task(worker(i, random.Random(rng.random()), trace, q))
        return trace

    return run(main, max_virtual_s=100, max_steps=1_000_000)


def test_same_program_same_seed_same_trace() -> None:
    first = _trace_program(7)
    second = _trace_program(7)
    assert len(first) > 600
    assert first == second
    assert _trace_program(8) != first


def test_deadlock_is_reported_with_the_blocked_tasks() -> None:
    async def stuck() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        task = asyncio.create_task(stuck(), name="the-stuck-one")
        await task

    with pytest.raises(SimulationDeadlock) as info:
        run(main, max_virtual_s=10)
    assert "the-stuck-one" in str(info.value)


def test_virtual_time_budget() -> None:
    async def main() -> None:
        while True:
            await asyncio.sleep(1.0)

    with pytest.raises(VirtualTimeExceeded) as info:
        run(main, max_virtual_s=10.5)
    assert info.value.virtual_s == pytest.approx(10.0)


def test_step_budget_and_steps_counted() -> None:
    async def spin() -> None:
        while True:
            await asyncio.sleep(0)

    with pytest.raises(StepBudgetExceeded):
        run(spin, max_steps=500)

    stats: dict[str, float] = {}

    async def short() -> int:
        for _ in range(10):
            await asyncio.sleep(0)
        return asyncio.get_running_loop().steps  # type: ignore[attr-defined,no-any-return]

    steps = run(short, max_steps=500, stats=stats)
    assert 10 <= steps <= 20
    assert stats["steps"] >= steps


def test_run_in_executor_and_threadsafe_calls_are_refused() -> None:
    async def uses_thread() -> None:
        await asyncio.to_thread(print, "never")

    with pytest.raises(ForbiddenInSimulation, match="executor seam"):
        run(uses_thread, max_virtual_s=1)

    async def threadsafe() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        loop.call_soon_threadsafe(done.set)  # from the loop's own thread: a call_soon
        await done.wait()
        errors: list[BaseException] = []

        def other_thread() -> None:
            try:
                loop.call_soon_threadsafe(print)
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        assert isinstance(errors[0], ForbiddenInSimulation)

    run(threadsafe, max_virtual_s=1)


def test_real_sockets_are_refused() -> None:
    async def connect() -> None:
        await asyncio.open_connection("127.0.0.1", 9)

    # open_connection resolves the address through getaddrinfo -> run_in_executor; a raw
    # socket registered with the loop is refused too
    with pytest.raises(ForbiddenInSimulation):
        run(connect, max_virtual_s=1)

    import socket

    async def raw() -> None:
        a, b = socket.socketpair()
        try:
            asyncio.get_running_loop().add_reader(a.fileno(), print)
        finally:
            a.close()
            b.close()

    with pytest.raises(ForbiddenInSimulation, match="network seam"):
        run(raw, max_virtual_s=1)


def test_asyncio_primitives_behave() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        out: list[str] = []
        # wait_for times out in virtual time
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), timeout=0.5)
        out.append(f"wait_for {loop.time():.3f}")
        # asyncio.timeout
        try:
            async with asyncio.timeout(0.25):
                await asyncio.sleep(5)
        except TimeoutError:
            out.append(f"timeout {loop.time():.3f}")
        # Event set by a timer
        event = asyncio.Event()
        loop.call_later(1.0, event.set)
        await event.wait()
        out.append(f"event {loop.time():.3f}")
        # Queue with a producer task
        q: asyncio.Queue[int] = asyncio.Queue(maxsize=1)

        async def producer() -> None:
            for i in range(3):
                await q.put(i)
                await asyncio.sleep(0.1)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(producer())
            got = [await q.get() for _ in range(3)]
        out.append(f"queue {got} {loop.time():.3f}")
        # TaskGroup propagates a failure and cancels siblings
        cancelled: list[str] = []

        async def sibling() -> None:
            try:
                await asyncio.sleep(100)
            except asyncio.CancelledError:
                cancelled.append(f"{loop.time():.3f}")
                raise

        async def failing() -> None:
            await asyncio.sleep(0.5)
            raise ValueError("boom")

        with pytest.raises(ExceptionGroup):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(sibling())
                tg.create_task(failing())
        out.append(f"taskgroup {cancelled}")
        # sleep(0) yields without advancing time
        before = loop.time()
        await asyncio.sleep(0)
        out.append(f"sleep0 {loop.time() - before}")
        return out

    out = run(main, max_virtual_s=100)
    assert out == [
        "wait_for 0.500",
        "timeout 0.750",
        "event 1.750",
        "queue [0, 1, 2] 2.050",
        "taskgroup ['2.550']",
        "sleep0 0.0",
    ]


def test_leftover_tasks_are_cancelled_and_loop_closed() -> None:
    cleaned: list[str] = []

    async def background() -> None:
        try:
            await asyncio.sleep(1000)
        finally:
            cleaned.append("bg")

    async def main() -> asyncio.AbstractEventLoop:
        task = asyncio.create_task(background())
        await asyncio.sleep(1)
        assert not task.done()
        return asyncio.get_running_loop()

    loop = run(main, max_virtual_s=10)
    assert cleaned == ["bg"]
    assert loop.is_closed()


def test_loop_can_be_driven_directly() -> None:
    loop = VirtualTimeLoop(max_virtual_s=50)
    try:
        assert loop.run_until_complete(asyncio.sleep(2, result="ok")) == "ok"
        assert loop.time() == pytest.approx(2.0)
        assert loop.steps > 0
    finally:
        loop.close()


def test_tasks_in_creation_order() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        names = [f"t{i}" for i in range(50)]
        tasks = [asyncio.create_task(asyncio.sleep(10), name=n) for n in names]
        ordered = [t.get_name() for t in loop.tasks_in_creation_order() if t in tasks]
        for t in tasks:
            t.cancel()
        return ordered

    names = run(main, max_virtual_s=100)
    assert names == [f"t{i}" for i in range(50)]


def test_abandoned_async_generators_are_finalised() -> None:
    closed: list[int] = []

    async def numbers() -> Any:
        try:
            for i in range(100):
                yield i
                await asyncio.sleep(0.1)
        finally:
            closed.append(1)

    async def main() -> None:
        async for i in numbers():
            if i == 2:
                break  # the generator is left to the finaliser hook
        await asyncio.sleep(1)

    run(main, max_virtual_s=10)
    assert closed == [1]


def test_a_timer_that_fires_within_the_clock_resolution_moves_the_clock() -> None:
    """asyncio fires a timer up to one clock resolution early; a task that recomputes the time
    left (a producer's linger: deadline - now, a rounding error above zero) must not spin at one
    virtual instant (found by the system simulation: seed 32 of the disk profile)."""
    stats: dict[str, Any] = {}

    async def main() -> int:
        loop = asyncio.get_running_loop()
        deadline = 0.1 + 0.2  # 0.30000000000000004
        await asyncio.sleep(0.3)
        rounds = 0
        while (left := deadline - loop.time()) > 0:
            rounds += 1
            try:
                await asyncio.wait_for(asyncio.Event().wait(), left)
            except TimeoutError:
                pass
        return rounds

    rounds = run(main, max_steps=1_000, stats=stats)
    assert rounds < 10, rounds
