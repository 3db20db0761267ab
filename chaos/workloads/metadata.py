"""The ``metadata`` workload: topic create / delete / list while faults are on, then, after the
heal, every broker's own topic list (``list`` with ``final`` and ``node``). Shapes in
chaos/checkers/metadata.py: create/delete value = the topic name; list ok value = names."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from chaos.workloads import Workload
from chaos.workloads.clients import admin
from chaos.workloads.queue import OP_ERRORS
from client.errors import TopicExists, UnknownTopic
from wire import replog_pb2 as pb
from wire import replog_pb2_grpc as pb_grpc

POOL = 6  # topic names churned by the workload
CONVERGE_S = 30.0


class MetadataWorkload(Workload):
    name = "metadata"
    every_s = 0.5  # metadata ops are slow Raft round trips: not paced by --rate

    async def run(self) -> None:
        await asyncio.gather(*(self.worker(w) for w in range(max(1, self.workers // 4))))

    async def worker(self, w: int) -> None:
        process = self.ctx.new_process()
        async with admin(self.ctx) as a:
            while not self.ctx.stop.is_set():
                f = self.ctx.rng.choice(["create", "create", "delete", "list"])
                name = f"chaos-meta-{self.ctx.rng.randrange(POOL)}"
                if not await self.op(a, process, f, name):
                    process = self.ctx.new_process()
                await asyncio.sleep(self.every_s)

    async def op(self, a: Any, process: int, f: str, name: str) -> bool:
        inv = self.ctx.invoke(process, f, None if f == "list" else name)
        try:
            if f == "create":
                await asyncio.wait_for(
                    a.create_topic(name, 1, self.ctx.replicas), self.ctx.op_timeout_s
                )
            elif f == "delete":
                await asyncio.wait_for(a.delete_topic(name), self.ctx.op_timeout_s)
            else:
                topics = await asyncio.wait_for(a.list_topics(), self.ctx.op_timeout_s)
                self.ctx.complete(inv, "ok", [t.name for t in topics])
                return True
        except (TopicExists, UnknownTopic) as e:
            self.ctx.complete(inv, "fail", name, error=type(e).__name__)  # took no effect
            return True
        except OP_ERRORS as e:
            self.ctx.complete(inv, "info", None if f == "list" else name, error=type(e).__name__)
            return False
        self.ctx.complete(inv, "ok", name)
        return True

    async def final(self) -> None:
        """Ask every broker (through its client proxy) until their lists agree or
        CONVERGE_S passes, then record that last round as the final lists."""
        deadline = time.monotonic() + CONVERGE_S
        while True:
            lists = {n: await self._list(addr) for n, addr in self.ctx.node_addresses.items()}
            answered = [v for v in lists.values() if v is not None]
            agreed = len(answered) == len(lists) and all(v == answered[0] for v in answered)
            if agreed or time.monotonic() >= deadline:
                break
            await asyncio.sleep(1.0)
        for node, names in sorted(lists.items()):
            inv = self.ctx.invoke(f"final-list-{node}", "list", None, node=node, final=True)
            if names is None:
                self.ctx.complete(inv, "fail", None, node=node, final=True, error="no answer")
            else:
                self.ctx.complete(inv, "ok", sorted(names), node=node, final=True)

    async def _list(self, address: str) -> list[str] | None:
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                r = await pb_grpc.ReplogStub(channel).ListTopics(
                    pb.ListTopicsRequest(), timeout=5.0
                )
                return sorted(t.name for t in r.topics)
        except (TimeoutError, grpc.aio.AioRpcError, OSError):
            return None
