"""gRPC services: the client API (``Replog``) and broker-to-broker (``Peer``).

Owns: request validation, translating requests into broker operations and results into responses.
Every handler converts failures with server.errors.abort_with, so a malformed request gets a typed
error and the broker keeps serving; nothing here raises out of a handler unhandled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from metadata import commands as mcmd
from metadata.errors import MetadataError
from metadata.state import Topic
from raft.types import Role
from server.broker import most_caught_up_voter
from server.codec import MalformedPeerMessage, message_from_proto
from server.errors import BrokerError, abort_with, invalid_request, not_leader
from server.transport import PROTOCOL_VERSION
from wire import replog_pb2 as pb
from wire import replog_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from server.broker import Broker
    from server.partition_replica import PartitionReplica

MAX_FETCH_BYTES = 16 << 20
FORWARDED_KEY = "replog-forwarded"  # request metadata: already passed on by another broker
# Exceptions that mean a broker bug rather than a bad request: logged with a traceback.
_BUG_CLASSES = frozenset(
    {"KeyError", "AttributeError", "TypeError", "AssertionError", "IndexError", "NameError"}
)
DEFAULT_FETCH_BYTES = 1 << 20


def _now_ms() -> int:
    return int(time.time() * 1000)


def _handled(
    method: Callable[[ReplogService, Any, Any], Awaitable[Any]],
) -> Callable[[ReplogService, Any, Any], Awaitable[Any]]:
    """Every unary handler's error path: a typed gRPC error for any failure, never a crash."""

    @functools.wraps(method)
    async def handler(self: ReplogService, request: Any, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except Exception as exc:
            await self._fail(context, exc)
            raise AssertionError("unreachable: abort() raises") from exc

    return handler


class ReplogService(pb_grpc.ReplogServicer):
    def __init__(self, broker: Broker) -> None:
        self.b = broker

    async def _catch_up_metadata(self) -> None:
        """Before answering that a topic does not exist, make sure this replica has applied
        everything committed (a broker that just restarted replays its metadata log first)."""
        with contextlib.suppress(BrokerError):
            await self.b.metadata.barrier(timeout_s=3.0)

    async def _replica(self, topic: str, partition: int) -> PartitionReplica:
        try:
            return self.b.replica_for(topic, partition)
        except MetadataError:  # UnknownTopic: maybe not known *yet* here
            await self._catch_up_metadata()
            return self.b.replica_for(topic, partition)

    async def _fail(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        if not isinstance(exc, BrokerError) and type(exc).__name__ in _BUG_CLASSES:
            self.b.log.exception("request_failed", error=repr(exc))
        await abort_with(context, exc)

    # ------------------------------------------------------------------ produce / fetch
    @_handled
    async def Produce(self, request: pb.ProduceRequest, context: Any) -> pb.ProduceResponse:
        if not request.topic:
            raise invalid_request("produce request has no topic", "set the topic name")
        if request.partition < 0:
            raise invalid_request(
                f"partition {request.partition} is negative", "partitions count from 0"
            )
        if not request.batch:
            raise invalid_request("produce request has an empty batch", "send one record batch")
        replica = await self._replica(request.topic, request.partition)
        timeout_ms = request.timeout_ms or self.b.cfg.server.produce_timeout_ms
        res = await replica.produce(
            request.batch,
            acks_leader=request.acks == pb.ACKS_LEADER,
            timeout_s=timeout_ms / 1000,
        )
        return pb.ProduceResponse(
            base_offset=res.base_offset,
            last_offset=res.last_offset,
            log_start_offset=res.log_start_offset,
            duplicate=res.duplicate,
        )

    async def Fetch(
        self, request: pb.FetchRequest, context: Any
    ) -> AsyncIterator[pb.FetchResponse]:
        try:
            if request.partition < 0:
                raise invalid_request(
                    f"partition {request.partition} is negative", "partitions count from 0"
                )
            max_bytes = request.max_bytes or DEFAULT_FETCH_BYTES
            if max_bytes < 0:
                raise invalid_request(f"max_bytes {max_bytes} is negative", "use a positive size")
            max_bytes = min(max_bytes, MAX_FETCH_BYTES)
            max_wait_s = (request.max_wait_ms or self.b.cfg.server.fetch_max_wait_ms) / 1000
            replica = await self._replica(request.topic, request.partition)
            async for result in replica.fetch_stream(
                request.offset, max_bytes, max_wait_s, request.follow
            ):
                yield pb.FetchResponse(
                    batches=b"".join(result.batches),
                    next_offset=result.next_offset,
                    high_watermark=result.high_watermark,
                    log_start_offset=result.log_start_offset,
                )
        except Exception as exc:
            await self._fail(context, exc)

    # ------------------------------------------------------------------ metadata reads
    def _broker_msgs(self) -> list[pb.Broker]:
        state = self.b.metadata.state
        timeout = self.b.cfg.server.broker_session_timeout_ms
        live = set(state.live_brokers(_now_ms(), timeout))
        return [
            pb.Broker(
                id=b.node_id, address=b.address, dc=b.dc, rack=b.rack, alive=b.node_id in live
            )
            for b in sorted(state.brokers.values(), key=lambda x: x.node_id)
        ]

    def _topic_msg(self, t: Topic) -> pb.TopicMetadata:
        parts = []
        for a in t.assignments:
            leader, term = a.leader, a.leader_term
            local = self.b.partitions.get(a.group_id)
            if local is not None and local.leader_id and local.term >= term:
                leader, term = local.leader_id, local.term  # fresher than the last report
            parts.append(
                pb.PartitionMetadata(
                    partition=a.partition,
                    leader=leader,
                    replicas=list(a.replicas),
                    group_id=a.group_id,
                    leader_term=term,
                )
            )
        return pb.TopicMetadata(
            name=t.name,
            topic_id=t.topic_id,
            partitions=parts,
            replication_factor=t.replication_factor,
            config=dict(t.config),
        )

    def _cluster_fields(self) -> dict[str, Any]:
        md = self.b.metadata
        st = md.node.status()
        return {
            "metadata_leader": md.leader_id,
            "metadata_term": st.term,
            "metadata_voters": sorted(st.conf_state.voters),
            "cluster_id": self.b.cfg.node.cluster_id,
        }

    @_handled
    async def Metadata(self, request: pb.MetadataRequest, context: Any) -> pb.MetadataResponse:
        state = self.b.metadata.state
        names = list(request.topics) or sorted(state.topics)
        if any(n not in state.topics for n in names):
            await self._catch_up_metadata()
            state = self.b.metadata.state
        topics = [self._topic_msg(state.topic(n)) for n in names]
        return pb.MetadataResponse(
            brokers=self._broker_msgs(), topics=topics, **self._cluster_fields()
        )

    @_handled
    async def DescribeCluster(
        self, request: pb.DescribeClusterRequest, context: Any
    ) -> pb.DescribeClusterResponse:
        return pb.DescribeClusterResponse(brokers=self._broker_msgs(), **self._cluster_fields())

    @_handled
    async def ListTopics(
        self, request: pb.ListTopicsRequest, context: Any
    ) -> pb.ListTopicsResponse:
        await self.b.metadata.barrier()
        state = self.b.metadata.state
        return pb.ListTopicsResponse(
            topics=[self._topic_msg(state.topics[n]) for n in sorted(state.topics)]
        )

    @_handled
    async def DescribeTopic(
        self, request: pb.DescribeTopicRequest, context: Any
    ) -> pb.DescribeTopicResponse:
        await self.b.metadata.barrier()
        return pb.DescribeTopicResponse(
            topic=self._topic_msg(self.b.metadata.state.topic(request.name))
        )

    # ------------------------------------------------------------------ admin writes
    @_handled
    async def CreateTopic(
        self, request: pb.CreateTopicRequest, context: Any
    ) -> pb.CreateTopicResponse:
        state = self.b.metadata.state
        live = tuple(state.live_brokers(_now_ms(), self.b.cfg.server.broker_session_timeout_ms))
        await self.b.metadata.propose(
            mcmd.CreateTopic(
                request.name,
                request.partitions,
                request.replication_factor,
                dict(request.config),
                _now_ms(),
                live,
            )
        )
        await self._wait_for_leaders(request.name, timeout_s=10.0)
        return pb.CreateTopicResponse(
            topic=self._topic_msg(self.b.metadata.state.topic(request.name))
        )

    async def _wait_for_leaders(self, name: str, timeout_s: float) -> None:
        """Best effort: a created topic is answered once every partition reported a leader."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            t = self.b.metadata.state.topics.get(name)
            if t is None or all(a.leader for a in t.assignments):
                return
            await asyncio.sleep(0.02)

    @_handled
    async def DeleteTopic(
        self, request: pb.DeleteTopicRequest, context: Any
    ) -> pb.DeleteTopicResponse:
        await self.b.metadata.propose(mcmd.DeleteTopic(request.name))
        return pb.DeleteTopicResponse()

    @_handled
    async def InitProducerId(
        self, request: pb.InitProducerIdRequest, context: Any
    ) -> pb.InitProducerIdResponse:
        first = await self.b.metadata.propose(mcmd.AllocateProducerIds(1))
        return pb.InitProducerIdResponse(producer_id=int(first), producer_epoch=0)

    @_handled
    async def ListOffsets(
        self, request: pb.ListOffsetsRequest, context: Any
    ) -> pb.ListOffsetsResponse:
        replica = await self._replica(request.topic, request.partition)
        replica.ensure_leader()
        s = replica.state
        return pb.ListOffsetsResponse(
            log_start_offset=s.log_start_offset,
            high_watermark=s.high_watermark,
            leader=self.b.node_id,
            leader_term=replica.term,
            log_end_offset=s.next_offset(),
        )

    @_handled
    async def TransferLeadership(
        self, request: pb.TransferLeadershipRequest, context: Any
    ) -> pb.TransferLeadershipResponse:
        forwarded = any(k == FORWARDED_KEY for k, _v in context.invocation_metadata() or ())
        try:
            if request.topic:
                replica = await self._replica(request.topic, request.partition)
                node, group_id, what = replica.node, replica.group_id, replica.what
            else:
                md = self.b.metadata
                node, group_id, what = md.node, md.group_id, "the metadata group"
            st = node.status()
            if st.role != Role.LEADER:
                leader = st.leader_id
                raise not_leader(what, leader, self.b.advertised(leader) if leader else "")
        except BrokerError as exc:
            # Any broker accepts the request: pass it on to the leader once.
            if exc.code != "NOT_LEADER" or forwarded:
                raise
            return await self._forward_transfer(request, exc.leader_address)
        target = request.to_node
        voters = sorted(st.conf_state.voters)
        if target == 0:
            target = most_caught_up_voter(st, self.b.node_id)
            if not target:
                raise invalid_request(f"{what} has no other voter", "add replicas first")
        if target not in voters:
            raise invalid_request(
                f"node {target} is not a voter of {what} (voters: {voters})",
                "pick one of the voters",
            )
        if request.topic:
            # Make the target the preferred replica in the metadata first, so leader
            # priority keeps leadership there instead of handing it straight back.
            replicas = self.b.partitions[group_id].replicas
            if replicas and replicas[0] != target:
                order = (target, *[r for r in replicas if r != target])
                await self.b.metadata.propose(mcmd.SetReplicas(group_id, order))
        if target != self.b.node_id:
            node.transfer_leadership(target)
            self.b.runtime.touch(group_id)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5.0
            while loop.time() < deadline and node.status().leader_id != target:
                await asyncio.sleep(0.02)
        leader = node.status().leader_id
        if leader != target:
            raise BrokerError(
                "REQUEST_TIMED_OUT",
                f"leadership of {what} did not move to {target} (leader is {leader})",
                retriable=True,
                hint="the target may be lagging; retry",
                status=grpc.StatusCode.DEADLINE_EXCEEDED,
            )
        return pb.TransferLeadershipResponse(leader=leader)

    async def _forward_transfer(
        self, request: pb.TransferLeadershipRequest, address: str
    ) -> pb.TransferLeadershipResponse:
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                return await pb_grpc.ReplogStub(channel).TransferLeadership(
                    request, timeout=10.0, metadata=((FORWARDED_KEY, "1"),)
                )
            except grpc.aio.AioRpcError as exc:
                raise BrokerError(
                    "LEADER_NOT_AVAILABLE",
                    f"forwarding the transfer to the leader at {address} failed: {exc.details()}",
                    retriable=True,
                    hint="retry",
                    status=grpc.StatusCode.UNAVAILABLE,
                ) from None


class PeerService(pb_grpc.PeerServicer):
    def __init__(self, broker: Broker) -> None:
        self.b = broker

    async def Raft(self, request_iterator: Any, context: Any) -> pb.RaftBatchAck:
        runtime = self.b.runtime
        cluster_id = self.b.cfg.node.cluster_id
        loop = asyncio.get_running_loop()
        async for batch in request_iterator:
            if batch.cluster_id != cluster_id or batch.protocol_version != PROTOCOL_VERSION:
                self.b.log.warning(
                    "peer_refused",
                    from_node=batch.from_node,
                    cluster_id=batch.cluster_id,
                    protocol_version=batch.protocol_version,
                )
                await abort_with(
                    context,
                    BrokerError(
                        "CLUSTER_MISMATCH",
                        f"batch from cluster '{batch.cluster_id}' v{batch.protocol_version}; this "
                        f"is '{cluster_id}' v{PROTOCOL_VERSION}",
                        hint="check --voters / cluster_id of both brokers",
                    ),
                )
                return pb.RaftBatchAck()
            if batch.to_node != self.b.node_id:
                self.b.log.warning("peer_misrouted", from_node=batch.from_node, to=batch.to_node)
                continue
            runtime.on_peer_batch(batch.from_node, loop.time())
            for m in batch.messages:
                try:
                    msg = message_from_proto(m)
                except MalformedPeerMessage as exc:
                    self.b.log.warning("peer_message_malformed", error=str(exc))
                    continue
                try:
                    runtime.step(m.group_id, msg)
                except Exception as exc:  # a bug must not take the whole peer link down
                    self.b.log.exception(
                        "peer_message_failed", group_id=m.group_id, error=repr(exc)
                    )
            if batch.quiesced_groups:
                runtime.on_quiesce_notice(batch.from_node, batch.quiesced_groups)
        return pb.RaftBatchAck()

    async def ForwardMetadata(
        self, request: pb.ForwardMetadataRequest, context: Any
    ) -> pb.ForwardMetadataResponse:
        try:
            if request.cluster_id != self.b.cfg.node.cluster_id:
                raise BrokerError("CLUSTER_MISMATCH", f"cluster '{request.cluster_id}' is not ours")
            result = await self.b.metadata.handle_forwarded(
                request.command, timeout_s=5.0, hops=request.hops
            )
            return pb.ForwardMetadataResponse(result=result)
        except Exception as exc:
            await abort_with(context, exc)
            raise AssertionError("unreachable") from exc
