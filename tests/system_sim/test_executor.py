"""SimExecutor: FIFO per lane, independent lanes, disk cost as virtual time, crash = shutdown."""

from __future__ import annotations

import asyncio
import errno
import os
import random

import pytest

from tests.system_sim.executor import SimExecutor
from tests.system_sim.fs import SimDisk
from tests.system_sim.loop import run


def test_fifo_per_lane_and_results() -> None:
    async def main() -> list[int]:
        executor = SimExecutor()
        done: list[int] = []

        def job(i: int) -> int:
            done.append(i)
            return i * i

        futures = [executor.submit("lane", job, i) for i in range(10)]
        results = await asyncio.gather(*futures)
        assert results == [i * i for i in range(10)]
        return done

    assert run(main, max_virtual_s=10) == list(range(10))


def test_completions_arrive_in_submission_order_even_with_costs() -> None:
    async def main() -> list[str]:
        disk = SimDisk(random.Random(0))
        fs = disk.mount()
        executor = SimExecutor(asyncio.get_running_loop(), disk)
        completions: list[str] = []
        fd = fs.open("/f", os.O_WRONLY | os.O_CREAT)
        disk.slow("/f", seconds_per_sync=0.1)

        def slow_sync() -> str:
            fs.fsync(fd)
            return "sync"

        def quick() -> str:
            return "quick"

        futures = [
            executor.submit("io", slow_sync),
            executor.submit("io", quick),
            executor.submit("io", slow_sync),
        ]
        for fut in futures:
            fut.add_done_callback(lambda f: completions.append(f.result()))
        await asyncio.gather(*futures)
        return completions

    assert run(main, max_virtual_s=10) == ["sync", "quick", "sync"]


def test_a_slow_lane_does_not_delay_another_lane() -> None:
    async def main() -> tuple[float, float, float]:
        loop = asyncio.get_running_loop()
        disk = SimDisk(random.Random(0))
        fs = disk.mount()
        executor = SimExecutor(loop, disk)
        fs.makedirs("/slow")
        fs.makedirs("/fast")
        slow_fd = fs.open("/slow/log", os.O_WRONLY | os.O_CREAT)
        fast_fd = fs.open("/fast/log", os.O_WRONLY | os.O_CREAT)
        disk.slow("/slow", seconds_per_sync=2.0)
        slow = executor.submit("group-1", fs.fsync, slow_fd)
        fast_times = []
        for _ in range(5):
            await executor.submit("group-2", fs.fsync, fast_fd)
            fast_times.append(loop.time())
        assert not slow.done()
        await slow
        assert disk.loop_side_ops > 0  # the opens above ran on the loop
        return fast_times[-1], loop.time(), executor.busy_s_by_lane["group-1"]

    fast_done, slow_done, slow_busy = run(main, max_virtual_s=10)
    assert fast_done < 0.01
    assert slow_done == pytest.approx(2.0, abs=0.01)
    assert slow_busy == pytest.approx(2.0, abs=0.01)


def test_exceptions_propagate_through_the_future() -> None:
    async def main() -> str:
        disk = SimDisk(random.Random(0))
        fs = disk.mount()
        executor = SimExecutor(None, disk)
        fd = fs.open("/f", os.O_WRONLY | os.O_CREAT)
        disk.fail_syncs(errno.EIO, count=1)
        with pytest.raises(OSError) as e:
            await executor.submit("io", fs.fsync, fd)
        assert e.value.errno == errno.EIO
        # the lane keeps going after a failed job
        await executor.submit("io", fs.fsync, fd)
        return "ok"

    assert run(main, max_virtual_s=10) == "ok"


def test_the_job_runs_in_virtual_time_with_in_executor_set() -> None:
    async def main() -> tuple[float, bool, int]:
        loop = asyncio.get_running_loop()
        disk = SimDisk(random.Random(0))
        executor = SimExecutor(loop.time, disk, base_delay_s=0.5)  # a bound loop.time is fine
        seen: list[tuple[float, bool]] = []

        def job() -> None:
            seen.append((loop.time(), disk.in_executor))
            disk.mount().exists("/")

        await executor.submit("lane", job)
        return seen[0][0], seen[0][1], disk.loop_side_ops

    when, flagged, loop_side = run(main, max_virtual_s=10)
    assert when == pytest.approx(0.5)
    assert flagged
    assert loop_side == 0


def test_shutdown_cancels_pending_and_never_runs_queued_jobs() -> None:
    async def main() -> tuple[list[str], list[bool], bool]:
        loop = asyncio.get_running_loop()
        disk = SimDisk(random.Random(0))
        fs = disk.mount()
        fs.makedirs("/d")
        fd = fs.open("/d/f", os.O_WRONLY | os.O_CREAT)
        disk.slow("/d", seconds_per_sync=1.0)
        executor = SimExecutor(loop, disk)
        ran: list[str] = []

        def sync(tag: str) -> None:
            ran.append(tag)
            fs.fsync(fd)

        futures = [executor.submit("io", sync, tag) for tag in ("a", "b", "c")]
        other = executor.submit("other", sync, "x")
        await asyncio.sleep(0.5)  # "a" and "x" ran; their cost (1 s) is still being paid
        executor.shutdown()
        await asyncio.sleep(5)
        late = executor.submit("io", sync, "late")
        await asyncio.sleep(1)
        return ran, [f.cancelled() for f in [*futures, other]], late.cancelled()

    ran, cancelled, late_cancelled = run(main, max_virtual_s=20)
    assert sorted(ran) == ["a", "x"]
    assert cancelled == [True, True, True, True]
    assert late_cancelled


def test_a_cancelled_queued_job_is_skipped() -> None:
    async def main() -> list[int]:
        executor = SimExecutor()
        ran: list[int] = []
        futures = [executor.submit("lane", ran.append, i) for i in range(3)]
        futures[1].cancel()
        await asyncio.gather(futures[0], futures[2])
        return ran

    assert run(main, max_virtual_s=10) == [0, 2]
