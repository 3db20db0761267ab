"""``answer_within`` (server/waits.py): a produce waiter's answer, or
REQUEST_TIMED_OUT, with the task resuming one loop iteration after the waiter resolves."""

from __future__ import annotations

import asyncio

import pytest

from server.errors import BrokerError
from server.partition_replica import ProduceResult
from server.proposals import ProposalWaiters
from server.waits import answer_within

RESULT = ProduceResult(5, 7, 0, False)


def test_the_answer_comes_one_iteration_after_apply_resolves_it() -> None:
    async def main() -> None:
        waiters: ProposalWaiters[ProduceResult] = ProposalWaiters()
        fut = waiters.add(3, 1)
        task = asyncio.ensure_future(answer_within(fut, 5.0, "produce to t/0"))
        await asyncio.sleep(0)  # the task is now waiting on the waiter
        waiters.resolve(3, 1, lambda: RESULT, lambda: RuntimeError("overwritten"))
        await asyncio.sleep(0)  # exactly one loop iteration later...
        assert task.done() and task.result() == RESULT  # ...the task has the answer

    asyncio.run(main())


def test_a_waiter_not_resolved_in_time_times_out_and_a_late_apply_is_harmless() -> None:
    async def main() -> None:
        waiters: ProposalWaiters[ProduceResult] = ProposalWaiters()
        fut = waiters.add(3, 1)
        with pytest.raises(BrokerError) as info:
            await answer_within(fut, 0.01, "produce to t/0")
        assert info.value.code == "REQUEST_TIMED_OUT" and info.value.retriable
        assert "produce to t/0" in info.value.message
        waiters.resolve(3, 1, lambda: RESULT, lambda: RuntimeError("overwritten"))  # no error

    asyncio.run(main())


def test_a_cancelled_caller_leaves_no_timer_and_the_waiter_is_skipped() -> None:
    async def main() -> None:
        waiters: ProposalWaiters[ProduceResult] = ProposalWaiters()
        fut = waiters.add(3, 1)
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(answer_within(fut, 60.0, "produce to t/0"))
        await asyncio.sleep(0)
        timers = len(loop._scheduled)  # type: ignore[attr-defined]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert fut.cancelled()
        assert sum(not h.cancelled() for h in loop._scheduled) < timers  # type: ignore[attr-defined]
        waiters.resolve(3, 1, lambda: RESULT, lambda: RuntimeError("overwritten"))

    asyncio.run(main())
