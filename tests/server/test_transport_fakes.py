"""Fakes for the server's seams (no tests here): a Network whose links record batches (no sockets), a runtime
that records what a PeerInbox steps, and a logger that records events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from raft.types import Message
from wire import replog_pb2 as pb

GRPC_LIMIT = 64 << 20


class RecordingLog:
    """structlog-shaped: every call is recorded as (level, event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def _record(self, level: str) -> Callable[..., None]:
        def emit(event: str, **fields: Any) -> None:
            self.events.append((level, event, fields))

        return emit

    def __getattr__(self, level: str) -> Callable[..., None]:
        return self._record(level)

    def names(self) -> list[str]:
        return [event for _level, event, _fields in self.events]


class FakeLink:
    """Records each batch; models gRPC's message limit (a batch over it fails the link, as
    RESOURCE_EXHAUSTED does); can be held (``gate``) and made to fail."""

    def __init__(self, net: FakeNetwork, peer_id: int, address: str) -> None:
        self.net = net
        self.peer_id = peer_id
        self.address = address
        self.sent: list[pb.RaftBatch] = []
        self.closed = False
        self.failed = False

    async def send(self, batch: pb.RaftBatch) -> None:
        gate = self.net.gates.get(self.peer_id)
        if gate is not None:
            self.net.blocked.append(self)
            self.net.notify()
            await gate.wait()
        if self.failed or self.net.fail.get(self.peer_id):
            self.failed = True
            raise ConnectionError(f"link to {self.peer_id} is down")
        if batch.ByteSize() > self.net.limit:
            self.failed = True
            raise ConnectionError("RESOURCE_EXHAUSTED: message larger than max")
        self.sent.append(batch)
        if self.net.deliver is not None:
            self.net.deliver(batch)
        self.net.notify()

    async def close(self) -> None:
        self.closed = True
        self.net.notify()


class FakeNetwork:
    def __init__(self, limit: int = GRPC_LIMIT) -> None:
        self.limit = limit
        self.links: list[FakeLink] = []
        self.gates: dict[int, asyncio.Event] = {}
        self.fail: dict[int, bool] = {}
        self.blocked: list[FakeLink] = []
        self.deliver: Callable[[pb.RaftBatch], None] | None = None
        self._changed = asyncio.Event()

    def open_link(self, peer_id: int, address: str) -> FakeLink:
        link = FakeLink(self, peer_id, address)
        self.links.append(link)
        self.notify()
        return link

    def peer_stub(self, address: str) -> Any:
        raise NotImplementedError

    def replog_stub(self, address: str) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        pass

    def notify(self) -> None:
        self._changed.set()

    def batches(self, peer_id: int | None = None) -> list[pb.RaftBatch]:
        return [b for link in self.links if peer_id in (None, link.peer_id) for b in link.sent]

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait for a condition on what the links saw (each link event re-checks it)."""

        async def wait() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout_s)


class FakeRuntime:
    """What PeerInbox needs of the Runtime, recorded."""

    def __init__(self, fail_groups: Sequence[int] = ()) -> None:
        self.stepped: list[tuple[int, Message]] = []
        self.peer_batches: list[tuple[int, float]] = []
        self.quiesce_notices: list[tuple[int, list[int]]] = []
        self.fail_groups = set(fail_groups)

    def on_peer_batch(self, from_node: int, now: float) -> None:
        self.peer_batches.append((from_node, now))

    def step(self, group_id: int, msg: Message) -> None:
        if group_id in self.fail_groups:
            raise KeyError(f"bug in group {group_id}")
        self.stepped.append((group_id, msg))

    def on_quiesce_notice(self, from_node: int, group_ids: Any) -> None:
        self.quiesce_notices.append((from_node, list(group_ids)))
