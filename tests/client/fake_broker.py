"""An in-process fake replog cluster for client tests: no Raft, no disk, one shared memory log.

It speaks the real wire contract (proto/replog.proto over grpc.aio, errors as status +
``replog-error-bin`` trailing metadata) so the client's conversion, retry and failover logic
runs for real, but everything behind it is a dictionary:

- ``nodes`` brokers, each its own grpc.aio server on 127.0.0.1 (so "the leader moved" means a
  different address), all sharing one ``FakeCluster`` state;
- each partition has a leader; Produce/Fetch/ListOffsets on another node answer NOT_LEADER with
  the leader's id and address; offsets are assigned like the real broker (base offset stamped
  into the stored batch), and idempotent producers are deduplicated by (producer id, sequence);
- faults: ``inject(method, code, ...)`` fails the next calls (optionally *after* appending, as
  when an acknowledgement is lost), ``move_leader`` moves a partition's leadership (and ends
  open fetch streams with NOT_LEADER), ``break_fetch_streams`` ends them with a bare
  UNAVAILABLE, clearing ``partition(...).producers`` drops producer state (as a broker that
  lost it);
  a Produce fault may target one batch (``sequence=``) and may hold its acknowledgement until
  the partition's next append (``delay_ack=True``: acknowledgements arrive out of order);
- like the real broker (partition/producers.py), a duplicate of any of the producer's last
  ``RECENT_BATCHES`` batches is answered with the original offsets (``duplicate=true``), a
  higher epoch starts a session at base sequence 0 and a lower one is ``PRODUCER_FENCED``;
  ``produce_requests`` keeps every batch a leader received, and ``deliver_late`` hands one to
  the decision again, as a delayed network copy arriving now;
- ``InProcessCluster`` serves the same nodes through a ``stub_factory`` on the caller's event
  loop: no thread, no socket, no grpc channel (what the system simulation does with the real
  broker);
- ``produce_barrier(topic, n)`` holds the next ``n`` Produce requests of a topic until all
  ``n`` have arrived, then processes them in arrival order; ``max_concurrent_produce`` records
  the most Produce requests ever in progress at once per (topic, partition).

The cluster runs on its own event loop in a background thread (``with FakeBroker() as fb``), so
tests can drive the client with ``asyncio.run`` and the CLI's own ``asyncio.run`` in-process.
Mutating helpers are thread-safe: they run on the fake's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from wire import replog_pb2 as pb
from wire import replog_pb2_grpc as pb_grpc
from wire.batch import read_header, with_base_offset

T = TypeVar("T")
RECENT_BATCHES = 5  # the broker's per-producer deduplication window (Kafka's 5)
RETRIABLE = {"NOT_LEADER", "LEADER_NOT_AVAILABLE", "REQUEST_TIMED_OUT", "OUT_OF_ORDER_SEQUENCE"}


class Abort(Exception):
    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        status: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION,
        leader_id: int = 0,
        leader_address: str = "",
        fields: dict[str, str] | None = None,
        bare: bool = False,
    ) -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message or f"fake broker says {code}"
        self.status = status
        self.leader_id = leader_id
        self.leader_address = leader_address
        self.fields = fields or {}
        self.bare = bare  # no ErrorDetail: a transport-level failure

    async def send(self, context: grpc.aio.ServicerContext) -> None:
        if self.bare:
            await context.abort(self.status, self.message)
        detail = pb.ErrorDetail(
            code=self.code,
            message=self.message,
            retriable=self.code in RETRIABLE,
            hint="fake hint",
            leader_id=self.leader_id,
            leader_address=self.leader_address,
            fields=self.fields,
        )
        await context.abort(
            self.status,
            self.message,
            trailing_metadata=(("replog-error-bin", detail.SerializeToString()),),
        )


@dataclass
class Fault:
    method: str
    code: str
    times: int
    after_append: bool = False
    move_leader_to: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    bare_status: grpc.StatusCode | None = None
    topic: str | None = None
    sequence: int | None = None  # Produce only: match only the batch with this base sequence
    # after_append only: answer normally, once the partition's next append happened (or after
    # delay_ack_max_s, as the next batch may be waiting for this very answer)
    delay_ack: bool = False
    delay_ack_max_s: float = 0.5
    # Produce only: answer this instead of deciding, and append nothing (a broker that reports
    # a rejected batch as a success - what #12 defect 8's broker did with acks=leader)
    answer: pb.ProduceResponse | None = None


class Answer(Exception):
    """Internal: a fault that answers instead of failing."""

    def __init__(self, response: Any) -> None:
        super().__init__("injected answer")
        self.response = response


@dataclass
class Barrier:
    count: int
    timeout_s: float = 5.0  # then it lets the waiting requests through and says timed_out
    waiting: list[asyncio.Future[None]] = field(default_factory=list)
    reached: bool = False
    timed_out: bool = False

    def release(self) -> None:
        for waiter in self.waiting:  # in arrival order; each task resumes in this order
            if not waiter.done():
                waiter.set_result(None)


@dataclass
class ProducerState:
    epoch: int
    last_sequence: int
    last_count: int
    base_offset: int
    last_offset: int
    # (base sequence, base offset, last offset) of the last RECENT_BATCHES batches, oldest first
    recent: list[tuple[int, int, int]] = field(default_factory=list)


@dataclass
class FakePartition:
    leader: int
    replicas: list[int]
    batches: list[bytes] = field(default_factory=list)
    base_offsets: list[int] = field(default_factory=list)
    next_offset: int = 0
    log_start_offset: int = 0
    producers: dict[int, ProducerState] = field(default_factory=dict)
    leader_epoch: int = 0
    stream_epoch: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # The leader's high watermark trails its log end by this many offsets (a new leader before
    # its first entry commits). Fetches between the two are answered empty, as the real broker
    # does - or OFFSET_OUT_OF_RANGE when ``out_of_range_above_hw`` (the broker before #12 d7).
    hw_lag: int = 0
    out_of_range_above_hw: bool = False
    out_of_range_answers: int = 0

    @property
    def high_watermark(self) -> int:
        return max(self.log_start_offset, self.next_offset - self.hw_lag)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


@dataclass
class FakeTopic:
    name: str
    topic_id: int
    partitions: list[FakePartition]
    replication_factor: int
    config: dict[str, str]


class FakeCluster:
    """Shared state of every fake node. Touch only from the fake's loop (see FakeBroker)."""

    def __init__(self, nodes: int) -> None:
        self.node_ids = list(range(1, nodes + 1))
        self.addresses: dict[int, str] = {}
        self.topics: dict[str, FakeTopic] = {}
        self.faults: list[Fault] = []
        self.next_producer_id = 1000
        self.initial_producer_epoch = 0  # what InitProducerId hands out with a new id
        self.calls: list[tuple[int, str]] = []  # (node, method) of every call
        self.produce_outcomes: list[tuple[int, int, int, str]] = []  # (node, pid, seq, outcome)
        self.produce_requests: list[tuple[str, int, bytes]] = []  # every batch a leader received
        self.metadata_term = 3
        self.barriers: dict[str, Barrier] = {}
        self.active_produce: dict[tuple[str, int], int] = {}
        self.max_concurrent_produce: dict[tuple[str, int], int] = {}
        self._topic_ids = 1

    # ---- helpers used by tests (on the fake loop)

    def create_topic(self, name: str, partitions: int, replicas: int = 1) -> FakeTopic:
        if name in self.topics:
            raise Abort("TOPIC_EXISTS", f"topic {name!r} exists")
        if replicas > len(self.node_ids):
            raise Abort("NOT_ENOUGH_BROKERS", f"{replicas} replicas but {len(self.node_ids)} nodes")
        parts = []
        for i in range(partitions):
            reps = [self.node_ids[(i + k) % len(self.node_ids)] for k in range(replicas)]
            parts.append(FakePartition(leader=reps[0], replicas=reps))
        topic = FakeTopic(name, self._topic_ids, parts, replicas, {})
        self._topic_ids += 1
        self.topics[name] = topic
        return topic

    def partition(self, topic: str, partition: int) -> FakePartition:
        t = self.topics.get(topic)
        if t is None:
            raise Abort("UNKNOWN_TOPIC", f"topic {topic!r} does not exist")
        if not 0 <= partition < len(t.partitions):
            raise Abort("UNKNOWN_PARTITION", f"{topic} has {len(t.partitions)} partitions")
        return t.partitions[partition]

    def move_leader(self, topic: str, partition: int, to_node: int) -> None:
        p = self.partition(topic, partition)
        p.leader = to_node
        p.leader_epoch += 1
        p.notify()

    def break_fetch_streams(self, topic: str, partition: int) -> None:
        p = self.partition(topic, partition)
        p.stream_epoch += 1
        p.notify()

    def records_in(self, topic: str, partition: int) -> list[tuple[int, bytes]]:
        """(offset, value) of every stored record (decoding each batch)."""
        from wire.batch import decode

        out: list[tuple[int, bytes]] = []
        for raw in self.partition(topic, partition).batches:
            _, records = decode(raw)
            out.extend((r.offset, r.value or b"") for r in records)
        return out

    def append_raw(self, topic: str, partition: int, batch: bytes) -> tuple[int, int]:
        p = self.partition(topic, partition)
        header = read_header(batch)
        base = p.next_offset
        p.batches.append(with_base_offset(batch, base))
        p.base_offsets.append(base)
        p.next_offset = base + header.last_offset_delta + 1
        p.notify()
        return base, p.next_offset - 1

    def decide_produce(
        self, topic: str, partition: int, batch: bytes, *, node_id: int = 0
    ) -> tuple[pb.ProduceResponse, str]:
        """The broker's idempotence decision for one batch (partition/producers.py's rules):
        unknown producer or a higher epoch starts a session at base sequence 0; a lower epoch
        is PRODUCER_FENCED; in the same epoch a recent batch is a duplicate (original offsets)
        and anything but the next sequence is OUT_OF_ORDER_SEQUENCE. Raises Abort; returns
        (response, "appended" | "duplicate"). Also the entry point for a delayed copy of an
        old request (``deliver_late``), which never went through a node."""
        p = self.partition(topic, partition)
        header = read_header(batch)
        pid, epoch, seq = header.producer_id, header.producer_epoch, header.base_sequence
        state = p.producers.get(pid) if pid >= 0 else None
        if pid >= 0:
            if state is not None and epoch < state.epoch:
                self.produce_outcomes.append((node_id, pid, seq, "fenced"))
                raise Abort(
                    "PRODUCER_FENCED",
                    f"producer {pid} epoch {epoch} is fenced by epoch {state.epoch}",
                    fields={"epoch": str(epoch), "current_epoch": str(state.epoch)},
                )
            if state is None or epoch > state.epoch:
                expected = 0
                recent: list[tuple[int, int, int]] = []
            else:
                recent = state.recent
                expected = state.last_sequence + state.last_count
            for recent_seq, recent_base, recent_last in recent:
                if seq == recent_seq:
                    self.produce_outcomes.append((node_id, pid, seq, "duplicate"))
                    response = pb.ProduceResponse(
                        base_offset=recent_base,
                        last_offset=recent_last,
                        log_start_offset=p.log_start_offset,
                        duplicate=True,
                    )
                    return response, "duplicate"
            if seq != expected:
                self.produce_outcomes.append((node_id, pid, seq, "out_of_order"))
                raise Abort(
                    "OUT_OF_ORDER_SEQUENCE",
                    f"expected sequence {expected}, got {seq}",
                    fields={"expected": str(expected), "got": str(seq)},
                )
        base, last = self.append_raw(topic, partition, batch)
        if pid >= 0:
            recent = [*recent, (seq, base, last)]
            p.producers[pid] = ProducerState(
                epoch, seq, header.record_count, base, last, recent[-RECENT_BATCHES:]
            )
        self.produce_outcomes.append((node_id, pid, seq, "appended"))
        response = pb.ProduceResponse(
            base_offset=base, last_offset=last, log_start_offset=p.log_start_offset
        )
        return response, "appended"

    def deliver_late(self, topic: str, partition: int, batch: bytes) -> str:
        """A delayed network copy of an old Produce request reaches the leader now: the
        outcome ("appended", "duplicate", "fenced", "out_of_order")."""
        try:
            return self.decide_produce(topic, partition, batch)[1]
        except Abort as abort:
            return {"PRODUCER_FENCED": "fenced", "OUT_OF_ORDER_SEQUENCE": "out_of_order"}[
                abort.code
            ]

    def truncate_before(self, topic: str, partition: int, offset: int) -> None:
        """Drop whole batches that end before ``offset`` (retention)."""
        p = self.partition(topic, partition)
        while p.batches and read_header(p.batches[0]).next_offset <= offset:
            p.batches.pop(0)
            p.base_offsets.pop(0)
        p.log_start_offset = p.base_offsets[0] if p.base_offsets else p.next_offset

    # ---- concurrency

    def produce_barrier(self, topic: str, count: int, timeout_s: float = 5.0) -> Barrier:
        barrier = Barrier(count, timeout_s)
        self.barriers[topic] = barrier
        return barrier

    async def pass_barrier(self, topic: str) -> None:
        """Hold this Produce until the topic's barrier is full (then all go, in arrival order)."""
        barrier = self.barriers.get(topic)
        if barrier is None:
            return
        loop = asyncio.get_running_loop()
        if len(barrier.waiting) + 1 >= barrier.count:
            del self.barriers[topic]
            barrier.reached = True
            barrier.release()
            await asyncio.sleep(0)  # queue behind the earlier arrivals: arrival order holds
            return
        waiter: asyncio.Future[None] = loop.create_future()
        barrier.waiting.append(waiter)
        if len(barrier.waiting) == 1:

            def give_up() -> None:  # never hang a test: release and report it instead
                if not barrier.reached:
                    barrier.timed_out = True
                    self.barriers.pop(topic, None)
                    barrier.release()

            loop.call_later(barrier.timeout_s, give_up)
        await waiter

    # ---- faults

    def inject(self, method: str, code: str, times: int = 1, **kwargs: Any) -> None:
        self.faults.append(Fault(method, code, times, **kwargs))

    def take_fault(
        self, method: str, topic: str | None, *, after_append: bool, sequence: int | None = None
    ) -> Fault | None:
        for fault in self.faults:
            if fault.method != method or fault.after_append != after_append:
                continue
            if fault.topic is not None and fault.topic != topic:
                continue
            if fault.sequence is not None and fault.sequence != sequence:
                continue
            fault.times -= 1
            if fault.times <= 0:
                self.faults.remove(fault)
            return fault
        return None

    def raise_fault(self, fault: Fault, topic: str, partition: int) -> None:
        if fault.answer is not None:
            raise Answer(fault.answer)
        if fault.move_leader_to:
            self.move_leader(topic, partition, fault.move_leader_to)
        if fault.bare_status is not None:
            raise Abort(
                fault.code, "injected transport failure", status=fault.bare_status, bare=True
            )
        leader_id = 0
        leader_address = ""
        if fault.code == "NOT_LEADER" and topic in self.topics:
            leader_id = self.partition(topic, partition).leader
            leader_address = self.addresses[leader_id]
        raise Abort(
            fault.code,
            f"injected {fault.code}",
            leader_id=leader_id,
            leader_address=leader_address,
            fields=dict(fault.fields),
        )

    def check_leader(self, node_id: int, topic: str, partition: int) -> FakePartition:
        p = self.partition(topic, partition)
        if p.leader != node_id:
            raise Abort(
                "NOT_LEADER",
                f"node {node_id} does not lead {topic}/{partition}",
                leader_id=p.leader,
                leader_address=self.addresses.get(p.leader, ""),
            )
        return p

    def read(self, p: FakePartition, offset: int, max_bytes: int) -> tuple[bytes, int]:
        """Whole batches from the one containing ``offset``; at least one; (bytes, next)."""
        out: list[bytes] = []
        size = 0
        next_offset = offset
        for base, raw in zip(p.base_offsets, p.batches):
            header = read_header(raw)
            if header.next_offset <= offset:
                continue
            if header.next_offset > p.high_watermark:
                break  # not committed yet
            if out and size + len(raw) > max_bytes:
                break
            out.append(raw)
            size += len(raw)
            next_offset = header.next_offset
            del base
        return b"".join(out), next_offset

    def topic_metadata(self, topic: FakeTopic) -> pb.TopicMetadata:
        return pb.TopicMetadata(
            name=topic.name,
            topic_id=topic.topic_id,
            replication_factor=topic.replication_factor,
            config=topic.config,
            partitions=[
                pb.PartitionMetadata(
                    partition=i,
                    leader=p.leader,
                    replicas=p.replicas,
                    group_id=topic.topic_id * 1000 + i,
                    leader_term=p.leader_epoch + 1,
                )
                for i, p in enumerate(topic.partitions)
            ],
        )

    def brokers(self) -> list[pb.Broker]:
        return [
            pb.Broker(id=n, address=self.addresses[n], dc=f"dc{n}", rack="r1", alive=True)
            for n in self.node_ids
        ]


