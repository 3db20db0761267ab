"""The consumer: explicit assignment, one follow-mode Fetch stream per assigned partition.

Contract:
- ``assign([(topic, partition)])`` sets what to read; ``seek``/``seek_to_beginning``/
  ``seek_to_end`` set where; ``poll(timeout_s)`` returns the records that arrived, in offset
  order within each partition, never one twice and never with a gap.
- Each assigned partition has one fetcher task holding a ``Fetch(follow=True)`` stream open on
  the partition's leader. When the stream ends or fails (NOT_LEADER, a broken connection, a
  broker restart) the fetcher re-opens it - on the new leader - from the offset after the last
  record it queued. A response may start before the requested offset (whole batches are
  returned), so records below it are dropped; control batches are skipped.
- Every queued response carries the partition's *generation*; ``seek`` bumps it and restarts
  the fetcher, so records fetched for an old position are discarded, never delivered. ``poll``
  also drops anything below the partition's position, so "no duplicates" holds even if a
  fetcher were to re-read.
- No position yet (assign without seek): ``auto_offset_reset`` decides: earliest (log start),
  latest (high watermark), or error (``poll`` raises InvalidRequest until the user seeks).
- A position the consumer has never jumps forward over records it has not seen (#12 defect
  7). It advances only to the ``next_offset`` of a fetch response that carried batches (the
  broker's word, which also steps over control entries); an empty answer never moves it. On
  OFFSET_OUT_OF_RANGE above the log end - a new leader whose high watermark still trails the
  old leader's until its first entry commits, or a deposed leader - the fetcher refreshes
  metadata and retries with back-off for ``out_of_range_retry_ms``; only then, or at once
  when the position lies below the log start (the records are gone to retention), does
  ``auto_offset_reset`` apply (error: ``poll`` raises OffsetOutOfRange). Such a reset is
  logged (logger ``replog.client``) and listed in ``offset_resets`` (Kafka does the same).
- Non-retriable errors of a fetcher (UNKNOWN_TOPIC, a corrupt batch) are raised by ``poll``;
  that partition's fetcher stops until the next ``seek``. Retriable ones are retried with
  back-off forever (a consumer waits for its cluster).

Never imports server/, metadata/, partition/ or raft/.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

from client.config import ConsumerConfig
from client.connection import Connection, StubFactory, backoff_s, now_s
from client.errors import (
    ClientClosed,
    InvalidBatch,
    InvalidRequest,
    OffsetOutOfRange,
    ReplogError,
)
from wire import batch as codec
from wire import replog_pb2 as pb

__all__ = ["Consumer", "ConsumerRecord", "OffsetReset"]

TopicPartition = tuple[str, int]
_FOREVER_S = 10.0 * 365 * 24 * 3600
_log = logging.getLogger("replog.client")


@dataclass(frozen=True, slots=True)
class OffsetReset:
    """A position given up for ``auto_offset_reset`` (``policy``): ``position`` lay outside
    the partition's ``[log_start, log_end]`` (-1: the broker did not say). ``reason`` is
    "below log start" (records removed by retention) or "above log end" (still out of range
    after out_of_range_retry_ms)."""

    topic: str
    partition: int
    position: int
    policy: str
    log_start: int
    log_end: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConsumerRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes | None], ...] = ()


class _Assignment:
    __slots__ = ("generation", "key", "position", "reset", "task")

    def __init__(self, key: TopicPartition) -> None:
        self.key = key
        self.position: int | None = None  # next offset poll() hands out
        self.reset: str | None = None  # "earliest"/"latest": resolve position from the broker
        self.generation = 0
        self.task: asyncio.Task[None] | None = None


class _Item:
    """What a fetcher queues: decoded records (or an error) for one generation."""

    __slots__ = ("error", "generation", "key", "next_offset", "records")

    def __init__(
        self,
        key: TopicPartition,
        generation: int,
        records: list[ConsumerRecord],
        next_offset: int,
        error: ReplogError | None = None,
    ) -> None:
        self.key = key
        self.generation = generation
        self.records = records
        self.next_offset = next_offset
        self.error = error


class Consumer:
    """Reads assigned partitions. Use ``async with Consumer(...) as c`` or call ``close()``."""

    def __init__(
        self,
        bootstrap: str | Sequence[str] | None,
        config: ConsumerConfig | None = None,
        *,
        stub_factory: StubFactory | None = None,
        wall_clock_ms: Callable[[], int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``stub_factory``/``wall_clock_ms``/``rng``: the network, clock and randomness seams
        (see ``Connection``); the defaults are grpc.aio, the system clock, an unseeded RNG."""
        self.config = config or ConsumerConfig()
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
        self._assigned: dict[TopicPartition, _Assignment] = {}
        self._queue: asyncio.Queue[_Item] | None = None
        self._pending: deque[_Item] = deque()
        self._iter_buffer: deque[ConsumerRecord] = deque()
        self._closed = False
        # Every position this consumer gave up for auto_offset_reset, oldest first.
        self.offset_resets: list[OffsetReset] = []

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ assignment / position

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions from now on (positions of kept ones are kept)."""
        self._check_open()
        wanted = [(str(t), int(p)) for t, p in partitions]
        for key in list(self._assigned):
            if key not in wanted:
                self._stop_fetcher(self._assigned.pop(key))
        for key in wanted:
            if key not in self._assigned:
                self._assigned[key] = _Assignment(key)

    def assignment(self) -> list[TopicPartition]:
        return list(self._assigned)

    async def partitions_for(self, topic: str) -> int:
        """How many partitions ``topic`` has (from metadata; raises UnknownTopic)."""
        deadline = now_s() + self.config.request_timeout_ms / 1000.0
        return await self._conn.partition_count(topic, deadline=deadline)

    def position(self, topic: str, partition: int) -> int | None:
        """The next offset poll() returns for this partition (None until known)."""
        return self._get(topic, partition).position

    def seek(self, topic: str, partition: int, offset: int) -> None:
        if offset < 0:
            raise InvalidRequest(f"cannot seek to negative offset {offset}")
        a = self._get(topic, partition)
        self._restart(a, position=offset, reset=None)

    def seek_to_beginning(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        for key in list(partitions) if partitions is not None else list(self._assigned):
            self._restart(self._get(*key), position=None, reset="earliest")

    def seek_to_end(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        for key in list(partitions) if partitions is not None else list(self._assigned):
            self._restart(self._get(*key), position=None, reset="latest")

    def _get(self, topic: str, partition: int) -> _Assignment:
        a = self._assigned.get((topic, partition))
        if a is None:
            raise InvalidRequest(
                f"{topic}/{partition} is not assigned", hint="call assign() with it first"
            )
        return a

    def _restart(self, a: _Assignment, *, position: int | None, reset: str | None) -> None:
        self._check_open()
        self._stop_fetcher(a)
        a.generation += 1
        a.position = position
        a.reset = reset

    def _stop_fetcher(self, a: _Assignment) -> None:
        if a.task is not None:
            a.task.cancel()
            a.task = None

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("the consumer is closed", hint="create a new Consumer")

    # ------------------------------------------------------------------ poll

    async def poll(self, timeout_s: float) -> list[ConsumerRecord]:
        """Records that arrived, waiting up to ``timeout_s`` for the first one."""
        self._check_open()
        queue = self._ensure_fetchers()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        limit = self.config.max_poll_records
        out: list[ConsumerRecord] = []
        while len(out) < limit:
            if self._pending:
                item = self._pending.popleft()
            elif not queue.empty():
                item = queue.get_nowait()
            else:
                remaining = deadline - loop.time()
                if out or remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            a = self._assigned.get(item.key)
            if a is None or a.generation != item.generation:
                continue  # fetched for an old position or a dropped partition
            if item.error is not None:
                if out:
                    self._pending.appendleft(item)
                    break
                raise item.error
            position = a.position if a.position is not None else -1
            fresh = [r for r in item.records if r.offset >= position]
            room = limit - len(out)
            if len(fresh) > room:
                out.extend(fresh[:room])
                a.position = fresh[room - 1].offset + 1
                item.records = fresh[room:]
                self._pending.appendleft(item)
                break
            out.extend(fresh)
            a.position = max(position, item.next_offset)
        return out

    def __aiter__(self) -> AsyncIterator[ConsumerRecord]:
        return self

    async def __anext__(self) -> ConsumerRecord:
        while not self._iter_buffer:
            if self._closed:
                raise StopAsyncIteration
            self._iter_buffer.extend(await self.poll(1.0))
        return self._iter_buffer.popleft()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = [a.task for a in self._assigned.values() if a.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._conn.close()

    # ------------------------------------------------------------------ fetchers

    def _ensure_fetchers(self) -> asyncio.Queue[_Item]:
        if self._queue is None:
            self._queue = asyncio.Queue(self.config.max_buffered_responses)
        loop = asyncio.get_running_loop()
        for a in self._assigned.values():
            if a.task is None:
                topic, partition = a.key
                a.task = loop.create_task(
                    self._run_fetcher(a, a.generation, self._queue),
                    name=f"replog-consumer-fetch-{topic}-{partition}",
                )
                a.task.add_done_callback(self._on_fetcher_done)
        return self._queue

    def _on_fetcher_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        crash = task.exception()
        if crash is not None and self._queue is not None and not self._closed:
            # No silent death: poll() raises what killed the fetcher.
            for a in self._assigned.values():
                if a.task is task:
                    error = ReplogError(f"fetcher for {a.key[0]}/{a.key[1]} crashed: {crash!r}")
                    self._pending.append(_Item(a.key, a.generation, [], -1, error))

    async def _run_fetcher(
        self, a: _Assignment, generation: int, queue: asyncio.Queue[_Item]
    ) -> None:
        topic, partition = a.key
        cfg = self.config
        loop = asyncio.get_running_loop()
        offset = a.position
        reset = a.reset
        attempt = 0
        out_of_range_since: float | None = None  # loop time of the first OOR at ``offset``
        while True:
            try:
                if offset is None:
                    offset = await self._resolve(topic, partition, reset or cfg.auto_offset_reset)
                    if a.generation == generation:
                        a.position = offset
                        a.reset = None
                address = await self._conn.leader_address(
                    topic, partition, deadline=now_s() + _FOREVER_S
                )
                request = pb.FetchRequest(
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    max_bytes=cfg.max_bytes,
                    max_wait_ms=cfg.max_wait_ms,
                    follow=True,
                )
                async for response in self._conn.stream("Fetch", request, address=address):
                    attempt = 0
                    out_of_range_since = None
                    records, next_offset = _decode(topic, partition, response, offset)
                    if next_offset > offset:
                        await queue.put(_Item(a.key, generation, records, next_offset))
                        offset = next_offset
                # the broker ended the stream (shutdown, stepping down): re-open it
            except OffsetOutOfRange as error:
                below_start = error.start >= 0 and offset is not None and offset < error.start
                if not below_start:
                    if out_of_range_since is None:
                        out_of_range_since = loop.time()
                    if loop.time() - out_of_range_since < cfg.out_of_range_retry_ms / 1000.0:
                        # Probably a leader whose high watermark has not caught up (or a
                        # deposed one): ask again, of the leader metadata names now.
                        try:
                            await self._conn.refresh_metadata([topic])
                        except ReplogError:
                            pass
                        await asyncio.sleep(
                            backoff_s(attempt, cfg.retry_backoff_ms, cfg.retry_backoff_max_ms)
                        )
                        attempt += 1
                        continue
                out_of_range_since = None
                self._note_reset(a.key, offset, error, below_start)
                if cfg.auto_offset_reset == "error":
                    await queue.put(_Item(a.key, generation, [], -1, error))
                    return
                offset = None
                reset = cfg.auto_offset_reset
                continue
            except ReplogError as error:
                if not error.retriable:
                    await queue.put(_Item(a.key, generation, [], -1, error))
                    return
                await self._conn.on_retriable_error(error, [topic], key=a.key)
            await asyncio.sleep(backoff_s(attempt, cfg.retry_backoff_ms, cfg.retry_backoff_max_ms))
            attempt += 1

    def _note_reset(
        self, key: TopicPartition, offset: int | None, error: OffsetOutOfRange, below_start: bool
    ) -> None:
        """Surface a position given up for auto_offset_reset (Kafka logs these too)."""
        event = OffsetReset(
            topic=key[0],
            partition=key[1],
            position=-1 if offset is None else offset,
            policy=self.config.auto_offset_reset,
            log_start=error.start,
            log_end=error.end,
            reason="below log start" if below_start else "above log end",
        )
        self.offset_resets.append(event)
        _log.warning(
            "consumer position %d of %s/%d is %s [%d, %d]; applying auto_offset_reset=%s",
            event.position,
            event.topic,
            event.partition,
            event.reason,
            event.log_start,
            event.log_end,
            event.policy,
        )

    async def _resolve(self, topic: str, partition: int, policy: str) -> int:
        """The offset ``policy`` (earliest/latest) names, asked of the partition's leader."""
        if policy not in ("earliest", "latest"):
            raise InvalidRequest(
                f"no position for {topic}/{partition} and auto_offset_reset is {policy!r}",
                hint="seek() to an offset first, or use auto_offset_reset earliest/latest",
            )

        async def ask() -> pb.ListOffsetsResponse:
            deadline = now_s() + _FOREVER_S
            address = await self._conn.leader_address(topic, partition, deadline=deadline)
            response: pb.ListOffsetsResponse = await self._conn.call(
                "ListOffsets",
                pb.ListOffsetsRequest(topic=topic, partition=partition),
                address=address,
            )
            return response

        response = await self._conn.retry_call(
            ask, deadline=now_s() + _FOREVER_S, topics=[topic], key=(topic, partition)
        )
        return response.log_start_offset if policy == "earliest" else response.high_watermark


