"""A simulated network: delay, drop, duplication, reordering and partitions.

Contract: ``send`` takes a message at step ``now_step`` and schedules its delivery at a random
later step; it may drop it or schedule a duplicate. Links are FIFO (one stream per peer
pair, like the runtime's) unless ``faults.reorder`` is on, when every message gets an
independent delay and overtakes others on its link.
``due`` returns the messages to deliver at a step, in a deterministic order. Partitions are a
set of blocked directed links, checked both when a message is sent and when it is delivered
(a link cut while a message is in flight loses it). All randomness comes from the ``rng``
passed in, so one seed fixes every delivery.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from raft.types import Message, MessageType


@dataclass
class NetworkFaults:
    drop_rate: float = 0.0
    dup_rate: float = 0.0
    min_delay_steps: int = 1
    max_delay_steps: int = 3
    # False: each link is FIFO (one stream per peer pair, as the runtime has); True: each
    # message gets an independent delay, so messages on one link overtake each other.
    reorder: bool = False


class SimNetwork:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.faults = NetworkFaults()
        self.blocked: set[tuple[int, int]] = set()
        self._queue: list[tuple[int, int, Message]] = []
        self._seq = 0
        self._link_last_at: dict[tuple[int, int], int] = {}
        self.sent = 0
        self.dropped = 0
        self.delivered = 0
        # Snapshots travel over their own RPC: the sender learns whether it arrived.
        self.snapshot_outcomes: list[tuple[Message, bool]] = []

    # -- partitions -----------------------------------------------------------------------

    def partition(self, *groups: set[int] | frozenset[int]) -> None:
        """Symmetric partition: nodes only talk inside their own group."""
        self.blocked.clear()
        for i, a in enumerate(groups):
            for j, b in enumerate(groups):
                if i != j:
                    self.blocked.update((x, y) for x in a for y in b)

    def cut_one_way(self, from_id: int, to_ids: set[int] | frozenset[int]) -> None:
        """``from_id`` can no longer reach ``to_ids`` (replies still flow back)."""
        self.blocked.update((from_id, t) for t in to_ids)

    def isolate(self, node_id: int, others: set[int] | frozenset[int]) -> None:
        self.blocked.update((node_id, o) for o in others)
        self.blocked.update((o, node_id) for o in others)

    def heal(self) -> None:
        self.blocked.clear()

    def can_reach(self, from_id: int, to_id: int) -> bool:
        return (from_id, to_id) not in self.blocked

    # -- traffic --------------------------------------------------------------------------

    def send(self, msg: Message, now_step: int) -> None:
        self.sent += 1
        f = self.faults
        if not self.can_reach(msg.from_, msg.to) or self.rng.random() < f.drop_rate:
            self.dropped += 1
            self._note_snapshot(msg, False)
            return
        copies = 2 if self.rng.random() < f.dup_rate else 1
        for _ in range(copies):
            at = now_step + self.rng.randint(f.min_delay_steps, f.max_delay_steps)
            link = (msg.from_, msg.to)
            if not f.reorder:
                at = max(at, self._link_last_at.get(link, 0))
            self._link_last_at[link] = max(at, self._link_last_at.get(link, 0))
            self._seq += 1
            heapq.heappush(self._queue, (at, self._seq, msg))

    def due(self, now_step: int) -> list[Message]:
        out: list[Message] = []
        while self._queue and self._queue[0][0] <= now_step:
            _, _, msg = heapq.heappop(self._queue)
            if not self.can_reach(msg.from_, msg.to):
                self.dropped += 1
                self._note_snapshot(msg, False)
                continue
            self._note_snapshot(msg, True)
            out.append(msg)
        self.delivered += len(out)
        return out

    def _note_snapshot(self, msg: Message, ok: bool) -> None:
        if msg.type == MessageType.SNAPSHOT:
            self.snapshot_outcomes.append((msg, ok))

    def drop_from(self, node_id: int) -> int:
        """Forget in-flight messages sent by ``node_id`` (its send buffers died with it)."""
        before = len(self._queue)
        lost = [q for q in self._queue if q[2].from_ == node_id]
        for q in lost:
            self._note_snapshot(q[2], False)
        self._queue = [q for q in self._queue if q[2].from_ != node_id]
        heapq.heapify(self._queue)
        return before - len(self._queue)

    def drop_to(self, node_id: int) -> None:
        """Forget in-flight messages addressed to ``node_id`` (used when it is removed)."""
        self._queue = [q for q in self._queue if q[2].to != node_id]
        heapq.heapify(self._queue)

    def in_flight(self) -> int:
        return len(self._queue)
