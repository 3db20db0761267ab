"""Issue 13: "A slow simulated disk on one group does not stop other groups from committing."

Three real BrokerNodes on the simulated seams (tests/system_sim/cluster.py). Topic ``slow`` has
one partition; topic ``fast`` has two. Every broker's disk is made slow for the slow
partition's directory only (``SimDisk.slow(<data>/partitions/<group>, 1 s per fsync)``): each
fsync of that group costs one virtual second, on the broker hosting it and on every other
(all three brokers host every partition, so the broker leading the slow group also leads or
follows the fast ones). While a record for the slow partition waits for its fsyncs, the fast
partitions on the same brokers must keep committing: records sent with acks=all are
acknowledged at their usual pace, because each group's persistence runs on its own executor
lane (server/runtime.py) and the event loop never waits on the disk.

Measured in virtual time over a window of ``WINDOW_S`` seconds of slowness: the slow record's
latency (at least one slow fsync: the slowness really hit that group), and the acks=all
acknowledgements of the fast partitions within the window (sequential sends: many of them,
each far faster than one slow fsync).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from client import AdminClient, Producer
from client.config import AdminConfig, ProducerConfig
from client.errors import ReplogError, TopicExists
from tests.system_sim import loop as simloop
from tests.system_sim.cluster import DATA_DIR, SimCluster

SYNC_S = 1.0  # virtual seconds per fsync of the slow group's files
WINDOW_S = 5.0  # how long the slow group's disk stays slow


def _producer(cluster: SimCluster, name: str) -> Producer:
    return Producer(
        cluster.bootstrap(),
        ProducerConfig(
            acks="all",
            linger_ms=0.0,
            delivery_timeout_ms=60_000.0,
            request_timeout_ms=30_000.0,
            metadata_timeout_ms=10_000.0,
            retry_backoff_ms=20.0,
            retry_backoff_max_ms=200.0,
        ),
        **cluster.client_seams(name),
    )


async def _scenario() -> dict[str, Any]:
    cluster = SimCluster(7, 3)
    await cluster.start()
    admin = AdminClient(
        cluster.bootstrap(),
        AdminConfig(request_timeout_ms=5_000.0, operation_timeout_ms=20_000.0),
        **cluster.client_seams("admin"),
    )
    for name, partitions in (("slow", 1), ("fast", 2)):
        for _ in range(40):  # until every broker registered (as the workload retries)
            try:
                await admin.create_topic(name, partitions, 3, {})
                break
            except TopicExists:
                break
            except ReplogError:
                await asyncio.sleep(0.5)
    fast = _producer(cluster, "fast-producer")
    slow = _producer(cluster, "slow-producer")
    loop = asyncio.get_running_loop()
    # Warm up: every partition has a leader and took a record.
    await slow.send_and_wait("slow", b"warm", partition=0)
    for p in range(2):
        await fast.send_and_wait("fast", b"warm", partition=p)
    group = {node.by_name[("slow", 0)] for node in cluster.nodes()}
    assert len(group) == 1
    (slow_group,) = group
    fast_groups = {node.by_name[("fast", p)] for node in cluster.nodes() for p in range(2)}
    prefix = f"{DATA_DIR}/partitions/{slow_group}"
    for slot in cluster.brokers.values():
        slot.disk.slow(prefix, SYNC_S)

    started = loop.time()
    slow_task = loop.create_task(slow.send_and_wait("slow", b"slow-record", partition=0))
    fast_acks: list[tuple[float, float]] = []  # (completed at, latency)
    n = 0
    while loop.time() - started < WINDOW_S:
        sent = loop.time()
        await fast.send_and_wait("fast", f"fast-{n}".encode(), partition=n % 2)
        fast_acks.append((loop.time(), loop.time() - sent))
        n += 1
    slow_done_in_window = slow_task.done()
    commits = {
        gid: max(int(node.status()[gid].get("commit", 0)) for node in cluster.nodes())
        for gid in fast_groups
    }
    for slot in cluster.brokers.values():
        slot.disk.slow(prefix, 0.0)
    await slow_task  # once the disk is fast again (the producer retries meanwhile)
    slow_latency = loop.time() - started
    for c in (fast, slow):
        await asyncio.wait_for(c.close(), 10.0)
    await asyncio.wait_for(admin.close(), 10.0)
    await cluster.stop_all()
    return {
        "slow_latency_s": slow_latency,
        "slow_done_in_window": slow_done_in_window,
        "fast_acks_during": len(fast_acks),
        "fast_worst_latency_s": max(lat for _, lat in fast_acks),
        "fast_commits": commits,
    }


def test_a_slow_group_does_not_stop_other_groups_committing() -> None:
    old = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(40),  # errors only
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    try:
        out = simloop.run(_scenario, max_virtual_s=300.0, max_steps=3_000_000)
    finally:
        structlog.configure(**old)
    # The slowness hit the slow group: its record needed at least one slow fsync (leader and
    # follower write in parallel: at least SYNC_S in all). With a fsync slower than an
    # election timeout (300 ms here) the slow group may also lose its leader; it recovers
    # once its disk is fast again.
    assert out["slow_latency_s"] >= SYNC_S, out
    # Meanwhile the fast partitions, hosted by the same three brokers, kept committing:
    # sequential acks=all records, each in a small fraction of one slow fsync.
    assert out["fast_acks_during"] >= 20, out
    assert out["fast_worst_latency_s"] < SYNC_S / 4, out
