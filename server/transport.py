"""Broker-to-broker transport: per-peer outboxes and batching over the ``Network`` seam.

Owns: per-peer outboxes, per-turn batching of every group's messages into byte-bounded
``RaftBatch``es, snapshot chunking, keepalives, quiesce notices, unreachable / snapshot-status
reporting, and one sender task per peer that dials ``network.open_link(peer_id, address)`` and
redials with back-off. It never touches gRPC: production plugs in ``server.grpc_links.
GrpcNetwork``, the system simulation a simulated network, and this code runs unchanged in both
(its only clock is ``asyncio.sleep`` for the back-off, which is virtual in the simulation).

Strategy: the runtime enqueues every group's outgoing Raft messages during a loop turn, then
calls ``flush()`` once. Each peer's messages go out in as few ``RaftBatch``es as fit in
``max_batch_bytes`` each (per-peer batching across groups, as CockroachDB / TiKV do; #12 defect
14: one unbounded batch of two catching-up groups broke the 64 MiB gRPC limit and lost every
message in it). A MSG_SNAPSHOT whose data exceeds ``snapshot_chunk_bytes`` is cut into chunk
messages that server/peer_inbox.py reassembles. A peer that is down or slow blocks nobody: its
outbox is bounded in messages and in bytes; beyond either bound a batch is dropped and the groups
that lost a message are told the peer is unreachable (Raft probes and retransmits; dropping is
always safe). A failed send reports every group of the lost batch and of everything still queued
for that peer. Batches queued while the sender was busy are merged (each link write costs far
more than the bytes it moves), never past ``max_batch_bytes``.

Each node dials its peers itself, so the two directions of a pair are separate links, and
``peer_addresses`` can put a proxy (Toxiproxy) on each directed link.
Never: block the event loop, retry a batch (Raft's own retransmission covers losses), import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raft.types import Message, MessageType
from server.codec import build_message, message_size_bound, message_to_proto
from wire import replog_pb2 as pb

if TYPE_CHECKING:
    from server.config import ServerConfig
    from server.env import Link, Network

PROTOCOL_VERSION = 1
# Upper bounds of the protobuf framing around the messages, so a batch's size is known without
# serializing it: the batch's own fields (cluster_id is at most 64 characters), one message's tag
# and length prefix, one packed quiesced group id.
BATCH_HEADER_BYTES = 128
MESSAGE_FRAME_BYTES = 6
QUIESCED_ID_BYTES = 11


@dataclass
class _Item:
    """One message waiting in this turn's batch for a peer: a Raft message, built into the
    RaftBatch only when the batch is sent, or a RaftMessage built already (snapshot chunks, and
    messages measured exactly because their bound came near the link's limit)."""

    message: Message | pb.RaftMessage
    size: int  # encoded, framing included (an upper bound for a Message)
    group_id: int
    snapshot_id: int = 0  # non-zero: (a chunk of) a snapshot
    last_chunk: bool = False


@dataclass
class _Outgoing:
    """One batch's worth of messages in an outbox (the RaftBatch is built at send time)."""

    items: list[_Item] = field(default_factory=list)
    quiesced: list[int] = field(default_factory=list)
    size: int = BATCH_HEADER_BYTES
    groups: set[int] = field(default_factory=set)
    snapshots: dict[int, int] = field(default_factory=dict)  # snapshot id -> group id
    last_chunks: list[int] = field(default_factory=list)  # snapshot ids completed by this batch

    def add(self, item: _Item) -> None:
        self.items.append(item)
        self.size += item.size
        self.groups.add(item.group_id)
        if item.snapshot_id:
            self.snapshots[item.snapshot_id] = item.group_id
            if item.last_chunk:
                self.last_chunks.append(item.snapshot_id)

    def merge(self, other: _Outgoing) -> None:
        self.items.extend(other.items)
        self.quiesced.extend(other.quiesced)
        self.size += other.size - BATCH_HEADER_BYTES
        self.groups |= other.groups
        self.snapshots.update(other.snapshots)
        self.last_chunks.extend(other.last_chunks)


@dataclass
class _Peer:
    peer_id: int
    address: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    outbox: deque[_Outgoing] = field(default_factory=deque)
    outbox_bytes: int = 0
    outbox_messages: int = 0
    task: asyncio.Task[None] | None = None
    down: bool = False  # the link failed and has not been redialed yet
    connected: bool = False  # a send succeeded on the current link (for logging)
    pending: list[_Item] = field(default_factory=list)
    quiesced: list[int] = field(default_factory=list)
    sent_since_keepalive: bool = False


class PeerTransport:
    def __init__(
        self,
        *,
        node_id: int,
        cluster_id: str,
        network: Network,
        resolve_address: Callable[[int], str | None],
        on_unreachable: Callable[[int, set[int]], None],
        on_snapshot_status: Callable[[int, int, bool], None] | None = None,
        on_message_failed: Callable[[int, BaseException], None] | None = None,
        outbox_max_messages: int,
        outbox_max_bytes: int = 128 << 20,
        max_batch_bytes: int | None = None,
        snapshot_chunk_bytes: int | None = None,
        backoff_ms: int,
        backoff_max_ms: int,
        max_message_bytes: int,
        log: Any,
    ) -> None:
        """``on_unreachable(peer_id, group_ids)`` hears of every lost message's group;
        ``on_snapshot_status(peer_id, group_id, ok)`` of every snapshot send that completed
        (``ok``: every chunk was handed to the link) or was lost (feed it to
        ``RawNode.report_snapshot``); ``on_message_failed(group_id, error)`` of a message that
        could not be encoded (a bug in its group: stop that group, as the runtime does for any
        other error of one group; without it the group hears "unreachable"). ``max_message_bytes`` is the link's hard limit (the gRPC
        message limit): a single message larger than that is dropped and reported, never sent.
        ``max_batch_bytes`` defaults to min(16 MiB, max_message_bytes / 4) and
        ``snapshot_chunk_bytes`` to a quarter of that, as server/config.py's 0 = auto does
        (``from_config`` passes the configured values)."""
        if max_batch_bytes is None:
            max_batch_bytes = min(16 << 20, max_message_bytes // 4)
        if snapshot_chunk_bytes is None:
            snapshot_chunk_bytes = max_batch_bytes // 4
        if not 0 < snapshot_chunk_bytes < max_batch_bytes <= max_message_bytes:
            raise ValueError(
                f"need 0 < snapshot_chunk_bytes ({snapshot_chunk_bytes}) < max_batch_bytes "
                f"({max_batch_bytes}) <= max_message_bytes ({max_message_bytes})"
            )
        self.node_id = node_id
        self.cluster_id = cluster_id
        self._network = network
        self._resolve = resolve_address
        self._on_unreachable = on_unreachable
        self._on_snapshot_status = on_snapshot_status
        self._on_message_failed = on_message_failed
        self._outbox_max_messages = outbox_max_messages
        self._outbox_max_bytes = outbox_max_bytes
        self._max_batch_bytes = max_batch_bytes
        self._max_message_bytes = max_message_bytes
        self._chunk_bytes = snapshot_chunk_bytes
        self._backoff_s = backoff_ms / 1000
        self._backoff_max_s = backoff_max_ms / 1000
        self._peers: dict[int, _Peer] = {}
        self._snapshot_ids = itertools.count(1)
        self._failed_snapshots: set[int] = set()
        self._log = log
        self._closed = False
        self.sent_batches = 0
        self.dropped_messages = 0

    @classmethod
    def from_config(
        cls,
        cfg: ServerConfig,
        *,
        network: Network,
        resolve_address: Callable[[int], str | None],
        on_unreachable: Callable[[int, set[int]], None],
        on_snapshot_status: Callable[[int, int, bool], None] | None = None,
        on_message_failed: Callable[[int, BaseException], None] | None = None,
        log: Any,
    ) -> PeerTransport:
        """Every limit from the broker's config ([server] section)."""
        s = cfg.server
        return cls(
            node_id=cfg.node.node_id,
            cluster_id=cfg.node.cluster_id,
            network=network,
            resolve_address=resolve_address,
            on_unreachable=on_unreachable,
            on_snapshot_status=on_snapshot_status,
            on_message_failed=on_message_failed,
            outbox_max_messages=s.outbox_max_messages,
            outbox_max_bytes=s.outbox_max_bytes,
            max_batch_bytes=s.max_peer_batch_bytes,
            snapshot_chunk_bytes=s.snapshot_chunk_bytes,
            backoff_ms=s.reconnect_backoff_ms,
            backoff_max_ms=s.reconnect_backoff_max_ms,
            max_message_bytes=s.grpc_max_message_bytes,
            log=log,
        )

    # ------------------------------------------------------------------ runtime side
    def enqueue(self, group_id: int, msg: Message) -> None:
        peer = self._peer(msg.to)
        if peer is None:
            if msg.type == MessageType.SNAPSHOT and self._on_snapshot_status is not None:
                self._on_snapshot_status(msg.to, group_id, False)
            self._on_unreachable(msg.to, {group_id})
            return
        if msg.type == MessageType.SNAPSHOT:
            peer.pending.extend(self._snapshot_items(group_id, message_to_proto(group_id, msg)))
            return
        item = _Item(msg, message_size_bound(msg) + MESSAGE_FRAME_BYTES, group_id)
        if item.size + BATCH_HEADER_BYTES > self._max_message_bytes:
            # The bound is loose by up to ~30 bytes per entry: measure exactly before refusing.
            proto = message_to_proto(group_id, msg)
            item = _Item(proto, proto.ByteSize() + MESSAGE_FRAME_BYTES, group_id)
        if item.size + BATCH_HEADER_BYTES > self._max_message_bytes:
            # It could never pass the link; sending it would only break the link for everyone.
            self._log.error(
                "peer_message_too_large",
                peer_id=msg.to,
                group_id=group_id,
                type=msg.type.name,
                size=item.size,
                limit=self._max_message_bytes,
            )
            self.dropped_messages += 1
            self._on_unreachable(msg.to, {group_id})
            return
        peer.pending.append(item)

    def _snapshot_items(self, group_id: int, proto: pb.RaftMessage) -> list[_Item]:
        """A snapshot message, cut into chunks of at most ``snapshot_chunk_bytes`` of data."""
        snapshot_id = next(self._snapshot_ids)
        data = proto.snapshot.data
        count = max(1, -(-len(data) // self._chunk_bytes))
        proto.snapshot_id = snapshot_id
        proto.snapshot_chunk_count = count
        if count == 1:
            return [
                _Item(proto, proto.ByteSize() + MESSAGE_FRAME_BYTES, group_id, snapshot_id, True)
            ]
        proto.snapshot.data = b""
        items = []
        for index in range(count):
            chunk = pb.RaftMessage()
            chunk.CopyFrom(proto)
            chunk.snapshot_chunk_index = index
            chunk.snapshot.data = data[index * self._chunk_bytes : (index + 1) * self._chunk_bytes]
            size = chunk.ByteSize() + MESSAGE_FRAME_BYTES
            items.append(_Item(chunk, size, group_id, snapshot_id, index == count - 1))
        return items

    def mark_quiesced(self, peer_id: int, group_id: int) -> None:
        peer = self._peer(peer_id)
        if peer is not None:
            peer.quiesced.append(group_id)

    def flush(self) -> None:
        """End of a loop turn: each peer's pending messages go to its outbox in batches of at
        most ``max_batch_bytes`` (a single larger message travels alone)."""
        for peer in self._peers.values():
            if not peer.pending and not peer.quiesced:
                continue
            items, quiesced = peer.pending, peer.quiesced
            peer.pending, peer.quiesced = [], []
            first = _Outgoing(
                quiesced=quiesced, size=BATCH_HEADER_BYTES + QUIESCED_ID_BYTES * len(quiesced)
            )
            batches = [first]
            for item in items:
                current = batches[-1]
                if current.items and current.size + item.size > self._max_batch_bytes:
                    current = _Outgoing()
                    batches.append(current)
                current.add(item)
            for out in batches:
                self._admit(peer, out)

    def _admit(self, peer: _Peer, out: _Outgoing) -> None:
        if peer.down and peer.outbox:
            # The peer is down and something already waits for the redial: drop.
            self._drop(peer, [out], "peer_down")
            return
        if peer.outbox and (
            peer.outbox_messages + len(out.items) > self._outbox_max_messages
            or peer.outbox_bytes + out.size > self._outbox_max_bytes
        ):
            self._drop(peer, [out], "outbox_full")
            return
        peer.outbox.append(out)
        peer.outbox_messages += len(out.items)
        peer.outbox_bytes += out.size
        peer.sent_since_keepalive = True
        peer.wake.set()

    def keepalive(self) -> None:
        """Once per tick: every link that sent nothing since the last call gets an empty batch,
        so peers can tell this node is alive without any per-group heartbeat (quiescence)."""
        for peer in self._peers.values():
            if not peer.sent_since_keepalive and not peer.down and not peer.outbox:
                self._admit(peer, _Outgoing())
            peer.sent_since_keepalive = False

    def outbox_bytes(self, peer_id: int) -> int:
        peer = self._peers.get(peer_id)
        return peer.outbox_bytes if peer is not None else 0

    # ------------------------------------------------------------------ losses
    def _drop(self, peer: _Peer, lost: list[_Outgoing], reason: str) -> None:
        """Every message of ``lost`` is gone: tell each of their groups, once."""
        groups: set[int] = set()
        count = 0
        for out in lost:
            count += len(out.items)
            groups |= out.groups
            for snapshot_id, group_id in out.snapshots.items():
                if snapshot_id not in self._failed_snapshots:
                    self._failed_snapshots.add(snapshot_id)
                    if self._on_snapshot_status is not None:
                        self._on_snapshot_status(peer.peer_id, group_id, False)
            for snapshot_id in out.last_chunks:
                self._failed_snapshots.discard(snapshot_id)  # nothing of it is left to send
        self.dropped_messages += count
        if count:
            self._log.debug(
                "peer_messages_dropped", peer_id=peer.peer_id, reason=reason, count=count
            )
        if groups:
            self._on_unreachable(peer.peer_id, groups)

    def _delivered(self, peer: _Peer, out: _Outgoing) -> None:
        for snapshot_id in out.last_chunks:
            if snapshot_id in self._failed_snapshots:
                self._failed_snapshots.discard(snapshot_id)
            elif self._on_snapshot_status is not None:
                self._on_snapshot_status(peer.peer_id, out.snapshots[snapshot_id], True)

    # ------------------------------------------------------------------ links
    def _peer(self, peer_id: int) -> _Peer | None:
        peer = self._peers.get(peer_id)
        address = self._resolve(peer_id)
        if address is None:
            return None
        if peer is not None and peer.address != address:
            # The peer moved (re-registered elsewhere): drop the old link.
            self._stop_peer(peer)
            peer = None
        if peer is None:
            peer = _Peer(peer_id, address)
            self._peers[peer_id] = peer
            if not self._closed:
                peer.task = asyncio.get_running_loop().create_task(
                    self._run_link(peer), name=f"peer-link-{peer_id}"
                )
        return peer

    async def _run_link(self, peer: _Peer) -> None:
        backoff = self._backoff_s
        while not self._closed:
            link: Link = self._network.open_link(peer.peer_id, peer.address)
            peer.down = False
            error = ""
            try:
                while True:
                    out = await self._take(peer)
                    try:
                        await link.send(self._batch(peer.peer_id, out))
                    except ConnectionError as exc:
                        error = str(exc)
                        self._drop(peer, [out], "send_failed")
                        break
                    except asyncio.CancelledError:  # the peer moved, or abandon()/close()
                        if not self._closed:
                            self._drop(peer, [out], "link_stopped")
                        raise
                    self.sent_batches += 1
                    self._delivered(peer, out)
                    if not peer.connected:
                        peer.connected = True
                        self._log.info("peer_connected", peer_id=peer.peer_id, address=peer.address)
                    backoff = self._backoff_s
            finally:
                peer.down = True
                with contextlib.suppress(Exception):
                    await link.close()
            if peer.connected:
                self._log.warning("peer_disconnected", peer_id=peer.peer_id, error=error)
            peer.connected = False
            # Whatever was queued for a dead link is stale by the time we redial.
            self._discard_outbox(peer, "link_down")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._backoff_max_s)

    async def _take(self, peer: _Peer) -> _Outgoing:
        """The next batch to send: the oldest queued one, merged with those behind it while the
        result stays within ``max_batch_bytes``."""
        while not peer.outbox:
            peer.wake.clear()
            await peer.wake.wait()
        out = peer.outbox.popleft()
        peer.outbox_bytes -= out.size
        while peer.outbox and (
            out.size + peer.outbox[0].size - BATCH_HEADER_BYTES <= self._max_batch_bytes
        ):
            more = peer.outbox.popleft()
            peer.outbox_bytes -= more.size
            out.merge(more)
        peer.outbox_messages -= len(out.items)
        return out

    def _batch(self, peer_id: int, out: _Outgoing) -> pb.RaftBatch:
        batch = pb.RaftBatch(
            cluster_id=self.cluster_id,
            protocol_version=PROTOCOL_VERSION,
            from_node=self.node_id,
            to_node=peer_id,
            quiesced_groups=out.quiesced,
        )
        messages = batch.messages
        failed: list[_Item] = []
        for item in out.items:
            if not isinstance(item.message, Message):
                messages.append(item.message)
                continue
            built = len(messages)
            try:
                build_message(messages.add, item.group_id, item.message)
            except Exception as exc:
                # A value protobuf cannot carry: a bug in that group's sender. Built here, in
                # the link's task, it must not end the link for every group: the message is
                # dropped, and its group stops (as the runtime stops a group for any error of
                # its own) instead of resending it forever.
                del messages[built:]  # it may be half built (an entry failed)
                failed.append(item)
                self._message_failed(peer_id, item, exc)
        if failed:
            gone = {id(item) for item in failed}
            out.items = [item for item in out.items if id(item) not in gone]  # counted once
        return batch

    def _message_failed(self, peer_id: int, item: _Item, exc: Exception) -> None:
        self._log.error(
            "peer_message_unencodable",
            peer_id=peer_id,
            group_id=item.group_id,
            type=str(getattr(item.message, "type", "?")),
            error=f"{type(exc).__name__}: {exc}",
        )
        self.dropped_messages += 1
        if self._on_message_failed is not None:
            self._on_message_failed(item.group_id, exc)
        else:
            self._on_unreachable(peer_id, {item.group_id})

    def _discard_outbox(self, peer: _Peer, reason: str) -> None:
        lost = list(peer.outbox)
        peer.outbox.clear()
        peer.outbox_bytes = 0
        peer.outbox_messages = 0
        if lost:
            self._drop(peer, lost, reason)

    def _stop_peer(self, peer: _Peer) -> None:
        unsent = _Outgoing()
        for item in peer.pending:
            unsent.add(item)
        peer.pending = []
        self._discard_outbox(peer, "peer_moved")
        self._drop(peer, [unsent], "peer_moved")
        if peer.task is not None:
            peer.task.cancel()
        self._peers.pop(peer.peer_id, None)

    def abandon(self) -> None:
        """A crash (system simulation): every sender task cancelled, nothing awaited."""
        self._closed = True
        for peer in self._peers.values():
            if peer.task is not None:
                peer.task.cancel()

    async def close(self) -> None:
        self._closed = True
        tasks = [peer.task for peer in self._peers.values() if peer.task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
