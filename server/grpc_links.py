"""The production ``Network`` (server/env.py): peer links and stubs over grpc.aio.

Owns: gRPC channels to other brokers. ``GrpcNetwork.open_link`` returns a ``GrpcLink``, which runs
one client-streaming ``Peer.Raft`` call over a channel of its own and writes each batch onto it;
``peer_stub``/``replog_stub`` return stubs over one cached channel per address, for the few
unary broker-to-broker calls (metadata forwarding, forwarded leadership transfers).

Strategy: a link dials lazily, on its first ``send``, and waits at most ``connect_timeout_ms``
for the channel to connect. ``send`` resolves once gRPC has taken the batch (a write waits for
HTTP/2 flow control, so a slow peer slows only its own sender task); any failure of the call
(peer gone, stream aborted by the peer, message refused) marks the link failed for good and
raises ``ConnectionError``. The transport (server/transport.py) then reports the lost groups and
opens a fresh link after its back-off. A link never retries and never buffers more than the one
write in progress: queueing and bounds belong to the transport.

Everything here is I/O; no broker decision lives here (the system simulation replaces this
whole module with its simulated network).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from wire import replog_pb2 as pb
from wire import replog_pb2_grpc as pb_grpc

KEEPALIVE_MS = 10_000  # HTTP/2 pings on idle links, so a silently dead peer is noticed


class GrpcLink:
    """One directed peer link: this node -> ``peer_id`` at ``address`` (see ``server.env.Link``)."""

    def __init__(
        self, peer_id: int, address: str, options: list[tuple[str, Any]], connect_timeout_s: float
    ) -> None:
        self.peer_id = peer_id
        self.address = address
        self._options = options
        self._connect_timeout_s = connect_timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._failure = ""
        self._closed = False

    async def send(self, batch: pb.RaftBatch) -> None:
        if self._failure:
            raise ConnectionError(self._failure)
        if self._closed:
            raise ConnectionError(f"link to node {self.peer_id} is closed")
        try:
            if self._call is None:
                self._channel = grpc.aio.insecure_channel(self.address, options=self._options)
                await asyncio.wait_for(self._channel.channel_ready(), self._connect_timeout_s)
                self._call = pb_grpc.PeerStub(self._channel).Raft()  # type: ignore[no-untyped-call]
            await self._call.write(batch)
        except (grpc.RpcError, asyncio.InvalidStateError, TimeoutError) as exc:
            reason = _short(exc)
            call = self._call
            if not isinstance(exc, grpc.aio.AioRpcError) and call is not None and call.done():
                reason = f"{(await call.code()).name}: {await call.details()}"  # how it ended
            self._failure = f"link to node {self.peer_id} at {self.address}: {reason}"
            raise ConnectionError(self._failure) from exc

    async def close(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()
        if self._channel is not None:
            await self._channel.close()


class GrpcNetwork:
    """``server.env.Network`` over grpc.aio: ``GrpcNetwork(max_message_bytes=...,
    connect_timeout_ms=...)``, or ``GrpcNetwork.from_config(cfg)`` for a ``ServerConfig``."""

    def __init__(self, *, max_message_bytes: int, connect_timeout_ms: int = 2_000) -> None:
        self._options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ]
        self._connect_timeout_s = connect_timeout_ms / 1000
        self._channels: dict[str, grpc.aio.Channel] = {}

    @classmethod
    def from_config(cls, cfg: Any) -> GrpcNetwork:
        """From a ``server.config.ServerConfig``: its gRPC message limit, and the longest
        reconnect back-off as the connect timeout."""
        return cls(
            max_message_bytes=cfg.server.grpc_max_message_bytes,
            connect_timeout_ms=cfg.server.reconnect_backoff_max_ms,
        )

    def open_link(self, peer_id: int, address: str) -> GrpcLink:
        return GrpcLink(peer_id, address, self._options, self._connect_timeout_s)

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=self._options)
            self._channels[address] = channel
        return channel

    def peer_stub(self, address: str) -> pb_grpc.PeerStub:
        return pb_grpc.PeerStub(self._channel(address))  # type: ignore[no-untyped-call]

    def replog_stub(self, address: str) -> pb_grpc.ReplogStub:
        return pb_grpc.ReplogStub(self._channel(address))  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()


def _short(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return type(exc).__name__
