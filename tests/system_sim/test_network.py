"""SimNetwork with dummy servicers and a dummy batch handler: round trips, aborts, server bugs,
partitions (both modes), one-way cuts, duplication, reordering, crashes, streams, and the
determinism of a seeded run. The real client's error conversion reads our AioRpcErrors."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from tests.system_sim.loop import run
from tests.system_sim.network import Faults, NodeHandlers, SimNetwork
from wire import replog_pb2 as pb

ERROR_KEY = "replog-error-bin"


class DummyReplog:
    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.produced: list[str] = []
        self.fetch_closed = 0
        self.contexts: list[Any] = []

    async def Produce(self, request: pb.ProduceRequest, context: Any) -> pb.ProduceResponse:
        self.contexts.append(context)
        self.produced.append(request.topic)
        if request.topic == "abort":
            context.set_trailing_metadata(((ERROR_KEY, b"\x08\x01"),))
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "NOT_LEADER: ask node 2")
        if request.topic == "bug":
            raise RuntimeError("a broker bug")
        if request.topic == "slow":
            await asyncio.sleep(100)
        if request.topic == "meta":
            keys = [k for k, _ in context.invocation_metadata()]
            return pb.ProduceResponse(base_offset=len(keys), log_start_offset=self.node_id)
        return pb.ProduceResponse(base_offset=len(self.produced), log_start_offset=self.node_id)

    async def Metadata(self, request: pb.MetadataRequest, context: Any) -> Any:
        return pb.ProduceResponse()  # the wrong type: a bug the network reports

    async def Fetch(
        self, request: pb.FetchRequest, context: Any
    ) -> AsyncIterator[pb.FetchResponse]:
        try:
            offset = request.offset
            while True:
                if request.max_wait_ms and offset >= request.max_wait_ms:
                    return
                yield pb.FetchResponse(next_offset=offset, high_watermark=self.node_id)
                offset += 1
                await asyncio.sleep(0.01)
        finally:
            self.fetch_closed += 1


class DummyPeer:
    async def ForwardMetadata(
        self, request: pb.ForwardMetadataRequest, context: Any
    ) -> pb.ForwardMetadataResponse:
        return pb.ForwardMetadataResponse(result=request.command + b"!")


class Cluster:
    def __init__(self, seed: int = 0, faults: Faults | None = None, n: int = 3) -> None:
        self.net = SimNetwork(random.Random(seed), faults)
        self.services: dict[int, DummyReplog] = {}
        self.received: dict[int, list[tuple[int, int]]] = {}
        for node_id in range(1, n + 1):
            self.attach(node_id)

    def attach(self, node_id: int) -> None:
        self.services[node_id] = DummyReplog(node_id)
        got = self.received.setdefault(node_id, [])

        def deliver(batch: pb.RaftBatch, got: list[tuple[int, int]] = got) -> None:
            assert isinstance(batch, pb.RaftBatch)
            got.append((batch.from_node, batch.messages[0].index))

        self.net.attach(
            node_id, f"n{node_id}:9000", NodeHandlers(deliver, self.services[node_id], DummyPeer())
        )


def batch(src: int, dst: int, index: int) -> pb.RaftBatch:
    return pb.RaftBatch(
        cluster_id="c",
        from_node=src,
        to_node=dst,
        messages=[pb.RaftMessage(group_id=1, index=index)],
    )


# ---------------------------------------------------------------------- unary RPCs


def test_unary_round_trip_serialises_and_takes_virtual_time() -> None:
    async def main() -> None:
        c = Cluster()
        stub = c.net.client_stub_factory("client-1")("n2:9000")
        loop = asyncio.get_running_loop()
        request = pb.ProduceRequest(topic="t", partition=3)
        response = await stub.Produce(request, timeout=5.0, metadata=(("k", "v"),))
        assert isinstance(response, pb.ProduceResponse)
        assert (response.base_offset, response.log_start_offset) == (1, 2)
        assert 0.0004 <= loop.time() <= 0.004  # two legs of 0.2-2 ms
        ctx = c.services[2].contexts[0]
        assert ctx.peer() == "sim:client-1"
        assert ctx.invocation_metadata() == (("k", "v"),)
        assert ctx.done() and not ctx.cancelled()
        response.base_offset = 99  # no object is shared with the server
        assert c.services[2].produced == ["t"]
        # node -> node stubs
        env = c.net.env_network(1)
        forwarded = await env.peer_stub("n3:9000").ForwardMetadata(
            pb.ForwardMetadataRequest(cluster_id="c", command=b"cmd")
        )
        assert forwarded.result == b"cmd!"
        r = await env.replog_stub("n3:9000").Produce(pb.ProduceRequest(topic="meta"))
        assert c.services[3].contexts[-1].peer() == "sim:node-1"
        assert r.base_offset == 0

    run(main, max_virtual_s=60)


def test_abort_raises_aio_rpc_error_with_trailing_metadata() -> None:
    async def main() -> None:
        c = Cluster()
        stub = c.net.client_stub_factory("client-1")("n1:9000")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Produce(pb.ProduceRequest(topic="abort"), timeout=5.0)
        exc = info.value
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert exc.details() == "NOT_LEADER: ask node 2"
        assert list(exc.trailing_metadata()) == [(ERROR_KEY, b"\x08\x01")]
        assert c.net.server_errors == []

    run(main, max_virtual_s=60)


def test_the_real_client_converts_our_errors() -> None:
    from client.connection import to_replog_error

    exc = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "refused"
    )
    error = to_replog_error(exc, "n1:9000")
    assert error.retriable  # type: ignore[attr-defined]


def test_a_servicer_bug_is_unknown_and_recorded() -> None:
    async def main() -> None:
        c = Cluster()
        stub = c.net.client_stub_factory("client-1")("n1:9000")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Produce(pb.ProduceRequest(topic="bug"))
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        assert "a broker bug" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Metadata(pb.MetadataRequest())
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        assert [e.method for e in c.net.server_errors] == ["Produce", "Metadata"]
        assert "RuntimeError" in c.net.server_errors[0].traceback
        with pytest.raises(TypeError):
            await stub.Produce(pb.FetchRequest())

    run(main, max_virtual_s=60)


def test_refused_and_silent_failures() -> None:
    async def main() -> None:
        c = Cluster()
        loop = asyncio.get_running_loop()
        stub = c.net.client_stub_factory("client-1")("n1:9000")
        # nobody at the address
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await c.net.client_stub_factory("client-2")("nowhere:1").Produce(pb.ProduceRequest())
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # refused cut: UNAVAILABLE at once, nothing served
        c.net.cut("client-1", 1, mode="refuse")
        t0 = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Produce(pb.ProduceRequest(topic="x"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert loop.time() - t0 < 0.01
        # silent cut: the deadline
        c.net.cut("client-1", 1, mode="drop")
        t0 = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Produce(pb.ProduceRequest(topic="x"), timeout=3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert loop.time() - t0 == pytest.approx(3.0)
        # silent, no deadline: keepalive (hang_s)
        t0 = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Produce(pb.ProduceRequest(topic="x"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert loop.time() - t0 == pytest.approx(c.net.hang_s)
        assert c.services[1].produced == []
        # the response way cut: the server did the work, the client does not know
        c.net.heal()
        c.net.cut(1, "client-1")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Produce(pb.ProduceRequest(topic="y"), timeout=2)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert c.services[1].produced == ["y"]
        c.net.heal()
        assert (await stub.Produce(pb.ProduceRequest(topic="z"))).base_offset == 2

    run(main, max_virtual_s=600)


def test_deadline_cancels_the_server_handler() -> None:
    async def main() -> None:
        c = Cluster()
        stub = c.net.client_stub_factory("client-1")("n1:9000")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Produce(pb.ProduceRequest(topic="slow"), timeout=1)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        ctx = c.services[1].contexts[0]
        assert ctx.time_remaining() == 0.0
        await asyncio.sleep(0.1)
        assert ctx.cancelled() and ctx.done()

    run(main, max_virtual_s=60)


def test_rpc_drop_probability_loses_requests_or_responses() -> None:
    async def main() -> tuple[int, int, int]:
        c = Cluster(seed=5, faults=Faults(rpc_drop_probability=0.3))
        stub = c.net.client_stub_factory("client-1")("n1:9000")
        ok = failed = 0
        for i in range(60):
            try:
                await stub.Produce(pb.ProduceRequest(topic=f"r{i}"), timeout=1)
                ok += 1
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                failed += 1
        return ok, failed, len(c.services[1].produced)

    ok, failed, served = run(main, max_virtual_s=600)
    assert ok + failed == 60 and 10 < failed < 50
    assert ok < served < 60  # some responses were lost after the server did the work


def test_crash_fails_in_flight_calls_and_restart_gets_a_new_incarnation() -> None:
    async def main() -> None:
        c = Cluster()
        loop = asyncio.get_running_loop()
        stub = c.net.client_stub_factory("client-1")("n1:9000")
        call = asyncio.create_task(stub.Produce(pb.ProduceRequest(topic="slow")))
        await asyncio.sleep(1)
        ctx = c.services[1].contexts[0]
        c.net.detach(1)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ctx.done()
        assert not c.net.is_attached(1)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Produce(pb.ProduceRequest(topic="x"))
        c.attach(1)
        response = await stub.Produce(pb.ProduceRequest(topic="x"))
        assert response.base_offset == 1  # the new incarnation's service
        assert loop.time() < 2

    run(main, max_virtual_s=60)


# ---------------------------------------------------------------------- raft links


def test_links_deliver_in_fifo_order_with_delay() -> None:
    async def main() -> None:
        c = Cluster()
        link = c.net.env_network(1).open_link(2, "n2:9000")
        for i in range(50):
            await link.send(batch(1, 2, i))
        assert c.received[2] == []  # nothing arrives before its delay
        await asyncio.sleep(1)
        assert c.received[2] == [(1, i) for i in range(50)]

    run(main, max_virtual_s=60)


def test_partition_drops_and_refuses() -> None:
    async def main() -> None:
        c = Cluster()
        env1 = c.net.env_network(1)
        c.net.partition([[1], [2, 3]])
        to2 = env1.open_link(2, "n2:9000")
        await to2.send(batch(1, 2, 1))  # silently dropped
        await asyncio.sleep(1)
        assert c.received[2] == []
        c.net.partition([[1], [2, 3]], mode="refuse")
        with pytest.raises(ConnectionError):
            await to2.send(batch(1, 2, 2))
        with pytest.raises(ConnectionError):  # failed for good, like a GrpcLink
            await to2.send(batch(1, 2, 3))
        c.net.heal()
        with pytest.raises(ConnectionError):
            await to2.send(batch(1, 2, 4))
        fresh = env1.open_link(2, "n2:9000")
        await fresh.send(batch(1, 2, 5))
        # a partition that starts while a batch travels loses it
        await fresh.send(batch(1, 2, 6))
        c.net.isolate(2)
        await asyncio.sleep(1)
        assert c.received[2] == []
        c.net.heal()
        await fresh.send(batch(1, 2, 7))
        await asyncio.sleep(1)
        assert c.received[2] == [(1, 7)]
        # a DC-style partition leaves unnamed endpoints (clients) connected
        c.net.partition([[1], [2], [3]])
        stub = c.net.client_stub_factory("client-1")
        await stub("n1:9000").Produce(pb.ProduceRequest())
        await stub("n3:9000").Produce(pb.ProduceRequest())

    run(main, max_virtual_s=60)


def test_one_way_cut() -> None:
    async def main() -> None:
        c = Cluster()
        c.net.cut(1, 2)
        a = c.net.env_network(1).open_link(2, "n2:9000")
        b = c.net.env_network(2).open_link(1, "n1:9000")
        await a.send(batch(1, 2, 1))
        await b.send(batch(2, 1, 1))
        await asyncio.sleep(1)
        assert c.received[2] == []
        assert c.received[1] == [(2, 1)]

    run(main, max_virtual_s=60)


def test_detach_drops_in_flight_and_fails_links() -> None:
    async def main() -> None:
        c = Cluster()
        env1 = c.net.env_network(1)
        link = env1.open_link(2, "n2:9000")
        await link.send(batch(1, 2, 1))
        c.net.detach(2)
        await asyncio.sleep(1)
        assert c.received[2] == []
        with pytest.raises(ConnectionError):
            await link.send(batch(1, 2, 2))
        c.attach(2)
        with pytest.raises(ConnectionError):  # new link needed
            await link.send(batch(1, 2, 3))
        link = env1.open_link(2, "n2:9000")
        await link.send(batch(1, 2, 4))
        await asyncio.sleep(1)
        assert c.received[2] == [(1, 4)]
        # the crashed node's own network is dead
        c.net.detach(1)
        with pytest.raises(ConnectionError):
            await link.send(batch(1, 2, 5))
        with pytest.raises(grpc.aio.AioRpcError):
            await env1.replog_stub("n2:9000").Produce(pb.ProduceRequest())
        env1b = c.net.env_network(1)  # the next incarnation's
        await env1b.open_link(2, "n2:9000").send(batch(1, 2, 6))
        await asyncio.sleep(1)
        assert c.received[2][-1] == (1, 6)

    run(main, max_virtual_s=60)


def test_a_receiver_that_raises_fails_the_link_and_is_recorded() -> None:
    async def main() -> None:
        net = SimNetwork(random.Random(0))

        def refuse(batch: pb.RaftBatch) -> None:
            raise ValueError("CLUSTER_MISMATCH")

        net.attach(2, "n2", NodeHandlers(refuse))
        link = net.env_network(1).open_link(2, "n2")
        await link.send(batch(1, 2, 1))
        await asyncio.sleep(1)
        with pytest.raises(ConnectionError, match="ended the stream"):
            await link.send(batch(1, 2, 2))
        assert [e.method for e in net.server_errors] == ["deliver_batch"]

    run(main, max_virtual_s=60)


def test_duplication_and_reordering() -> None:
    async def main() -> list[tuple[int, int]]:
        c = Cluster(seed=3, faults=Faults(duplicate_probability=0.3, reorder_probability=0.3))
        link = c.net.env_network(1).open_link(2, "n2:9000")
        for i in range(200):
            await link.send(batch(1, 2, i))
            await asyncio.sleep(0.0003)
        await asyncio.sleep(1)
        return c.received[2]

    got = run(main, max_virtual_s=60)
    indexes = [i for _, i in got]
    assert sorted(set(indexes)) == list(range(200))  # nothing lost
    assert len(indexes) > 230  # duplicates
    assert indexes != sorted(indexes)  # reordered


def test_drop_probability() -> None:
    async def main() -> int:
        c = Cluster(seed=1, faults=Faults(drop_probability=0.25))
        link = c.net.env_network(1).open_link(2, "n2:9000")
        for i in range(400):
            await link.send(batch(1, 2, i))
        await asyncio.sleep(1)
        return len(c.received[2])

    assert 250 < run(main, max_virtual_s=60) < 350


def test_pair_faults_add_latency_between_dcs() -> None:
    async def main() -> float:
        c = Cluster()
        c.net.set_faults(Faults(delay_s=(0.05, 0.05)), 1, 3)
        loop = asyncio.get_running_loop()
        await c.net.env_network(1).open_link(3, "n3:9000").send(batch(1, 3, 1))
        while not c.received[3]:
            await asyncio.sleep(0.001)
        return loop.time()

    assert run(main, max_virtual_s=60) == pytest.approx(0.05, abs=0.002)


# ---------------------------------------------------------------------- streams


def test_stream_round_trip_and_cancel() -> None:
    async def main() -> None:
        c = Cluster()
        stub = c.net.client_stub_factory("client-1")("n2:9000")
        call = stub.Fetch(pb.FetchRequest(offset=5, max_wait_ms=10))
        got = [r.next_offset async for r in call]
        assert got == [5, 6, 7, 8, 9]
        assert c.services[2].fetch_closed == 1
        # follow forever, then cancel: the server generator is closed
        call = stub.Fetch(pb.FetchRequest(offset=0))
        seen = []
        async for r in call:
            seen.append(r.next_offset)
            if len(seen) == 3:
                break
        assert call.cancel()
        assert call.cancelled()
        await asyncio.sleep(0.1)
        assert c.services[2].fetch_closed == 2
        with pytest.raises(asyncio.CancelledError):
            await call.read()

    run(main, max_virtual_s=60)


def test_stream_flow_control_bounds_a_slow_reader() -> None:
    async def main() -> None:
        c = Cluster()
        stub = c.net.client_stub_factory("client-1")("n2:9000")
        call = stub.Fetch(pb.FetchRequest(offset=0))
        first = await call.read()
        await asyncio.sleep(10)  # the server would yield 1000 responses meanwhile
        assert first.next_offset == 0
        assert call._in_flight <= 16
        call.cancel()

    run(main, max_virtual_s=60)


def test_stream_ends_unavailable_when_the_broker_crashes_or_is_cut() -> None:
    async def main() -> None:
        c = Cluster()
        stub = c.net.client_stub_factory("client-1")("n2:9000")
        call = stub.Fetch(pb.FetchRequest(offset=0))
        await call.read()
        c.net.detach(2)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in call:
                pass
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert c.services[2].fetch_closed == 1
        # refused cut on the response way
        stub3 = c.net.client_stub_factory("client-2")("n3:9000")
        call = stub3.Fetch(pb.FetchRequest(offset=0))
        await call.read()
        c.net.cut(3, "client-2", mode="refuse")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in call:
                pass
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # silent cut with a deadline
        c.net.heal()
        call = stub3.Fetch(pb.FetchRequest(offset=0), timeout=5)
        await call.read()
        c.net.cut(3, "client-2")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in call:
                pass
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert loop.time() - t0 < 5

    run(main, max_virtual_s=600)


# ---------------------------------------------------------------------- determinism


def _seeded_run(seed: int) -> list[str]:
    async def main() -> list[str]:
        c = Cluster(
            seed=seed,
            faults=Faults(
                drop_probability=0.1,
                duplicate_probability=0.1,
                reorder_probability=0.2,
                rpc_drop_probability=0.1,
            ),
        )
        loop = asyncio.get_running_loop()
        trace: list[str] = []
        rng = random.Random(seed)

        async def sender(src: int) -> None:
            env = c.net.env_network(src)
            links = {d: env.open_link(d, f"n{d}:9000") for d in (1, 2, 3) if d != src}
            for i in range(40):
                dst = rng.choice(sorted(links))
                try:
                    await links[dst].send(batch(src, dst, i))
                except ConnectionError:
                    links[dst] = env.open_link(dst, f"n{dst}:9000")
                await asyncio.sleep(rng.uniform(0, 0.002))

        async def client(name: str) -> None:
            stubs = c.net.client_stub_factory(name)
            for i in range(15):
                try:
                    r = await stubs(f"n{rng.randint(1, 3)}:9000").Produce(
                        pb.ProduceRequest(topic=f"{name}-{i}"), timeout=0.05
                    )
                    trace.append(f"{loop.time():.9f} {name} ok {r.base_offset}")
                except grpc.aio.AioRpcError as exc:
                    trace.append(f"{loop.time():.9f} {name} {exc.code().name}")

        async def chaos() -> None:
            await asyncio.sleep(0.02)
            c.net.partition([[1], [2, 3]], mode=rng.choice(["drop", "refuse"]))
            await asyncio.sleep(0.03)
            c.net.heal()

        async with asyncio.TaskGroup() as tg:
            for src in (1, 2, 3):
                tg.create_task(sender(src))
            for k in range(3):
                tg.create_task(client(f"client-{k}"))
            tg.create_task(chaos())
        await asyncio.sleep(1)
        for node_id, got in sorted(c.received.items()):
            trace.append(f"node {node_id} got {got}")
        trace.append(f"stats {sorted(c.net.stats.items())}")
        return trace

    return run(main, max_virtual_s=600)


def test_a_seeded_run_replays_exactly() -> None:
    first = _seeded_run(11)
    assert first == _seeded_run(11)
    assert first != _seeded_run(12)


# ---------------------------------------------------------------------- the real client's seam


def test_the_real_connection_runs_over_client_stubs() -> None:
    from client.connection import Connection
    from client.errors import BrokerUnavailable, NotLeader

    class Leaderless(DummyReplog):
        async def Produce(self, request: pb.ProduceRequest, context: Any) -> pb.ProduceResponse:
            if request.topic == "moved":
                detail = pb.ErrorDetail(code="NOT_LEADER", message="not me", leader_id=2)
                context.set_trailing_metadata(((ERROR_KEY, detail.SerializeToString()),))
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "NOT_LEADER: not me")
            return await super().Produce(request, context)

    async def main() -> None:
        net = SimNetwork(random.Random(0))
        service = Leaderless(1)
        net.attach(1, "n1:9000", NodeHandlers(lambda b: None, service, DummyPeer()))
        conn = Connection(
            "n1:9000", request_timeout_s=2.0, stub_factory=net.client_stub_factory("client-1")
        )
        response = await conn.call("Produce", pb.ProduceRequest(topic="t"))
        assert response.base_offset == 1
        with pytest.raises(NotLeader) as info:
            await conn.call("Produce", pb.ProduceRequest(topic="moved"))
        assert info.value.leader_id == 2  # type: ignore[attr-defined]
        got = []
        async for r in conn.stream("Fetch", pb.FetchRequest(offset=3), address="n1:9000"):
            got.append(r.next_offset)
            if len(got) == 4:
                break
        assert got == [3, 4, 5, 6]
        net.cut("client-1", 1, mode="refuse")
        with pytest.raises(BrokerUnavailable):
            await conn.call("Produce", pb.ProduceRequest(topic="t"))
        await conn.close()
        await asyncio.sleep(1)
        assert service.fetch_closed == 1

    run(main, max_virtual_s=60)
