"""The ``queue`` and ``cdc`` workloads: idempotent producers append unique records to keyed
partitions, consumers read their assigned partitions, a final drain reads every partition from
the beginning.

History shapes (chaos/checkers/records.py): queue ``send`` value = the unique int, ok with
partition and offset; ``poll`` ok value = ``[[partition, offset, value], ...]``; ``drain``
(topic, partition) ok value = ``[[offset, value], ...]``; ``assign`` value = the partitions.
cdc uses ``cdc-send`` with ``key`` and value = the key's version (1, 2, ... per key, each key
owned by one worker so versions are produced in order), and records ``[partition, offset, key,
version]`` / ``[offset, key, version]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from chaos.workloads import Context, Workload
from chaos.workloads.clients import admin, bounded, create_topic, drain_partition
from client import Consumer, ConsumerConfig, Producer, ProducerConfig
from client.errors import ReplogError, TopicExists, UnknownTopic

# Errors that end an operation: the client's own, timeouts, and a connection torn by a fault.
OP_ERRORS = (ReplogError, TimeoutError, OSError)


class QueueWorkload(Workload):
    name = "queue"
    send_f, poll_f, drain_f, assign_f = "send", "poll", "drain", "assign"
    topic = "chaos-queue"

    def __init__(self, ctx: Context, partitions: int, workers: int) -> None:
        super().__init__(ctx, partitions, workers)
        self.producer: Producer | None = None
        self.topics = [(self.topic, partitions)]
        self.versions: dict[str, int] = {}

    # ------------------------------------------------------------------ records
    def record(self, worker: int) -> tuple[Any, bytes, dict[str, Any]]:
        """(history value, record bytes, extra invoke fields) of the next record."""
        v = self.ctx.next_value()
        return v, str(v).encode(), {"key": f"k{v % 64}"}

    def parse(self, raw: bytes | None) -> list[Any]:
        text = (raw or b"").decode(errors="replace")
        try:
            return [int(text)]
        except ValueError:
            return [text]

    # ------------------------------------------------------------------ lifecycle
    def _new_producer(self) -> Producer:
        cfg = ProducerConfig(
            linger_ms=2,
            request_timeout_ms=5000,
            delivery_timeout_ms=60000,
            **self.ctx.client_kwargs,
        )
        return Producer(self.ctx.bootstrap, cfg)

    async def setup(self) -> None:
        for topic, parts in self.topics:
            await create_topic(self.ctx, topic, parts)
        self.producer = self._new_producer()

    async def run(self) -> None:
        tasks = [self.producer_worker(w) for w in range(self.workers)]
        groups = max(1, min(self.partitions, self.workers // 2 or 1))
        for g in range(groups):
            parts = [p for p in range(self.partitions) if p % groups == g]
            tasks.append(self.consumer_worker(parts))
        await asyncio.gather(*tasks)

    async def send_one(
        self, process: int, topic: str, worker: int, partition: int | None = None
    ) -> bool:
        """One recorded send; returns whether it was acknowledged."""
        value, raw, fields = self.record(worker)
        inv = self.ctx.invoke(process, self.send_f, value, topic=topic, **fields)
        assert self.producer is not None
        producer = self.producer
        try:
            key = str(fields["key"]).encode()
            fut = await asyncio.wait_for(
                producer.send(topic, raw, key=key, partition=partition), self.ctx.op_timeout_s
            )
            md = await asyncio.wait_for(asyncio.shield(fut), self.ctx.op_timeout_s)
        except OP_ERRORS as e:
            # Anything but an ack may still have been appended: indeterminate.
            self.ctx.complete(inv, "info", value, error=type(e).__name__)
            if getattr(producer, "_fatal", None) is not None and producer is self.producer:
                self.producer = self._new_producer()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.close(), 5)
            return False
        self.ctx.complete(inv, "ok", value, partition=md.partition, offset=md.offset)
        return True

    async def producer_worker(self, worker: int) -> None:
        process = self.ctx.new_process()
        while await self.ctx.paced():
            if not await self.send_one(process, self.topic, worker):
                process = self.ctx.new_process()

    async def consumer_worker(self, parts: list[int]) -> None:
        while not self.ctx.stop.is_set():
            process = self.ctx.new_process()
            cfg = ConsumerConfig(
                auto_offset_reset="earliest", request_timeout_ms=5000, **self.ctx.client_kwargs
            )
            consumer = Consumer(self.ctx.bootstrap, cfg)
            try:
                inv = self.ctx.invoke(process, self.assign_f, parts, topic=self.topic)
                consumer.assign([(self.topic, p) for p in parts])
                self.ctx.complete(inv, "ok", parts)
                while not self.ctx.stop.is_set():
                    inv = self.ctx.invoke(process, self.poll_f, None, topic=self.topic)
                    try:
                        recs = await asyncio.wait_for(consumer.poll(1.0), self.ctx.op_timeout_s)
                    except OP_ERRORS as e:
                        self.ctx.complete(inv, "info", None, error=type(e).__name__)
                        break
                    items = [[r.partition, r.offset, *self.parse(r.value)] for r in recs]
                    self.ctx.complete(inv, "ok", items)
            finally:
                await bounded(consumer.close(), 5)
            if not self.ctx.stop.is_set():
                await asyncio.sleep(0.5)  # back off before reassigning after an unknown poll

    async def probe(self, deadline: float) -> dict[str, Any]:
        """Every partition acknowledges one recorded record before ``deadline``."""
        waiting = {(t, p) for t, n in self.topics for p in range(n)}
        started = time.monotonic()
        attempts = 0
        while waiting and time.monotonic() < deadline and attempts < 1000:
            attempts += 1
            for t, p in sorted(waiting):
                if await self.send_one(self.ctx.new_process(), t, 10_000 + p, partition=p):
                    waiting.discard((t, p))
            if waiting:
                await asyncio.sleep(0.5)
        return {
            "ok": not waiting,
            "seconds": round(time.monotonic() - started, 2),
            "not_live": [f"{t}/{p}" for t, p in sorted(waiting)],
        }

    async def final(self) -> None:
        async with admin(self.ctx) as a:
            for topic, parts in self.topics:
                for p in range(parts):
                    await self.drain(a, topic, p)

    async def drain(self, a: Any, topic: str, partition: int) -> None:
        inv = self.ctx.invoke(
            f"drain-{topic}-{partition}", self.drain_f, None, topic=topic, partition=partition
        )
        try:
            records, error = await drain_partition(self.ctx, a, topic, partition)
        except UnknownTopic:
            # The topic is gone (e.g. its creation was never made durable): the partition's
            # full content is empty, which is exactly what the loss checker must judge.
            self.ctx.complete(inv, "ok", [], error="UnknownTopic")
            return
        if error is not None:
            self.ctx.complete(inv, "fail", None, error=error)
            return
        self.ctx.complete(inv, "ok", [[r.offset, *self.parse(r.value)] for r in records])

    async def close(self) -> None:
        if self.producer is not None:
            await bounded(self.producer.close(), 15)

    async def add_topic(self, topic: str, partitions: int) -> None:
        """Create a topic whose records the final drain reads too (nemeses write to them)."""
        with contextlib.suppress(TopicExists):
            await create_topic(self.ctx, topic, partitions)
        self.topics.append((topic, partitions))


class CdcWorkload(QueueWorkload):
    name = "cdc"
    send_f, poll_f, drain_f, assign_f = "cdc-send", "cdc-poll", "cdc-drain", "cdc-assign"
    topic = "chaos-cdc"
    keys_per_worker = 4

    def record(self, worker: int) -> tuple[Any, bytes, dict[str, Any]]:
        # Each key belongs to one worker, so its versions are produced strictly in order.
        n = self.ctx.next_value()
        key = f"w{worker}-k{n % self.keys_per_worker}"
        version = self.versions.get(key, 0) + 1
        self.versions[key] = version
        return version, f"{key}:{version}".encode(), {"key": key}

    def parse(self, raw: bytes | None) -> list[Any]:
        key, _, version = (raw or b"").decode(errors="replace").rpartition(":")
        try:
            return [key, int(version)]
        except ValueError:
            return [key, version]