def _decode(
    topic: str, partition: int, response: pb.FetchResponse, from_offset: int
) -> tuple[list[ConsumerRecord], int]:
    """Records at or above ``from_offset`` in a fetch response, and where to fetch next.

    The position moves only to what the broker returned: past the last batch it sent, or to
    its ``next_offset`` when that lies further (control and refused entries it stepped over).
    An empty response moves it only up to the high watermark it reports (past committed
    control entries), never beyond (a ``next_offset`` there may be a trailing watermark)."""
    out: list[ConsumerRecord] = []
    next_offset = from_offset
    try:
        for view in codec.iter_batches(response.batches):
            header, records = codec.decode(view)
            if header.next_offset > next_offset:
                next_offset = header.next_offset
            if header.is_control:
                continue
            for r in records:
                if r.offset >= from_offset:
                    out.append(
                        ConsumerRecord(
                            topic, partition, r.offset, r.key, r.value, r.timestamp_ms, r.headers
                        )
                    )
    except codec.InvalidBatch as error:
        raise InvalidBatch(
            f"a fetched batch of {topic}/{partition} is damaged: {error}",
            hint="report it: the broker or the network corrupted data",
        ) from error
    if response.next_offset > next_offset and (
        response.batches or response.next_offset <= response.high_watermark
    ):
        # Also when nothing came back: the broker stepped over committed entries no consumer
        # sees (a new leader's no-op at the end of the log); without this the position never
        # reaches the high watermark. Never beyond it: that could be a trailing watermark.
        next_offset = response.next_offset
    return out, next_offset
