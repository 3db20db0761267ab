"""A tiny in-memory network of RawNodes for unit tests (not the simulator: no faults beyond
cut links and explicit drops, no randomness except the nodes' own seeded rngs).

Each node has a MemoryStorage. ``process(id)`` runs one Ready through the loop contract:
persist (snapshot, entries, hard state), queue messages, apply committed entries, advance.
``deliver()`` steps every queued message into its target unless the link is cut.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

from raft import (
    ConfState,
    Entry,
    EntryType,
    MemoryStorage,
    Message,
    RaftConfig,
    RawNode,
    ReadState,
    Ready,
    Role,
)


class Network:
    def __init__(
        self,
        voters: Iterable[int],
        learners: Iterable[int] = (),
        seed: int = 0,
        **config: Any,
    ) -> None:
        self.seed = seed
        self.config = dict(config)
        cs = ConfState(voters=frozenset(voters), learners=frozenset(learners))
        self.nodes: dict[int, RawNode] = {}
        self.storages: dict[int, MemoryStorage] = {}
        self.applied: dict[int, list[Entry]] = {}
        self.read_states: dict[int, list[ReadState]] = {}
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self.queue: list[Message] = []
        self.cut: set[tuple[int, int]] = set()
        self.drop: Callable[[Message], bool] | None = None
        self.sent: list[Message] = []
        for node_id in sorted(cs.voters | cs.learners):
            self.add_node(node_id, MemoryStorage(cs))

    # -- membership of the test network --------------------------------------------------

    def add_node(self, node_id: int, storage: MemoryStorage | None = None, **config: Any) -> None:
        storage = storage if storage is not None else MemoryStorage()
        cfg = RaftConfig(node_id=node_id, **{**self.config, **config})

        def logger(event: str, **fields: Any) -> None:
            self.events.append((node_id, event, fields))

        self.storages[node_id] = storage
        rng = random.Random(self.seed * 7919 + node_id)
        self.nodes[node_id] = RawNode(cfg, storage, rng, logger)
        self.applied.setdefault(node_id, [])
        self.read_states.setdefault(node_id, [])

    def restart(self, node_id: int, **config: Any) -> None:
        """Crash and restart ``node_id`` from its storage (unpersisted state is lost)."""
        self.queue = [m for m in self.queue if m.to != node_id]
        self.applied[node_id] = []
        self.add_node(node_id, self.storages[node_id], **config)

    # -- the Ready loop ------------------------------------------------------------------

    def persist(self, node_id: int, rd: Ready) -> None:
        st = self.storages[node_id]
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)

    def process(self, node_id: int) -> Ready | None:
        node = self.nodes[node_id]
        if not node.has_ready():
            return None
        rd = node.ready()
        self.persist(node_id, rd)
        self.queue.extend(rd.messages)
        self.sent.extend(rd.messages)
        self.applied[node_id].extend(rd.committed_entries)
        self.read_states[node_id].extend(rd.read_states)
        node.advance(rd)
        return rd

    def process_all(self) -> bool:
        progressed = False
        for node_id in sorted(self.nodes):
            if self.process(node_id) is not None:
                progressed = True
        return progressed

    def deliver(self) -> int:
        msgs, self.queue = self.queue, []
        n = 0
        for m in msgs:
            if (m.from_, m.to) in self.cut or m.to not in self.nodes:
                continue
            if self.drop is not None and self.drop(m):
                continue
            self.nodes[m.to].step(m)
            n += 1
        return n

    def stabilize(self, max_rounds: int = 10_000) -> None:
        for _ in range(max_rounds):
            progressed = self.process_all()
            if not self.queue and not progressed:
                return
            self.deliver()
        raise AssertionError("network did not stabilize")

    # -- helpers -------------------------------------------------------------------------

    def tick(self, node_id: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[node_id].tick()

    def tick_all(self, n: int = 1, stabilize: bool = True) -> None:
        for _ in range(n):
            for node_id in sorted(self.nodes):
                self.nodes[node_id].tick()
            if stabilize:
                self.stabilize()

    def isolate(self, node_id: int) -> None:
        for other in self.nodes:
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def partition(self, *groups: Iterable[int]) -> None:
        sets = [set(g) for g in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1 :]:
                for x in a:
                    for y in b:
                        self.cut.add((x, y))
                        self.cut.add((y, x))

    def heal(self) -> None:
        self.cut.clear()

    def elect(self, node_id: int) -> None:
        self.nodes[node_id].campaign()
        self.stabilize()
        assert self.nodes[node_id].status().role is Role.LEADER, self.nodes[node_id].status()

    def leaders(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.status().role is Role.LEADER]

    def data_applied(self, node_id: int) -> list[bytes]:
        return [e.data for e in self.applied[node_id] if e.type is EntryType.NORMAL and e.data]

    def event_names(self, node_id: int | None = None) -> list[str]:
        return [e for n, e, _ in self.events if node_id is None or n == node_id]
