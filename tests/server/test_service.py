"""server/service.py with a fake broker node and the minimal context object the system
simulation provides (no grpc server, no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
import pytest

from metadata import commands as mcmd
from metadata.errors import UnknownTopic
from metadata.state import Broker, PartitionAssignment, Topic
from raft.types import ConfState, Message, MessageType, Role
from server.codec import message_to_proto
from server.config import NodeConfig, ServerConfig, ServerSection
from server.errors import ERROR_METADATA_KEY, BrokerError, timed_out
from server.peer_inbox import PeerInbox
from server.service import FORWARDED_KEY, PeerService, ReplogService
from server.transport import PROTOCOL_VERSION
from tests.server.test_transport_fakes import FakeRuntime, RecordingLog
from wire import replog_pb2 as pb


class Aborted(Exception):
    pass


class MinimalContext:
    """Exactly the context methods service.py's opening comment names; any other attribute
    fails the test."""

    __slots__ = ("_metadata", "_peer", "code", "details", "trailing")

    def __init__(self, peer: str = "ipv4:10.0.0.5:40000", metadata: Any = None) -> None:
        self._peer = peer
        self._metadata = metadata
        self.trailing: tuple[tuple[str, bytes], ...] = ()
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def invocation_metadata(self) -> Any:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def set_trailing_metadata(self, pairs: tuple[tuple[str, bytes], ...]) -> None:
        self.trailing = pairs

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted(details)

    def detail(self) -> pb.ErrorDetail:
        (key, value), *_ = self.trailing
        assert key == ERROR_METADATA_KEY
        return pb.ErrorDetail.FromString(value)


class FakeState:
    def __init__(self) -> None:
        self.topics: dict[str, Topic] = {}
        self.brokers = {n: Broker(n, f"h{n}:9400", "dc1", "", 0, 0) for n in (1, 2, 3)}

    def topic(self, name: str) -> Topic:
        if name not in self.topics:
            raise UnknownTopic(name, self.topics)
        return self.topics[name]

    def add(self, name: str) -> None:
        assignment = PartitionAssignment(name, 0, 100, (1, 2, 3), 1, 4)
        self.topics[name] = Topic(name, 7, 1, 3, {}, 0, (assignment,))


class FakeStatus:
    def __init__(self, role: Role, leader_id: int, term: int = 4) -> None:
        self.role, self.leader_id, self.term = role, leader_id, term
        self.conf_state = ConfState(frozenset({1, 2, 3}))


class FakeNode:
    """A RawNode as far as the service may see it: ``status()`` only."""

    def __init__(self, status: FakeStatus) -> None:
        self._status = status

    def status(self) -> FakeStatus:
        return self._status


class FakeMetadata:
    def __init__(self, barrier_error: BaseException | None = None) -> None:
        self.state = FakeState()
        self.barrier_error = barrier_error
        self.barriers = 0
        self.proposed: list[Any] = []
        self.node = FakeNode(FakeStatus(Role.FOLLOWER, 2))
        self.group_id = 0
        self.leader_id = 2
        self.topic_on_barrier = ""

    async def barrier(self, timeout_s: float = 5.0) -> None:
        self.barriers += 1
        if self.barrier_error is not None:
            raise self.barrier_error
        if self.topic_on_barrier:
            self.state.add(self.topic_on_barrier)

    async def propose(self, cmd: Any) -> Any:
        self.proposed.append(cmd)
        if isinstance(cmd, mcmd.CreateTopic):
            self.state.add(cmd.name)
        return None


class FakeReplica:
    def __init__(self, stream: Callable[[], AsyncIterator[Any]] | None = None) -> None:
        self._stream = stream
        self.node = FakeNode(FakeStatus(Role.FOLLOWER, 3))
        self.group_id = 100
        self.what = "partition orders/0"

    def fetch_stream(self, *args: Any) -> AsyncIterator[Any]:
        assert self._stream is not None
        return self._stream()


class FakeStub:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    async def TransferLeadership(
        self, request: Any, **kwargs: Any
    ) -> pb.TransferLeadershipResponse:
        self.calls.append((request, kwargs))
        return pb.TransferLeadershipResponse(leader=3)


class FakeNetwork:
    def __init__(self) -> None:
        self.stubs: dict[str, FakeStub] = {}

    def replog_stub(self, address: str) -> FakeStub:
        return self.stubs.setdefault(address, FakeStub())


class FakeEnv:
    def __init__(self) -> None:
        self.network = FakeNetwork()
        self.wall_clock_ms = lambda: 1_234_567


class FakeBrokerNode:
    def __init__(self, *, metadata: FakeMetadata | None = None, **server: int) -> None:
        self.node_id = 1
        self.cfg = ServerConfig(
            node=NodeConfig(node_id=1, data_dir="/nonexistent"), server=ServerSection(**server)
        )
        self.log = RecordingLog()
        self.metadata = metadata or FakeMetadata()
        self.partitions: dict[int, Any] = {}
        self.env = FakeEnv()
        self.replicas: dict[tuple[str, int], FakeReplica] = {}
        self.runtime = FakeRuntime()

    def replica_for(self, topic: str, partition: int) -> FakeReplica:
        self.metadata.state.topic(topic)
        return self.replicas[(topic, partition)]

    def advertised(self, node_id: int) -> str:
        return f"h{node_id}:9400"

    def live_brokers(self) -> frozenset[int]:
        return frozenset({3, 1})


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 30))


async def call(handler: Callable[..., Awaitable[Any]], request: Any, ctx: MinimalContext) -> Any:
    try:
        return await handler(request, ctx)
    except Aborted:
        return None


# ---------------------------------------------------------------------- Fetch stream limits


def forever(gate: asyncio.Event) -> Callable[[], AsyncIterator[Any]]:
    async def stream() -> AsyncIterator[Any]:
        await gate.wait()
        if False:  # pragma: no cover - an async generator that yields nothing
            yield None

    return stream


async def open_stream(
    service: ReplogService, peer: str
) -> tuple[Any, asyncio.Task[Any], MinimalContext]:
    """Start a Fetch stream and run it until it is either counted (parked in the replica) or
    refused (its task done)."""
    ctx = MinimalContext(peer=peer)
    gen = service.Fetch(pb.FetchRequest(topic="orders", partition=0, follow=True), ctx)
    task: asyncio.Task[Any] = asyncio.ensure_future(gen.__anext__())
    before = service.fetch_streams
    while not task.done() and service.fetch_streams == before:
        await asyncio.sleep(0)  # one loop step (not a timed wait)
    return gen, task, ctx


def test_fetch_streams_are_capped_per_connection_and_per_broker() -> None:
    """guards #12 defect 20: any number of Fetch streams could be opened, each woken by every
    append to its partition on the loop that drives Raft."""

    async def body() -> None:
        node = FakeBrokerNode(max_fetch_streams=3, max_fetch_streams_per_client=2)
        node.metadata.state.add("orders")
        gate = asyncio.Event()
        node.replicas[("orders", 0)] = FakeReplica(forever(gate))
        service = ReplogService(node)

        a1 = await open_stream(service, "ipv4:1.1.1.1:1")
        a2 = await open_stream(service, "ipv4:1.1.1.1:1")
        assert service.fetch_streams == 2
        _gen, task, refused = await open_stream(service, "ipv4:1.1.1.1:1")
        with pytest.raises(Aborted):
            await task
        assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        detail = refused.detail()
        assert detail.code == "TOO_MANY_FETCH_STREAMS" and detail.retriable
        assert "max_fetch_streams_per_client" in detail.message and detail.fields["limit"] == "2"
        assert detail.hint

        b1 = await open_stream(service, "ipv4:2.2.2.2:2")
        assert service.fetch_streams == 3
        _gen, task, refused = await open_stream(service, "ipv4:3.3.3.3:3")
        with pytest.raises(Aborted):
            await task
        assert refused.detail().code == "TOO_MANY_FETCH_STREAMS"
        assert "server.max_fetch_streams)" in refused.detail().message
        assert service.fetch_streams == 3  # refusals are not counted

        # A client that goes away (its stream is cancelled) frees its slot.
        a1[1].cancel()
        with pytest.raises(asyncio.CancelledError):
            await a1[1]
        await a1[0].aclose()
        assert service.fetch_streams == 2
        assert service.fetch_streams_by_peer == {"ipv4:1.1.1.1:1": 1, "ipv4:2.2.2.2:2": 1}
        c1 = await open_stream(service, "ipv4:3.3.3.3:3")
        assert service.fetch_streams == 3

        # Streams that end normally free theirs too.
        gate.set()
        for gen, task, _ctx in (a2, b1, c1):
            with pytest.raises(StopAsyncIteration):
                await task
            await gen.aclose()
        assert service.fetch_streams == 0 and service.fetch_streams_by_peer == {}

    run(body)


def test_a_failing_fetch_stream_releases_its_slot() -> None:
    """guards #12 defect 20: the count must drop on the error path as well."""

    async def body() -> None:
        node = FakeBrokerNode(max_fetch_streams=1, max_fetch_streams_per_client=1)
        service = ReplogService(node)
        for _ in range(3):  # unknown topic each time: never leaks the single slot
            ctx = MinimalContext()
            gen = service.Fetch(pb.FetchRequest(topic="nope", partition=0), ctx)
            with pytest.raises(Aborted):
                await gen.__anext__()
            assert ctx.detail().code == "UNKNOWN_TOPIC"
            assert service.fetch_streams == 0

    run(body)