class FakeNode(pb_grpc.ReplogServicer):
    """One broker's gRPC face over the shared FakeCluster."""

    def __init__(self, cluster: FakeCluster, node_id: int) -> None:
        self.cluster = cluster
        self.node_id = node_id

    def _enter(
        self, method: str, topic: str = "", partition: int = 0, sequence: int | None = None
    ) -> None:
        self.cluster.calls.append((self.node_id, method))
        fault = self.cluster.take_fault(
            method, topic or None, after_append=False, sequence=sequence
        )
        if fault is not None:
            self.cluster.raise_fault(fault, topic, partition)

    async def _unary(self, context: grpc.aio.ServicerContext, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Abort as abort:
            await abort.send(context)
            raise AssertionError("unreachable") from None

    async def Produce(self, request: pb.ProduceRequest, context: Any) -> pb.ProduceResponse:
        c = self.cluster
        key = (request.topic, request.partition)
        c.active_produce[key] = c.active_produce.get(key, 0) + 1
        c.max_concurrent_produce[key] = max(
            c.max_concurrent_produce.get(key, 0), c.active_produce[key]
        )
        try:
            await c.pass_barrier(request.topic)
            delay: tuple[asyncio.Event, float] | None = None

            def produce() -> pb.ProduceResponse:
                nonlocal delay
                header = read_header(request.batch)
                try:
                    self._enter("Produce", request.topic, request.partition, header.base_sequence)
                except Answer as answer:
                    response: pb.ProduceResponse = answer.response
                    return response
                c.check_leader(self.node_id, request.topic, request.partition)
                c.produce_requests.append((request.topic, request.partition, request.batch))
                response, outcome = c.decide_produce(
                    request.topic, request.partition, request.batch, node_id=self.node_id
                )
                if outcome != "appended":
                    return response
                p = c.partition(request.topic, request.partition)
                seq = header.base_sequence
                fault = c.take_fault("Produce", request.topic, after_append=True, sequence=seq)
                if fault is not None and fault.delay_ack:
                    delay = p.changed, fault.delay_ack_max_s  # set by the next append
                elif fault is not None:
                    c.raise_fault(fault, request.topic, request.partition)
                return response

            response = await self._unary(context, produce)
            if delay is not None:
                try:
                    await asyncio.wait_for(delay[0].wait(), delay[1])
                except TimeoutError:
                    pass
            return response
        finally:
            c.active_produce[key] -= 1

    async def Fetch(
        self, request: pb.FetchRequest, context: Any
    ) -> AsyncIterator[pb.FetchResponse]:
        c = self.cluster
        try:
            self._enter("Fetch", request.topic, request.partition)
            p = c.check_leader(self.node_id, request.topic, request.partition)
            offset = request.offset
            end = p.high_watermark if p.out_of_range_above_hw else p.next_offset
            if not p.log_start_offset <= offset <= end:
                p.out_of_range_answers += 1
                raise Abort(
                    "OFFSET_OUT_OF_RANGE",
                    f"offset {offset} not in [{p.log_start_offset}, {end}]",
                    fields={
                        "requested": str(offset),
                        "start": str(p.log_start_offset),
                        "end": str(end),
                    },
                )
            leader_epoch, stream_epoch = p.leader_epoch, p.stream_epoch
            while True:
                if p.leader_epoch != leader_epoch:
                    c.check_leader(self.node_id, request.topic, request.partition)
                if p.stream_epoch != stream_epoch:
                    raise Abort(
                        "UNAVAILABLE",
                        "stream broken",
                        status=grpc.StatusCode.UNAVAILABLE,
                        bare=True,
                    )
                data, next_offset = c.read(p, offset, request.max_bytes or 1 << 20)
                if data:
                    yield pb.FetchResponse(
                        batches=data,
                        next_offset=next_offset,
                        high_watermark=p.high_watermark,
                        log_start_offset=p.log_start_offset,
                    )
                    offset = next_offset
                    if not request.follow:
                        return
                    continue
                changed = p.changed
                try:
                    await asyncio.wait_for(changed.wait(), (request.max_wait_ms or 500) / 1000)
                except TimeoutError:
                    if not request.follow:
                        yield pb.FetchResponse(
                            next_offset=offset,
                            high_watermark=p.high_watermark,
                            log_start_offset=p.log_start_offset,
                        )
                        return
        except Abort as abort:
            await abort.send(context)

    async def Metadata(self, request: pb.MetadataRequest, context: Any) -> pb.MetadataResponse:
        c = self.cluster

        def metadata() -> pb.MetadataResponse:
            self._enter("Metadata")
            names = list(request.topics) or list(c.topics)
            return pb.MetadataResponse(
                brokers=c.brokers(),
                topics=[c.topic_metadata(c.topics[n]) for n in names if n in c.topics],
                metadata_leader=c.node_ids[0],
                metadata_term=c.metadata_term,
                metadata_voters=c.node_ids,
                cluster_id="fake-cluster",
            )

        return await self._unary(context, metadata)

    async def CreateTopic(self, request: pb.CreateTopicRequest, context: Any) -> Any:
        c = self.cluster

        def create() -> pb.CreateTopicResponse:
            self._enter("CreateTopic", request.name)
            if not request.name or "/" in request.name:
                raise Abort("INVALID_TOPIC", f"bad topic name {request.name!r}")
            topic = c.create_topic(request.name, request.partitions, request.replication_factor)
            topic.config.update(request.config)
            return pb.CreateTopicResponse(topic=c.topic_metadata(topic))

        return await self._unary(context, create)

    async def DeleteTopic(self, request: pb.DeleteTopicRequest, context: Any) -> Any:
        c = self.cluster

        def delete() -> pb.DeleteTopicResponse:
            self._enter("DeleteTopic", request.name)
            if request.name not in c.topics:
                raise Abort("UNKNOWN_TOPIC", f"topic {request.name!r} does not exist")
            del c.topics[request.name]
            return pb.DeleteTopicResponse()

        return await self._unary(context, delete)

    async def DescribeTopic(self, request: pb.DescribeTopicRequest, context: Any) -> Any:
        c = self.cluster

        def describe() -> pb.DescribeTopicResponse:
            self._enter("DescribeTopic", request.name)
            if request.name not in c.topics:
                raise Abort("UNKNOWN_TOPIC", f"topic {request.name!r} does not exist")
            return pb.DescribeTopicResponse(topic=c.topic_metadata(c.topics[request.name]))

        return await self._unary(context, describe)

    async def ListTopics(self, request: pb.ListTopicsRequest, context: Any) -> Any:
        c = self.cluster

        def list_topics() -> pb.ListTopicsResponse:
            self._enter("ListTopics")
            return pb.ListTopicsResponse(topics=[c.topic_metadata(t) for t in c.topics.values()])

        return await self._unary(context, list_topics)

    async def DescribeCluster(self, request: pb.DescribeClusterRequest, context: Any) -> Any:
        c = self.cluster

        def describe() -> pb.DescribeClusterResponse:
            self._enter("DescribeCluster")
            return pb.DescribeClusterResponse(
                brokers=c.brokers(),
                metadata_leader=c.node_ids[0],
                metadata_term=c.metadata_term,
                metadata_voters=c.node_ids,
                cluster_id="fake-cluster",
            )

        return await self._unary(context, describe)

    async def ListOffsets(self, request: pb.ListOffsetsRequest, context: Any) -> Any:
        c = self.cluster

        def list_offsets() -> pb.ListOffsetsResponse:
            self._enter("ListOffsets", request.topic, request.partition)
            p = c.check_leader(self.node_id, request.topic, request.partition)
            return pb.ListOffsetsResponse(
                log_start_offset=p.log_start_offset,
                high_watermark=p.high_watermark,
                leader=p.leader,
                leader_term=p.leader_epoch + 1,
                log_end_offset=p.next_offset,
            )

        return await self._unary(context, list_offsets)

    async def TransferLeadership(self, request: pb.TransferLeadershipRequest, context: Any) -> Any:
        c = self.cluster

        def transfer() -> pb.TransferLeadershipResponse:
            self._enter("TransferLeadership", request.topic, request.partition)
            p = c.partition(request.topic, request.partition)
            target = request.to_node or next(n for n in p.replicas if n != p.leader)
            if target not in p.replicas:
                raise Abort("INVALID_REQUEST", f"node {target} is not a replica")
            c.move_leader(request.topic, request.partition, target)
            return pb.TransferLeadershipResponse(leader=target)

        return await self._unary(context, transfer)

    async def InitProducerId(self, request: pb.InitProducerIdRequest, context: Any) -> Any:
        c = self.cluster

        def init() -> pb.InitProducerIdResponse:
            self._enter("InitProducerId")
            c.next_producer_id += 1
            return pb.InitProducerIdResponse(
                producer_id=c.next_producer_id, producer_epoch=c.initial_producer_epoch
            )

        return await self._unary(context, init)


class FakeBroker:
    """Runs a FakeCluster of ``nodes`` gRPC servers on a background thread's event loop."""

    def __init__(self, nodes: int = 3) -> None:
        self.nodes = nodes
        self.cluster: FakeCluster | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def bootstrap(self) -> str:
        """Every node's address, comma-separated (what --bootstrap takes)."""
        assert self.cluster is not None
        return ",".join(self.cluster.addresses[n] for n in self.cluster.node_ids)

    def address(self, node_id: int) -> str:
        assert self.cluster is not None
        return self.cluster.addresses[node_id]

    def __enter__(self) -> FakeBroker:
        self._thread = threading.Thread(target=self._main, name="fake-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake broker did not start within 10 s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        assert self._thread is not None
        self._thread.join(10)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced to the test thread by __enter__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        cluster = FakeCluster(self.nodes)
        servers = []
        for node_id in cluster.node_ids:
            server = grpc.aio.server()
            pb_grpc.add_ReplogServicer_to_server(  # type: ignore[no-untyped-call]
                FakeNode(cluster, node_id), server
            )
            port = server.add_insecure_port("127.0.0.1:0")
            cluster.addresses[node_id] = f"127.0.0.1:{port}"
            await server.start()
            servers.append(server)
        self.cluster = cluster
        self._ready.set()
        await self._stop.wait()
        for server in servers:
            await server.stop(grace=None)

    def run(self, fn: Callable[[FakeCluster], T]) -> T:
        """Run ``fn(cluster)`` on the fake's loop and return its result (thread-safe)."""
        assert self._loop is not None and self.cluster is not None
        cluster = self.cluster
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                done.set_result(fn(cluster))
            except BaseException as exc:
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(call)
        return done.result(10)

    # conveniences
    def create_topic(self, name: str, partitions: int = 1, replicas: int = 3) -> None:
        self.run(lambda c: c.create_topic(name, partitions, replicas))

    def inject(self, method: str, code: str, times: int = 1, **kwargs: Any) -> None:
        self.run(lambda c: c.inject(method, code, times, **kwargs))

    def move_leader(self, topic: str, partition: int, to_node: int) -> None:
        self.run(lambda c: c.move_leader(topic, partition, to_node))

    def break_fetch_streams(self, topic: str, partition: int) -> None:
        self.run(lambda c: c.break_fetch_streams(topic, partition))

    def records(self, topic: str, partition: int) -> list[tuple[int, bytes]]:
        return self.run(lambda c: c.records_in(topic, partition))

    def leader(self, topic: str, partition: int) -> int:
        return self.run(lambda c: c.partition(topic, partition).leader)

    def produce_barrier(self, topic: str, count: int, timeout_s: float = 5.0) -> Barrier:
        return self.run(lambda c: c.produce_barrier(topic, count, timeout_s))

    def max_concurrent_produce(self, topic: str, partition: int) -> int:
        return self.run(lambda c: c.max_concurrent_produce.get((topic, partition), 0))


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll ``condition`` on the running loop until it holds; fail loudly after ``timeout_s`` of
    loop time (virtual on a virtual-time loop) instead of hanging."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened within {timeout_s} s: {what}")
        await asyncio.sleep(0.001)


def arun(coro: Any, timeout_s: float = 30.0) -> Any:
    """Run a client coroutine to completion on a fresh loop, failing loudly after timeout_s."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout_s)

    return asyncio.run(bounded())


_names = iter(range(1, 1 << 30))


def unique(prefix: str = "t") -> str:
    """A topic name no other test in this process uses."""
    return f"{prefix}-{next(_names)}"


# ---------------------------------------------------------------- in-process: no sockets at all


class _InProcessContext:
    """The part of ``grpc.aio.ServicerContext`` FakeNode uses: ``abort`` raises the very
    ``grpc.aio.AioRpcError`` a grpc client would see, so ``to_replog_error`` converts it."""

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: tuple[tuple[str, str | bytes], ...] = (),
    ) -> None:
        raise grpc.aio.AioRpcError(
            code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing_metadata), details
        )


_CONTEXT = _InProcessContext()
_CLOSING: set[asyncio.Task[None]] = set()


class _InProcessStream:
    """A server-streaming call: ``async for`` over the servicer's generator, and ``cancel()``."""

    def __init__(self, responses: AsyncIterator[Any]) -> None:
        self._responses = responses

    def __aiter__(self) -> _InProcessStream:
        return self

    async def __anext__(self) -> Any:
        return await self._responses.__anext__()

    def cancel(self) -> None:
        # Called once the client stopped iterating, so the generator is suspended or finished.
        aclose = getattr(self._responses, "aclose", None)
        if aclose is not None:
            task = asyncio.get_running_loop().create_task(aclose())
            _CLOSING.add(task)
            task.add_done_callback(_CLOSING.discard)


class InProcessStub:
    """``ReplogStub``'s methods, calling a FakeNode directly on the caller's event loop."""

    def __init__(self, node: FakeNode | None, address: str) -> None:
        self._node = node
        self._address = address

    def _unreachable(self) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            f"no fake node at {self._address}",
        )

    def __getattr__(self, method: str) -> Callable[..., Any]:
        async def unary(request: Any, timeout: float | None = None) -> Any:
            if self._node is None:
                raise self._unreachable()
            call = getattr(self._node, method)(request, _CONTEXT)
            try:
                return await asyncio.wait_for(call, timeout)
            except TimeoutError:
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(),
                    "Deadline Exceeded",
                ) from None

        return unary

    def Fetch(self, request: pb.FetchRequest, timeout: float | None = None) -> _InProcessStream:
        if self._node is None:
            error = self._unreachable()

            async def failing() -> AsyncIterator[Any]:
                raise error
                yield  # pragma: no cover

            return _InProcessStream(failing())
        return _InProcessStream(self._node.Fetch(request, _CONTEXT))


class InProcessCluster:
    """A FakeCluster served without sockets: pass ``stub_factory`` to Producer/Consumer/
    AdminClient and ``bootstrap`` as their bootstrap. Everything runs on the caller's loop
    (create it inside the test's coroutine), so tests need no threads and no grpc channel."""

    def __init__(self, nodes: int = 3) -> None:
        self.cluster = FakeCluster(nodes)
        self._nodes: dict[str, FakeNode] = {}
        for node_id in self.cluster.node_ids:
            address = f"fake-node-{node_id}:9400"
            self.cluster.addresses[node_id] = address
            self._nodes[address] = FakeNode(self.cluster, node_id)
        self.stubs_made: list[str] = []

    @property
    def bootstrap(self) -> str:
        return ",".join(self.cluster.addresses[n] for n in self.cluster.node_ids)

    def stub_factory(self, address: str) -> InProcessStub:
        self.stubs_made.append(address)
        return InProcessStub(self._nodes.get(address), address)
