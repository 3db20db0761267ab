"""The admin client: cluster, topics, partition offsets, leadership transfer.

Contract:
- Any broker answers admin calls (a broker forwards topic changes to the metadata leader), so
  every call goes to "any broker" and is retried on retriable errors - another broker is tried
  after a connection failure - with exponential back-off until ``operation_timeout_ms``.
- ``describe_topic`` also asks each partition's leader for its log start offset and high
  watermark (ListOffsets), following NOT_LEADER hints. A partition whose leader cannot be
  reached is reported with offsets ``None`` rather than failing the whole description.
- Results are frozen dataclasses, not protobuf objects: callers (the CLI, chaos checkers) never
  depend on the wire schema.

Never imports server/, metadata/, partition/ or raft/.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from client.config import AdminConfig
from client.connection import Connection, StubFactory, now_s
from client.errors import InvalidRequest, ReplogError, UnknownPartition
from client.verify import Verification, verify_partition
from wire import replog_pb2 as pb

__all__ = [
    "AdminClient",
    "BrokerInfo",
    "ClusterDescription",
    "PartitionDescription",
    "TopicDescription",
    "TopicInfo",
]

T = TypeVar("T")
# describe_topic waits at most this long for one partition's leader before reporting None.
_OFFSETS_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    id: int
    address: str
    dc: str
    rack: str
    alive: bool


@dataclass(frozen=True, slots=True)
class ClusterDescription:
    brokers: tuple[BrokerInfo, ...]
    metadata_leader: int  # 0 = unknown
    metadata_term: int
    metadata_voters: tuple[int, ...]
    cluster_id: str


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class PartitionDescription:
    partition: int
    leader: int  # 0 = unknown
    replicas: tuple[int, ...]
    log_start_offset: int | None  # None: the leader could not be asked
    high_watermark: int | None


@dataclass(frozen=True, slots=True)
class TopicDescription:
    name: str
    topic_id: int
    replication_factor: int
    config: Mapping[str, str]
    partitions: tuple[PartitionDescription, ...]


def _broker(b: pb.Broker) -> BrokerInfo:
    return BrokerInfo(id=b.id, address=b.address, dc=b.dc, rack=b.rack, alive=b.alive)


def _topic_info(t: pb.TopicMetadata) -> TopicInfo:
    return TopicInfo(
        name=t.name,
        partitions=len(t.partitions),
        replication_factor=t.replication_factor,
        config=dict(t.config),
    )


class AdminClient:
    """``async with AdminClient("127.0.0.1:9400") as admin: await admin.list_topics()``."""

    def __init__(
        self,
        bootstrap: str | Sequence[str] | None,
        config: AdminConfig | None = None,
        *,
        stub_factory: StubFactory | None = None,
        wall_clock_ms: Callable[[], int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``stub_factory``/``wall_clock_ms``/``rng``: the network, clock and randomness seams
        (see ``Connection``); the defaults are grpc.aio, the system clock, an unseeded RNG."""
        self.config = config or AdminConfig()
        self._conn = Connection(
            bootstrap,
            request_timeout_s=self.config.request_timeout_ms / 1000.0,
            retry_backoff_ms=self.config.retry_backoff_ms,
            retry_backoff_max_ms=self.config.retry_backoff_max_ms,
            stub_factory=stub_factory,
            wall_clock_ms=wall_clock_ms,
            rng=rng,
            broker_addresses=self.config.broker_addresses,
        )

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._conn.close()

    def _deadline(self) -> float:
        return now_s() + self.config.operation_timeout_ms / 1000.0

    async def _any(self, method: str, request: Any) -> Any:
        async def once() -> Any:
            return await self._conn.call(method, request)

        return await self._conn.retry_call(once, deadline=self._deadline())

    # ------------------------------------------------------------------ cluster

    async def describe_cluster(self) -> ClusterDescription:
        r: pb.DescribeClusterResponse = await self._any(
            "DescribeCluster", pb.DescribeClusterRequest()
        )
        return ClusterDescription(
            brokers=tuple(_broker(b) for b in r.brokers),
            metadata_leader=r.metadata_leader,
            metadata_term=r.metadata_term,
            metadata_voters=tuple(r.metadata_voters),
            cluster_id=r.cluster_id,
        )

    # ------------------------------------------------------------------ topics

    async def list_topics(self) -> list[TopicInfo]:
        r: pb.ListTopicsResponse = await self._any("ListTopics", pb.ListTopicsRequest())
        return sorted((_topic_info(t) for t in r.topics), key=lambda t: t.name)

    async def create_topic(
        self,
        name: str,
        partitions: int,
        replicas: int,
        config: Mapping[str, str] | None = None,
    ) -> TopicInfo:
        if partitions <= 0:
            raise InvalidRequest(f"--partitions must be at least 1, got {partitions}")
        if replicas <= 0:
            raise InvalidRequest(f"--replicas must be at least 1, got {replicas}")
        request = pb.CreateTopicRequest(
            name=name,
            partitions=partitions,
            replication_factor=replicas,
            config={str(k): str(v) for k, v in (config or {}).items()},
        )
        r: pb.CreateTopicResponse = await self._any("CreateTopic", request)
        return _topic_info(r.topic)

    async def delete_topic(self, name: str) -> None:
        await self._any("DeleteTopic", pb.DeleteTopicRequest(name=name))

    async def describe_topic(self, name: str) -> TopicDescription:
        r: pb.DescribeTopicResponse = await self._any(
            "DescribeTopic", pb.DescribeTopicRequest(name=name)
        )
        topic = r.topic
        await self._ensure_brokers()
        offsets = await asyncio.gather(
            *(self._offsets(name, p) for p in topic.partitions), return_exceptions=False
        )
        parts = tuple(
            PartitionDescription(
                partition=p.partition,
                leader=leader or p.leader,
                replicas=tuple(p.replicas),
                log_start_offset=start,
                high_watermark=hw,
            )
            for p, (start, hw, leader) in zip(topic.partitions, offsets)
        )
        return TopicDescription(
            name=topic.name,
            topic_id=topic.topic_id,
            replication_factor=topic.replication_factor,
            config=dict(topic.config),
            partitions=parts,
        )

    async def list_offsets(
        self,
        topic: str,
        partition: int,
        *,
        timeout_s: float | None = None,
        linearizable: bool = False,
    ) -> pb.ListOffsetsResponse:
        """The partition leader's log start, high watermark and log end (follows NOT_LEADER);
        retried up to ``timeout_s`` (default: operation_timeout_ms). ``linearizable``: the
        leader first confirms its leadership with a majority (ReadIndex) and answers once it
        has applied everything committed before the call, so the high watermark covers every
        acks=all append acknowledged before this call began (one more round trip to its followers)."""
        deadline = self._deadline()
        if timeout_s is not None:
            deadline = min(deadline, now_s() + timeout_s)

        async def ask() -> pb.ListOffsetsResponse:
            address = await self._conn.leader_address(topic, partition, deadline=deadline)
            response: pb.ListOffsetsResponse = await self._conn.call(
                "ListOffsets",
                pb.ListOffsetsRequest(topic=topic, partition=partition, linearizable=linearizable),
                address=address,
            )
            return response

        return await self._conn.retry_call(
            ask, deadline=deadline, topics=[topic], key=(topic, partition)
        )

    async def _offsets(
        self, topic: str, part: pb.PartitionMetadata
    ) -> tuple[int | None, int | None, int]:
        # Prefer the leader DescribeTopic named (saves a Metadata round trip).
        address = self._conn.address_of(part.leader)
        if address is not None:
            self._conn.note_leader(topic, part.partition, part.leader, address)
        try:
            r = await self.list_offsets(topic, part.partition, timeout_s=_OFFSETS_TIMEOUT_S)
        except ReplogError:
            return None, None, 0
        return r.log_start_offset, r.high_watermark, r.leader

    async def verify_partitions(
        self, topic: str, partition: int | None = None
    ) -> list[Verification]:
        """Compare every replica of ``topic``'s partitions (or of one) at equal offsets: each
        broker hosting a replica digests its committed batches; the first differing offset is
        reported (``client/verify.py``)."""
        r: pb.DescribeTopicResponse = await self._any(
            "DescribeTopic", pb.DescribeTopicRequest(name=topic)
        )
        await self._ensure_brokers()
        parts = [p for p in r.topic.partitions if partition is None or p.partition == partition]
        if partition is not None and not parts:
            raise UnknownPartition(
                f"topic {topic!r} has {len(r.topic.partitions)} partitions; "
                f"partition {partition} does not exist"
            )
        timeout_s = self.config.request_timeout_ms / 1000.0
        return [
            await verify_partition(
                self._conn, topic, p.partition, list(p.replicas), timeout_s=timeout_s
            )
            for p in parts
        ]

    async def _ensure_brokers(self) -> None:
        if not self._conn.brokers:
            await self._conn.retry_call(self._conn.refresh_metadata, deadline=self._deadline())

    # ------------------------------------------------------------------ leadership

    async def transfer_leadership(self, topic: str, partition: int, to_node: int = 0) -> int:
        """Ask the partition's group to hand leadership to ``to_node`` (0 = any caught-up
        voter); returns the leader the broker reports."""
        request = pb.TransferLeadershipRequest(topic=topic, partition=partition, to_node=to_node)
        r: pb.TransferLeadershipResponse = await self._any("TransferLeadership", request)
        return r.leader