# ---------------------------------------------------------------------- metadata catch-up


@pytest.mark.parametrize("what", ["produce", "fetch", "metadata"])
def test_a_failed_metadata_barrier_is_retriable_not_unknown_topic(what: str) -> None:
    """guards #12 defect 11: when the metadata barrier timed out, the service still answered a
    definitive UNKNOWN_TOPIC from possibly stale state."""

    async def body() -> None:
        node = FakeBrokerNode(
            metadata=FakeMetadata(barrier_error=timed_out("metadata read barrier"))
        )
        service = ReplogService(node)
        ctx = MinimalContext()
        if what == "produce":
            req = pb.ProduceRequest(topic="orders", partition=0, batch=b"x")
            await call(service.Produce, req, ctx)
        elif what == "fetch":
            gen = service.Fetch(pb.FetchRequest(topic="orders", partition=0), ctx)
            with pytest.raises(Aborted):
                await gen.__anext__()
        else:
            await call(service.Metadata, pb.MetadataRequest(topics=["orders"]), ctx)
        assert node.metadata.barriers == 1
        detail = ctx.detail()
        assert detail.code == "LEADER_NOT_AVAILABLE" and detail.retriable, detail
        assert "not caught up" in detail.message
        assert ctx.code == grpc.StatusCode.UNAVAILABLE

    run(body)


