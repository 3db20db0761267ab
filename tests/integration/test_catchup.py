"""A follower that was down while retention dropped what it needs catches up from a snapshot;
SIGTERM moves leadership away before the broker exits."""

from __future__ import annotations

import time

import pytest

from client.admin import AdminClient
from client.config import ConsumerConfig, ProducerConfig
from client.consumer import Consumer
from client.producer import Producer
from tests.integration.harness import LocalCluster, run, wait_until
from wire import replog_pb2 as pb

pytestmark = pytest.mark.xdist_group("integration")

SMALL_SEGMENTS = ["storage.segment_bytes=16384", "partition.retention_check_ms=100"]


async def list_offsets(cluster: LocalCluster, node_id: int, topic: str) -> pb.ListOffsetsResponse:
    channel, stub = cluster.stub(node_id)
    async with channel:
        return await stub.ListOffsets(pb.ListOffsetsRequest(topic=topic, partition=0), timeout=2)


def test_follower_behind_retention_catches_up_from_snapshot(cluster_factory) -> None:
    cluster: LocalCluster = cluster_factory(3, SMALL_SEGMENTS)

    async def scenario() -> None:
        await cluster.wait_ready()
        async with AdminClient(cluster.bootstrap) as admin:
            await admin.create_topic("ret", 1, 3, config={"retention.bytes": "40000"})
        leader = await cluster.partition_leader("ret", 0)
        follower = next(i for i in cluster.brokers if i != leader)
        cluster.kill(follower)
        acked: dict[bytes, int] = {}
        cfg = ProducerConfig(linger_ms=0, batch_bytes=2048)
        async with Producer(cluster.live_bootstrap(), cfg) as producer:
            for i in range(400):
                v = f"{i:06d}".encode() + b"." * 900
                acked[v] = (await (await producer.send("ret", v, partition=0))).offset

        async def dropped() -> str | None:
            # Leadership may move meanwhile (leader priority): ask whoever leads now.
            current = await cluster.partition_leader("ret", 0)
            r = await list_offsets(cluster, current, "ret")
            return None if r.log_start_offset > 0 else f"log_start_offset={r.log_start_offset}"

        await wait_until(dropped, 20, "retention on the leader", cluster)
        cluster.start(follower)

        async def installed() -> str | None:
            text = cluster.brokers[follower].log_path.read_text()
            return None if "partition_snapshot_installed" in text else "no snapshot installed yet"

        await wait_until(installed, 30, f"node {follower} installs a snapshot", cluster)
        # Make the caught-up follower the leader, then read everything through it (any live
        # broker accepts the transfer and forwards it to the leader).
        channel, stub = cluster.stub(next(i for i in cluster.brokers if i != follower))
        async with channel:
            r = await stub.TransferLeadership(
                pb.TransferLeadershipRequest(topic="ret", partition=0, to_node=follower), timeout=10
            )
        assert r.leader == follower
        # The transfer answers once the target leads; until it has applied the first entry of
        # its term it answers reads with a retriable LEADER_NOT_AVAILABLE.
        answered: list[pb.ListOffsetsResponse] = []

        async def serves() -> str | None:
            answered.append(await list_offsets(cluster, follower, "ret"))
            return None

        await wait_until(serves, 10, f"node {follower} serves as the new leader", cluster)
        offsets = answered[-1]
        assert offsets.high_watermark >= max(acked.values()) + 1
        start = offsets.log_start_offset
        assert start > 0
        got = []
        async with Consumer(cluster.bootstrap, ConsumerConfig(auto_offset_reset="earliest")) as c:
            c.assign([("ret", 0)])
            c.seek("ret", 0, start)
            deadline = time.monotonic() + 20
            want = sum(1 for o in acked.values() if o >= start)
            while len(got) < want and time.monotonic() < deadline:
                got.extend(await c.poll(1.0))
        expected = sorted((o, v) for v, o in acked.items() if o >= start)
        assert [(r.offset, r.value) for r in got] == expected

    run(scenario())


def test_sigterm_transfers_leadership_before_exit(cluster_factory) -> None:
    cluster: LocalCluster = cluster_factory(3)

    async def scenario() -> None:
        await cluster.wait_ready()
        async with AdminClient(cluster.bootstrap) as admin:
            await admin.create_topic("calm", 3, 3)
        leaders = {p: await cluster.partition_leader("calm", p) for p in range(3)}
        victim = leaders[0]
        code = cluster.terminate(victim)
        assert code == 0
        log = cluster.brokers[victim].log_path.read_text()
        assert "leadership_transferred_away" in log
        assert "broker_stopped" in log
        # Every partition it led already has a leader among the others.
        for p in range(3):
            new = await cluster.partition_leader("calm", p, timeout_s=5)
            assert new != victim
        async with Producer(cluster.live_bootstrap()) as producer:
            md = await (await producer.send("calm", b"after", partition=0))
            assert md.offset >= 0

    run(scenario())
