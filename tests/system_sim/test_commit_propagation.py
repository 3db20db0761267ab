"""How the real brokers tell followers a new commit index (RaftConfig ``broadcast_commit``).

A partition's leader sends no empty append per write: its followers learn the commit index
from the next write's append or the next heartbeat, so a steady stream of acks=all writes
costs one append (and one response) per follower per write, not two. The metadata group
still broadcasts at once, since brokers act on the metadata they apply. Either way every
follower ends up applying everything. Three real BrokerNodes on the simulated seams.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from raft.types import Message, MessageType, Role
from server.node import METADATA_GROUP_ID
from server.transport import PeerTransport
from tests.system_sim.putback import swap
from tests.system_sim.test_read_index import TOPIC, _cluster_with_topic, _run_quietly

WRITES = 20


def test_partitions_send_no_empty_append_per_write_and_followers_still_apply_all() -> None:
    sent: Counter[tuple[str, str]] = Counter()  # (group kind, message kind) -> count
    counting = [False]
    partition_group = [-1]
    build = PeerTransport._batch

    def counted(self: PeerTransport, peer_id: int, out: Any) -> Any:
        if counting[0]:
            for item in out.items:
                m = item.message
                if not isinstance(m, Message):
                    continue
                kind = (
                    "metadata"
                    if item.group_id == METADATA_GROUP_ID
                    else "partition"
                    if item.group_id == partition_group[0]
                    else "other"
                )
                what = m.type.name + (
                    "" if m.type is not MessageType.APP or m.entries else "-empty"
                )
                sent[(kind, what)] += 1
        return build(self, peer_id, out)

    async def scenario() -> dict[str, Any]:
        cluster, admin, producer = await _cluster_with_topic()
        await producer.send_and_wait(TOPIC, b"warm-up", partition=0)
        partition_group[0] = cluster.nodes()[0].by_name[(TOPIC, 0)]
        loop = asyncio.get_running_loop()
        await asyncio.sleep(1.0)  # the election's and the warm-up's commits settle
        counting[0] = True
        for i in range(WRITES):  # a stream of acks=all writes, one after another
            await producer.send_and_wait(TOPIC, b"w%d" % i, partition=0)
        counting[0] = False
        partition_counts = dict(sent)
        sent.clear()
        counting[0] = True
        await admin.create_topic("other", 1, 3, {})  # one metadata write
        await asyncio.sleep(0.05)
        counting[0] = False
        metadata_counts = dict(sent)
        # Every follower applies every write within a few heartbeats of the last one.
        deadline = loop.time() + 5.0
        while True:
            hws = {}
            for node in cluster.nodes():
                replica = node.partitions[partition_group[0]]
                hws[node.node_id] = (replica.role, replica.state.high_watermark)
            leader_hw = next(hw for role, hw in hws.values() if role == Role.LEADER)
            if all(hw == leader_hw for _role, hw in hws.values()) or loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
        for c in (producer, admin):
            await asyncio.wait_for(c.close(), 10.0)
        await cluster.stop_all()
        return {"partition": partition_counts, "metadata": metadata_counts, "hws": hws}

    with swap(PeerTransport, "_batch", counted):
        out = _run_quietly(scenario)
    partition, metadata = out["partition"], out["metadata"]
    # Each write went to both followers with its entries and drew no empty append (a few may
    # still answer heartbeat responses that came back while an append was in flight: one at
    # this seed; with the commit broadcast there are two per write, 2 * WRITES = 40, and more).
    assert partition.get(("partition", "APP"), 0) >= 2 * WRITES, out
    assert partition.get(("partition", "APP-empty"), 0) <= WRITES // 4, out
    # The metadata group told its followers the new commit index at once.
    assert metadata.get(("metadata", "APP-empty"), 0) >= 2, out
    # ... and the partition's followers applied all of it (high watermark = the leader's).
    hws = out["hws"]
    assert len({hw for _role, hw in hws.values()}) == 1, out
    assert min(hw for _role, hw in hws.values()) >= WRITES + 1, out


def test_the_simulation_catches_followers_that_never_learn_the_commit_index() -> None:
    """The negative control of ``groups_healthy``'s commit check on the real brokers: with
    heartbeats that carry no commit index, a partition's followers learn it only from the
    next write's append, so the last write's commit never reaches them. The system
    simulation reports that within three seeds (the first one, when this was written)."""
    from raft.leader import LeaderMixin
    from raft.types import Message
    from tests.system_sim.runner import run_seed

    def bcast_heartbeat_without_commit(self: Any, context: bytes = b"") -> None:
        ctx = context or self.read_only.last_pending_context()
        for node_id in self.tracker.progress:
            if node_id != self.id:
                self.send(Message(MessageType.HEARTBEAT, node_id, self.id, self.term, context=ctx))

    found: list[str] = []
    with swap(LeaderMixin, "bcast_heartbeat", bcast_heartbeat_without_commit):
        for seed in range(3):
            result = run_seed(seed, 3)
            found = [v for v in result.violations if "knows commit" in v]
            if found:
                break
    assert found, "three seeds with commit-less heartbeats and no follower reported unaware"