def test_unknown_topic_after_a_successful_barrier_is_definitive() -> None:
    async def body() -> None:
        node = FakeBrokerNode()
        service = ReplogService(node)
        ctx = MinimalContext()
        await call(service.Metadata, pb.MetadataRequest(topics=["orders"]), ctx)
        assert node.metadata.barriers == 1
        assert ctx.detail().code == "UNKNOWN_TOPIC" and not ctx.detail().retriable

    run(body)


def test_a_topic_learned_by_the_barrier_is_answered() -> None:
    async def body() -> None:
        node = FakeBrokerNode()
        node.metadata.topic_on_barrier = "orders"
        response = await ReplogService(node).Metadata(
            pb.MetadataRequest(topics=["orders"]), MinimalContext()
        )
        assert [t.name for t in response.topics] == ["orders"]
        assert [b.alive for b in response.brokers] == [True, False, True]  # node.live_brokers()

    run(body)


# ---------------------------------------------------------------------- seams


def test_create_topic_reads_time_and_liveness_through_the_node() -> None:
    async def body() -> None:
        node = FakeBrokerNode()
        response = await ReplogService(node).CreateTopic(
            pb.CreateTopicRequest(name="orders", partitions=1, replication_factor=3),
            MinimalContext(),
        )
        (cmd,) = node.metadata.proposed
        assert cmd.now_ms == 1_234_567  # env.wall_clock_ms(), not time.time()
        assert cmd.live_brokers == (1, 3)  # node.live_brokers()
        assert response.topic.name == "orders"

    run(body)


