"""A replica that cannot open never stops the broker (#12 defect 13): it is reported, and every
other group is served. Runs the real BrokerNode on the simulation's seams."""

from __future__ import annotations

import asyncio
import os
import random

from server.env import Env
from server.node import BrokerNode
from server.registry import GroupSpec
from tests.system_sim import loop as simloop
from tests.system_sim.cluster import BrokerSettings
from tests.system_sim.executor import SimExecutor
from tests.system_sim.fs import SimDisk
from tests.system_sim.network import NodeHandlers, SimNetwork


def test_a_partition_with_an_unopenable_config_is_reported_and_the_broker_starts() -> None:
    disk = SimDisk(random.Random(5))
    fs = disk.mount()
    # A group described on disk with a config no partition can open (an older broker
    # accepted retention.ms=0 while the partition refused it: the broker failed every start).
    spec = GroupSpec(1000, "bad", 0, (1,), {"retention.ms": "not-a-number"})
    fs.makedirs("/data/partitions/1000")
    fd = fs.open("/data/partitions/1000/group.json", os.O_WRONLY | os.O_CREAT)
    fs.pwrite(fd, spec.to_json(), 0)
    fs.close(fd)

    async def main() -> dict[int, dict[str, object]]:
        net = SimNetwork(random.Random(6))
        cfg = BrokerSettings().server_config(1, "b1:1", {1: "b1:1"}, "dc1", "r1")
        node = BrokerNode(
            cfg, Env(network=net.env_network(1), executor=SimExecutor(disk=disk), fs=fs)
        )
        net.attach(
            1,
            "b1:1",
            NodeHandlers(node.peer_inbox.handle_batch, node.replog_service, node.peer_service),
        )
        await node.start()
        for _ in range(200):  # the metadata group elects itself and applies
            if node.metadata.role.name == "LEADER":
                break
            await asyncio.sleep(0.05)
        status = node.status()
        await node.stop(graceful=False)
        return status

    status = simloop.run(main, max_virtual_s=60)
    assert status[1000]["failed"] and "retention.ms" in str(status[1000]["failed"])
    assert status[1]["role"] == "LEADER" and status[1]["failed"] is None
