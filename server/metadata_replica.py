"""This broker's replica of the metadata group: proposals, forwarding, linearizable reads.

Owns: proposal waiters (resolved when the command is applied), ReadIndex barriers, forwarding a
command to the metadata leader when this replica is not it. The state machine itself
(metadata.MetadataState) is pure; every replica applies the same commands in log order.
A result travels between brokers as JSON: ``{"index": i, "result": ...}`` or ``{"error": {...}}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from metadata import commands as mcmd
from metadata.errors import MetadataError
from metadata.state import MetadataState
from raft.errors import NotLeader, ProposalDropped
from raft.rawnode import RawNode
from raft.storage import DurableLog
from raft.types import Entry, EntryType, ReadState, Role, Snapshot, SoftState
from server.errors import BrokerError, not_leader, timed_out
from server.proposals import ProposalWaiters

Forwarder = Callable[[int, bytes, int], Awaitable[bytes]]
MAX_FORWARD_HOPS = 2


def result_to_json(obj: object) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: result_to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [result_to_json(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): result_to_json(v) for k, v in obj.items()}
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, (frozenset, set)):
        return sorted(obj)
    return str(obj)


def error_to_json(exc: BaseException) -> dict[str, Any]:
    fields = {k: str(v) for k, v in vars(exc).items() if not k.startswith("_")}
    return {"class": type(exc).__name__, "message": str(exc), "fields": fields}


class ForwardedError(Exception):
    """A metadata error raised on the leader, carried back to this broker by class name."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload
        super().__init__(payload.get("message", "metadata error"))
        for k, v in payload.get("fields", {}).items():
            setattr(self, k, v)


def _forwarded_class(name: str) -> type[ForwardedError]:
    # A subclass named like the leader's error so server.errors maps it to the same code.
    return type(name, (ForwardedError,), {})