def test_create_topic_catches_up_before_choosing_live_brokers() -> None:
    """A broker whose metadata lags (just started: registrations not applied yet) offered no
    live brokers, and the topic failed with NOT_ENOUGH_BROKERS "0 live" (`replog dev --demo`,
    about one start in seven). The live set is read after a metadata barrier."""

    class LaggingNode(FakeBrokerNode):
        def live_brokers(self) -> frozenset[int]:
            return frozenset({1, 2, 3}) if self.metadata.barriers else frozenset()

    async def body() -> None:
        node = LaggingNode()
        await ReplogService(node).CreateTopic(
            pb.CreateTopicRequest(name="orders", partitions=1, replication_factor=3),
            MinimalContext(),
        )
        (cmd,) = node.metadata.proposed
        assert node.metadata.barriers == 1
        assert cmd.live_brokers == (1, 2, 3)

        # No barrier possible (no metadata leader): a retriable error, nothing proposed.
        failing = LaggingNode(metadata=FakeMetadata(barrier_error=BrokerError("X", "no leader")))
        ctx = MinimalContext()
        await call(
            ReplogService(failing).CreateTopic,
            pb.CreateTopicRequest(name="orders", partitions=1, replication_factor=3),
            ctx,
        )
        assert failing.metadata.proposed == []
        assert ctx.code == grpc.StatusCode.UNAVAILABLE and "which brokers are live" in ctx.details

    run(body)


def test_transfer_leadership_is_forwarded_through_the_network_seam() -> None:
    async def body() -> None:
        node = FakeBrokerNode()
        node.metadata.state.add("orders")
        node.replicas[("orders", 0)] = FakeReplica()  # a follower; broker 3 leads
        service = ReplogService(node)
        request = pb.TransferLeadershipRequest(topic="orders", partition=0, to_node=2)
        response = await service.TransferLeadership(request, MinimalContext(metadata=()))
        assert response.leader == 3
        ((sent, kwargs),) = node.env.network.stubs["h3:9400"].calls
        assert sent == request and kwargs["metadata"] == ((FORWARDED_KEY, "1"),)

        # Already forwarded once: answered here with the leader hint, never passed on again.
        ctx = MinimalContext(metadata=((FORWARDED_KEY, "1"),))
        await call(service.TransferLeadership, request, ctx)
        assert ctx.detail().code == "NOT_LEADER" and ctx.detail().leader_id == 3
        assert len(node.env.network.stubs["h3:9400"].calls) == 1

    run(body)


# ---------------------------------------------------------------------- PeerService.Raft


async def batches(items: Iterable[pb.RaftBatch]) -> AsyncIterator[pb.RaftBatch]:
    for item in items:
        yield item


def test_peer_raft_stream_hands_batches_to_the_inbox_and_refuses_other_clusters() -> None:
    async def body() -> None:
        node = FakeBrokerNode()
        inbox = PeerInbox(1, "replog", node.runtime, node.log, clock=lambda: 5.0)
        service = PeerService(node, inbox)
        hb = message_to_proto(9, Message(MessageType.HEARTBEAT, to=1, from_=2, term=3))
        good = pb.RaftBatch(
            cluster_id="replog", protocol_version=PROTOCOL_VERSION, from_node=2, to_node=1
        )
        good.messages.append(hb)
        stranger = pb.RaftBatch(cluster_id="other", protocol_version=PROTOCOL_VERSION, to_node=1)
        ctx = MinimalContext()
        ack = await call(service.Raft, batches([good, stranger, good]), ctx)
        assert ack is None  # aborted
        assert ctx.detail().code == "CLUSTER_MISMATCH"
        assert [g for g, _m in node.runtime.stepped] == [9]  # nothing after the refusal

    run(body)


def test_peer_service_uses_the_nodes_inbox() -> None:
    node = FakeBrokerNode()
    node.peer_inbox = PeerInbox(1, "replog", node.runtime, node.log)  # type: ignore[attr-defined]
    assert PeerService(node).inbox is node.peer_inbox  # type: ignore[attr-defined]


def test_broker_error_is_what_the_inbox_raises() -> None:
    inbox = PeerInbox(1, "replog", FakeRuntime(), RecordingLog(), clock=lambda: 0.0)
    with pytest.raises(BrokerError) as info:
        inbox.handle_batch(pb.RaftBatch(cluster_id="replog", protocol_version=99, to_node=1))
    assert info.value.code == "CLUSTER_MISMATCH" and "v99" in info.value.message
