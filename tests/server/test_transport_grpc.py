"""server/grpc_links.py against a real grpc.aio server on loopback: the one test of this module
that needs sockets (everything else in tests/server runs on fakes)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import grpc
import pytest

from raft.types import Message, MessageType
from server.codec import message_to_proto
from server.grpc_links import GrpcNetwork
from server.peer_inbox import PeerInbox
from server.service import PeerService
from server.transport import PROTOCOL_VERSION
from tests.server.test_transport_fakes import FakeRuntime, RecordingLog
from wire import replog_pb2 as pb
from wire import replog_pb2_grpc as pb_grpc


class Node:
    def __init__(self, inbox: PeerInbox) -> None:
        self.peer_inbox = inbox


def batch(cluster_id: str = "c1", group_id: int = 5) -> pb.RaftBatch:
    out = pb.RaftBatch(
        cluster_id=cluster_id, protocol_version=PROTOCOL_VERSION, from_node=2, to_node=1
    )
    out.messages.append(
        message_to_proto(group_id, Message(MessageType.HEARTBEAT, to=1, from_=2, term=3))
    )
    return out


async def serve(runtime: FakeRuntime) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    inbox = PeerInbox(1, "c1", runtime, RecordingLog())
    pb_grpc.add_PeerServicer_to_server(PeerService(Node(inbox), inbox), server)  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def until(predicate: Any, timeout_s: float = 10.0) -> None:
    async def wait() -> None:
        while not predicate():
            await asyncio.sleep(0.005)  # polling a condition another process-side task sets

    await asyncio.wait_for(wait(), timeout_s)


async def send_until_refused(link: Any, timeout_s: float = 10.0) -> None:
    """Keep sending until the link reports the peer's refusal (the abort reaches this side
    asynchronously); fail after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        await link.send(batch(group_id=7))
        await asyncio.sleep(0.01)
    raise AssertionError("the link never reported the refusal")


def test_a_link_carries_batches_and_fails_with_connection_error() -> None:
    async def body() -> None:
        runtime = FakeRuntime()
        server, address = await serve(runtime)
        network = GrpcNetwork(max_message_bytes=1 << 20, connect_timeout_ms=2_000)
        link = network.open_link(1, address)
        await link.send(batch(group_id=5))
        await link.send(batch(group_id=6))
        await until(lambda: [g for g, _m in runtime.stepped] == [5, 6])

        # The receiver refuses another cluster: the stream is aborted, the link fails for good.
        await link.send(batch(cluster_id="other"))
        with pytest.raises(ConnectionError, match=f"link to node 1 at {address}"):
            await send_until_refused(link)  # the reason: the abort, or the write it cut short
        with pytest.raises(ConnectionError):
            await link.send(batch())
        await link.close()

        # Too large for the gRPC limit: ConnectionError, never a silent loss.
        big = network.open_link(1, address)
        huge = batch()
        huge.messages[0].context = b"x" * (2 << 20)
        with pytest.raises(ConnectionError):
            await big.send(huge)
        await big.close()

        # Nobody listening: ConnectionError within the connect timeout. The port is held by
        # a bound socket that never listens, so no other test's server (pytest -n 2) can take
        # it, as one did the stopped server's freed port.
        await server.stop(grace=None)
        with socket.socket() as held:
            held.bind(("127.0.0.1", 0))
            dead = network.open_link(1, f"127.0.0.1:{held.getsockname()[1]}")
            with pytest.raises(ConnectionError):
                await dead.send(batch())
            await dead.close()
        assert 7 not in [g for g, _m in runtime.stepped]
        await network.close()

    asyncio.run(asyncio.wait_for(body(), 60))


def test_stubs_are_cached_per_address() -> None:
    async def body() -> None:
        network = GrpcNetwork(max_message_bytes=1 << 20)
        assert network._channel("h:1") is network._channel("h:1")
        assert isinstance(network.replog_stub("h:1"), pb_grpc.ReplogStub)
        assert isinstance(network.peer_stub("h:1"), pb_grpc.PeerStub)
        await network.close()
        assert network._channels == {}

    asyncio.run(body())
