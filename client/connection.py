"""Channels, bootstrap, the metadata cache, and the one place gRPC errors become ReplogErrors.

Contract:
- ``Connection`` owns one ``grpc.aio`` channel per broker address (created lazily, closed by
  ``close()``), the bootstrap list, and a cache of the cluster's metadata (brokers, topics,
  partition leaders). Producer, Consumer and AdminClient each hold one.
- ``to_replog_error`` is the only function that looks inside a ``grpc.aio.AioRpcError``: a
  status carrying trailing metadata ``replog-error-bin`` (a serialized ``ErrorDetail``) becomes
  the typed error for its code; a status without it becomes ``BrokerUnavailable`` (UNAVAILABLE,
  CANCELLED, ...) or ``RequestTimedOut`` (DEADLINE_EXCEEDED). ``call``/``stream`` are the only
  callers, so nothing above this module ever sees a gRPC exception.
- The network and the clocks are seams, so the real client logic also runs on a virtual-time
  event loop over a simulated network (``tests/system_sim``): ``stub_factory(address)`` returns
  an object with ``ReplogStub``'s methods (default: a grpc.aio channel's stub; with a factory
  no channel is ever created), and it must fail as grpc does, with ``grpc.aio.AioRpcError``,
  so ``to_replog_error`` stays the one conversion point. Deadlines are read from the running
  loop's ``loop.time()`` (``now_s()``), never from ``time.monotonic()``; wall-clock
  timestamps come from ``wall_clock_ms()`` and randomness from ``rng``, both injectable.
- Per-broker address overrides (``broker_addresses``, node id -> HOST:PORT), as the broker's
  ``--peer-address``: a broker the metadata advertises at A is dialed at its override (a proxy,
  e.g. Toxiproxy for the chaos suite). Bootstrap addresses are dialed as given.
- Calls without an address go to "any broker": the last one that answered, else the next in
  bootstrap + known brokers (the broker forwards admin calls to the metadata leader).
- Retry policy lives in ``retry_call``: retriable errors are retried with exponential back-off
  until a deadline; ``refresh_metadata`` errors refresh the cache first; a ``NotLeader`` hint
  updates the cache directly (no extra round trip).

Must never import server/, metadata/, partition/ or raft/.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from client.errors import (
    BrokerUnavailable,
    ClientClosed,
    InternalError,
    InvalidRequest,
    LeaderNotAvailable,
    NotLeader,
    ReplogError,
    RequestTimedOut,
    UnknownPartition,
    UnknownTopic,
    from_detail,
)
from wire import replog_pb2 as pb
from wire import replog_pb2_grpc as pb_grpc

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "ERROR_METADATA_KEY",
    "Connection",
    "StubFactory",
    "backoff_s",
    "now_s",
    "parse_bootstrap",
    "to_replog_error",
]

DEFAULT_BOOTSTRAP = "127.0.0.1:9400"
ERROR_METADATA_KEY = "replog-error-bin"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Reconnect quickly after a broker restart instead of grpc's default 20 s+ back-off.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

T = TypeVar("T")

StubFactory = Callable[[str], Any]
"""``address -> stub``: an object with ``ReplogStub``'s methods. Unary ones are awaited as
``await stub.Method(request, timeout=seconds)``; ``stub.Fetch(request)`` returns an object that
supports ``async for`` and ``.cancel()``. Failures raise ``grpc.aio.AioRpcError``."""


def now_s() -> float:
    """The running event loop's monotonic clock: deadlines use this, so that a virtual-time
    loop (the system simulation) drives them. In production it is ``time.monotonic()``."""
    return asyncio.get_running_loop().time()


def default_wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_bootstrap(bootstrap: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"h1:p1,h2:p2"`` or a sequence of ``host:port`` -> a tuple; None/empty -> env or default."""
    if bootstrap is None or bootstrap == "" or (not isinstance(bootstrap, str) and not bootstrap):
        bootstrap = os.environ.get("REPLOG_BOOTSTRAP") or DEFAULT_BOOTSTRAP
    parts = bootstrap.split(",") if isinstance(bootstrap, str) else list(bootstrap)
    out: list[str] = []
    for part in parts:
        address = part.strip()
        if not address:
            continue
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InvalidRequest(
                f"bootstrap address {address!r} is not host:port",
                hint="use e.g. --bootstrap 127.0.0.1:9400,127.0.0.1:9401",
            )
        if address not in out:
            out.append(address)
    if not out:
        raise InvalidRequest("no bootstrap address given", hint="pass --bootstrap HOST:PORT")
    return tuple(out)


