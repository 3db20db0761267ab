"""Client helpers shared by the workloads: bounded calls, topic creation, full-partition reads."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from chaos.workloads import Context
from client import AdminClient, AdminConfig, Consumer, ConsumerConfig
from client.consumer import ConsumerRecord
from client.errors import ReplogError, TopicExists, UnknownTopic


async def bounded(aw: Awaitable[Any], timeout_s: float) -> Any:
    """Await with a deadline, swallowing errors: for closes and best-effort clean-up. A
    cancellation of the caller is never swallowed (a cancelled loop must stop)."""
    with contextlib.suppress(Exception):
        return await asyncio.wait_for(aw, timeout_s)
    return None


@contextlib.asynccontextmanager
async def admin(ctx: Context, timeout_s: float | None = None) -> AsyncIterator[AdminClient]:
    t = (timeout_s or ctx.op_timeout_s) * 1000
    cfg = AdminConfig(request_timeout_ms=min(t, 5000), operation_timeout_ms=t, **ctx.client_kwargs)
    a = AdminClient(ctx.bootstrap, cfg)
    try:
        yield a
    finally:
        await bounded(a.close(), 5)


async def create_topic(ctx: Context, topic: str, partitions: int, timeout_s: float = 60) -> None:
    """Create (or find) a topic and wait until every partition has a leader (bounded)."""
    deadline = time.monotonic() + timeout_s
    async with admin(ctx, timeout_s) as a:
        with contextlib.suppress(TopicExists):
            await a.create_topic(topic, partitions, ctx.replicas)
        while time.monotonic() < deadline:
            try:
                d = await a.describe_topic(topic)
                if all(p.high_watermark is not None for p in d.partitions):
                    return
            except ReplogError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"topic {topic} has no leader for every partition after {timeout_s}s")


async def drain_partition(
    ctx: Context,
    a: AdminClient,
    topic: str,
    partition: int,
    timeout_s: float = 60,
    *,
    linearizable: bool = False,
) -> tuple[list[ConsumerRecord], str | None]:
    """Every record of one partition from its start up to the high watermark the leader
    reports now (``linearizable``: after a ReadIndex round, so it covers every append
    acknowledged before the call). Returns (records, None), or (partial, error) when it cannot
    finish in time; raises UnknownTopic when the topic does not exist. The records below that
    high watermark are committed, so any later leader serves the same ones."""
    deadline = time.monotonic() + timeout_s
    hw = None
    last_error = "no answer"
    while hw is None and time.monotonic() < deadline:
        try:
            r = await a.list_offsets(topic, partition, timeout_s=10, linearizable=linearizable)
            hw = r.high_watermark
        except UnknownTopic:
            raise
        except (ReplogError, TimeoutError, OSError) as e:
            last_error = f"list_offsets: {type(e).__name__}"
            await asyncio.sleep(0.5)
    if hw is None:
        return [], last_error
    cfg = ConsumerConfig(auto_offset_reset="earliest", request_timeout_ms=5000, **ctx.client_kwargs)
    out: list[ConsumerRecord] = []
    async with Consumer(ctx.bootstrap, cfg) as consumer:
        consumer.assign([(topic, partition)])
        consumer.seek_to_beginning()
        while time.monotonic() < deadline:
            pos = consumer.position(topic, partition)
            if pos is not None and pos >= hw:
                return out, None
            try:
                out.extend(await asyncio.wait_for(consumer.poll(0.5), 10))
            except UnknownTopic:
                raise
            except (ReplogError, TimeoutError, OSError) as e:
                last_error = f"poll: {type(e).__name__}"
                await asyncio.sleep(0.2)
    return out, f"drain did not reach the high watermark {hw} in {timeout_s}s ({last_error})"