class MetadataReplica:
    def __init__(
        self,
        *,
        node: RawNode,
        log: DurableLog,
        state: MetadataState,
        touch: Callable[[int], None],
        forward: Forwarder,
        leader_address: Callable[[int], str],
        on_change: Callable[[], None],
        logger: Any,
        group_id: int,
        fallback_targets: Sequence[int] = (),
        on_broker_heard: Callable[[int], None] = lambda node_id: None,
        on_leadership: Callable[[bool], None] = lambda leader: None,
        incarnation: str = "",
    ) -> None:
        self.node = node
        self._on_broker_heard = on_broker_heard
        self._on_leadership = on_leadership
        self._fallback = [t for t in fallback_targets if t != node.id]
        self._fallback_next = 0
        self.log = log
        self.state = state
        self.group_id = group_id
        self._touch = touch
        self._forward = forward
        self._leader_address = leader_address
        self._on_change = on_change
        self._log = logger
        self.role = Role.FOLLOWER
        self.leader_id = 0
        self.term = 0
        self._waiters: ProposalWaiters[Any] = ProposalWaiters()
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._read_waiters: dict[bytes, asyncio.Future[int]] = {}
        self._ctx = itertools.count(1)
        # Read-index contexts must be unique across restarts too: a READ_INDEX_RESP sent to this
        # node's previous incarnation can arrive after a restart, and must not answer a new
        # barrier with an index from before (a stale read: UNKNOWN_TOPIC for a live topic,
        # found by tests/system_sim, crashy profile, seed 17).
        self._ctx_prefix = f"{node.id}:{incarnation}"

        self.stopped: BaseException | None = None
        self.applied_since_snapshot = 0

    # ------------------------------------------------------------------ runtime callbacks
    def on_log_append(self, entries: Sequence[Entry]) -> None:
        pass

    def on_persisted(self, last_index: int) -> None:
        pass

    def on_snapshot(self, snapshot: Snapshot) -> None:
        self.state = MetadataState.restore(snapshot.data)
        self._on_change()

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        was_leader = self.role == Role.LEADER
        self.role, self.leader_id, self.term = soft.role, soft.leader_id, term
        if was_leader != (soft.role == Role.LEADER):
            self._on_leadership(soft.role == Role.LEADER)
        self._log.info(
            "metadata_leader_changed", leader_id=soft.leader_id, term=term, role=soft.role.name
        )
        if soft.role != Role.LEADER:
            # Pending ReadIndex requests die with the leader they were sent to: retry elsewhere.
            for fut in self._read_waiters.values():
                if not fut.done():
                    fut.set_exception(self._not_leader())
            self._read_waiters.clear()

    def on_read_states(self, read_states: Sequence[ReadState]) -> None:
        for rs in read_states:
            fut = self._read_waiters.pop(rs.context, None)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)

    def apply(self, entries: Sequence[Entry]) -> None:
        changed = False
        for entry in entries:
            result: Any = None
            error: BaseException | None = None
            # Every entry advances the state's applied index; a conf change or the leader's
            # no-op is applied as an empty entry (membership is the Raft core's business).
            data = entry.data if entry.type == EntryType.NORMAL else b""
            try:
                result = self.state.apply(entry.index, data)
                changed = changed or bool(data)
                if data and self.role == Role.LEADER:
                    self._note_broker_heard(data)
            except MetadataError as exc:
                error = exc
                changed = True
            self._waiters.resolve(
                entry.index,
                entry.term,
                lambda result=result, error=error: _outcome(result, error),  # type: ignore[misc]
                self._not_leader,
            )
        self.applied_since_snapshot += len(entries)
        applied = entries[-1].index if entries else 0
        if self._applied_waiters:
            keep = []
            for idx, fut in self._applied_waiters:
                if idx <= applied:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    keep.append((idx, fut))
            self._applied_waiters = keep
        if changed:
            self._on_change()

    def _note_broker_heard(self, data: bytes) -> None:
        # The leader judges liveness on its own clock from the heartbeats it applies (#12
        # defect 19); a heartbeat applied here was proposed by that broker moments ago.
        cmd = mcmd.decode(data)
        if isinstance(cmd, mcmd.BrokerHeartbeat | mcmd.RegisterBroker):
            self._on_broker_heard(cmd.node_id)

    def on_stopped(self, reason: BaseException | None) -> None:
        self.stopped = reason
        self._waiters.fail_all(BrokerError("INTERNAL", f"metadata replica stopped: {reason}"))

    # ------------------------------------------------------------------ proposals
    def _not_leader(self) -> BrokerError:
        leader = self.leader_id if self.leader_id != self.node.id else 0
        return not_leader(
            "the metadata group", leader, self._leader_address(leader) if leader else ""
        )

    @property
    def applied_index(self) -> int:
        return self.state.applied_index

    async def wait_applied(self, index: int, timeout_s: float) -> None:
        if self.state.applied_index >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((index, fut))
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            raise timed_out(f"waiting for metadata index {index}") from None

    async def propose_local(self, data: bytes, timeout_s: float) -> tuple[int, Any]:
        """Propose on this replica (must be the leader); returns (index, apply result)."""
        if self.role != Role.LEADER:
            raise self._not_leader()
        try:
            index = self.node.propose(data)
        except NotLeader:
            raise self._not_leader() from None
        except ProposalDropped as exc:
            raise BrokerError(
                "LEADER_NOT_AVAILABLE", f"metadata: {exc.reason}", retriable=True
            ) from None
        fut = self._waiters.add(index, self.node.term)
        self._touch(self.group_id)
        try:
            result = await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except TimeoutError:
            raise timed_out("metadata proposal") from None
        return index, result

    async def _propose_once(self, data: bytes, timeout_s: float, hops: int) -> tuple[int, Any]:
        """Propose here if leader, else forward (to the known leader, or - when no leader is
        known, e.g. a new broker that is not yet a member - to one of the metadata voters).
        Returns (index, JSON result)."""
        if self.role == Role.LEADER:
            index, result = await self.propose_local(data, timeout_s)
            return index, result_to_json(result)
        target = self.leader_id if self.leader_id not in (0, self.node.id) else 0
        if target == 0:
            if hops > 0 or not self._fallback:
                raise self._not_leader()
            target = self._fallback[self._fallback_next % len(self._fallback)]
            self._fallback_next += 1
        if hops >= MAX_FORWARD_HOPS:
            raise self._not_leader()
        reply = json.loads(await self._forward(target, data, hops + 1))
        if "error" in reply:
            raise _forwarded_class(reply["error"]["class"])(reply["error"])
        return int(reply["index"]), reply["result"]

    async def propose(self, cmd: object, timeout_s: float = 10.0) -> Any:
        """Propose a command wherever the leader is; waits until applied HERE too, so a read
        on this broker right after sees the change. Returns the apply result in JSON form."""
        _index, result = await self.propose_indexed(cmd, timeout_s)
        return result

    async def propose_indexed(self, cmd: object, timeout_s: float = 10.0) -> tuple[int, Any]:
        """``propose``, also returning the log index the command was committed at (a learner
        that has no voters configured yet does not wait to apply it: see ``wait_applied``)."""
        data = mcmd.encode(cmd)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay = 0.02
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise timed_out("metadata proposal")
            try:
                index, result = await self._propose_once(data, remaining, hops=0)
                if self.node.has_voters() or self.role == Role.LEADER:
                    await self.wait_applied(index, max(0.01, deadline - loop.time()))
                return index, result
            except BrokerError as exc:
                if not exc.retriable:
                    raise
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 0.5)

    async def handle_forwarded(self, data: bytes, timeout_s: float, hops: int) -> bytes:
        """Another broker's proposal: propose it (or pass it on to our leader)."""
        try:
            mcmd.decode(data)
            index, result = await self._propose_once(data, timeout_s, hops)
        except MetadataError as exc:
            return json.dumps({"error": error_to_json(exc)}).encode()
        return json.dumps({"index": index, "result": result}).encode()

    async def barrier(self, timeout_s: float = 5.0) -> None:
        """Linearizable read barrier (ReadIndex): afterwards this replica's state reflects every
        change committed before the call."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise timed_out("metadata read barrier")
            ctx = f"{self._ctx_prefix}:{next(self._ctx)}".encode()
            fut: asyncio.Future[int] = loop.create_future()
            self._read_waiters[ctx] = fut
            self.node.read_index(ctx)
            self._touch(self.group_id)
            try:
                index = await asyncio.wait_for(fut, min(remaining, 1.0))
            except (TimeoutError, BrokerError):
                self._read_waiters.pop(ctx, None)
                await asyncio.sleep(0.02)
                continue
            await self.wait_applied(index, max(0.01, deadline - loop.time()))
            return


def _outcome(result: Any, error: BaseException | None) -> Any:
    if error is not None:
        raise error
    return result
