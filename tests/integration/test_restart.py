"""Whole-cluster SIGKILL moments after a topic is created and written (#12 defect 1).

The lost-records bug: a broker restarted after a SIGKILL replays its metadata log only up to the
commit index it last wrote, which lags; reconcile took the groups it could not see yet for deleted
topics and removed their directories. Six rounds of create, produce 300 acks=all records, SIGKILL
every broker at once, restart: every acknowledged record of every round reads back each time.
"""

from __future__ import annotations

import pytest

from client.admin import AdminClient
from client.config import ProducerConfig
from client.producer import Producer
from tests.integration.harness import LocalCluster, run
from tests.integration.test_failover import check_log, consume_all

pytestmark = pytest.mark.xdist_group("integration")


async def produce_acked(bootstrap: str, topic: str, n: int) -> dict[bytes, int]:
    acked: dict[bytes, int] = {}
    async with Producer(bootstrap, ProducerConfig(linger_ms=1, acks="all")) as producer:
        futs = [
            (v, await producer.send(topic, v, partition=0))
            for v in (f"{topic}-{i}".encode() for i in range(n))
        ]
        await producer.flush()
        for v, f in futs:
            acked[v] = (await f).offset
    return acked


def rounds_of_create_write_kill(cluster: LocalCluster, rounds: int, replicas: int) -> None:
    async def scenario() -> None:
        await cluster.wait_ready(60)
        history: dict[str, dict[bytes, int]] = {}
        for r in range(rounds):
            topic = f"round-{r}"
            async with AdminClient(cluster.bootstrap) as admin:
                await admin.create_topic(topic, 1, replicas)
            history[topic] = await produce_acked(cluster.bootstrap, topic, 300)
            for node_id in cluster.brokers:
                cluster.kill(node_id)  # at once, moments after the acknowledgements
            cluster.start()
            await cluster.wait_ready(60)
            for name, acked in history.items():
                records = await consume_all(cluster.bootstrap, name, 0, len(acked))
                assert len(records) >= len(acked), (
                    f"round {r}: topic {name} read back {len(records)} of {len(acked)} "
                    "acknowledged records\n" + cluster.log_tail(40)
                )
                check_log(records, acked)
            print(f"round {r}: {sum(len(a) for a in history.values())} acknowledged records intact")

    run(scenario())


def test_six_rounds_of_whole_cluster_sigkill_lose_nothing(cluster_factory) -> None:
    rounds_of_create_write_kill(cluster_factory(3), rounds=6, replicas=3)


def test_single_broker_sigkill_right_after_create_and_write_keeps_the_topic(
    cluster_factory,
) -> None:
    rounds_of_create_write_kill(cluster_factory(1), rounds=2, replicas=1)
