"""The workload of one seed: real Producer, Consumer and AdminClient objects on the simulation.

Contract: every client here is the production client class (client/), given the simulation's
seams (``cluster.client_seams(name)``: a stub factory over the simulated network, the virtual
wall clock, a seeded ``random.Random``). Every operation goes into the :class:`History` as an
invoke followed by ok / fail / info (see history.py). All choices come from the ``rng`` passed
in; nothing reads the real clock. The workload never judges results: checkers.py does.

What runs, mixed per seed (issue 13 "Workload"):

- topics created at the start (1-4 partitions, some with a small ``retention.bytes`` so
  retention cuts happen), more created mid-run (after a broker joined, placement may use it),
  and one "doomed" topic that producers write to and that is deleted under load;
- idempotent producers pipelining (``max_in_flight`` 1-5, small batches and linger) to many
  partitions with acks=all, and some producers with acks=leader (whose records need not
  survive a failover; checkers exempt them from "acknowledged records survive" only);
- consumers assigned to partitions, polling, sometimes seeking (to the start, or to an offset
  acknowledged with acks=all, which is committed and so can never be out of range);
- an admin process transferring leadership (AdminClient.transfer_leadership).

After the faults stop, :meth:`Workload.probe` sends one acks=all record to every partition of
every live topic and reads it back (the liveness check, within ``liveness_bound_s``), and
:meth:`Workload.final_reads` drains every partition from its log start to its high watermark.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from client import AdminClient, Consumer, Producer
from client.config import AdminConfig, ConsumerConfig, ProducerConfig
from client.errors import ReplogError, TopicExists
from tests.system_sim.history import Ack, History, Observation, PartitionRead, Send

__all__ = ["TopicPlan", "Workload", "WorkloadConfig"]

STALL_S = 3.0  # a drain read whose position has not moved for this long has read everything


class ClusterLike(Protocol):
    """What the workload needs of the cluster (cluster.SimCluster)."""

    def bootstrap(self) -> list[str]: ...
    def client_seams(self, name: str) -> dict[str, Any]: ...
    def broker_ids(self) -> list[int]: ...


@dataclass(frozen=True)
class WorkloadConfig:
    initial_topics: tuple[int, int] = (2, 3)
    partitions: tuple[int, int] = (1, 4)
    producers: tuple[int, int] = (1, 3)
    consumers: tuple[int, int] = (1, 2)
    value_bytes: tuple[int, int] = (0, 200)  # padding after the unique "<process>:<n>" prefix
    send_gap_s: float = 0.04  # mean pause between two sends of one producer
    leader_acks_share: float = 0.25  # chance a producer uses acks=leader
    retention_share: float = 0.35  # chance a topic gets a small retention.bytes
    retention_bytes: tuple[int, int] = (6_000, 20_000)
    doomed_topic_share: float = 0.6  # chance a seed deletes a topic under load
    mid_run_topics: tuple[int, int] = (0, 2)
    admin_gap_s: float = 1.5  # mean pause between two admin operations
    offsets_gap_s: float = 0.3  # mean pause between two linearizable ListOffsets
    poll_timeout_s: float = 0.2
    seek_share: float = 0.05  # chance per poll that a consumer seeks first
    delivery_timeout_ms: float = 15_000.0
    request_timeout_ms: float = 2_000.0
    liveness_bound_s: float = 30.0
    final_read_timeout_s: float = 30.0


@dataclass
class TopicPlan:
    name: str
    partitions: int
    config: dict[str, str]
    doomed: bool = False
    created: bool = False
    deleted: bool = False  # a delete was invoked

    @property
    def retention(self) -> bool:
        return "retention.bytes" in self.config


@dataclass
class _ProducerState:
    name: str
    acks: str
    max_in_flight: int
    producer: Producer
    sent: int = 0
    pending: set[asyncio.Future[Any]] = field(default_factory=set)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


class Workload:
    def __init__(
        self,
        cluster: ClusterLike,
        history: History,
        rng: random.Random,
        config: WorkloadConfig | None = None,
        *,
        replicas: int = 3,
    ) -> None:
        self.cluster = cluster
        self.history = history
        self.rng = rng
        self.cfg = config or WorkloadConfig()
        self.replicas = replicas
        self.topics: dict[str, TopicPlan] = {}
        self._topic_counter = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._producers: list[_ProducerState] = []
        self._consumers: list[Consumer] = []
        self._admin: AdminClient | None = None
        self._acked_all: dict[tuple[str, int], list[int]] = {}  # acks=all offsets, for seeks
        self.errors: list[str] = []

    # ---------------------------------------------------------------- helpers

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def _client_kwargs(self, name: str) -> dict[str, Any]:
        return dict(self.cluster.client_seams(name))

    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(
                self.cluster.bootstrap(),
                AdminConfig(
                    request_timeout_ms=self.cfg.request_timeout_ms, operation_timeout_ms=10_000.0
                ),
                **self._client_kwargs("admin"),
            )
        return self._admin

    def live_topics(self) -> list[TopicPlan]:
        return [t for t in self.topics.values() if t.created and not t.deleted]

    def _new_plan(self, *, doomed: bool = False, retention: bool = True) -> TopicPlan:
        name = f"t{self._topic_counter}"
        self._topic_counter += 1
        config: dict[str, str] = {}
        if retention and not doomed and self.rng.random() < self.cfg.retention_share:
            config["retention.bytes"] = str(self.rng.randint(*self.cfg.retention_bytes))
        plan = TopicPlan(name, self.rng.randint(*self.cfg.partitions), config, doomed=doomed)
        self.topics[name] = plan
        return plan

    async def create_topic(
        self,
        plan: TopicPlan,
        *,
        attempts: int = 10,
        process: str = "admin",
        deadline_s: float = 0.0,
    ) -> bool:
        """Creates ``plan``'s topic, retrying (``attempts`` times, or until ``deadline_s``
        virtual seconds from now when given)."""
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + deadline_s if deadline_s else None
        value = (plan.name, plan.partitions, self.replicas, tuple(sorted(plan.config.items())))
        self.history.invoke(process, "create_topic", value, self.now())
        last = ""
        tries = 0
        while True:
            tries += 1
            try:
                await self.admin().create_topic(
                    plan.name, plan.partitions, self.replicas, plan.config
                )
            except TopicExists:
                pass  # an earlier attempt went through
            except ReplogError as exc:
                last = _error(exc)
                out_of_time = stop_at is not None and loop.time() + 0.5 >= stop_at
                if out_of_time or (stop_at is None and tries >= attempts):
                    break
                await asyncio.sleep(0.5)
                continue
            plan.created = True
            self.history.ok(process, "create_topic", value, self.now())
            return True
        self.history.info(process, "create_topic", (value, last), self.now())
        return False

    # ---------------------------------------------------------------- phases

    async def setup(self) -> None:
        """Creates the initial topics (and the doomed one)."""
        for _ in range(self.rng.randint(*self.cfg.initial_topics)):
            await self.create_topic(self._new_plan())
        if self.rng.random() < self.cfg.doomed_topic_share:
            await self.create_topic(self._new_plan(doomed=True))

    def start(self, fault_s: float) -> None:
        """Starts the producers, consumers and the admin process (they run until ``stop``)."""
        loop = asyncio.get_running_loop()
        for i in range(self.rng.randint(*self.cfg.producers)):
            acks = "leader" if self.rng.random() < self.cfg.leader_acks_share else "all"
            max_in_flight = self.rng.randint(1, 5)
            state = _ProducerState(
                f"producer-{i}",
                acks,
                max_in_flight,
                Producer(
                    self.cluster.bootstrap(),
                    ProducerConfig(
                        acks=acks,
                        max_in_flight=max_in_flight,
                        linger_ms=self.rng.choice([0.0, 2.0, 10.0]),
                        batch_bytes=self.rng.choice([512, 2048, 8192]),
                        buffer_bytes=1 << 20,
                        delivery_timeout_ms=self.cfg.delivery_timeout_ms,
                        request_timeout_ms=self.cfg.request_timeout_ms,
                        metadata_timeout_ms=5_000.0,
                        retry_backoff_ms=20.0,
                        retry_backoff_max_ms=500.0,
                    ),
                    **self._client_kwargs(f"producer-{i}"),
                ),
            )
            self._producers.append(state)
            self._tasks.append(loop.create_task(self._run_producer(state), name=state.name))
        readable = [t for t in self.live_topics() if not t.doomed]
        for i in range(self.rng.randint(*self.cfg.consumers)):
            if not readable:
                break
            chosen = self.rng.sample(readable, k=min(len(readable), self.rng.randint(1, 2)))
            parts = [(t.name, p) for t in chosen for p in range(t.partitions)]
            # Retention topics reset to the earliest offset (a position below the log start is
            # legal there); elsewhere a reset to "latest" would show up as a skip (#12 defect 7).
            retention = any(t.retention for t in chosen)
            reset = "earliest" if retention else self.rng.choice(["earliest", "latest"])
            name = f"consumer-{i}"
            consumer = Consumer(
                self.cluster.bootstrap(),
                ConsumerConfig(
                    auto_offset_reset=reset,
                    max_wait_ms=self.rng.choice([50, 200]),
                    max_bytes=self.rng.choice([1024, 64 * 1024]),
                    request_timeout_ms=self.cfg.request_timeout_ms,
                    retry_backoff_ms=20.0,
                    retry_backoff_max_ms=500.0,
                ),
                **self._client_kwargs(name),
            )
            self._consumers.append(consumer)
            self._tasks.append(
                loop.create_task(self._run_consumer(name, consumer, parts), name=name)
            )
        self._tasks.append(loop.create_task(self._run_admin(fault_s), name="admin"))
        self._tasks.append(loop.create_task(self._run_offsets_reader(), name="offsets"))

    async def stop(self) -> None:
        """Stops every process at once: the loops end, producers flush and close (each bounded
        by its delivery timeout, all concurrently), consumers close."""
        self._stop.set()
        delivery_s = self.cfg.delivery_timeout_ms / 1000
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=delivery_s)
            for task in pending:
                task.cancel()
            for task in self._tasks:
                if task in pending or task.cancelled():
                    continue
                exc = task.exception()
                if exc is not None:
                    self.errors.append(f"workload task {task.get_name()} crashed: {_error(exc)}")

        async def close(name: str, client: Producer | Consumer, timeout_s: float) -> None:
            try:
                await asyncio.wait_for(client.close(), timeout_s)
            except TimeoutError:
                self.errors.append(f"{name} did not close within {timeout_s:.0f} s")
            except Exception as exc:
                self.errors.append(f"{name} close failed: {_error(exc)}")

        await asyncio.gather(
            *(close(p.name, p.producer, delivery_s + 5) for p in self._producers),
            *(close(f"consumer-{i}", c, 5.0) for i, c in enumerate(self._consumers)),
        )

    async def close(self) -> None:
        if self._admin is not None:
            try:
                await asyncio.wait_for(self._admin.close(), 5.0)
            except Exception:
                pass

    # ---------------------------------------------------------------- producers

    def _value(self, name: str, n: int) -> bytes:
        pad = self.rng.randint(*self.cfg.value_bytes)
        return f"{name}:{n}:".encode() + b"x" * pad

    async def _run_producer(self, state: _ProducerState) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(self.rng.expovariate(1 / self.cfg.send_gap_s))
            targets = self.live_topics()
            if not targets:
                continue
            plan = self.rng.choice(targets)
            partition = self.rng.randrange(plan.partitions)
            # Bursts: a few records at once so batches fill and pipeline.
            for _ in range(self.rng.choice([1, 1, 2, 5])):
                if self._stop.is_set():
                    break
                await self._send(state, plan.name, partition)

    async def _send(self, state: _ProducerState, topic: str, partition: int) -> None:
        value = self._value(state.name, state.sent)
        send = Send(topic, partition, value, state.acks, True, state.sent)
        state.sent += 1
        self.history.invoke(state.name, "send", send, self.now())
        try:
            future = await state.producer.send(topic, value, partition=partition)
        except Exception as exc:
            self.history.info(state.name, "send", (send, _error(exc)), self.now())
            return
        state.pending.add(future)

        def done(f: asyncio.Future[Any]) -> None:
            state.pending.discard(f)
            now = asyncio.get_running_loop().time()
            if f.cancelled():
                self.history.info(state.name, "send", (send, "cancelled"), now)
                return
            exc = f.exception()
            if exc is not None:
                self.history.info(state.name, "send", (send, _error(exc)), now)
                return
            md = f.result()
            self.history.ok(state.name, "send", (send, Ack(md.topic, md.partition, md.offset)), now)
            if send.acks == "all":
                self._acked_all.setdefault((md.topic, md.partition), []).append(md.offset)

        future.add_done_callback(done)

    # ---------------------------------------------------------------- consumers

    async def _run_consumer(
        self, name: str, consumer: Consumer, parts: list[tuple[str, int]]
    ) -> None:
        consumer.assign(parts)
        for topic, partition in parts:
            if self.rng.random() < 0.5:
                self._seek(name, consumer, topic, partition, 0)
        while not self._stop.is_set():
            if self.rng.random() < self.cfg.seek_share:
                topic, partition = self.rng.choice(parts)
                acked = self._acked_all.get((topic, partition))
                offset = self.rng.choice(acked) if acked and self.rng.random() < 0.7 else 0
                self._seek(name, consumer, topic, partition, offset)
            self.history.invoke(name, "poll", None, self.now())
            try:
                records = await consumer.poll(self.cfg.poll_timeout_s)
            except Exception as exc:
                self.history.info(name, "poll", _error(exc), self.now())
                await asyncio.sleep(0.1)
                continue
            obs = tuple(
                Observation(r.topic, r.partition, r.offset, r.value or b"") for r in records
            )
            self.history.ok(name, "poll", obs, self.now())

    def _seek(self, name: str, consumer: Consumer, topic: str, partition: int, offset: int) -> None:
        value = (topic, partition, offset)
        self.history.invoke(name, "seek", value, self.now())
        if offset == 0:
            consumer.seek_to_beginning([(topic, partition)])
        else:
            consumer.seek(topic, partition, offset)
        self.history.ok(name, "seek", value, self.now())

    # ---------------------------------------------------------------- admin

    async def _run_admin(self, fault_s: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        doomed = [t for t in self.topics.values() if t.doomed and t.created]
        delete_at = start + self.rng.uniform(0.2, 0.8) * fault_s if doomed else None
        to_create = self.rng.randint(*self.cfg.mid_run_topics)
        while not self._stop.is_set():
            await asyncio.sleep(self.rng.expovariate(1 / self.cfg.admin_gap_s))
            if self._stop.is_set():
                return
            if delete_at is not None and loop.time() >= delete_at:
                delete_at = None
                await self.delete_topic(doomed[0])
                continue
            roll = self.rng.random()
            if roll < 0.25 and to_create > 0:
                to_create -= 1
                await self.create_topic(self._new_plan(), attempts=3)
            elif roll < 0.8:
                await self.transfer_leadership()

    async def _run_offsets_reader(self) -> None:
        """Linearizable reads (``list_offsets(linearizable=True)``, a ReadIndex round on the
        partition leader) of random partitions all through the faults: checker (k) holds each
        answer to every acks=all append acknowledged before it was asked."""
        admin = AdminClient(
            self.cluster.bootstrap(),
            AdminConfig(
                request_timeout_ms=self.cfg.request_timeout_ms, operation_timeout_ms=5_000.0
            ),
            **self._client_kwargs("offsets-reader"),
        )
        try:
            while not self._stop.is_set():
                await asyncio.sleep(self.rng.expovariate(1 / self.cfg.offsets_gap_s))
                topics = self.live_topics()
                if self._stop.is_set() or not topics:
                    continue
                plan = self.rng.choice(topics)
                key = (plan.name, self.rng.randrange(plan.partitions))
                self.history.invoke("offsets-reader", "offsets", key, self.now())
                try:
                    r = await admin.list_offsets(*key, timeout_s=5.0, linearizable=True)
                except Exception as exc:
                    self.history.fail("offsets-reader", "offsets", _error(exc), self.now())
                    continue
                self.history.ok("offsets-reader", "offsets", r.high_watermark, self.now())
        finally:
            try:
                await asyncio.wait_for(admin.close(), 5.0)
            except Exception:
                pass

    async def delete_topic(self, plan: TopicPlan) -> None:
        plan.deleted = True
        self.history.invoke("admin", "delete_topic", plan.name, self.now())
        try:
            await self.admin().delete_topic(plan.name)
        except Exception as exc:
            self.history.info("admin", "delete_topic", plan.name, self.now())
            self.history.info("admin", "delete_error", _error(exc), self.now())
            return
        self.history.ok("admin", "delete_topic", plan.name, self.now())

    async def transfer_leadership(self) -> None:
        topics = self.live_topics()
        if not topics:
            return
        plan = self.rng.choice(topics)
        partition = self.rng.randrange(plan.partitions)
        brokers = self.cluster.broker_ids()
        to_node = self.rng.choice([0, *brokers])
        value = (plan.name, partition, to_node)
        self.history.invoke("admin", "transfer", value, self.now())
        try:
            leader = await self.admin().transfer_leadership(plan.name, partition, to_node)
        except Exception as exc:
            self.history.info("admin", "transfer", (value, _error(exc)), self.now())
            return
        self.history.ok("admin", "transfer", (value, leader), self.now())

    # ---------------------------------------------------------------- after the heal

    async def probe(self) -> None:
        """Liveness: one acks=all record per partition of every live topic, sent and read
        back within ``liveness_bound_s`` (all partitions probed concurrently)."""
        producer = Producer(
            self.cluster.bootstrap(),
            ProducerConfig(
                acks="all",
                linger_ms=0.0,
                delivery_timeout_ms=self.cfg.liveness_bound_s * 1000,
                request_timeout_ms=self.cfg.request_timeout_ms,
                metadata_timeout_ms=self.cfg.liveness_bound_s * 1000,
                retry_backoff_ms=20.0,
                retry_backoff_max_ms=500.0,
            ),
            **self._client_kwargs("probe"),
        )
        # A topic created after the heal: the cluster must still take metadata changes.
        plan = self._new_plan(retention=False)
        await self.create_topic(plan, process="probe", deadline_s=self.cfg.liveness_bound_s)
        targets = [(t.name, p) for t in self.live_topics() for p in range(t.partitions)]
        sends: list[Send] = []
        for i, (topic, partition) in enumerate(targets):
            sends.append(Send(topic, partition, f"probe:{i}".encode(), "all", True, i))
        try:
            await asyncio.gather(*(self._probe_one(producer, s) for s in sends))
        finally:
            try:
                await asyncio.wait_for(producer.close(), 5.0)
            except Exception:
                pass

    async def _probe_one(self, producer: Producer, send: Send) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.liveness_bound_s
        self.history.invoke("probe", "probe", send, self.now())
        try:
            md = await asyncio.wait_for(
                producer.send_and_wait(send.topic, send.value, partition=send.partition),
                self.cfg.liveness_bound_s,
            )
        except Exception as exc:
            self.history.fail("probe", "probe", (send, f"send: {_error(exc)}"), self.now())
            return
        ack = Ack(md.topic, md.partition, md.offset)
        # Read it back (a consumer of its own per partition: seeks do not disturb others).
        reader = Consumer(
            self.cluster.bootstrap(),
            ConsumerConfig(
                auto_offset_reset="earliest",
                max_wait_ms=100,
                request_timeout_ms=self.cfg.request_timeout_ms,
                retry_backoff_ms=20.0,
                retry_backoff_max_ms=500.0,
            ),
            **self._client_kwargs(f"probe-reader-{send.topic}-{send.partition}"),
        )
        try:
            reader.assign([(send.topic, send.partition)])
            reader.seek(send.topic, send.partition, md.offset)
            while loop.time() < deadline:
                try:
                    records = await reader.poll(min(0.5, max(0.0, deadline - loop.time())))
                except ReplogError:
                    await asyncio.sleep(0.1)  # the fetcher retries; poll again until the deadline
                    continue
                for r in records:
                    if r.offset == md.offset:
                        if r.value == send.value:
                            self.history.ok("probe", "probe", (send, ack), self.now())
                        else:
                            self.history.fail(
                                "probe", "probe", (send, f"read back {r.value!r}"), self.now()
                            )
                        return
            self.history.fail("probe", "probe", (send, "not read back in time"), self.now())
        finally:
            try:
                await asyncio.wait_for(reader.close(), 5.0)
            except Exception:
                pass

    async def final_reads(self) -> dict[tuple[str, int], PartitionRead]:
        """Every partition of every live topic, read from its log start to its high
        watermark (with the production Consumer)."""
        keys = [(t.name, p) for t in self.live_topics() for p in range(t.partitions)]
        reads = await asyncio.gather(*(self._read_partition(t, p) for t, p in keys))
        return dict(zip(keys, reads))

    async def _read_partition(self, topic: str, partition: int) -> PartitionRead:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.final_read_timeout_s
        admin = self.admin()
        try:
            offsets = await admin.list_offsets(topic, partition, timeout_s=10.0)
        except Exception as exc:
            return PartitionRead(topic, partition, 0, 0, (), False, f"list_offsets: {_error(exc)}")
        log_start, hw = offsets.log_start_offset, offsets.high_watermark
        reader = Consumer(
            self.cluster.bootstrap(),
            ConsumerConfig(
                auto_offset_reset="earliest",
                max_wait_ms=50,
                request_timeout_ms=self.cfg.request_timeout_ms,
                retry_backoff_ms=20.0,
                retry_backoff_max_ms=500.0,
            ),
            **self._client_kwargs(f"reader-{topic}-{partition}"),
        )
        records: dict[int, bytes] = {}
        error = ""
        complete = False
        last_progress = loop.time()
        last_position: int | None = None
        try:
            reader.assign([(topic, partition)])
            reader.seek(topic, partition, log_start)
            while True:
                position = reader.position(topic, partition)
                if position != last_position:
                    last_position, last_progress = position, loop.time()
                if position is not None and position >= hw:
                    complete = True
                    break
                if position is not None and loop.time() - last_progress >= STALL_S:
                    # Nothing more is served below the high watermark: what is left is control
                    # entries at the tail (the consumer's position only moves past what a
                    # fetch returns). An acknowledged record in [position, hw) would still be
                    # reported lost by the checkers.
                    complete = True
                    break
                if loop.time() >= deadline:
                    error = f"the read stopped at {position} of [{log_start}, {hw})"
                    break
                try:
                    got = await reader.poll(0.5)
                except ReplogError as exc:
                    error = _error(exc)
                    await asyncio.sleep(0.1)
                    continue
                for r in got:
                    if r.offset < hw:
                        records[r.offset] = r.value or b""
        finally:
            try:
                await asyncio.wait_for(reader.close(), 5.0)
            except Exception:
                pass
        # Retention may have cut meanwhile: what lies below the newest log start is gone.
        try:
            later = await admin.list_offsets(topic, partition, timeout_s=5.0)
            log_start = max(log_start, later.log_start_offset)
        except Exception:
            pass
        kept = tuple(sorted((o, v) for o, v in records.items() if o >= log_start))
        return PartitionRead(
            topic, partition, log_start, hw, kept, complete, "" if complete else error
        )
