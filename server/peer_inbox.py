"""The receive side of peer links: checks a ``RaftBatch`` and steps each message into its group.

Owns: the cluster id / protocol version check, the misrouting check, liveness notes
(``runtime.on_peer_batch``), decoding and stepping each message with per-message error isolation,
quiesce notices, and the reassembly of chunked snapshots (server/transport.py cuts a snapshot
whose data exceeds ``server.snapshot_chunk_bytes`` into chunk messages).
Production calls ``handle_batch`` from ``PeerService.Raft`` (server/service.py) for each batch of
a stream; the system simulation calls it directly. No I/O and no gRPC here; time is ``clock()``
(the event loop's by default, virtual in the simulation).

Rules:
- A batch from another cluster or protocol version raises ``BrokerError("CLUSTER_MISMATCH")``;
  the caller ends the stream. Nothing of that batch is stepped.
- One bad message (malformed, or a bug in its group) is logged and skipped; the rest of the batch
  and the link go on.
- Snapshot chunks arrive in order on one link. Chunk 0 always starts a fresh reassembly for its
  (sender, group), superseding any unfinished one; a chunk of another snapshot is ignored; a
  chunk out of sequence (one before it was lost) drops the reassembly. So a
  lost chunk loses the snapshot, never corrupts it, and Raft resends the snapshot (the sender
  reports it failed). Reassembly buffers are bounded in total bytes and expire after
  ``reassembly_timeout_s`` without a chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from raft.types import Message
from server.codec import MalformedPeerMessage, message_from_proto
from server.errors import BrokerError
from server.transport import PROTOCOL_VERSION
from wire import replog_pb2 as pb

if TYPE_CHECKING:
    from server.config import ServerConfig


class InboxRuntime(Protocol):
    """What the inbox needs of server/runtime.py's ``Runtime``."""

    def on_peer_batch(self, from_node: int, now: float) -> None: ...
    def step(self, group_id: int, msg: Message) -> None: ...
    def on_quiesce_notice(self, from_node: int, group_ids: Any) -> None: ...


@dataclass
class _Reassembly:
    snapshot_id: int
    count: int
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    last_seen: float = 0.0


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class PeerInbox:
    def __init__(
        self,
        node_id: int,
        cluster_id: str,
        runtime: InboxRuntime,
        log: Any,
        clock: Callable[[], float] = _loop_time,
        *,
        reassembly_max_bytes: int = 512 << 20,
        reassembly_timeout_s: float = 60.0,
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.runtime = runtime
        self._log = log
        self._clock = clock
        self._reassembly_max_bytes = reassembly_max_bytes
        self._reassembly_timeout_s = reassembly_timeout_s
        self._reassembly: dict[tuple[int, int], _Reassembly] = {}  # (from node, group) -> buffer
        self.reassembly_bytes = 0
        self.misrouted_batches = 0
        self.malformed_messages = 0
        self.failed_messages = 0
        self.snapshots_reassembled = 0
        self.snapshots_dropped = 0

    @classmethod
    def from_config(
        cls,
        cfg: ServerConfig,
        runtime: InboxRuntime,
        log: Any,
        clock: Callable[[], float] = _loop_time,
    ) -> PeerInbox:
        return cls(
            cfg.node.node_id,
            cfg.node.cluster_id,
            runtime,
            log,
            clock,
            reassembly_max_bytes=cfg.server.snapshot_reassembly_max_bytes,
        )

    def handle_batch(self, batch: pb.RaftBatch) -> None:
        if batch.cluster_id != self.cluster_id or batch.protocol_version != PROTOCOL_VERSION:
            self._log.warning(
                "peer_refused",
                from_node=batch.from_node,
                cluster_id=batch.cluster_id,
                protocol_version=batch.protocol_version,
            )
            raise BrokerError(
                "CLUSTER_MISMATCH",
                f"batch from node {batch.from_node} of cluster '{batch.cluster_id}' "
                f"v{batch.protocol_version}; this is node {self.node_id} of '{self.cluster_id}' "
                f"v{PROTOCOL_VERSION}",
                hint="check --voters / cluster_id of both brokers",
            )
        if batch.to_node != self.node_id:
            self.misrouted_batches += 1
            self._log.warning("peer_misrouted", from_node=batch.from_node, to=batch.to_node)
            return
        now = self._clock()
        self.runtime.on_peer_batch(batch.from_node, now)
        if self._reassembly:
            self._expire(now)
        for m in batch.messages:
            if m.snapshot_chunk_count > 1:
                whole = self._reassemble(batch.from_node, m, now)
                if whole is None:
                    continue
                m = whole
            try:
                msg = message_from_proto(m)
            except MalformedPeerMessage as exc:
                self.malformed_messages += 1
                self._log.warning("peer_message_malformed", group_id=m.group_id, error=str(exc))
                continue
            try:
                self.runtime.step(m.group_id, msg)
            except Exception as exc:  # a bug must not take the whole peer link down
                self.failed_messages += 1
                self._log.exception("peer_message_failed", group_id=m.group_id, error=repr(exc))
        if batch.quiesced_groups:
            self.runtime.on_quiesce_notice(batch.from_node, batch.quiesced_groups)

    # ------------------------------------------------------------------ snapshot chunks
    def _reassemble(self, from_node: int, m: pb.RaftMessage, now: float) -> pb.RaftMessage | None:
        """Add one chunk; return the whole snapshot message once its last chunk arrived."""
        key = (from_node, m.group_id)
        buf = self._reassembly.get(key)
        if m.snapshot_chunk_index == 0:
            if buf is not None:
                self._drop(key, "superseded")
            buf = _Reassembly(m.snapshot_id, m.snapshot_chunk_count)
            self._reassembly[key] = buf
        elif buf is None or buf.snapshot_id != m.snapshot_id:
            return None  # its snapshot was dropped or superseded already
        elif buf.count != m.snapshot_chunk_count or len(buf.parts) != m.snapshot_chunk_index:
            self._drop(key, "chunk_missing")
            return None
        data = m.snapshot.data
        if self.reassembly_bytes + len(data) > self._reassembly_max_bytes:
            self._drop(key, "reassembly_full")
            return None
        buf.parts.append(data)
        buf.size += len(data)
        buf.last_seen = now
        self.reassembly_bytes += len(data)
        if len(buf.parts) < buf.count:
            return None
        del self._reassembly[key]
        self.reassembly_bytes -= buf.size
        whole = pb.RaftMessage()
        whole.CopyFrom(m)  # the caller's batch stays as it arrived
        whole.snapshot.data = b"".join(buf.parts)
        whole.snapshot_chunk_index = 0
        whole.snapshot_chunk_count = 0
        whole.snapshot_id = 0
        self.snapshots_reassembled += 1
        return whole

    def _drop(self, key: tuple[int, int], reason: str) -> None:
        buf = self._reassembly.pop(key)
        self.reassembly_bytes -= buf.size
        self.snapshots_dropped += 1
        self._log.warning(
            "snapshot_reassembly_dropped",
            from_node=key[0],
            group_id=key[1],
            reason=reason,
            chunks=len(buf.parts),
            of=buf.count,
        )

    def _expire(self, now: float) -> None:
        for key in [
            k
            for k, buf in self._reassembly.items()
            if now - buf.last_seen > self._reassembly_timeout_s
        ]:
            self._drop(key, "timed_out")
