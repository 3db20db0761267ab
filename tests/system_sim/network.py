"""A simulated network: the network seam of the system simulation (server/env.py ``Network``).

API
---
- ``SimNetwork(rng: random.Random, faults: Faults | None = None, *, hang_s=20.0)``: one
  object for the whole cluster and its clients. Endpoints are ids: brokers attach with their
  node id (int); clients use their own ids (e.g. ``"client-3"``), which must differ from node ids.
  - ``attach(node_id, address, handlers)``: ``handlers`` is a ``NodeHandlers`` or any object
    with ``deliver_batch(batch: pb.RaftBatch) -> None`` (``PeerInbox.handle_batch``),
    ``replog_service`` (the ``ReplogServicer`` methods, async; ``Fetch`` an async generator)
    and ``peer_service`` (async ``ForwardMetadata``). Attach again after a restart.
  - ``detach(node_id)``: at a crash. In-flight batches and requests to the node are dropped,
    its running handlers are cancelled (their callers get UNAVAILABLE, streams end with
    UNAVAILABLE), and every ``env_network(node_id)`` made so far dies (sends raise
    ``ConnectionError``, calls raise UNAVAILABLE): make a fresh one for the next incarnation.
  - ``env_network(node_id) -> SimNodeNetwork``: ``server.env.Network`` for that node:
    ``open_link(peer_id, address) -> SimLink``, ``peer_stub(address)``,
    ``replog_stub(address)``, ``async close()``.
  - ``client_stub_factory(client_id) -> Callable[[address], SimStub]`` (client/connection.py's
    ``stub_factory``).
  - faults (seeded by ``rng``): ``faults`` (a mutable ``Faults``: delay range, per-batch drop,
    duplicate and reorder probabilities, per-RPC-leg drop probability, bandwidth),
    ``set_faults(faults, from_id=None, to_id=None)`` (per directed pair, e.g. inter-DC
    latency; ``None`` = the default), ``partition(groups, mode="drop")``,
    ``cut(from_id, to_id, mode="drop")`` (one way), ``isolate(endpoint_id, mode="drop")``,
    ``heal()`` (partitions, cuts and isolations; not ``faults``).
    ``mode``: ``"drop"`` = silent (batches vanish, RPCs hang until their deadline ->
    DEADLINE_EXCEEDED, or ``hang_s`` -> UNAVAILABLE without one), ``"refuse"`` = loud (link
    ``send`` raises ``ConnectionError``, RPCs fail with UNAVAILABLE after one delay).
    Endpoints named in no group of a ``partition`` reach everyone.
  - records: ``server_errors: list[ServerError]`` (a servicer raised something other than an
    abort, returned a wrong type, or ``deliver_batch`` raised: a broker bug; checkers fail the
    seed on it), ``stats`` (a dict of counters).
- ``SimStub``: one attribute per RPC of its service. Unary: ``await stub.M(request,
  timeout=None, metadata=None)`` -> response or ``grpc.aio.AioRpcError``. Server streaming:
  ``stub.Fetch(request, timeout=None, metadata=None) -> SimStreamCall`` (``async for``,
  ``read()``, ``cancel()``, ``done()``, ``cancelled()``). Peer.Raft (client streaming) is not
  offered: raft batches go over links.
- ``SimContext``: the servicer context: ``await abort(code, details="",
  trailing_metadata=())`` (raises), ``set_trailing_metadata(md)``, ``invocation_metadata()``,
  ``peer()`` ("sim:client-3", "sim:node-1"), ``cancelled()``, ``done()``,
  ``time_remaining()``, ``set_code``, ``set_details``, ``code()``, ``details()``.

Model
-----
Every message is serialised on send and parsed on delivery (``SerializeToString`` /
``FromString``): no object is ever shared between nodes. Each delivery is a ``call_at`` on the
loop at ``now + uniform(delay_s) + size / bytes_per_s``; batches on one link keep FIFO order
(as on the production gRPC stream) unless the reorder fault picks them, and a stream's
responses keep theirs. Every random draw comes from the one seeded rng in program order, so a
seed replays exactly (given PYTHONHASHSEED, see loop.py).

A link binds to the target's incarnation at its first send (the "connect"); once a send failed
(refused, target gone or restarted, the receiver raised) the link is failed for good, like
server/grpc_links.py's ``GrpcLink``: the transport opens a new one after its back-off. Blocking
(partition/cut/isolate, detach) is checked both when a message leaves and when it arrives, so a
partition also loses what was in flight. A unary RPC has two legs (request, response), each
subject to the cuts and to ``rpc_drop_probability``: a lost response means the server did the
work and the client does not know (which is what idempotent retries are for). When a caller
gives up (deadline or cancellation) the server's handler is cancelled one delay later, as gRPC
does. Streams have no per-message loss (TCP); a cut stalls or resets them, and each stream has a
flow-control window of ``STREAM_WINDOW`` responses.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import traceback
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from wire import replog_pb2 as pb

__all__ = [
    "STREAM_WINDOW",
    "Faults",
    "NodeHandlers",
    "ServerError",
    "SimContext",
    "SimLink",
    "SimNetwork",
    "SimNodeNetwork",
    "SimStreamCall",
    "SimStub",
]

STREAM_WINDOW = 16  # responses a stream may have in flight or unread before the server waits
Endpoint = Hashable
_MODES = ("drop", "refuse")


@dataclass
class Faults:
    """Message faults between two endpoints (seeded). Mutable: change it mid-run."""

    delay_s: tuple[float, float] = (0.0002, 0.002)  # one-way latency, uniform
    drop_probability: float = 0.0  # raft batches
    duplicate_probability: float = 0.0  # raft batches: a second copy, later
    reorder_probability: float = 0.0  # raft batches: ignore the link's FIFO order, extra delay
    rpc_drop_probability: float = 0.0  # each leg of a unary RPC (request or response lost)
    bytes_per_s: float = 1e9  # bandwidth: size / bytes_per_s is added to the delay


@dataclass
class NodeHandlers:
    deliver_batch: Callable[[pb.RaftBatch], None]
    replog_service: Any = None
    peer_service: Any = None


@dataclass(frozen=True)
class ServerError:
    node_id: Endpoint
    method: str
    error: str  # repr of the exception
    traceback: str
    virtual_s: float


@dataclass(frozen=True)
class _Method:
    service: str  # "Replog" | "Peer"
    name: str
    request_cls: type[Any]
    response_cls: type[Any]
    server_streaming: bool
    client_streaming: bool


def _methods(service: str) -> dict[str, _Method]:
    desc = pb.DESCRIPTOR.services_by_name[service]
    return {
        m.name: _Method(
            service,
            m.name,
            getattr(pb, m.input_type.name),
            getattr(pb, m.output_type.name),
            m.server_streaming,
            m.client_streaming,
        )
        for m in desc.methods
    }


_SERVICES = {"Replog": _methods("Replog"), "Peer": _methods("Peer")}


def _rpc_error(
    code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, Any], ...] = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


def _label(endpoint: Endpoint) -> str:
    return f"node-{endpoint}" if isinstance(endpoint, int) else str(endpoint)


class _Node:
    def __init__(self, node_id: Endpoint, address: str, handlers: Any, incarnation: int) -> None:
        self.node_id = node_id
        self.address = address
        self.handlers = handlers
        self.incarnation = incarnation
        self.attached = True
        # dict, not set: detach cancels these in creation order (determinism)
        self.tasks: dict[asyncio.Task[Any], None] = {}


class SimAbortError(grpc.aio.AbortError):  # type: ignore[misc]
    """Raised by ``SimContext.abort`` (grpc.aio raises ``AbortError`` likewise)."""


@dataclass
class _Outcome:
    ok: bool
    payload: bytes = b""
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    trailing: tuple[tuple[str, Any], ...] = ()

    def error(self) -> grpc.aio.AioRpcError:
        return _rpc_error(self.code, self.details, self.trailing)


class SimContext:
    """The ``grpc.aio.ServicerContext`` subset the broker uses (see the module docstring)."""

    def __init__(
        self,
        peer: str,
        metadata: tuple[tuple[str, Any], ...],
        deadline: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._peer = peer
        self._metadata = metadata
        self._deadline = deadline
        self._loop = loop
        self._trailing: tuple[tuple[str, Any], ...] = ()
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._aborted = False
        self._cancelled = False
        self._done = False

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Any = (),
    ) -> None:
        if trailing_metadata:
            self._trailing = tuple(tuple(kv) for kv in trailing_metadata)
        self._aborted = True
        self._code = code
        self._details = details
        raise SimAbortError(f"{code.name}: {details}")

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._trailing = tuple(tuple(kv) for kv in trailing_metadata)

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._trailing

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._done

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - self._loop.time())

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def _status(self) -> _Outcome | None:
        """The non-OK status the handler set (by abort or set_code), if any."""
        if self._code is not None and self._code != grpc.StatusCode.OK:
            return _Outcome(False, code=self._code, details=self._details, trailing=self._trailing)
        return None


class SimNetwork:
    """See the module docstring."""

    def __init__(
        self, rng: random.Random, faults: Faults | None = None, *, hang_s: float = 20.0
    ) -> None:
        self.rng = rng
        self.faults = faults or Faults()
        self.hang_s = hang_s
        self._pair_faults: dict[tuple[Endpoint, Endpoint], Faults] = {}
        self._nodes: dict[Endpoint, _Node] = {}
        self._by_address: dict[str, _Node] = {}
        self._incarnations: dict[Endpoint, int] = {}
        self._env_networks: dict[Endpoint, list[SimNodeNetwork]] = {}
        self._groups: dict[Endpoint, int] = {}
        self._groups_mode = "drop"
        self._cuts: dict[tuple[Endpoint, Endpoint], str] = {}
        self._isolated: dict[Endpoint, str] = {}
        self._clients: dict[Endpoint, None] = {}
        self.server_errors: list[ServerError] = []
        self.stats: dict[str, int] = collections.defaultdict(int)

    # ------------------------------------------------------------------ membership

    def attach(self, node_id: Endpoint, address: str, handlers: Any) -> None:
        if node_id in self._clients:
            raise ValueError(f"node id {node_id!r} is a client id; give clients their own ids")
        old = self._nodes.get(node_id)
        if old is not None and old.attached:
            raise ValueError(f"node {node_id} is already attached (detach it first)")
        other = self._by_address.get(address)
        if other is not None and other.attached and other.node_id != node_id:
            raise ValueError(f"address {address} is taken by node {other.node_id}")
        if old is not None and self._by_address.get(old.address) is old:
            del self._by_address[old.address]
        incarnation = self._incarnations.get(node_id, 0) + 1
        self._incarnations[node_id] = incarnation
        node = _Node(node_id, address, handlers, incarnation)
        self._nodes[node_id] = node
        self._by_address[address] = node

    def detach(self, node_id: Endpoint) -> None:
        node = self._nodes.get(node_id)
        if node is not None and node.attached:
            node.attached = False
            for task in list(node.tasks):
                task.cancel()
        for net in self._env_networks.pop(node_id, []):
            net._dead = True

    def is_attached(self, node_id: Endpoint) -> bool:
        node = self._nodes.get(node_id)
        return node is not None and node.attached

    def env_network(self, node_id: Endpoint) -> SimNodeNetwork:
        net = SimNodeNetwork(self, node_id)
        self._env_networks.setdefault(node_id, []).append(net)
        return net

    def client_stub_factory(self, client_id: Endpoint) -> Callable[[str], SimStub]:
        if client_id in self._nodes or client_id in self._incarnations:
            raise ValueError(f"client id {client_id!r} is a node id; give clients their own ids")
        self._clients[client_id] = None

        def factory(address: str) -> SimStub:
            return SimStub(self, client_id, address, "Replog", None)

        return factory

    # ------------------------------------------------------------------ faults

    def set_faults(
        self, faults: Faults | None, from_id: Endpoint = None, to_id: Endpoint = None
    ) -> None:
        """``faults`` for messages ``from_id -> to_id`` (both given), or the default (neither).
        ``None`` removes a pair's own faults."""
        if from_id is None and to_id is None:
            self.faults = faults or Faults()
        elif from_id is None or to_id is None:
            raise ValueError("give both from_id and to_id, or neither")
        elif faults is None:
            self._pair_faults.pop((from_id, to_id), None)
        else:
            self._pair_faults[(from_id, to_id)] = faults

    def partition(self, groups: Any, mode: str = "drop") -> None:
        """Endpoints in different groups cannot reach each other (both ways). Replaces the
        previous partition; cuts and isolations stay."""
        _check_mode(mode)
        self._groups = {}
        for index, group in enumerate(groups):
            for endpoint in group:
                if endpoint in self._groups:
                    raise ValueError(f"{endpoint!r} is in two groups of the partition")
                self._groups[endpoint] = index
        self._groups_mode = mode

    def cut(self, from_id: Endpoint, to_id: Endpoint, mode: str = "drop") -> None:
        """One way: nothing from ``from_id`` reaches ``to_id``."""
        _check_mode(mode)
        self._cuts[(from_id, to_id)] = mode

    def isolate(self, endpoint: Endpoint, mode: str = "drop") -> None:
        _check_mode(mode)
        self._isolated[endpoint] = mode

    def heal(self) -> None:
        self._groups = {}
        self._cuts.clear()
        self._isolated.clear()

    def blocked(self, src: Endpoint, dst: Endpoint) -> str | None:
        """``"drop"``/``"refuse"`` if messages src -> dst are blocked now, else None."""
        mode = self._cuts.get((src, dst))
        if mode is not None:
            return mode
        mode = self._isolated.get(src) or self._isolated.get(dst)
        if mode is not None and src != dst:
            return mode
        a, b = self._groups.get(src), self._groups.get(dst)
        if a is not None and b is not None and a != b:
            return self._groups_mode
        return None

    def faults_for(self, src: Endpoint, dst: Endpoint) -> Faults:
        return self._pair_faults.get((src, dst), self.faults)

    # ------------------------------------------------------------------ internals

    def _delay(self, f: Faults, size: int) -> float:
        lo, hi = f.delay_s
        return self.rng.uniform(lo, hi) + size / f.bytes_per_s

    def _leg(
        self, src: Endpoint, dst: Endpoint, size: int, *, lossy: bool = True
    ) -> tuple[str, float]:
        """The fate of one RPC leg now: ("ok" | "drop" | "refuse", delay)."""
        f = self.faults_for(src, dst)
        mode = self.blocked(src, dst)
        if mode is not None:
            return mode, self._delay(f, 0)
        if lossy and f.rpc_drop_probability > 0.0 and self.rng.random() < f.rpc_drop_probability:
            self.stats["rpc_legs_dropped"] += 1
            return "drop", 0.0
        return "ok", self._delay(f, size)

    def _record(self, node_id: Endpoint, method: str, exc: BaseException) -> None:
        loop = asyncio.get_running_loop()
        self.server_errors.append(
            ServerError(
                node_id,
                method,
                repr(exc),
                "".join(traceback.format_exception(exc)),
                loop.time(),
            )
        )

    async def _hang(self) -> None:
        """A silently lost message: the caller waits; without a deadline gRPC's keepalive
        notices after ``hang_s``."""
        await asyncio.sleep(self.hang_s)
        raise _rpc_error(grpc.StatusCode.UNAVAILABLE, "connection lost (keepalive timeout)")

    def _deliver_batch(self, node: _Node, incarnation: int, data: bytes, link: SimLink) -> None:
        if not node.attached or node.incarnation != incarnation:
            self.stats["batches_lost_at_crash"] += 1
            return
        if self.blocked(link.src, node.node_id) is not None:
            self.stats["batches_lost_in_flight"] += 1
            return
        batch = pb.RaftBatch.FromString(data)
        try:
            node.handlers.deliver_batch(batch)
        except Exception as exc:
            # production: the receiving stream ends, the sender's link fails
            self._record(node.node_id, "deliver_batch", exc)
            link._fail(f"node {node.node_id} ended the stream: {exc!r}")
            return
        self.stats["batches_delivered"] += 1

    async def _serve(self, node: _Node, m: _Method, data: bytes, ctx: SimContext) -> _Outcome:
        service = (
            node.handlers.replog_service if m.service == "Replog" else node.handlers.peer_service
        )
        handler = getattr(service, m.name, None)
        if handler is None:
            return _Outcome(False, code=grpc.StatusCode.UNIMPLEMENTED, details=f"{m.name}")
        request = m.request_cls.FromString(data)
        try:
            response = await handler(request, ctx)
        except SimAbortError:
            return ctx._status() or _Outcome(False, code=grpc.StatusCode.UNKNOWN)
        except asyncio.CancelledError:
            if ctx._cancelled:
                raise
            return _Outcome(False, code=grpc.StatusCode.UNAVAILABLE, details="the broker went away")
        except Exception as exc:
            if ctx._aborted:
                return ctx._status() or _Outcome(False, code=grpc.StatusCode.UNKNOWN)
            self._record(node.node_id, m.name, exc)
            return _Outcome(False, code=grpc.StatusCode.UNKNOWN, details=f"Unexpected {exc!r}")
        finally:
            ctx._done = True
        status = ctx._status()
        if status is not None:
            return status
        if not isinstance(response, m.response_cls):
            wrong = TypeError(f"{m.name} returned {type(response).__name__}")
            self._record(node.node_id, m.name, wrong)
            return _Outcome(False, code=grpc.StatusCode.UNKNOWN, details=repr(wrong))
        return _Outcome(True, payload=response.SerializeToString(), trailing=ctx._trailing)


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode is one of {_MODES}, not {mode!r}")


