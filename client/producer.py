"""The producer: an accumulator per partition and one sender task per partition.

Contract:
- ``send()`` appends the record to its partition's open ``RecordBatchBuilder`` and returns a
  future for its ``RecordMetadata``. That is all the per-record work there is: no protobuf
  object, no task, no copy beyond the builder's encoding (the throughput target is ~45,000
  1 KiB records/s on one core).
- A batch closes when it reaches ``batch_bytes`` or when ``linger_ms`` has passed since its first
  record (or on ``flush()``/``close()``). ``send()`` yields to the event loop when a partition
  has more than ``max_in_flight`` closed batches waiting (and every 256 sends), so the senders
  run even if the caller loops on ``await send()``.
- Each partition's sender task seals its closed batches oldest first (consecutive sequences)
  and pipelines them: up to ``max_in_flight`` (1..5) sealed batches per partition, counted
  from the oldest unacknowledged one, so every batch that may need a retry is still in the
  broker's 5-batch deduplication window. The requests of one partition are issued in
  sequence order (one gRPC channel per broker keeps them in that order).
- Idempotence (on by default, Kafka's KIP-98 scheme): one InitProducerId, then each batch gets
  ``base_sequence`` = the partition's next sequence when it is first sealed, and keeps its
  bytes (hence its sequence) across every retry, so the broker acknowledges a retry of a batch
  it already appended with the original offsets (``duplicate``) instead of appending it twice,
  and rejects a batch whose predecessor is missing (``OUT_OF_ORDER_SEQUENCE``) instead of
  appending it out of order. The batch also carries the producer's *epoch*. A partition
  switches to a new (producer id, epoch) - a new *session*: its sequences restart at 0 -
  only when none of its batches sealed under the old one is unacknowledged (or when it
  reseals all of them, below), so no batch of a newer session overtakes an older one.
  Without idempotence the broker cannot reject an overtaking batch, so each partition sends
  one batch at a time whatever ``max_in_flight`` says.
- Recovery keeps order: when any request of a partition fails, the partition stops sending new
  batches, waits until every one of its requests has settled, then resends its unacknowledged
  batches strictly in sequence order, one at a time (same bytes, same sequence), and only then
  pipelines again. Retriable errors are retried (a ``NotLeader`` hint is followed,
  ``refresh_metadata`` errors refresh the cache) with exponential back-off until
  ``delivery_timeout_ms`` after the batch opened; then, or on a non-retriable error, the
  batch's record futures fail with the error. ``OUT_OF_ORDER_SEQUENCE`` for a batch behind an
  unacknowledged one is expected (its predecessor is being retried): it is just resent after
  it. For the oldest unacknowledged batch it means the broker does not know our previous batch
  (it was lost or failed, or the broker forgot the producer): that batch was rejected, so it
  and every unacknowledged batch after it are resealed and sent again, in order.
- Fencing (Kafka's KIP-360, bumped by the client, #12 defect 10): the reseal keeps the producer
  id and bumps the epoch by one (a new id from InitProducerId only when the epoch would pass
  32767); that partition's sequences restart at 0, in record order. The broker accepts a
  higher epoch only at base sequence 0 and from then on answers ``PRODUCER_FENCED`` to every
  batch of a lower epoch, so a delayed copy of a batch sent before the bump can never be
  appended after its resealed successor (a fresh id, as before, left the old id open to such
  a copy: a reorder or a duplicate). Other partitions drain their in-flight batches of the
  old epoch, then restart at 0 under the new one. ``PRODUCER_FENCED`` for a request sent
  under an older session than the producer's current one is the expected fate of a stale
  copy: the batch is not settled by it and is (re)sent under the current session.
  ``PRODUCER_FENCED`` for the current session means another producer took over our id: it
  is fatal - every pending record fails with ``ProducerFenced`` and later ``send()`` calls
  raise it.
- No task dies silently: a sender (or one of its request tasks) that crashes fails every
  pending future of its partition, and later ``send()`` calls raise the crash.

Never imports server/, metadata/, partition/ or raft/.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from client.config import ProducerConfig
from client.connection import Connection, StubFactory, backoff_s, now_s
from client.errors import (
    ClientClosed,
    InternalError,
    InvalidRequest,
    OutOfOrderSequence,
    ProducerFenced,
    ReplogError,
    RequestTimedOut,
    UnknownPartition,
)
from client.partitioner import partition_for_key
from wire import replog_pb2 as pb
from wire.batch import RecordBatchBuilder

__all__ = ["Producer", "RecordMetadata"]

_SEQUENCE_MODULUS = 1 << 31  # Kafka sequences are int32 and wrap to 0
_MAX_EPOCH = 32767  # the epoch is an int16; past it the producer needs a new producer id
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
        "attempts",
        "base_sequence",
        "builder",
        "created_s",
        "done",
        "futures",
        "last_error",
        "payload",
        "producer_epoch",
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
        self.producer_epoch = -1
        self.base_sequence = -1
        self.size_bytes = 0  # bytes charged against buffer_bytes
        self.attempts = 0  # failed Produce attempts (the back-off exponent)
        self.last_error: ReplogError | None = None

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
    """Accumulator + sender state of one partition.

    ``ready`` holds closed batches not sealed yet; ``window`` the sealed ones in sequence order,
    from the oldest unacknowledged one on (settled batches leave it from the front only).
    """

    __slots__ = (
        "crash",
        "key",
        "next_sequence",
        "open",
        "outstanding",
        "pid_generation",
        "ready",
        "recovering",
        "requests",
        "taken",
        "task",
        "wakeup",
        "window",
    )

    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key
        self.open: _Batch | None = None
        self.ready: deque[_Batch] = deque()
        self.window: deque[_Batch] = deque()
        self.taken: _Batch | None = None  # out of ready/open, being sealed by the sender
        self.outstanding = 0  # Produce requests of the pipeline not settled yet
        self.requests: set[asyncio.Task[None]] = set()
        self.recovering = False  # a request failed: resend the window one at a time
        self.crash: BaseException | None = None  # a request task's unexpected exception
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.next_sequence = 0
        self.pid_generation = -1

    def pending(self) -> list[_Batch]:
        out = [b for b in self.window if not b.done.done()]
        if self.taken is not None:
            out.append(self.taken)
        out.extend(self.ready)
        if self.open is not None:
            out.append(self.open)
        return out


class Producer:
    """Asynchronous, batching, idempotent producer. Use ``async with Producer(...) as p``."""

    def __init__(
        self,
        bootstrap: str | Sequence[str] | None,
        config: ProducerConfig | None = None,
        *,
        stub_factory: StubFactory | None = None,
        wall_clock_ms: Callable[[], int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``stub_factory``/``wall_clock_ms``/``rng``: the network, clock and randomness seams
        (see ``Connection``); the defaults are grpc.aio, the system clock (record timestamps
        when ``send`` is given none), an unseeded RNG."""
        self.config = config or ProducerConfig()
        cfg = self.config
        self._conn = Connection(
            bootstrap,
            request_timeout_s=cfg.request_timeout_ms / 1000.0,
            retry_backoff_ms=cfg.retry_backoff_ms,
            retry_backoff_max_ms=cfg.retry_backoff_max_ms,
            stub_factory=stub_factory,
            wall_clock_ms=wall_clock_ms,
            rng=rng,
            broker_addresses=self.config.broker_addresses,
        )
        self._acks = pb.ACKS_ALL if cfg.acks == "all" else pb.ACKS_LEADER
        self._linger_s = cfg.linger_ms / 1000.0
        self._delivery_s = cfg.delivery_timeout_ms / 1000.0
        self._request_timeout_s = cfg.request_timeout_ms / 1000.0
        # Without sequence numbers the broker cannot reject a batch that overtook a failed one.
        self._window = cfg.max_in_flight if cfg.idempotence else 1
        self._sends = 0
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
        self._fenced: ProducerFenced | None = None  # another producer took over our id

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

    @property
    def producer_epoch(self) -> int:
        return self._producer_epoch

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
            timestamp_ms = self._conn.wall_clock_ms()
        batch.builder.append(key, value, timestamp_ms, headers)
        batch.size_bytes += size
        self._buffered_bytes += size
        future: asyncio.Future[RecordMetadata] = loop.create_future()
        batch.futures.append(future)
        if batch.builder.size_bytes >= self.config.batch_bytes:
            self._close_open(state)
            if sticky:
                self._next_sticky(topic, partition, count)
        self._sends += 1
        if len(state.ready) > self.config.max_in_flight or not self._sends & 0xFF:
            await asyncio.sleep(0)  # let the sender tasks run even if the caller never yields
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
        await self.flush()
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
        deadline = now_s() + self.config.metadata_timeout_ms / 1000.0
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

    async def _run_sender(self, state: _Partition) -> None:
        try:
            await self._pump(state)
        finally:
            for task in list(state.requests):
                task.cancel()

    async def _pump(self, state: _Partition) -> None:
        loop = asyncio.get_running_loop()
        window = state.window
        while True:
            if state.crash is not None:
                raise state.crash
            if self._fenced is not None:
                raise self._fenced
            while window and window[0].done.done():
                window.popleft()
            if state.recovering:
                if state.outstanding:
                    await self._wait(state)  # every request of the partition settles first
                else:
                    await self._recover(state)
                continue
            if len(window) >= self._window or self._must_drain(state):
                await self._wait(state)
                continue
            batch, wait_s = self._take(state, loop)
            if batch is None:
                if wait_s is None and self._closing and not window:
                    return
                await self._wait(state, wait_s)
                continue
            state.taken = batch  # pending (flush waits for it; a crash fails it) while sealed
            await self._dispatch(state, batch)
            state.taken = None

    async def _wait(self, state: _Partition, timeout_s: float | None = None) -> None:
        state.wakeup.clear()
        if timeout_s is None:
            await state.wakeup.wait()
            return
        try:
            await asyncio.wait_for(state.wakeup.wait(), timeout_s)
        except TimeoutError:
            pass

    def _take(
        self, state: _Partition, loop: asyncio.AbstractEventLoop
    ) -> tuple[_Batch | None, float | None]:
        """The next batch to seal, else (None, seconds until the open batch's linger ends)."""
        if state.ready:
            return state.ready.popleft(), None
        batch = state.open
        if batch is None:
            return None, None
        wait_s = batch.created_s + self._linger_s - loop.time()
        if wait_s <= 0 or self._flushing or self._closing:
            state.open = None
            return batch, None
        return None, wait_s

    def _must_drain(self, state: _Partition) -> bool:
        """A new session (producer id or epoch) is due: its batches may not overtake the old
        session's, so the partition waits until none of those is unacknowledged."""
        if not self.config.idempotence or not state.window:
            return False
        return self._producer_id < 0 or state.pid_generation != self._pid_generation

    async def _dispatch(self, state: _Partition, batch: _Batch) -> None:
        """Seal the next batch and start its Produce request without waiting for the answer."""
        topic, partition = state.key
        loop = asyncio.get_running_loop()
        remaining_s = batch.created_s + self._delivery_s - loop.time()
        if remaining_s <= 0:
            self._fail(batch, _timed_out(topic, partition, 0))
            return
        deadline = now_s() + remaining_s
        try:
            sealed = await self._seal(state, batch, deadline)
        except ReplogError as error:  # no producer id before the deadline: nothing was sealed
            self._fail(batch, error)
            return
        if not sealed:
            state.ready.appendleft(batch)
            return
        state.window.append(batch)
        try:
            address = await self._conn.leader_address(topic, partition, deadline=deadline)
        except ReplogError as error:
            batch.last_error = error
            batch.attempts += 1
            state.recovering = True
            return
        if state.recovering:
            return  # a request failed meanwhile: the recovery sends this one, in order
        remaining_s = batch.created_s + self._delivery_s - loop.time()
        timeout_s = max(0.001, min(self._request_timeout_s, remaining_s))
        state.outstanding += 1
        task = loop.create_task(
            self._request(state, batch, address, timeout_s),
            name=f"replog-producer-request-{topic}-{partition}",
        )
        state.requests.add(task)
        task.add_done_callback(state.requests.discard)

    async def _request(
        self, state: _Partition, batch: _Batch, address: str, timeout_s: float
    ) -> None:
        """One pipelined attempt. A failure only marks the partition for recovery."""
        sent_as = (batch.producer_id, batch.producer_epoch)
        try:
            try:
                response = await self._produce_once(state, batch, address, timeout_s)
            except ReplogError as error:
                batch.last_error = error
                batch.attempts += 1
                state.recovering = True
                if isinstance(error, ProducerFenced):
                    self._on_fenced(state, batch, sent_as, error)
                elif error.retriable:
                    await self._conn.on_retriable_error(
                        error,
                        [state.key[0]],
                        key=state.key,
                        deadline=batch.created_s + self._delivery_s,
                    )
                else:
                    self._fail(batch, error)
            else:
                self._succeed(state, batch, response)
        except asyncio.CancelledError:
            raise
        except BaseException as crash:  # no silent death: the sender raises it
            state.crash = crash
        finally:
            state.outstanding -= 1
            state.wakeup.set()

    async def _produce_once(
        self, state: _Partition, batch: _Batch, address: str, timeout_s: float
    ) -> pb.ProduceResponse:
        topic, partition = state.key
        assert batch.payload is not None
        request = pb.ProduceRequest(
            topic=topic,
            partition=partition,
            batch=batch.payload,
            acks=self._acks,
            timeout_ms=int(self._request_timeout_s * 1000),
        )
        response: pb.ProduceResponse = await self._conn.call(
            "Produce", request, address=address, timeout_s=timeout_s
        )
        return response

    async def _recover(self, state: _Partition) -> None:
        """No request is in flight: resend the unacknowledged batches one at a time, in order."""
        loop = asyncio.get_running_loop()
        first = True
        for batch in list(state.window):
            if batch.done.done():
                continue
            if first and batch.attempts:
                pause = backoff_s(
                    batch.attempts - 1,
                    self.config.retry_backoff_ms,
                    self.config.retry_backoff_max_ms,
                )
                left = batch.created_s + self._delivery_s - loop.time()
                await asyncio.sleep(max(0.0, min(pause, left)))
            first = False
            await self._deliver(state, batch)
        state.recovering = False

    async def _deliver(self, state: _Partition, batch: _Batch) -> None:
        """Send the oldest unacknowledged batch alone until it is settled."""
        topic, partition = state.key
        loop = asyncio.get_running_loop()
        deadline_loop = batch.created_s + self._delivery_s
        while True:
            if self._fenced is not None:
                raise self._fenced
            remaining_s = deadline_loop - loop.time()
            deadline = now_s() + max(0.0, remaining_s)
            sent_as = (batch.producer_id, batch.producer_epoch)
            try:
                if remaining_s <= 0:
                    raise _DeliveryTimeout()
                if batch.payload is None and not await self._seal(state, batch, deadline):
                    raise AssertionError("a batch sealed under an old session is pending")
                sent_as = (batch.producer_id, batch.producer_epoch)
                address = await self._conn.leader_address(topic, partition, deadline=deadline)
                response = await self._produce_once(
                    state, batch, address, max(0.001, min(self._request_timeout_s, remaining_s))
                )
            except _DeliveryTimeout:
                self._fail(batch, batch.last_error or _timed_out(topic, partition, batch.attempts))
                return
            except ReplogError as error:
                batch.last_error = error
                if isinstance(error, ProducerFenced):
                    if not self._on_fenced(state, batch, sent_as, error):
                        return  # fatal: the batch failed; the pump stops the partition
                elif isinstance(error, OutOfOrderSequence) and batch.producer_id >= 0:
                    # Nothing before this batch is unacknowledged, so the broker does not know
                    # our previous batch in this partition: it rejected (did not append) this
                    # one and cannot have appended any later one. Bump the epoch (which fences
                    # every copy still travelling under the old one), restart the sequences at
                    # 0 and reseal them all; this loop sends them in order.
                    await self._bump_epoch(batch.producer_id, batch.producer_epoch)
                    self._unseal_pending(state)
                if not (error.retriable or isinstance(error, ProducerFenced)) or (
                    loop.time() >= deadline_loop
                ):
                    self._fail(batch, error)
                    return
                await self._conn.on_retriable_error(
                    error, [topic], key=state.key, deadline=deadline_loop
                )
                pause = backoff_s(
                    batch.attempts, self.config.retry_backoff_ms, self.config.retry_backoff_max_ms
                )
                batch.attempts += 1
                await asyncio.sleep(max(0.0, min(pause, deadline_loop - loop.time())))
                continue
            self._succeed(state, batch, response)
            return

    def _succeed(self, state: _Partition, batch: _Batch, response: pb.ProduceResponse) -> None:
        """Report the batch written at the offsets the broker answered - only if they can be
        this batch's: a broker rejects a batch with an error status, never with a success
        (with acks=leader too, #12 defect 8), so an answer that does not place exactly this
        batch's records is not taken as "written"."""
        topic, partition = state.key
        count = batch.builder.record_count
        base, last = response.base_offset, response.last_offset
        if base < 0 or last - base + 1 != count:
            self._fail(
                batch,
                InternalError(
                    f"the broker acknowledged {count} records for {topic}/{partition} at "
                    f"offsets [{base}, {last}]; they are not reported as written",
                    hint="a broker bug; check the partition with `replog consume`",
                ),
            )
            return
        batch.succeed(topic, partition, base)
        self._release(batch)

    def _fail(self, batch: _Batch, error: BaseException) -> None:
        batch.fail(error)
        self._release(batch)

    async def _seal(self, state: _Partition, batch: _Batch, deadline: float) -> bool:
        """Give the batch its producer id, epoch and sequence and encode it (once per session).

        False (nothing sealed) if the session changed while batches sealed under the old one
        are unacknowledged: a batch of the new session could overtake them, so it waits."""
        if not self.config.idempotence:
            batch.payload = batch.builder.build()
            return True
        producer_id, producer_epoch = await self._ensure_producer_id(deadline)
        if state.pid_generation != self._pid_generation:
            for other in state.window:
                if other is not batch and other.payload is not None and not other.done.done():
                    return False
            state.pid_generation = self._pid_generation
            state.next_sequence = 0
        sequence = state.next_sequence
        batch.payload = batch.builder.build(
            producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=sequence
        )
        batch.producer_id = producer_id
        batch.producer_epoch = producer_epoch
        batch.base_sequence = sequence
        state.next_sequence = (sequence + batch.builder.record_count) % _SEQUENCE_MODULUS
        return True

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

    async def _bump_epoch(self, stale_producer_id: int, stale_epoch: int) -> None:
        """Start a new session after ``(stale_producer_id, stale_epoch)``: the same id with the
        next epoch, or a new id (InitProducerId at the next seal) when the epoch would overflow.
        A no-op if another partition already moved past that session."""
        async with self._pid_lock:
            if (self._producer_id, self._producer_epoch) != (stale_producer_id, stale_epoch):
                return
            if self._producer_epoch >= _MAX_EPOCH:
                self._producer_id = -1
                self._producer_epoch = -1
            else:
                self._producer_epoch += 1
                self._pid_generation += 1

    def _unseal_pending(self, state: _Partition) -> None:
        """Every unacknowledged batch of the partition is resealed (under the current session,
        sequences from 0, in window order) before it is sent again."""
        for pending in state.window:
            if not pending.done.done():
                pending.payload = None

    def _on_fenced(
        self,
        state: _Partition,
        batch: _Batch,
        sent_as: tuple[int, int],
        error: ProducerFenced,
    ) -> bool:
        """Classify a ``PRODUCER_FENCED`` answer to a request sent as ``sent_as`` (id, epoch).

        A request of an older session than the current one was fenced by our own newer
        session: that copy was not appended, and the batch stays pending (True) - resealed
        first if its seal is itself of an old session (the partition then has nothing sealed
        under the current one, see ``_seal``). A request of the current session was fenced by
        another producer that took over our id: fatal (False); every pending record of every
        partition fails with the error and later ``send()`` calls raise it."""
        if sent_as != (self._producer_id, self._producer_epoch):
            if (batch.producer_id, batch.producer_epoch) == sent_as:
                self._unseal_pending(state)
            return True
        if self._fenced is None:
            topic, partition = state.key
            self._fenced = ProducerFenced(
                f"producer id {sent_as[0]} epoch {sent_as[1]} was fenced on {topic}/"
                f"{partition}: another producer with this id and a newer epoch wrote there, "
                f"so this producer can no longer send (unacknowledged records are failed)",
                hint="create a new Producer (it gets a new producer id)",
                fields=error.fields,
            )
            self._fatal = self._fenced
        self._fail(batch, self._fenced)
        for other in self._partitions.values():
            other.wakeup.set()
        self._space.set()
        return False

    def _on_sender_done(self, state: _Partition, task: asyncio.Task[None]) -> None:
        for request in list(state.requests):
            request.cancel()
        if task.cancelled():
            error: BaseException = ClientClosed("the producer's sender task was cancelled")
        else:
            crash = task.exception()
            if crash is None:
                return
            error = crash
            self._fatal = crash
        for batch in state.pending():
            self._fail(batch, error)
        state.open = None
        state.ready.clear()
        state.window.clear()
        self._space.set()


class _DeliveryTimeout(Exception):
    """Internal: the batch's delivery_timeout_ms passed."""


def _timed_out(topic: str, partition: int, attempts: int) -> ReplogError:
    return RequestTimedOut(
        f"records for {topic}/{partition} were not acknowledged within delivery_timeout_ms "
        f"({attempts} retries)",
        hint="check the partition's leader with `replog topic describe`",
    )