def backoff_s(attempt: int, base_ms: float, max_ms: float) -> float:
    """Exponential back-off for retry ``attempt`` (0-based), in seconds."""
    return float(min(max_ms, base_ms * (2 ** min(attempt, 30)))) / 1000.0


_STATUS_WITHOUT_DETAIL: dict[grpc.StatusCode, type[ReplogError]] = {
    grpc.StatusCode.UNAVAILABLE: BrokerUnavailable,
    grpc.StatusCode.CANCELLED: BrokerUnavailable,
    grpc.StatusCode.UNKNOWN: BrokerUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: RequestTimedOut,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.UNIMPLEMENTED: InvalidRequest,
    grpc.StatusCode.RESOURCE_EXHAUSTED: InvalidRequest,
}


def to_replog_error(exc: grpc.aio.AioRpcError, address: str = "") -> ReplogError:
    """Convert a failed gRPC call into the typed error (see the module contract)."""
    raw: bytes | None = None
    for key, value in exc.trailing_metadata() or ():
        if key == ERROR_METADATA_KEY:
            raw = value if isinstance(value, bytes) else str(value).encode()
            break
    where = f" from {address}" if address else ""
    if raw is not None:
        detail = pb.ErrorDetail()
        try:
            detail.ParseFromString(raw)
        except Exception:  # a corrupt detail is a broker bug; keep the status text
            return InternalError(f"undecodable error detail{where}: {exc.details()}")
        return from_detail(
            detail.code,
            detail.message,
            hint=detail.hint,
            leader_id=detail.leader_id,
            leader_address=detail.leader_address,
            fields=dict(detail.fields),
        )
    status = exc.code()
    cls = _STATUS_WITHOUT_DETAIL.get(status, InternalError)
    text = f"{status.name}{where}: {exc.details() or 'no details'}"
    return cls(text)