class SimNodeNetwork:
    """``server.env.Network`` for one incarnation of one node."""

    def __init__(self, net: SimNetwork, node_id: Endpoint) -> None:
        self._net = net
        self.node_id = node_id
        self._dead = False
        self._links: list[SimLink] = []

    @property
    def alive(self) -> bool:
        return not self._dead

    def open_link(self, peer_id: int, address: str) -> SimLink:
        link = SimLink(self._net, self, peer_id, address)
        self._links = [lk for lk in self._links if not lk._closed]
        self._links.append(link)
        return link

    def peer_stub(self, address: str) -> SimStub:
        return SimStub(self._net, self.node_id, address, "Peer", self)

    def replog_stub(self, address: str) -> SimStub:
        return SimStub(self._net, self.node_id, address, "Replog", self)

    async def close(self) -> None:
        self._dead = True
        for link in self._links:
            await link.close()


class SimLink:
    """One directed peer link (``server.env.Link``)."""

    def __init__(self, net: SimNetwork, owner: SimNodeNetwork, peer_id: int, address: str) -> None:
        self._net = net
        self._owner = owner
        self.src = owner.node_id
        self.peer_id = peer_id
        self.address = address
        self._incarnation: int | None = None
        self._failure = ""
        self._closed = False
        self._last_delivery = 0.0
        self._in_flight: collections.deque[tuple[_Node, int, bytes]] = collections.deque()

    def _deliver_oldest(self) -> None:
        node, incarnation, data = self._in_flight.popleft()
        self._net._deliver_batch(node, incarnation, data, self)

    def _fail(self, why: str) -> None:
        if not self._failure:
            self._failure = why

    async def send(self, batch: pb.RaftBatch) -> None:
        if not isinstance(batch, pb.RaftBatch):
            raise TypeError(f"a link carries RaftBatch, not {type(batch).__name__}")
        # a gRPC write yields to the loop; so does this, so that other tasks interleave with a
        # sender as they do in production
        await asyncio.sleep(0)
        net = self._net
        if self._failure:
            raise ConnectionError(self._failure)
        if self._closed or self._owner._dead:
            raise ConnectionError(f"link to node {self.peer_id} is closed")
        node = net._by_address.get(self.address)
        if node is None or not node.attached:
            self._fail(f"link to node {self.peer_id} at {self.address}: connection refused")
            raise ConnectionError(self._failure)
        if self._incarnation is None:
            self._incarnation = node.incarnation
        elif node.incarnation != self._incarnation:
            self._fail(f"link to node {self.peer_id} at {self.address}: peer restarted")
            raise ConnectionError(self._failure)
        mode = net.blocked(self.src, node.node_id)
        net.stats["batches_sent"] += 1
        if mode == "refuse":
            self._fail(f"link to node {self.peer_id} at {self.address}: connection reset")
            raise ConnectionError(self._failure)
        if mode == "drop":
            net.stats["batches_dropped"] += 1
            return
        f = net.faults_for(self.src, node.node_id)
        if f.drop_probability > 0.0 and net.rng.random() < f.drop_probability:
            net.stats["batches_dropped"] += 1
            return
        data = batch.SerializeToString()
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = now + net._delay(f, len(data))
        if f.reorder_probability > 0.0 and net.rng.random() < f.reorder_probability:
            at += net.rng.uniform(0.0, 4 * f.delay_s[1])
            net.stats["batches_reordered"] += 1
            loop.call_at(at, net._deliver_batch, node, node.incarnation, data, self)
        else:
            # FIFO: timers with equal deadlines fire in heap order, not in call order, so each
            # timer delivers the oldest batch in flight rather than "its own"
            at = max(at, self._last_delivery)
            self._last_delivery = at
            self._in_flight.append((node, node.incarnation, data))
            loop.call_at(at, self._deliver_oldest)
        if f.duplicate_probability > 0.0 and net.rng.random() < f.duplicate_probability:
            net.stats["batches_duplicated"] += 1
            again = at + net._delay(f, len(data))
            loop.call_at(again, net._deliver_batch, node, node.incarnation, data, self)

    async def close(self) -> None:
        self._closed = True


