"""Brokers beyond the metadata voters join as learners, register, and host replicas."""

from __future__ import annotations

import pytest

from client.admin import AdminClient
from client.producer import Producer
from tests.integration.harness import LocalCluster, run, wait_until

pytestmark = pytest.mark.xdist_group("integration")


def test_fourth_broker_joins_as_metadata_learner_and_hosts_replicas(cluster_factory) -> None:
    cluster: LocalCluster = cluster_factory(4)

    async def scenario() -> None:
        await cluster.wait_ready()
        d = await cluster.describe_cluster(4)
        assert sorted(d.metadata_voters) == [1, 2, 3]
        assert {b.id for b in d.brokers if b.alive} == {1, 2, 3, 4}
        async with AdminClient(cluster.bootstrap) as admin:
            await admin.create_topic("wide", 4, 3)
            desc = await admin.describe_topic("wide")
        hosted = {r for p in desc.partitions for r in p.replicas}
        assert 4 in hosted, f"placement never used broker 4: {desc}"
        p4 = next(p.partition for p in desc.partitions if 4 in p.replicas)
        async with Producer(cluster.bootstrap) as producer:
            md = await (await producer.send("wide", b"hello", partition=p4))
        assert md.offset >= 0

        # The learner's metadata replica follows the log: it sees the topic too.
        async def learner_sees_topic() -> str | None:
            r = await cluster.metadata(4, "wide")
            return None if r.topics and len(r.topics[0].partitions) == 4 else "not yet"

        await wait_until(learner_sees_topic, 10, "broker 4 sees the topic", cluster)

    run(scenario())
