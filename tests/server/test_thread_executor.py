"""The production executor (server/env.py ThreadExecutor): FIFO per lane, lanes in parallel,
outcomes delivered on the loop in lane order, a worker's burst bounded."""

from __future__ import annotations

import asyncio
import threading

import pytest

from server.env import ThreadExecutor

WAIT_S = 10.0  # bound on every wait; a passing run never comes near it


def test_one_lane_runs_in_submission_order_one_at_a_time() -> None:
    async def main() -> None:
        ex = ThreadExecutor(max_workers=4, burst=3)  # 50 jobs: the burst is requeued many times
        ran: list[int] = []
        running = 0
        overlap = False
        lock = threading.Lock()

        def job(i: int) -> int:
            nonlocal running, overlap
            with lock:
                running += 1
                overlap = overlap or running > 1
            ran.append(i)
            with lock:
                running -= 1
            return i * 2

        futs = [ex.submit("g", job, i) for i in range(50)]
        settled: list[int] = []
        for fut in futs:
            fut.add_done_callback(lambda f: settled.append(f.result()))
        assert await asyncio.wait_for(asyncio.gather(*futs), WAIT_S) == [i * 2 for i in range(50)]
        assert ran == list(range(50))
        assert settled == [i * 2 for i in range(50)]  # completions arrive in lane order
        assert not overlap
        ex.shutdown()

    asyncio.run(main())


def test_lanes_run_in_parallel() -> None:
    """A job of lane A waits for a job of lane B: it finishes only if B runs meanwhile."""

    async def main() -> None:
        ex = ThreadExecutor(max_workers=2)
        b_ran = threading.Event()
        a = ex.submit("a", lambda: b_ran.wait(WAIT_S))
        b = ex.submit("b", b_ran.set)
        assert await asyncio.wait_for(a, WAIT_S) is True
        await asyncio.wait_for(b, WAIT_S)
        ex.shutdown()

    asyncio.run(main())


def test_a_failing_job_fails_its_future_and_the_lane_goes_on() -> None:
    async def main() -> None:
        ex = ThreadExecutor()

        def boom() -> None:
            raise OSError(5, "EIO")

        first = ex.submit("g", boom)
        second = ex.submit("g", lambda: "after")
        with pytest.raises(OSError, match="EIO"):
            await asyncio.wait_for(first, WAIT_S)
        assert await asyncio.wait_for(second, WAIT_S) == "after"
        ex.shutdown()

    asyncio.run(main())


def test_a_cancelled_future_does_not_stop_the_lane() -> None:
    async def main() -> None:
        ex = ThreadExecutor()
        gate = threading.Event()
        blocker = ex.submit("g", lambda: gate.wait(WAIT_S))
        doomed = ex.submit("g", lambda: "ran anyway")
        doomed.cancel()
        last = ex.submit("g", lambda: "last")
        gate.set()
        await asyncio.wait_for(blocker, WAIT_S)
        assert await asyncio.wait_for(last, WAIT_S) == "last"
        assert doomed.cancelled()
        ex.shutdown()

    asyncio.run(main())


def test_submit_then_delivers_outcomes_in_lane_order_without_a_future() -> None:
    """``submit_then`` jobs share the lane with ``submit`` jobs (FIFO), and each outcome,
    error included, reaches ``then`` on the loop thread in submission order."""

    async def main() -> None:
        ex = ThreadExecutor(max_workers=2, burst=2)
        loop_thread = threading.get_ident()
        got: list[tuple[object, str | None, bool]] = []
        all_done = asyncio.Event()

        def then(result: object, error: BaseException | None) -> None:
            got.append(
                (
                    result,
                    None if error is None else str(error),
                    threading.get_ident() == loop_thread,
                )
            )
            if len(got) == 4:
                all_done.set()

        def boom() -> None:
            raise OSError(5, "EIO")

        ex.submit_then("g", lambda x: x + 1, (1,), then)
        middle = ex.submit("g", lambda: "future")
        ex.submit_then("g", boom, (), then)
        ex.submit_then("g", lambda: "three", (), then)
        ex.submit_then("g", lambda: "four", (), then)
        await asyncio.wait_for(all_done.wait(), WAIT_S)
        assert await asyncio.wait_for(middle, WAIT_S) == "future"
        assert got == [
            (2, None, True),
            (None, "[Errno 5] EIO", True),
            ("three", None, True),
            ("four", None, True),
        ]
        ex.shutdown()

    asyncio.run(main())


def test_a_busy_lane_leaves_a_single_worker_to_other_lanes_after_its_burst() -> None:
    """One worker, a lane with many jobs and another lane with one: the other lane's job runs
    after at most ``burst`` jobs of the busy lane, not after all of them."""

    async def main() -> None:
        ex = ThreadExecutor(max_workers=1, burst=3)
        order: list[str] = []
        busy = [ex.submit("busy", order.append, f"busy{i}") for i in range(12)]
        other = ex.submit("other", order.append, "other")
        await asyncio.wait_for(asyncio.gather(*busy, other), WAIT_S)
        assert order.index("other") <= 3, order
        assert [x for x in order if x != "other"] == [f"busy{i}" for i in range(12)]
        ex.shutdown()

    asyncio.run(main())


def test_shutdown_runs_what_was_queued_then_refuses_new_jobs() -> None:
    async def main() -> None:
        ex = ThreadExecutor(max_workers=2, burst=2)
        release = threading.Event()
        ran: list[int] = []
        ex.submit("a", release.wait, WAIT_S)
        futs = [ex.submit("a", ran.append, i) for i in range(5)]
        stopping = asyncio.get_running_loop().run_in_executor(None, ex.shutdown)
        release.set()
        await asyncio.wait_for(stopping, WAIT_S)  # returns only after the queued jobs ran
        assert ran == [0, 1, 2, 3, 4]
        await asyncio.wait_for(asyncio.gather(*futs), WAIT_S)
        with pytest.raises(RuntimeError, match="shut down"):
            ex.submit("b", ran.append, 9)

    asyncio.run(main())