class SimStub:
    """A stub of the ``Replog`` or ``Peer`` service for one caller and one address."""

    def __init__(
        self,
        net: SimNetwork,
        src: Endpoint,
        address: str,
        service: str,
        owner: SimNodeNetwork | None,
    ) -> None:
        self._net = net
        self._src = src
        self._address = address
        self._owner = owner
        for m in _SERVICES[service].values():
            if m.client_streaming:
                continue
            setattr(self, m.name, self._streaming(m) if m.server_streaming else self._unary(m))

    def _dead(self) -> bool:
        return self._owner is not None and self._owner._dead

    def _unary(self, m: _Method) -> Callable[..., Any]:
        async def call(
            request: Any, timeout: float | None = None, metadata: Any = None, **_: Any
        ) -> Any:
            return await self._call_unary(m, request, timeout, metadata)

        call.__name__ = m.name
        return call

    def _streaming(self, m: _Method) -> Callable[..., SimStreamCall]:
        def call(
            request: Any, timeout: float | None = None, metadata: Any = None, **_: Any
        ) -> SimStreamCall:
            if not isinstance(request, m.request_cls):
                raise TypeError(f"{m.name} takes {m.request_cls.__name__}")
            return SimStreamCall(self, m, request.SerializeToString(), timeout, metadata)

        call.__name__ = m.name
        return call

    async def _call_unary(
        self, m: _Method, request: Any, timeout: float | None, metadata: Any
    ) -> Any:
        if not isinstance(request, m.request_cls):
            raise TypeError(f"{m.name} takes {m.request_cls.__name__}")
        net = self._net
        net.stats["rpcs"] += 1
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        data = request.SerializeToString()
        md = tuple(tuple(kv) for kv in (metadata or ()))
        try:
            async with asyncio.timeout_at(deadline):
                return await self._unary_legs(m, data, md, deadline)
        except TimeoutError:
            net.stats["rpc_DEADLINE_EXCEEDED"] += 1
            raise _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        except grpc.aio.AioRpcError as exc:
            net.stats[f"rpc_{exc.code().name}"] += 1
            raise

    async def _unary_legs(
        self, m: _Method, data: bytes, md: tuple[Any, ...], deadline: float | None
    ) -> Any:
        net = self._net
        loop = asyncio.get_running_loop()
        if self._dead():
            raise _rpc_error(grpc.StatusCode.UNAVAILABLE, "the calling node crashed")
        node = net._by_address.get(self._address)
        if node is None or not node.attached:
            await asyncio.sleep(net._delay(net.faults, 0))
            raise _rpc_error(grpc.StatusCode.UNAVAILABLE, f"{self._address}: connection refused")
        incarnation = node.incarnation
        # request leg
        fate, delay = net._leg(self._src, node.node_id, len(data))
        await self._travel(fate, delay)
        if not node.attached or node.incarnation != incarnation:
            raise _rpc_error(grpc.StatusCode.UNAVAILABLE, f"{self._address}: connection reset")
        await self._arrive(self._src, node.node_id)
        ctx = SimContext(f"sim:{_label(self._src)}", md, deadline, loop)
        task = loop.create_task(net._serve(node, m, data, ctx), name=f"sim-rpc-{m.name}")
        node.tasks[task] = None
        task.add_done_callback(lambda t: node.tasks.pop(t, None))
        try:
            outcome = await asyncio.shield(task)
        except asyncio.CancelledError:
            # the caller gave up: the server hears of it one delay later
            cancel_delay = net._delay(net.faults_for(self._src, node.node_id), 0)

            def cancel_server() -> None:
                ctx._cancelled = True
                task.cancel()

            loop.call_later(cancel_delay, cancel_server)
            raise
        # response leg
        size = len(outcome.payload)
        fate, delay = net._leg(node.node_id, self._src, size)
        await self._travel(fate, delay)
        await self._arrive(node.node_id, self._src)
        if outcome.ok:
            return m.response_cls.FromString(outcome.payload)
        raise outcome.error()

    async def _travel(self, fate: str, delay: float) -> None:
        if fate == "refuse":
            await asyncio.sleep(delay)
            raise _rpc_error(grpc.StatusCode.UNAVAILABLE, f"{self._address}: connection refused")
        if fate == "drop":
            await self._net._hang()
        await asyncio.sleep(delay)

    async def _arrive(self, src: Endpoint, dst: Endpoint) -> None:
        """A partition that began while the message travelled loses it too."""
        mode = self._net.blocked(src, dst)
        if mode == "refuse":
            raise _rpc_error(grpc.StatusCode.UNAVAILABLE, f"{self._address}: connection reset")
        if mode == "drop":
            await self._net._hang()


