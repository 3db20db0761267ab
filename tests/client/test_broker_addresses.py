"""Per-broker address overrides (issue 14: "the client accepts per-broker address overrides, as
the broker does"): a broker the metadata advertises at A is dialed at its override."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from client.config import AdminConfig, ConsumerConfig, ProducerConfig
from client.connection import Connection
from client.errors import ConfigError
from wire import replog_pb2 as pb


class Broker:
    """Every stub the client makes is this one broker; ``dialed`` records the addresses."""

    def __init__(self) -> None:
        self.dialed: list[str] = []

    def factory(self, address: str) -> Broker:
        self.dialed.append(address)
        return self

    async def Metadata(self, request: pb.MetadataRequest, timeout: Any = None) -> Any:
        return pb.MetadataResponse(
            brokers=[pb.Broker(id=1, address="b1:1"), pb.Broker(id=2, address="b2:2")],
            topics=[
                pb.TopicMetadata(name="t", partitions=[pb.PartitionMetadata(partition=0, leader=2)])
            ],
        )


def test_advertised_addresses_are_dialed_at_their_overrides() -> None:
    broker = Broker()

    async def scenario() -> None:
        conn = Connection(
            "proxy-for-1:7001",
            stub_factory=broker.factory,
            broker_addresses={2: "proxy-for-2:7002"},
        )
        loop = asyncio.get_running_loop()
        leader = await conn.leader_address("t", 0, deadline=loop.time() + 5)
        assert leader == "b2:2"  # the cache keeps the advertised address...
        conn.stub(leader)
        conn.stub("b1:1")  # no override for broker 1: dialed as advertised

    asyncio.run(scenario())
    assert broker.dialed == ["proxy-for-1:7001", "proxy-for-2:7002", "b1:1"]


def test_a_stub_made_before_the_override_was_known_is_replaced() -> None:
    """A NOT_LEADER hint names a broker before any metadata listed it: the stub made for its
    advertised address must not keep bypassing the proxy once the hint names its id."""
    broker = Broker()

    async def scenario() -> None:
        conn = Connection("boot:1", stub_factory=broker.factory, broker_addresses={2: "px:2"})
        conn.stub("b2:2")
        conn.note_leader("t", 0, 2, "b2:2")
        conn.stub("b2:2")

    asyncio.run(scenario())
    assert broker.dialed == ["b2:2", "px:2"]


@pytest.mark.parametrize("config", [ProducerConfig, ConsumerConfig, AdminConfig])
@pytest.mark.parametrize(
    "bad", [{0: "h:1"}, {1: "no-port"}, {1: "h:port"}, {"1": "h:1"}, {True: "h:1"}, {1: 5}]
)
def test_bad_overrides_are_refused_at_construction(config: Any, bad: Any) -> None:
    with pytest.raises(ConfigError, match="broker_addresses"):
        config(broker_addresses=bad)


def test_overrides_reach_the_connection() -> None:
    from client.admin import AdminClient

    async def scenario() -> dict[int, str]:
        admin = AdminClient("h:1", AdminConfig(broker_addresses={3: "p:3"}))
        try:
            return admin._conn._overrides
        finally:
            await admin.close()

    assert asyncio.run(scenario()) == {3: "p:3"}
