"""The producer: an accumulator per partition and one sender task per partition.

Contract:
- ``send()`` appends the record to its partition's open ``RecordBatchBuilder`` and returns a
  future for its ``RecordMetadata``. That is all the per-record work there is: no protobuf
  object, no task, no copy beyond the builder's encoding (the throughput target is ~45,000
  1 KiB records/s on one core).
- A batch closes when it reaches ``batch_bytes`` or when ``linger_ms`` has passed since its first
  record (or on ``flush()``/``close()``). Each partition's sender task sends its closed batches
  one at a time, oldest first (``max_in_flight`` = 1), so order within a partition holds across
  retries and leader changes by construction: batch n+1 is not sent before batch n is settled.
- Idempotence (on by default, Kafka's KIP-98 scheme): one InitProducerId, then each batch gets
  ``base_sequence`` = the partition's next sequence when it is first sealed, and keeps its
  bytes (hence its sequence) across every retry, so the broker acknowledges a retry of a batch
  it already appended with the original offsets (``duplicate``) instead of appending it twice.
- Errors: retriable ones are retried (a ``NotLeader`` hint is followed, ``refresh_metadata``
  errors refresh the cache) with exponential back-off until ``delivery_timeout_ms`` after the
  batch opened; then, or on a non-retriable error, the batch's record futures fail with the
  error. ``OUT_OF_ORDER_SEQUENCE`` means the broker does not know our previous batch (it was
  lost or failed): the batch was rejected, so it is resealed under a fresh producer id
  (sequences restart at 0) and sent again - without a duplicate.
- No task dies silently: a sender that crashes fails every pending future of its partition,
  and later ``send()`` calls raise the crash.

Never imports server/, metadata/, partition/ or raft/.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from client.batch import RecordBatchBuilder
from client.config import ProducerConfig
from client.connection import Connection, backoff_s
from client.errors import (
    ClientClosed,
    InvalidRequest,
    OutOfOrderSequence,
    ReplogError,
    RequestTimedOut,
    UnknownPartition,
)
from client.partitioner import partition_for_key
from client.wire import replog_pb2 as pb

__all__ = ["Producer", "RecordMetadata"]

_SEQUENCE_MODULUS = 1 << 31  # Kafka sequences are int32 and wrap to 0
_RECORD_OVERHEAD_BYTES = 24  # varints and attributes of one record, an upper bound for sizing


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where an acknowledged record landed."""

    topic: str
    partition: int
    offset: int


