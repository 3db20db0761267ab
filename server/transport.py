"""Broker-to-broker transport: one long-lived gRPC stream per directed peer link.

Owns: per-peer outboxes, the dialing side of each link, reconnects with back-off.
Strategy: the runtime enqueues every group's outgoing Raft messages during a loop turn, then calls
``flush()`` once; each peer with pending messages gets ONE ``RaftBatch`` carrying all of them (per-peer
batching across groups, as CockroachDB / TiKV do). A peer that is down or slow does not block anyone:
its outbox is bounded (``outbox_max_messages``); beyond that, messages are dropped and the groups that
lost a message are told the peer is unreachable (Raft retransmits; dropping is always safe).
Each node dials its peers itself, so the two directions of a pair are separate links, and
``peer_addresses`` can put a proxy (Toxiproxy) on each directed link.
Never: block the event loop, retry a batch (Raft's own retransmission covers losses).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from raft.types import Message
from server.codec import message_to_proto
from wire import replog_pb2 as pb
from wire import replog_pb2_grpc as pb_grpc

PROTOCOL_VERSION = 1


@dataclass
class _Link:
    peer_id: int
    address: str
    queue: asyncio.Queue[pb.RaftBatch]
    queued_messages: int = 0
    task: asyncio.Task[None] | None = None
    channel: grpc.aio.Channel | None = None
    connected: bool = False
    pending: list[pb.RaftMessage] = field(default_factory=list)
    pending_groups: set[int] = field(default_factory=set)
    quiesced: list[int] = field(default_factory=list)
    sent_since_keepalive: bool = False


class PeerTransport:
    def __init__(
        self,
        *,
        node_id: int,
        cluster_id: str,
        resolve_address: Callable[[int], str | None],
        on_unreachable: Callable[[int, set[int]], None],
        outbox_max_messages: int,
        backoff_ms: int,
        backoff_max_ms: int,
        max_message_bytes: int,
        log: Any,
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self._resolve = resolve_address
        self._on_unreachable = on_unreachable
        self._outbox_max = outbox_max_messages
        self._backoff_s = backoff_ms / 1000
        self._backoff_max_s = backoff_max_ms / 1000
        self._max_message_bytes = max_message_bytes
        self._links: dict[int, _Link] = {}
        self._log = log
        self._closed = False
        self.sent_batches = 0
        self.dropped_messages = 0

    # ------------------------------------------------------------------ runtime side
    def enqueue(self, group_id: int, msg: Message) -> None:
        link = self._link(msg.to)
        if link is None:
            self._on_unreachable(msg.to, {group_id})
            return
        link.pending.append(message_to_proto(group_id, msg))
        link.pending_groups.add(group_id)

    def mark_quiesced(self, peer_id: int, group_id: int) -> None:
        link = self._link(peer_id)
        if link is not None:
            link.quiesced.append(group_id)

    def flush(self) -> None:
        """End of a loop turn: one RaftBatch per peer that has anything pending."""
        for link in self._links.values():
            if not link.pending and not link.quiesced:
                continue
            msgs, groups, quiesced = link.pending, link.pending_groups, link.quiesced
            link.pending, link.pending_groups, link.quiesced = [], set(), []
            if link.queued_messages + len(msgs) > self._outbox_max or (
                not link.connected and link.queued_messages > 0
            ):
                # Outbox full, or the peer is down and something is already waiting: drop.
                self.dropped_messages += len(msgs)
                if groups:
                    self._on_unreachable(link.peer_id, groups)
                continue
            batch = pb.RaftBatch(
                cluster_id=self.cluster_id,
                protocol_version=PROTOCOL_VERSION,
                from_node=self.node_id,
                to_node=link.peer_id,
                messages=msgs,
                quiesced_groups=quiesced,
            )
            link.queued_messages += len(msgs)
            link.sent_since_keepalive = True
            link.queue.put_nowait(batch)

    def keepalive(self) -> None:
        """Once per tick: every link that sent nothing since the last call gets an empty batch,
        so peers can tell this node is alive without any per-group heartbeat (quiescence)."""
        for link in self._links.values():
            if not link.sent_since_keepalive and link.connected and link.queued_messages == 0:
                link.queue.put_nowait(
                    pb.RaftBatch(
                        cluster_id=self.cluster_id,
                        protocol_version=PROTOCOL_VERSION,
                        from_node=self.node_id,
                        to_node=link.peer_id,
                    )
                )
            link.sent_since_keepalive = False

    # ------------------------------------------------------------------ links
    def _link(self, peer_id: int) -> _Link | None:
        link = self._links.get(peer_id)
        address = self._resolve(peer_id)
        if address is None:
            return None
        if link is not None and link.address != address:
            # The peer moved (re-registered elsewhere): drop the old link.
            self._stop_link(link)
            link = None
        if link is None:
            link = _Link(peer_id, address, asyncio.Queue())
            self._links[peer_id] = link
            if not self._closed:
                link.task = asyncio.get_running_loop().create_task(
                    self._run_link(link), name=f"peer-link-{peer_id}"
                )
        return link

    async def _run_link(self, link: _Link) -> None:
        backoff = self._backoff_s
        opts = [
            ("grpc.max_send_message_length", self._max_message_bytes),
            ("grpc.max_receive_message_length", self._max_message_bytes),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.initial_reconnect_backoff_ms", int(self._backoff_s * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(self._backoff_max_s * 1000)),
        ]
        while not self._closed:
            link.channel = grpc.aio.insecure_channel(link.address, options=opts)
            stub = pb_grpc.PeerStub(link.channel)
            try:
                await asyncio.wait_for(link.channel.channel_ready(), timeout=self._backoff_max_s)
                link.connected = True
                backoff = self._backoff_s
                self._log.info("peer_connected", peer_id=link.peer_id, address=link.address)
                await stub.Raft(self._batches(link))
            except (grpc.aio.AioRpcError, TimeoutError) as exc:
                if link.connected:
                    self._log.warning("peer_disconnected", peer_id=link.peer_id, error=_short(exc))
            finally:
                link.connected = False
                await link.channel.close()
            # Whatever was queued for a dead stream is stale by the time we reconnect.
            self._discard_queue(link)
            if self._closed:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._backoff_max_s)

    async def _batches(self, link: _Link) -> AsyncIterator[pb.RaftBatch]:
        while True:
            batch = await link.queue.get()
            # Batches queued while the stream was busy writing go out as one: every gRPC
            # stream write costs far more than the bytes it moves.
            while not link.queue.empty():
                more = link.queue.get_nowait()
                batch.messages.extend(more.messages)
                batch.quiesced_groups.extend(more.quiesced_groups)
            link.queued_messages -= len(batch.messages)
            self.sent_batches += 1
            yield batch

    def _discard_queue(self, link: _Link) -> None:
        groups: set[int] = set()
        while not link.queue.empty():
            batch = link.queue.get_nowait()
            link.queued_messages -= len(batch.messages)
            self.dropped_messages += len(batch.messages)
            groups.update(m.group_id for m in batch.messages)
        if groups:
            self._on_unreachable(link.peer_id, groups)

    def _stop_link(self, link: _Link) -> None:
        if link.task is not None:
            link.task.cancel()
        self._links.pop(link.peer_id, None)

    async def close(self) -> None:
        self._closed = True
        tasks = [link.task for link in self._links.values() if link.task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


def _short(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return type(exc).__name__
