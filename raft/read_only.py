"""ReadIndex bookkeeping on the leader (thesis §6.4).

Contract: remembers each pending read (the commit index when it arrived, who asked, its
context) and which voters acknowledged a heartbeat carrying that context. The core decides
when a quorum acknowledged; ``advance`` then releases that read and every read queued before
it (a later quorum ack also confirms leadership for earlier requests). No I/O.

Contexts identify requests and must be unique among pending reads; a duplicate is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ReadIndexStatus:
    index: int
    context: bytes
    request_from: int
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    __slots__ = ("pending", "queue")

    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, context: bytes, request_from: int, self_id: int) -> bool:
        """Record a read at ``index``; False if the context is already pending."""
        if context in self.pending:
            return False
        self.pending[context] = ReadIndexStatus(index, context, request_from, {self_id})
        self.queue.append(context)
        return True

    def recv_ack(self, node_id: int, context: bytes) -> set[int] | None:
        status = self.pending.get(context)
        if status is None:
            return None
        status.acks.add(node_id)
        return status.acks

    def advance(self, context: bytes) -> list[ReadIndexStatus]:
        """Pop and return every pending read up to and including ``context``."""
        if context not in self.pending:
            return []
        cut = self.queue.index(context) + 1
        done = [self.pending.pop(c) for c in self.queue[:cut]]
        del self.queue[:cut]
        return done

    def last_pending_context(self) -> bytes:
        return self.queue[-1] if self.queue else b""

    def reset(self) -> None:
        self.pending.clear()
        self.queue.clear()
