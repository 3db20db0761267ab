"""Faults for chaos runs, injected through Toxiproxy proxies and broker PIDs (chaos/cluster.py).

Contract: ``Nemesis.start_fault(name)`` picks a concrete fault of that class (seeded RNG),
injects it and records ``start`` in the history; ``stop_fault()`` undoes it and records
``stop``. Both are recorded as an ``invoke`` + ``info`` pair of process ``"nemesis"`` with
value ``{"fault": kind, ...}``. A fault class that cannot run here (power loss without FUSE,
or on a prepared cluster without LazyFS mounts) is recorded once as ``skip`` with the reason,
never silently passed. ``heal()`` undoes everything, whatever happened before.

The cluster is a ``ChaosCluster``: one this process started, or an ``AttachedCluster`` (a
cluster ``replog chaos prepare`` started); the nemesis uses only their common interface.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from chaos.cluster import ChaosCluster
from chaos.history import HistoryWriter

NEMESES = (
    "partition",
    "kill",
    "pause",
    "latency",
    "slow",
    "reset",
    "power-loss",
    "power-loss-all",
    "topic-churn",
    "crash-after-create",
    "mix",
    "none",
)
PARTITIONS = (
    "halves",
    "isolate-partition-leader",
    "isolate-metadata-leader",
    "majorities-ring",
    "one-way",
    "dc",
)
# What `mix` rotates through (power loss only where FUSE works; the runner removes it).
MIX = ("partition", "kill", "pause", "latency", "slow", "reset", "power-loss", "topic-churn")

Undo = Callable[[], Awaitable[None]]


def _each(action: Callable[[int], None], node_ids: list[int]) -> None:
    for i in node_ids:
        action(i)


class Skipped(Exception):
    """A fault class that cannot run on this machine; the message says why."""


class Nemesis:
    def __init__(
        self,
        cluster: ChaosCluster,
        history: HistoryWriter,
        rng: random.Random,
        leaders: Callable[[], Awaitable[dict[str, int]]],
        write_new_topic: Callable[[str], Awaitable[int]] | None = None,
        power_loss_reason: str | None = None,
    ) -> None:
        self.c = cluster
        self.h = history
        self.rng = rng
        self.leaders = leaders  # {"metadata": id, "topic/p": id, ...} from the cluster
        self.write_new_topic = write_new_topic
        self.power_loss_reason = power_loss_reason  # e.g. "FUSE unavailable: ..."
        self.current: tuple[str, Undo] | None = None
        self.skipped: dict[str, str] = {}
        self._seq = 0
        self._churn: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ history
    def _record(self, f: str, value: dict[str, Any]) -> None:
        inv = self.h.invoke("nemesis", f, {"fault": value["fault"]})
        self.h.complete(inv, "info", value)

    def skip(self, name: str, reason: str) -> None:
        if name not in self.skipped:
            self.skipped[name] = reason
            self._record("skip", {"fault": name, "reason": reason})

    # ------------------------------------------------------------------ lifecycle
    async def start_fault(self, name: str) -> str | None:
        """Inject one fault of class ``name``; returns its kind, or None if skipped."""
        if self.current is not None:
            await self.stop_fault()
        if name == "mix":
            choices = [m for m in MIX if m not in self.skipped]
            name = self.rng.choice(choices)
        if name == "none":
            return None
        try:
            kind, detail, undo = await getattr(self, "_" + name.replace("-", "_"))()
        except Skipped as e:
            self.skip(name, str(e))
            return None
        self._record("start", {"fault": kind, "class": name, **detail})
        self.current = (kind, undo)
        return str(kind)

    async def stop_fault(self) -> None:
        if self.current is None:
            return
        kind, undo = self.current
        self.current = None
        try:
            await undo()
        finally:
            self._record("stop", {"fault": kind})

    async def heal(self) -> None:
        """Undo the current fault and anything else: network, paused, dead brokers."""
        try:
            await self.stop_fault()
        finally:
            await self._stop_churn()
            await asyncio.to_thread(self.c.heal)
            self._record("heal", {"fault": "heal"})

    # ------------------------------------------------------------------ network helpers
    async def _cut(self, links: list[tuple[int, int]], flavour: str) -> Undo:
        names = [self.c.link_name(i, j) for i, j in links]

        def apply() -> None:
            for n in names:
                p = self.c.proxy(n)
                if flavour == "refuse":
                    p.disable()
                else:  # silent drop: nothing passes, connections stay open
                    p.add_toxic(type="timeout", name="drop-down", attributes={"timeout": 0})
                    p.add_toxic(
                        type="timeout", name="drop-up", stream="upstream", attributes={"timeout": 0}
                    )

        def undo() -> None:
            for n in names:
                p = self.c.proxy(n)
                if flavour == "refuse":
                    p.enable()
                else:
                    p.destroy_toxic("drop-down")
                    p.destroy_toxic("drop-up")

        await asyncio.to_thread(apply)
        return lambda: asyncio.to_thread(undo)

    def _between(self, groups: list[list[int]]) -> list[tuple[int, int]]:
        where = {n: g for g, members in enumerate(groups) for n in members}
        ids = self.c.node_ids
        return [(i, j) for i in ids for j in ids if i != j and where[i] != where[j]]

    async def _partition(self) -> tuple[str, dict[str, Any], Undo]:
        shape = self.rng.choice(PARTITIONS)
        flavour = self.rng.choice(["drop", "refuse"])
        ids = list(self.c.node_ids)
        links: list[tuple[int, int]]
        if shape in ("isolate-partition-leader", "isolate-metadata-leader"):
            leaders = await self.leaders()
            keys = (
                ["metadata"]
                if shape == "isolate-metadata-leader"
                else [k for k in leaders if k != "metadata"]
            )
            candidates = [leaders[k] for k in keys if leaders.get(k)]
            victim = self.rng.choice(candidates) if candidates else self.rng.choice(ids)
            groups = [[victim], [n for n in ids if n != victim]]
        elif shape == "majorities-ring" and len(ids) >= 5:
            # Each node keeps links to its ring neighbours only: every node sees a majority,
            # no two nodes see the same one.
            reach = len(ids) // 4 or 1
            self.rng.shuffle(ids)
            keep = {
                (ids[k], ids[(k + d) % len(ids)])
                for k in range(len(ids))
                for d in range(-reach, reach + 1)
            }
            links = [
                (i, j)
                for i in ids
                for j in ids
                if i != j and (i, j) not in keep and (j, i) not in keep
            ]
            undo = await self._cut(links, flavour)
            return f"partition-{shape}-{flavour}", {"ring": ids}, undo
        elif shape == "one-way":
            self.rng.shuffle(ids)
            half = len(ids) // 2 or 1
            src, dst = ids[:half], ids[half:]
            links = [(i, j) for i in src for j in dst]
            undo = await self._cut(links, flavour)
            return f"partition-{shape}-{flavour}", {"from": src, "to": dst}, undo
        elif shape == "dc" and len(self.c.dc_names()) > 1:
            dc = self.rng.choice(self.c.dc_names())
            inside = [n for n in ids if self.c.dc_of(n) == dc]
            groups = [inside, [n for n in ids if n not in inside]]
        else:
            shape = "halves"
            self.rng.shuffle(ids)
            half = len(ids) // 2
            groups = [sorted(ids[:half]), sorted(ids[half:])]
        undo = await self._cut(self._between(groups), flavour)
        return f"partition-{shape}-{flavour}", {"groups": groups}, undo

    async def _toxics(
        self, kind: str, links: list[str], toxics: list[dict[str, Any]], detail: dict[str, Any]
    ) -> tuple[str, dict[str, Any], Undo]:
        def apply() -> None:
            for n in links:
                for t in toxics:
                    self.c.proxy(n).add_toxic(**t)

        def undo() -> None:
            for n in links:
                for t in toxics:
                    self.c.proxy(n).destroy_toxic(t["name"])

        await asyncio.to_thread(apply)
        return kind, {"links": len(links), **detail}, lambda: asyncio.to_thread(undo)

    def _random_links(self) -> list[str]:
        ids = self.c.node_ids
        pairs = [(i, j) for i in ids for j in ids if i != j]
        k = max(1, len(pairs) // 3)
        return [self.c.link_name(i, j) for i, j in self.rng.sample(pairs, k)]

    async def _latency(self) -> tuple[str, dict[str, Any], Undo]:
        latency = self.rng.randint(20, 80)
        ids = self.c.node_ids
        cross = [
            self.c.link_name(i, j)
            for i in ids
            for j in ids
            if i != j and self.c.dc_of(i) != self.c.dc_of(j)
        ]
        links = cross or self._random_links()  # one DC: slow some links instead
        toxic = {
            "type": "latency",
            "name": "wan",
            "attributes": {"latency": latency, "jitter": max(1, latency // 4)},
        }
        return await self._toxics("latency-wan", links, [toxic], {"latency_ms": latency})

    async def _slow(self) -> tuple[str, dict[str, Any], Undo]:
        rate = self.rng.choice([32, 128, 512])
        toxics = [
            {"type": "bandwidth", "name": "slow", "attributes": {"rate": rate}},
            {
                "type": "slicer",
                "name": "slice",
                "attributes": {"average_size": 64, "size_variation": 32, "delay": 100},
            },
        ]
        return await self._toxics("slow-links", self._random_links(), toxics, {"kb_s": rate})

    async def _reset(self) -> tuple[str, dict[str, Any], Undo]:
        if self.rng.random() < 0.5:
            toxic = {
                "type": "reset_peer",
                "name": "reset",
                "attributes": {"timeout": self.rng.randint(0, 500)},
            }
            return await self._toxics("reset-peer", self._random_links(), [toxic], {})
        n = self.rng.choice([1024, 16384, 65536])
        toxic = {"type": "limit_data", "name": "cut", "attributes": {"bytes": n}}
        return await self._toxics("limit-data", self._random_links(), [toxic], {"bytes": n})

    # ------------------------------------------------------------------ processes
    def _some(self, how: str) -> list[int]:
        ids = list(self.c.node_ids)
        n = {
            "one": 1,
            "minority": (len(ids) - 1) // 2 or 1,
            "majority": len(ids) // 2 + 1,
            "all": len(ids),
        }[how]
        return sorted(self.rng.sample(ids, n))

    async def _kill(self) -> tuple[str, dict[str, Any], Undo]:
        how = self.rng.choice(["one", "minority", "majority", "all"])
        victims = self._some(how)
        await asyncio.to_thread(_each, self.c.kill, victims)

        async def undo() -> None:
            await asyncio.to_thread(_each, self.c.start_node, victims)

        return f"kill-{how}", {"nodes": victims}, undo

    async def _pause(self) -> tuple[str, dict[str, Any], Undo]:
        how = self.rng.choice(["one", "minority"])
        victims = self._some(how)
        for i in victims:
            self.c.pause(i)

        async def undo() -> None:
            for i in victims:
                self.c.resume(i)

        return f"pause-{how}", {"nodes": victims}, undo

    async def _power_loss(self, everyone: bool = False) -> tuple[str, dict[str, Any], Undo]:
        reason = self.power_loss_reason or self.c.power_loss_unavailable()
        if reason is not None:
            raise Skipped(reason)
        victims = list(self.c.node_ids) if everyone else self._some("one")
        seed = self.rng.randrange(1 << 30)

        def crash() -> dict[str, Any]:
            for i in victims:  # all down before any comes back: a shared power cut
                self.c.kill(i)
            lost = {str(i): self.c.nodes[i].fs.crash(torn_seed=seed) for i in victims}
            for i in victims:
                self.c.start_node(i)
            return lost

        lost = await asyncio.to_thread(crash)

        async def undo() -> None:
            return None

        kind = "power-loss-all" if everyone else "power-loss"
        return kind, {"nodes": victims, "lost": lost}, undo

    async def _power_loss_all(self) -> tuple[str, dict[str, Any], Undo]:
        return await self._power_loss(everyone=True)

    # ------------------------------------------------------------------ topics
    async def _crash_after_create(self) -> tuple[str, dict[str, Any], Undo]:
        if self.write_new_topic is None:
            raise Skipped("needs the queue workload (its drain reads the new topic)")
        self._seq += 1
        topic = f"chaos-fresh-{self._seq}"
        acked = await self.write_new_topic(topic)
        ids = self.c.node_ids
        await asyncio.to_thread(_each, self.c.kill, ids)
        await asyncio.sleep(self.rng.uniform(0.5, 2.0))
        await asyncio.to_thread(_each, self.c.start_node, ids)

        async def undo() -> None:
            return None

        return "crash-after-create", {"topic": topic, "acked": acked}, undo

    async def _topic_churn(self) -> tuple[str, dict[str, Any], Undo]:
        from chaos.workloads.clients import bounded

        async def churn() -> None:
            from client import AdminClient, AdminConfig

            cfg = AdminConfig(operation_timeout_ms=10000, **self.c.client_kwargs())
            async with AdminClient(self.c.bootstrap, cfg) as a:
                for k in range(10_000):  # bounded; cancelled when the fault stops
                    name = f"chaos-churn-{k % 4}"
                    await bounded(a.create_topic(name, 2, min(3, len(self.c.node_ids))), 10)
                    await asyncio.sleep(0.3)
                    await bounded(a.delete_topic(name), 10)

        self._churn = asyncio.create_task(churn())
        return "topic-churn", {}, self._stop_churn

    async def _stop_churn(self) -> None:
        task, self._churn = self._churn, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
