"""The client's metadata cache never answers "unknown topic" on its own."""

from __future__ import annotations

import asyncio
from typing import Any

from client.connection import Connection
from wire import replog_pb2 as pb


class OneBroker:
    def __init__(self) -> None:
        self.calls = 0

    async def Metadata(self, request: pb.MetadataRequest, timeout: Any = None) -> Any:
        self.calls += 1
        return pb.MetadataResponse(
            brokers=[pb.Broker(id=1, address="b1:1")],
            topics=[
                pb.TopicMetadata(name="t", partitions=[pb.PartitionMetadata(partition=0, leader=1)])
            ],
        )


def test_a_leader_known_without_its_topic_refreshes_instead_of_failing() -> None:
    """A full refresh answered by a lagging broker (without topic t) emptied the topic cache
    while the partition's leader stayed cached; the next lookup raised UnknownTopic from the
    cache alone (found by tests/system_sim: an acknowledged topic "lost", default seeds 103,
    117)."""
    broker = OneBroker()

    async def scenario() -> str:
        conn = Connection("b1:1", stub_factory=lambda address: broker)
        conn._leaders[("t", 0)] = 1
        conn.topics.clear()
        loop = asyncio.get_running_loop()
        return await conn.leader_address("t", 0, deadline=loop.time() + 5)

    assert asyncio.run(scenario()) == "b1:1"
    assert broker.calls == 1


def test_a_full_refresh_forgets_leaders_of_topics_it_does_not_list() -> None:
    async def scenario() -> Connection:
        conn = Connection("b1:1", stub_factory=lambda address: OneBroker())
        conn._leaders[("gone", 0)] = 2
        await conn.refresh_metadata()
        return conn

    conn = asyncio.run(scenario())
    assert ("gone", 0) not in conn._leaders and ("t", 0) in conn._leaders


def test_an_empty_fetch_steps_over_committed_control_entries_but_never_past_the_watermark() -> None:
    """A new leader's no-op at the end of the log is a committed entry no consumer sees; the
    broker answers empty with next_offset past it. The position follows up to the high
    watermark (found by tests/system_sim: consumers never reached the end), never beyond."""
    from client.consumer import _decode

    _, position = _decode("t", 0, pb.FetchResponse(next_offset=5, high_watermark=5), 4)
    assert position == 5
    _, position = _decode("t", 0, pb.FetchResponse(next_offset=7, high_watermark=5), 4)
    assert position == 4


class StaleOrFresh:
    """Broker b1 is cut off from the cluster: its metadata still names itself leader of t/0,
    and it answers NOT_LEADER without a hint (it does not know the new leader). Broker b2
    names the real leader, itself."""

    def __init__(self, node_id: int, calls: list[int]) -> None:
        self.node_id, self.calls = node_id, calls

    async def Metadata(self, request: pb.MetadataRequest, timeout: Any = None) -> Any:
        self.calls.append(self.node_id)
        return pb.MetadataResponse(
            brokers=[pb.Broker(id=1, address="b1:1"), pb.Broker(id=2, address="b2:1")],
            topics=[
                pb.TopicMetadata(
                    name="t", partitions=[pb.PartitionMetadata(partition=0, leader=self.node_id)]
                )
            ],
        )


def test_a_leader_without_a_hint_makes_the_refresh_ask_another_broker() -> None:
    """The chaos suite's cut-off partition leader: it kept naming itself in metadata and
    answered NOT_LEADER without a hint, and the client asked it again on every refresh, so
    no producer of that partition found the new leader for the whole fault."""
    from client.errors import NotLeader

    calls: list[int] = []
    brokers = {"b1:1": StaleOrFresh(1, calls), "b2:1": StaleOrFresh(2, calls)}

    async def scenario() -> tuple[str, int]:
        conn = Connection(
            "b1:1,b2:1",
            stub_factory=lambda a: brokers[a],
            retry_backoff_ms=1,
            retry_backoff_max_ms=1,
        )
        loop = asyncio.get_running_loop()
        tries = 0

        async def produce() -> str:
            nonlocal tries
            tries += 1
            address = await conn.leader_address("t", 0, deadline=loop.time() + 5)
            if address == "b1:1":
                raise NotLeader("node 1 does not lead t/0")  # no hint: it does not know
            return address

        got = await conn.retry_call(produce, deadline=loop.time() + 5, topics=["t"], key=("t", 0))
        return got, tries

    got, tries = asyncio.run(scenario())
    assert got == "b2:1"
    assert tries == 2, (tries, calls)  # one NOT_LEADER, then the refresh asked b2
    assert calls == [1, 2]


def test_a_metadata_refresh_never_outlives_the_callers_deadline() -> None:
    """A refresh triggered by a retriable error asks with the operation's remaining time, not
    a whole request timeout (30 s by default): a paused broker it rotated to would otherwise
    hold a produce far past its delivery deadline (fresh-eye review)."""
    from client.errors import LeaderNotAvailable

    timeouts: list[float] = []

    class Recording(OneBroker):
        async def Metadata(self, request: pb.MetadataRequest, timeout: Any = None) -> Any:
            timeouts.append(timeout)
            return await super().Metadata(request, timeout)

    async def scenario() -> None:
        conn = Connection("b1:1", stub_factory=lambda a: Recording(), request_timeout_s=30.0)
        loop = asyncio.get_running_loop()
        await conn.on_retriable_error(
            LeaderNotAvailable("election"), ["t"], ("t", 0), deadline=loop.time() + 0.5
        )
        await conn.refresh_metadata(["t"])  # no deadline: the request timeout

    asyncio.run(scenario())
    assert len(timeouts) == 2 and 0 < timeouts[0] <= 0.5 and timeouts[1] == 30.0, timeouts