class Connection:
    """Channel pool + metadata cache for one client object. Not thread-safe (one event loop)."""

    def __init__(
        self,
        bootstrap: str | Sequence[str] | None,
        *,
        request_timeout_s: float = 30.0,
        retry_backoff_ms: float = 50.0,
        retry_backoff_max_ms: float = 1000.0,
        stub_factory: StubFactory | None = None,
        wall_clock_ms: Callable[[], int] | None = None,
        rng: random.Random | None = None,
        broker_addresses: Mapping[int, str] | None = None,
    ) -> None:
        self.bootstrap = parse_bootstrap(bootstrap)
        self._overrides: dict[int, str] = dict(broker_addresses or {})
        self._dial: dict[str, str] = {}  # advertised address -> the override to dial instead
        self._stub_factory = stub_factory
        # Timestamps of produced records (ms since the epoch).
        self.wall_clock_ms: Callable[[], int] = wall_clock_ms or default_wall_clock_ms
        # The one source of randomness of a client object, so a seed replays exactly. Today the
        # client draws nothing from it (back-off has no jitter, keyless records go round robin,
        # there are no client ids); anything random added later must draw from here.
        self.rng: random.Random = rng if rng is not None else random.Random()
        self.request_timeout_s = request_timeout_s
        self.retry_backoff_ms = retry_backoff_ms
        self.retry_backoff_max_ms = retry_backoff_max_ms
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._closing_channels: set[asyncio.Future[None]] = set()
        self._stubs: dict[str, Any] = {}
        self._any_index = 0
        self._closed = False
        # metadata cache
        self.brokers: dict[int, pb.Broker] = {}
        self.topics: dict[str, pb.TopicMetadata] = {}
        self._leaders: dict[tuple[str, int], int] = {}
        self._leader_addresses: dict[tuple[str, int], str] = {}
        self.last_metadata: pb.MetadataResponse | None = None
        self._refreshing: asyncio.Task[pb.MetadataResponse] | None = None

    # ------------------------------------------------------------------ channels

    def stub(self, address: str) -> Any:
        """The stub for ``address`` (``ReplogStub`` or what ``stub_factory`` returns), cached."""
        if self._closed:
            raise ClientClosed("the client is closed")
        stub = self._stubs.get(address)
        if stub is None:
            target = self._dial.get(address, address)
            if self._stub_factory is not None:
                stub = self._stub_factory(target)
            else:
                channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
                self._channels[address] = channel
                stub = pb_grpc.ReplogStub(channel)  # type: ignore[no-untyped-call]
            self._stubs[address] = stub
        return stub

    def _learn_address(self, node_id: int, address: str) -> None:
        """Broker ``node_id`` is advertised at ``address``: dial its override there, if any (a
        stub made before the override was known is dropped, so no call bypasses it)."""
        target = self._overrides.get(node_id)
        if target is None or not address or self._dial.get(address) == target:
            return
        self._dial[address] = target
        self._stubs.pop(address, None)
        channel = self._channels.pop(address, None)
        if channel is not None:
            self._closing_channels.add(asyncio.ensure_future(channel.close()))
            for task in [t for t in self._closing_channels if t.done()]:
                self._closing_channels.discard(task)

    def _any_addresses(self) -> list[str]:
        out = list(self.bootstrap)
        for broker in self.brokers.values():
            if broker.address and broker.address not in out:
                out.append(broker.address)
        return out

    def any_address(self) -> str:
        addresses = self._any_addresses()
        return addresses[self._any_index % len(addresses)]

    def _rotate(self, address: str) -> None:
        addresses = self._any_addresses()
        if address in addresses and addresses[self._any_index % len(addresses)] == address:
            self._any_index += 1

    async def call(
        self,
        method: str,
        request: Any,
        *,
        address: str | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """One unary RPC; ``address=None`` means any broker. Raises ReplogError only."""
        target = address or self.any_address()
        rpc = getattr(self.stub(target), method)
        try:
            return await rpc(request, timeout=timeout_s or self.request_timeout_s)
        except grpc.aio.AioRpcError as exc:
            error = to_replog_error(exc, target)
            if isinstance(error, BrokerUnavailable | RequestTimedOut):
                self._rotate(target)
            raise error from None

    async def stream(self, method: str, request: Any, *, address: str) -> AsyncIterator[Any]:
        """A server-streaming RPC as an async iterator; cancelled when the iterator is closed."""
        call = getattr(self.stub(address), method)(request)
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as exc:
            raise to_replog_error(exc, address) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        self._closed = True
        if self._refreshing is not None:
            self._refreshing.cancel()
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        for channel in channels:
            await channel.close()

    # ------------------------------------------------------------------ retries

    async def retry_call(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        deadline: float,
        topics: Sequence[str] = (),
        key: tuple[str, int] | None = None,
    ) -> T:
        """Run ``operation`` until it succeeds, raises a non-retriable error, or ``deadline``
        (``now_s()`` seconds, the loop's clock) passes; then the last error is raised."""
        attempt = 0
        while True:
            try:
                return await operation()
            except ReplogError as error:
                if not error.retriable or now_s() >= deadline:
                    raise
                await self.on_retriable_error(error, topics, key, deadline=deadline)
            pause = backoff_s(attempt, self.retry_backoff_ms, self.retry_backoff_max_ms)
            attempt += 1
            await asyncio.sleep(max(0.0, min(pause, deadline - now_s())))

    async def on_retriable_error(
        self,
        error: ReplogError,
        topics: Sequence[str] = (),
        key: tuple[str, int] | None = None,
        *,
        deadline: float | None = None,
    ) -> None:
        """Learn from a retriable error: follow a leader hint or refresh metadata. Without a
        hint the refresh asks the *next* broker: the one asked last named a leader that does not
        lead (or none), and a broker cut off from the cluster keeps naming the leaders it knew,
        so asking it again would never find the new one (a cut-off partition leader stalled
        every producer of that partition for the whole fault in the chaos suite)."""
        if isinstance(error, NotLeader) and key is not None:
            address = error.leader_address or (
                self.address_of(error.leader_id) if error.leader_id else None
            )
            if address:
                self.note_leader(key[0], key[1], error.leader_id, address)
                return
        if isinstance(error, NotLeader | LeaderNotAvailable):
            self._any_index += 1
        if error.refresh_metadata:
            try:
                await self.refresh_metadata(topics, deadline=deadline)
            except ReplogError:
                pass  # the retry itself will report the broker's state

    # ------------------------------------------------------------------ metadata cache

    async def refresh_metadata(
        self, topics: Sequence[str] = (), *, deadline: float | None = None
    ) -> pb.MetadataResponse:
        """Fetch metadata from any broker (tries each known address once) and cache it. With
        ``deadline`` (``now_s()`` seconds) no call outlives it: a broker that hangs (paused,
        cut off) costs at most the caller's remaining time, not a whole request timeout."""
        errors: list[ReplogError] = []
        for _ in range(len(self._any_addresses())):
            timeout_s = None
            if deadline is not None:
                timeout_s = max(0.001, min(self.request_timeout_s, deadline - now_s()))
            try:
                response: pb.MetadataResponse = await self.call(
                    "Metadata", pb.MetadataRequest(topics=list(topics)), timeout_s=timeout_s
                )
            except BrokerUnavailable as error:
                errors.append(error)
                continue
            self._absorb(response, topics)
            return response
        raise errors[-1]

    def _absorb(self, response: pb.MetadataResponse, topics: Sequence[str]) -> None:
        self.last_metadata = response
        if response.brokers:
            self.brokers = {b.id: b for b in response.brokers}
            for b in response.brokers:
                self._learn_address(b.id, b.address)
        if not topics:
            self.topics = {}
            listed = {t.name for t in response.topics}
            for key in [k for k in self._leaders if k[0] not in listed]:
                del self._leaders[key]
                self._leader_addresses.pop(key, None)
        for topic in response.topics:
            self.topics[topic.name] = topic
            for part in topic.partitions:
                key = (topic.name, part.partition)
                self._leaders[key] = part.leader
                self._leader_addresses.pop(key, None)

    def note_leader(self, topic: str, partition: int, leader_id: int, address: str) -> None:
        key = (topic, partition)
        self._leaders[key] = leader_id
        if address:
            self._learn_address(leader_id, address)
            self._leader_addresses[key] = address

    async def topic(self, name: str, *, deadline: float) -> pb.TopicMetadata:
        """Cached metadata of topic ``name``, fetched (with retries) when missing."""
        cached = self.topics.get(name)
        if cached is not None:
            return cached

        async def lookup() -> pb.TopicMetadata:
            await self.refresh_metadata([name])
            found = self.topics.get(name)
            if found is None:
                raise UnknownTopic(f"topic {name!r} does not exist")
            return found

        return await self.retry_call(lookup, deadline=deadline, topics=[name])

    async def partition_count(self, topic: str, *, deadline: float) -> int:
        return len((await self.topic(topic, deadline=deadline)).partitions)

    def address_of(self, node_id: int) -> str | None:
        broker = self.brokers.get(node_id)
        return broker.address if broker is not None and broker.address else None

    async def leader_address(self, topic: str, partition: int, *, deadline: float) -> str:
        """Address of the partition's leader, refreshing metadata (with retries) if unknown."""

        async def lookup(refresh: bool) -> str:
            key = (topic, partition)
            if refresh or key not in self._leaders or topic not in self.topics:
                # (A full refresh answered by a lagging broker may have dropped the topic from
                # the cache while its leader stayed: never conclude "unknown" from the cache.)
                await self.refresh_metadata([topic])
            meta = self.topics.get(topic)
            if meta is None:
                raise UnknownTopic(f"topic {topic!r} does not exist")
            if partition < 0 or partition >= len(meta.partitions):
                raise UnknownPartition(
                    f"topic {topic!r} has {len(meta.partitions)} partitions; "
                    f"partition {partition} does not exist"
                )
            hinted = self._leader_addresses.get(key)
            if hinted:
                return hinted
            address = self.address_of(self._leaders.get(key, 0))
            if address is None:
                raise LeaderNotAvailable(f"partition {topic}/{partition} has no known leader")
            return address

        first = True

        async def attempt() -> str:
            nonlocal first
            refresh = not first
            first = False
            return await lookup(refresh)

        return await self.retry_call(attempt, deadline=deadline, topics=[topic])