class _Batch:
    """One batch on its way: the builder, one future per record, and once sealed its bytes."""

    __slots__ = (
        "base_sequence",
        "builder",
        "created_s",
        "done",
        "futures",
        "payload",
        "producer_id",
        "size_bytes",
    )

    def __init__(
        self, builder: RecordBatchBuilder, created_s: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.builder = builder
        self.created_s = created_s
        self.futures: list[asyncio.Future[RecordMetadata]] = []
        self.done: asyncio.Future[None] = loop.create_future()
        self.payload: bytes | None = None
        self.producer_id = -1
        self.base_sequence = -1
        self.size_bytes = 0  # bytes charged against buffer_bytes

    def fail(self, error: BaseException) -> None:
        for future in self.futures:
            if not future.done():
                future.set_exception(error)
        if not self.done.done():
            self.done.set_result(None)

    def succeed(self, topic: str, partition: int, base_offset: int) -> None:
        for i, future in enumerate(self.futures):
            if not future.done():
                future.set_result(RecordMetadata(topic, partition, base_offset + i))
        if not self.done.done():
            self.done.set_result(None)


class _Partition:
    """Accumulator + sender state of one partition."""

    __slots__ = (
        "in_flight",
        "key",
        "next_sequence",
        "open",
        "pid_generation",
        "ready",
        "task",
        "wakeup",
    )

    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key
        self.open: _Batch | None = None
        self.ready: deque[_Batch] = deque()
        self.in_flight: _Batch | None = None
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.next_sequence = 0
        self.pid_generation = -1

    def pending(self) -> list[_Batch]:
        out = [self.in_flight] if self.in_flight is not None else []
        out.extend(self.ready)
        if self.open is not None:
            out.append(self.open)
        return out


class Producer:
    """Asynchronous, batching, idempotent producer. Use ``async with Producer(...) as p``."""

    def __init__(
        self, bootstrap: str | Sequence[str] | None, config: ProducerConfig | None = None
    ) -> None:
        self.config = config or ProducerConfig()
        cfg = self.config
        self._conn = Connection(
            bootstrap,
            request_timeout_s=cfg.request_timeout_ms / 1000.0,
            retry_backoff_ms=cfg.retry_backoff_ms,
            retry_backoff_max_ms=cfg.retry_backoff_max_ms,
        )
        self._acks = pb.ACKS_ALL if cfg.acks == "all" else pb.ACKS_LEADER
        self._linger_s = cfg.linger_ms / 1000.0
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._counts: dict[str, int] = {}
        self._sticky: dict[str, int] = {}
        self._round_robin = itertools.count()
        self._producer_id = -1
        self._producer_epoch = -1
        self._pid_generation = 0
        self._pid_lock = asyncio.Lock()
        self._buffered_bytes = 0
        self._space = asyncio.Event()
        self._flushing = 0
        self._closing = False
        self._closed = False
        self._fatal: BaseException | None = None

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def producer_id(self) -> int:
        return self._producer_id

    # ------------------------------------------------------------------ send

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] = (),
        timestamp_ms: int | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Queue one record; the returned future resolves once the broker acknowledged it."""
        if self._closing:
            raise ClientClosed("send() after close()", hint="create a new Producer")
        if self._fatal is not None:
            raise self._fatal
        count = self._counts.get(topic)
        if count is None:
            count = await self._partition_count(topic)
        sticky = False
        if partition is None:
            if key is not None:
                partition = partition_for_key(key, count)
            else:
                partition = self._sticky.get(topic)
                if partition is None:
                    partition = next(self._round_robin) % count
                    self._sticky[topic] = partition
                sticky = True
        elif not 0 <= partition < count:
            raise UnknownPartition(
                f"topic {topic!r} has {count} partitions; partition {partition} does not exist"
            )
        size = _RECORD_OVERHEAD_BYTES + (len(value) if value is not None else 0)
        if key is not None:
            size += len(key)
        if self._buffered_bytes >= self.config.buffer_bytes:
            await self._wait_for_space()
        state = self._partitions.get((topic, partition))
        if state is None:
            state = self._start_partition(topic, partition)
        loop = asyncio.get_running_loop()
        batch = state.open
        if batch is None:
            batch = self._open_batch(state, loop)
        elif batch.builder.size_bytes + size > self.config.batch_bytes:
            self._close_open(state)
            if sticky:
                partition = self._next_sticky(topic, partition, count)
                return await self.send(topic, value, key, partition, headers, timestamp_ms)
            batch = self._open_batch(state, loop)
        if timestamp_ms is None:
            timestamp_ms = int(time.time() * 1000)
        batch.builder.append(key, value, timestamp_ms, headers)
        batch.size_bytes += size
        self._buffered_bytes += size
        future: asyncio.Future[RecordMetadata] = loop.create_future()
        batch.futures.append(future)
        if batch.builder.size_bytes >= self.config.batch_bytes:
            self._close_open(state)
            if sticky:
                self._next_sticky(topic, partition, count)
        return future

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] = (),
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """``send()`` and wait for the acknowledgement (flushes at once, ignoring linger)."""
        future = await self.send(topic, value, key, partition, headers, timestamp_ms)
        return await future

    async def flush(self) -> None:
        """Send every buffered record now and wait until each one is acknowledged or failed."""
        self._flushing += 1
        try:
            pending = [b.done for s in self._partitions.values() for b in s.pending()]
            for state in self._partitions.values():
                state.wakeup.set()
            if pending:
                await asyncio.wait(pending)
        finally:
            self._flushing -= 1

    async def close(self) -> None:
        """Flush, stop the sender tasks and close the channels. Idempotent."""
        if self._closed:
            return
        self._closing = True
        try:
            await self.flush()
        finally:
            self._closed = True
            tasks = [s.task for s in self._partitions.values() if s.task is not None]
            for state in self._partitions.values():
                state.wakeup.set()
            if tasks:
                await asyncio.wait(tasks, timeout=1.0)
            for task in tasks:
                task.cancel()
            closed = ClientClosed("the producer was closed before the record was acknowledged")
            for state in self._partitions.values():
                for batch in state.pending():
                    batch.fail(closed)
            await self._conn.close()

    # ------------------------------------------------------------------ accumulator

    async def _partition_count(self, topic: str) -> int:
        deadline = time.monotonic() + self.config.metadata_timeout_ms / 1000.0
        count = await self._conn.partition_count(topic, deadline=deadline)
        if count <= 0:
            raise InvalidRequest(f"topic {topic!r} has no partitions")
        self._counts[topic] = count
        return count

    def _next_sticky(self, topic: str, partition: int, count: int) -> int:
        nxt = (partition + 1) % count
        self._sticky[topic] = nxt
        return nxt

    def _start_partition(self, topic: str, partition: int) -> _Partition:
        state = _Partition((topic, partition))
        self._partitions[state.key] = state
        task = asyncio.get_running_loop().create_task(
            self._run_sender(state), name=f"replog-producer-sender-{topic}-{partition}"
        )
        state.task = task
        task.add_done_callback(lambda t: self._on_sender_done(state, t))
        return state

    def _open_batch(self, state: _Partition, loop: asyncio.AbstractEventLoop) -> _Batch:
        batch = _Batch(RecordBatchBuilder(self.config.compression), loop.time(), loop)
        state.open = batch
        state.wakeup.set()  # the sender starts the linger clock
        return batch

    def _close_open(self, state: _Partition) -> None:
        if state.open is not None:
            state.ready.append(state.open)
            state.open = None
            state.wakeup.set()

    async def _wait_for_space(self) -> None:
        while self._buffered_bytes >= self.config.buffer_bytes:
            if self._fatal is not None:
                raise self._fatal
            self._space.clear()
            await self._space.wait()

    def _release(self, batch: _Batch) -> None:
        self._buffered_bytes -= batch.size_bytes
        batch.size_bytes = 0
        self._space.set()

    # ------------------------------------------------------------------ sender

    async def _next_batch(self, state: _Partition) -> _Batch | None:
        loop = asyncio.get_running_loop()
        while True:
            if state.ready:
                return state.ready.popleft()
            batch = state.open
            if batch is None:
                if self._closing:
                    return None
                state.wakeup.clear()
                await state.wakeup.wait()
                continue
            wait_s = batch.created_s + self._linger_s - loop.time()
            if wait_s <= 0 or self._flushing or self._closing:
                state.open = None
                return batch
            state.wakeup.clear()
            try:
                await asyncio.wait_for(state.wakeup.wait(), wait_s)
            except TimeoutError:
                pass

    async def _run_sender(self, state: _Partition) -> None:
        while True:
            batch = await self._next_batch(state)
            if batch is None:
                return
            state.in_flight = batch
            try:
                await self._deliver(state, batch)
            except asyncio.CancelledError:
                batch.fail(ClientClosed("the producer stopped before the batch was acknowledged"))
                raise
            except BaseException as crash:  # no silent death: the batch's futures see it
                batch.fail(crash)
                raise
            finally:
                state.in_flight = None
                self._release(batch)

    async def _deliver(self, state: _Partition, batch: _Batch) -> None:
        topic, partition = state.key
        loop = asyncio.get_running_loop()
        deadline_loop = batch.created_s + self.config.delivery_timeout_ms / 1000.0
        request_timeout_s = self.config.request_timeout_ms / 1000.0
        attempt = 0
        last_error: ReplogError | None = None
        while True:
            remaining_s = deadline_loop - loop.time()
            deadline = time.monotonic() + max(0.0, remaining_s)
            try:
                if remaining_s <= 0:
                    raise _DeliveryTimeout()
                if batch.payload is None:
                    await self._seal(state, batch, deadline)
                assert batch.payload is not None
                address = await self._conn.leader_address(topic, partition, deadline=deadline)
                request = pb.ProduceRequest(
                    topic=topic,
                    partition=partition,
                    batch=batch.payload,
                    acks=self._acks,
                    timeout_ms=int(request_timeout_s * 1000),
                )
                response = await self._conn.call(
                    "Produce",
                    request,
                    address=address,
                    timeout_s=max(0.001, min(request_timeout_s, remaining_s)),
                )
            except _DeliveryTimeout:
                batch.fail(last_error or _timed_out(topic, partition, attempt))
                return
            except ReplogError as error:
                last_error = error
                if isinstance(error, OutOfOrderSequence) and batch.producer_id >= 0:
                    # The broker does not know our previous batch in this partition, so it
                    # rejected (did not append) this one: restart sequences under a new id.
                    await self._reset_producer_id(batch.producer_id)
                    batch.payload = None
                if not error.retriable or loop.time() >= deadline_loop:
                    batch.fail(error)
                    return
                await self._conn.on_retriable_error(error, [topic], key=state.key)
                pause = backoff_s(
                    attempt, self.config.retry_backoff_ms, self.config.retry_backoff_max_ms
                )
                attempt += 1
                await asyncio.sleep(max(0.0, min(pause, deadline_loop - loop.time())))
                continue
            batch.succeed(topic, partition, response.base_offset)
            return

    async def _seal(self, state: _Partition, batch: _Batch, deadline: float) -> None:
        """Give the batch its producer id and sequence and encode it (once per producer id)."""
        if not self.config.idempotence:
            batch.payload = batch.builder.build()
            return
        producer_id, producer_epoch = await self._ensure_producer_id(deadline)
        if state.pid_generation != self._pid_generation:
            state.pid_generation = self._pid_generation
            state.next_sequence = 0
        sequence = state.next_sequence
        batch.payload = batch.builder.build(
            producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=sequence
        )
        batch.producer_id = producer_id
        batch.base_sequence = sequence
        state.next_sequence = (sequence + batch.builder.record_count) % _SEQUENCE_MODULUS

    async def _ensure_producer_id(self, deadline: float) -> tuple[int, int]:
        async with self._pid_lock:
            if self._producer_id < 0:

                async def init() -> pb.InitProducerIdResponse:
                    response: pb.InitProducerIdResponse = await self._conn.call(
                        "InitProducerId", pb.InitProducerIdRequest()
                    )
                    return response

                response = await self._conn.retry_call(init, deadline=deadline)
                self._producer_id = response.producer_id
                self._producer_epoch = response.producer_epoch
                self._pid_generation += 1
            return self._producer_id, self._producer_epoch

    async def _reset_producer_id(self, stale_producer_id: int) -> None:
        async with self._pid_lock:
            if self._producer_id == stale_producer_id:
                self._producer_id = -1
                self._producer_epoch = -1

    def _on_sender_done(self, state: _Partition, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            error: BaseException = ClientClosed("the producer's sender task was cancelled")
        else:
            crash = task.exception()
            if crash is None:
                return
            error = crash
            self._fatal = crash
        for batch in state.pending():
            batch.fail(error)
        state.open = None
        state.ready.clear()
        self._space.set()


class _DeliveryTimeout(Exception):
    """Internal: the batch's delivery_timeout_ms passed."""


def _timed_out(topic: str, partition: int, attempts: int) -> ReplogError:
    return RequestTimedOut(
        f"records for {topic}/{partition} were not acknowledged within delivery_timeout_ms "
        f"({attempts} retries)",
        hint="check the partition's leader with `replog topic describe`",
    )