_END = object()


class SimStreamCall:
    """A server-streaming call in flight (``grpc.aio.UnaryStreamCall``'s subset)."""

    def __init__(
        self,
        stub: SimStub,
        m: _Method,
        data: bytes,
        timeout: float | None,
        metadata: Any,
    ) -> None:
        self._stub = stub
        self._net = stub._net
        self._m = m
        self._loop = asyncio.get_running_loop()
        self._items: collections.deque[Any] = collections.deque()
        self._pending: collections.deque[Any] = collections.deque()  # scheduled, not arrived
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self._in_flight = 0  # scheduled or unread responses (the flow-control window)
        self._last_at = 0.0
        self._finished = False  # the client has seen (or will see) the end or an error
        self._cancelled = False
        self._ctx: SimContext | None = None
        self._node: _Node | None = None
        self._deadline = None if timeout is None else self._loop.time() + timeout
        md = tuple(tuple(kv) for kv in (metadata or ()))
        self._net.stats["streams"] += 1
        self._task = self._loop.create_task(self._pump(data, md), name=f"sim-stream-{m.name}")
        if self._deadline is not None:
            self._loop.call_at(self._deadline, self._on_deadline)

    # ------------------------------------------------------------------ client side

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            item = await self.read()
            if item is grpc.aio.EOF:
                return
            yield item

    async def read(self) -> Any:
        while not self._items:
            if self._cancelled:
                raise asyncio.CancelledError()
            self._readable.clear()
            await self._readable.wait()
        if self._cancelled:
            raise asyncio.CancelledError()
        item = self._items.popleft()
        if item is _END:
            self._items.appendleft(item)
            return grpc.aio.EOF
        if isinstance(item, grpc.aio.AioRpcError):
            self._items.appendleft(item)
            raise item
        self._in_flight -= 1
        self._space.set()
        return self._m.response_cls.FromString(item)

    def cancel(self) -> bool:
        if self._cancelled or (self._finished and not self._task_alive()):
            return False
        self._cancelled = True
        self._finished = True
        self._readable.set()
        delay = self._net._delay(self._net.faults, 0)

        def cancel_server() -> None:
            if self._ctx is not None:
                self._ctx._cancelled = True
            self._task.cancel()

        self._loop.call_later(delay, cancel_server)
        return True

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._finished

    def _task_alive(self) -> bool:
        return not self._task.done()

    # ------------------------------------------------------------------ delivery

    def _put_now(self, item: Any) -> None:
        if self._cancelled:
            return
        self._items.append(item)
        self._readable.set()

    def _schedule(self, item: Any, delay: float) -> None:
        """Deliver ``item`` after ``delay``, after everything scheduled before it."""
        if self._finished:
            return
        at = max(self._loop.time() + delay, self._last_at)
        self._last_at = at
        if not isinstance(item, bytes):
            self._finished = True  # end or error: nothing after it
        self._pending.append(item)
        self._loop.call_at(at, self._put_oldest)  # FIFO: see SimLink.send

    def _put_oldest(self) -> None:
        self._put_now(self._pending.popleft())

    def _fail_after(self, code: grpc.StatusCode, details: str, delay: float) -> None:
        self._net.stats[f"stream_{code.name}"] += 1
        self._schedule(_rpc_error(code, details), delay)

    def _on_deadline(self) -> None:
        if self._finished:
            return
        self._fail_after(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", 0.0)
        if self._ctx is not None:
            self._ctx._cancelled = True
        self._task.cancel()

    # ------------------------------------------------------------------ server side

    async def _pump(self, data: bytes, md: tuple[Any, ...]) -> None:
        try:
            await self._serve_stream(data, md)
        except asyncio.CancelledError:
            if self._cancelled or self._finished:
                raise
            # the broker crashed (detach) or the simulation ends
            self._fail_after(grpc.StatusCode.UNAVAILABLE, "the broker went away", 0.0)
        finally:
            if self._ctx is not None:
                self._ctx._done = True

    async def _serve_stream(self, data: bytes, md: tuple[Any, ...]) -> None:
        net, stub, m = self._net, self._stub, self._m
        address = stub._address
        if stub._dead():
            self._fail_after(grpc.StatusCode.UNAVAILABLE, "the calling node crashed", 0.0)
            return
        node = net._by_address.get(address)
        if node is None or not node.attached:
            self._fail_after(
                grpc.StatusCode.UNAVAILABLE,
                f"{address}: connection refused",
                net._delay(net.faults, 0),
            )
            return
        self._node = node
        node.tasks[self._task] = None
        self._task.add_done_callback(lambda t: node.tasks.pop(t, None))
        incarnation = node.incarnation
        # request leg (a stream is TCP: cuts stall or reset it; rpc_drop_probability spares it)
        fate, delay = net._leg(stub._src, node.node_id, len(data), lossy=False)
        if fate != "ok":
            self._break(fate, delay)
            return
        await asyncio.sleep(delay)
        if not node.attached or node.incarnation != incarnation:
            self._fail_after(grpc.StatusCode.UNAVAILABLE, f"{address}: connection reset", 0.0)
            return
        mode = net.blocked(stub._src, node.node_id)
        if mode is not None:
            self._break(mode, 0.0)
            return
        handler = getattr(node.handlers.replog_service, m.name, None)
        if handler is None:
            self._fail_after(grpc.StatusCode.UNIMPLEMENTED, m.name, 0.0)
            return
        ctx = SimContext(f"sim:{_label(stub._src)}", md, self._deadline, self._loop)
        self._ctx = ctx
        gen = handler(m.request_cls.FromString(data), ctx)
        try:
            async with contextlib.aclosing(gen):
                async for response in gen:
                    if not isinstance(response, m.response_cls):
                        wrong = TypeError(f"{m.name} yielded {type(response).__name__}")
                        net._record(node.node_id, m.name, wrong)
                        self._fail_after(grpc.StatusCode.UNKNOWN, repr(wrong), 0.0)
                        return
                    payload = response.SerializeToString()
                    fate, delay = net._leg(node.node_id, stub._src, len(payload), lossy=False)
                    if fate != "ok":
                        self._break(fate, delay)
                        return
                    self._in_flight += 1
                    self._schedule(payload, delay)
                    while self._in_flight >= STREAM_WINDOW and not self._finished:
                        self._space.clear()
                        await self._space.wait()
                    if self._finished:
                        return
        except SimAbortError:
            pass
        except Exception as exc:
            if not ctx._aborted:
                net._record(node.node_id, m.name, exc)
                self._fail_after(grpc.StatusCode.UNKNOWN, f"Unexpected {exc!r}", 0.0)
                return
        status = ctx._status()
        end_delay = net._delay(net.faults_for(node.node_id, stub._src), 0)
        if status is not None:
            self._net.stats[f"stream_{status.code.name}"] += 1
            self._schedule(status.error(), end_delay)
        else:
            self._schedule(_END, end_delay)

    def _stall(self) -> None:
        """Silently lost: the client waits for its deadline, or for keepalive (``hang_s``)."""
        hang_until = self._loop.time() + self._net.hang_s
        if self._deadline is not None and self._deadline <= hang_until:
            return  # _on_deadline reports it
        self._fail_after(
            grpc.StatusCode.UNAVAILABLE, "connection lost (keepalive timeout)", self._net.hang_s
        )

    def _break(self, mode: str, delay: float) -> None:
        if mode == "refuse":
            self._fail_after(grpc.StatusCode.UNAVAILABLE, f"{self._stub._address}: reset", delay)
        else:
            self._stall()
