"""The ``log`` workload: appends of unique values to chosen partitions and reads of a
partition's full prefix (from offset 0 up to the high watermark its leader reports when the
read begins). ``append`` value = the int, ok with partition and offset; ``read`` (topic,
partition) ok value = ``[[offset, value], ...]``; the reads after the heal carry ``final``.

Reads are linearizable: the high watermark comes from a ``ListOffsets`` with ``linearizable``
set, which the leader answers only after a ReadIndex round (a majority confirmed it still
leads, and it applied everything committed before the call). So every append acknowledged
before a read began must be in that read's prefix: what the stale-read checker asserts. A
deposed leader that has not noticed yet cannot answer (it would serve a stale prefix).
"""

from __future__ import annotations

import asyncio
from typing import Any

from chaos.workloads.clients import admin, drain_partition
from chaos.workloads.queue import OP_ERRORS, QueueWorkload


class LogWorkload(QueueWorkload):
    name = "log"
    send_f, drain_f = "append", "read"
    topic = "chaos-log"
    readers = 2
    read_every_s = 1.0

    def record(self, worker: int) -> tuple[Any, bytes, dict[str, Any]]:
        v = self.ctx.next_value()
        return v, str(v).encode(), {"key": f"a{v % 64}"}

    async def run(self) -> None:
        tasks = [self.append_worker(w) for w in range(self.workers)]
        tasks += [self.reader(r) for r in range(self.readers)]
        await asyncio.gather(*tasks)

    async def append_worker(self, worker: int) -> None:
        process = self.ctx.new_process()
        while await self.ctx.paced():
            part = self.ctx.rng.randrange(self.partitions)
            if not await self.send_one(process, self.topic, worker, partition=part):
                process = self.ctx.new_process()

    async def reader(self, r: int) -> None:
        async with admin(self.ctx) as a:
            while not self.ctx.stop.is_set():
                part = self.ctx.rng.randrange(self.partitions)
                await self.read(a, part, final=False)
                await asyncio.sleep(self.read_every_s)

    async def read(self, a: Any, partition: int, final: bool) -> None:
        process = self.ctx.new_process()
        fields: dict[str, Any] = {"topic": self.topic, "partition": partition}
        if final:
            fields["final"] = True
        inv = self.ctx.invoke(process, "read", None, **fields)
        try:
            timeout = 60 if final else self.ctx.op_timeout_s
            records, error = await drain_partition(
                self.ctx, a, self.topic, partition, timeout, linearizable=True
            )
        except OP_ERRORS as e:
            self.ctx.complete(inv, "fail", None, error=type(e).__name__)
            return
        if error is not None:
            # A read that did not finish observed nothing: it took no effect either way.
            self.ctx.complete(inv, "fail", None, error=error)
            return
        self.ctx.complete(
            inv,
            "ok",
            [[x.offset, *self.parse(x.value)] for x in records],
            **({"final": True} if final else {}),
        )

    async def final(self) -> None:
        async with admin(self.ctx) as a:
            for p in range(self.partitions):
                await self.read(a, p, final=True)
