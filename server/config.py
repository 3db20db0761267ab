"""Broker configuration: one frozen dataclass per section, loaded in layers.

Contract:
- Every field carries its documentation (unit, trade-off, default) in ``field(metadata={"doc"})``;
  ``describe_fields()`` reads it, and ``python -m server.config --markdown`` renders
  docs/configuration.md from it (a test keeps the two in step).
- Every section validates itself in ``__post_init__`` and raises ``ConfigError(field, value,
  hint)`` with a dotted field name ("raft.election_ticks") and a hint that says what to do.
  A value of the wrong type is refused there too, so a hand-built config is as safe as a loaded one.
- Layers, lowest first: defaults < TOML file < environment (``REPLOG_<SECTION>__<KEY>``) <
  ``--set section.key=value`` < explicit flags (``overrides``). A higher layer replaces a
  key's whole value (a dict included; maps are never merged key by key).
- Strings from the environment and ``--set`` are parsed to the field's type: int (underscores
  allowed), bool (``true``/``false``), str, and dict[int, str] as ``"1=host:port,2=host:port"``.
- No global config object: the broker gets one ``ServerConfig`` and passes parts of it down.
- Nothing here does I/O except ``load_config`` reading the one TOML file it is given.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from partition.config import MAX_MESSAGE_BYTES_LIMIT
from raft.config import RaftConfig

__all__ = [
    "ConfigError",
    "NodeConfig",
    "PartitionDefaults",
    "RaftSection",
    "ServerConfig",
    "ServerSection",
    "StorageConfig",
    "config_to_toml",
    "describe_fields",
    "load_config",
    "parse_address",
    "parse_id_map",
    "render_markdown",
]

KiB = 1024
MiB = 1024 * KiB

ENV_PREFIX = "REPLOG_"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
FSYNC_POLICIES = ("always", "never")
_REQUIRED = dataclasses.MISSING
_CLUSTER_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class ConfigError(ValueError):
    """A configuration value is missing, malformed or out of range.

    ``field`` is dotted ("raft.election_ticks", or just a section name for an unknown section),
    ``value`` the offending value (None when missing), ``hint`` what to do about it.
    """

    def __init__(self, field: str, value: object, hint: str) -> None:
        self.field = field
        self.value = value
        self.hint = hint
        super().__init__(f"{field}={value!r}: {hint}")


def _f(default: int | str | bool, doc: str) -> Any:
    """A dataclass field with an immutable default and its documentation."""
    return field(default=default, metadata={"doc": doc})


def _required(doc: str) -> Any:
    return field(metadata={"doc": doc})


# ---------------------------------------------------------------- value checks


def parse_address(name: str, value: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """Split "HOST:PORT" (or "[v6]:PORT") into (host, port); raise ConfigError naming ``name``."""
    hint = "expected HOST:PORT, e.g. 127.0.0.1:9400"
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(name, value, hint)
    host, _, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c.isspace() for c in host):
        raise ConfigError(name, value, hint)
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(name, value, f"port {port_text!r} is not a number; {hint}") from None
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ConfigError(name, value, f"port must be in [{low}, 65535]")
    return host, port


def parse_id_map(name: str, text: str) -> dict[int, str]:
    """Parse "1=host:port,2=host:port" into {1: "host:port", ...} ("" is the empty map)."""
    result: dict[int, str] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, address = item.partition("=")
        if not sep:
            raise ConfigError(name, text, f"item {item!r} is not ID=HOST:PORT")
        try:
            node_id = int(key.strip())
        except ValueError:
            raise ConfigError(name, text, f"node id {key.strip()!r} is not a number") from None
        if node_id in result:
            raise ConfigError(name, text, f"node id {node_id} appears twice")
        result[node_id] = address.strip()
    return result


def _check_id_map(name: str, value: dict[int, str]) -> None:
    for node_id, address in value.items():
        if isinstance(node_id, bool) or not isinstance(node_id, int) or node_id < 1:
            raise ConfigError(name, value, f"node ids must be integers >= 1, got {node_id!r}")
        if not isinstance(address, str):
            raise ConfigError(name, value, f"address of node {node_id} must be a string")
        parse_address(f"{name}[{node_id}]", address)


def _at_least(name: str, value: int, low: int, why: str = "") -> None:
    if value < low:
        raise ConfigError(name, value, f"must be >= {low}" + (f" ({why})" if why else ""))


def _in_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(name, value, f"must be in [{low}, {high}]")


def _one_of(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(name, value, f"must be one of: {', '.join(choices)}")


def _limit_or_forever(name: str, value: int) -> None:
    if value != -1 and value < 1:
        raise ConfigError(name, value, "must be -1 (no limit) or >= 1")


_HINTS_CACHE: dict[type, dict[str, Any]] = {}


def _field_types(cls: type) -> dict[str, Any]:
    hints = _HINTS_CACHE.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS_CACHE[cls] = hints
    return hints


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is dict:
        return "dict[int, str]"
    return str(tp.__name__)


def _check_types(obj: object, section: str) -> None:
    """Refuse a value of the wrong type (bool is not an int here, although Python says it is)."""
    types = _field_types(type(obj))
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        tp = types[f.name]
        name = f"{section}.{f.name}"
        if typing.get_origin(tp) is dict:
            ok = isinstance(value, dict)
        elif tp is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, tp)
        if not ok:
            raise ConfigError(name, value, f"expected {_type_name(tp)}, got {type(value).__name__}")


# ---------------------------------------------------------------- sections


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Section [node]: who this broker is and where it lives."""

    node_id: int = _required(
        "This broker's id, unique in the cluster and never reused for a different disk. "
        "Required, >= 1."
    )
    listen: str = _f(
        "127.0.0.1:9400",
        "HOST:PORT the gRPC server binds (clients and peers). Port 0 picks a free port "
        "(tests only: peers cannot find it).",
    )
    advertised_address: str = _f(
        "",
        "HOST:PORT other brokers and clients are told to use to reach this broker. "
        "Empty = same as `listen`; set it when binding 0.0.0.0 or behind NAT.",
    )
    data_dir: str = _required(
        "Directory holding this broker's Raft logs, hard state and snapshots. Required. "
        "Losing it means this replica lost its vote: replace the broker under a new node_id."
    )
    dc: str = _f(
        "dc1",
        "Data center (failure domain) name. Placement spreads each partition's replicas "
        "across DCs first, so a whole DC can fail without losing a majority.",
    )
    rack: str = _f(
        "", "Rack within the DC; placement spreads replicas across racks second. Empty = none."
    )
    voters: dict[int, str] = field(
        default_factory=dict,
        metadata={
            "doc": "The metadata group's voters, id -> HOST:PORT (`1=h:p,2=h:p,3=h:p`): 1, 3 or 5 "
            "of them, identical on every broker. More voters survive more failures but every "
            "metadata change waits for more acknowledgements. Empty = this node alone "
            "(single-node cluster)."
        },
    )
    peer_addresses: dict[int, str] = field(
        default_factory=dict,
        metadata={
            "doc": "Per-peer override of where THIS broker dials a peer (id -> HOST:PORT), e.g. a "
            "Toxiproxy listener for fault injection. Peers not listed are dialed at the address "
            "they advertise."
        },
    )
    cluster_id: str = _f(
        "replog",
        "Name every broker of one cluster shares; peer traffic carrying another cluster_id "
        "is refused, so two clusters on one network never mix. Letters, digits, `._-`.",
    )

    def __post_init__(self) -> None:
        _check_types(self, "node")
        _at_least("node.node_id", self.node_id, 1)
        parse_address("node.listen", self.listen, allow_port_zero=True)
        if self.advertised_address == "":
            object.__setattr__(self, "advertised_address", self.listen)
        parse_address("node.advertised_address", self.advertised_address, allow_port_zero=True)
        if not self.data_dir.strip():
            raise ConfigError("node.data_dir", self.data_dir, "must name a directory")
        if not self.dc.strip():
            raise ConfigError("node.dc", self.dc, "must not be empty (the default is 'dc1')")
        voters = dict(self.voters) if self.voters else {self.node_id: self.advertised_address}
        _check_id_map("node.voters", voters)
        if len(voters) not in (1, 3, 5):
            raise ConfigError(
                "node.voters",
                self.voters,
                f"{len(voters)} voters given; the metadata group needs 1, 3 or 5 "
                "(an even count tolerates no more failures than one fewer)",
            )
        object.__setattr__(self, "voters", voters)
        _check_id_map("node.peer_addresses", self.peer_addresses)
        object.__setattr__(self, "peer_addresses", dict(self.peer_addresses))
        if not _CLUSTER_ID_RE.match(self.cluster_id):
            raise ConfigError(
                "node.cluster_id", self.cluster_id, "use 1-64 letters, digits, '.', '_' or '-'"
            )

    def dial_address(self, peer_id: int, advertised: str) -> str:
        """Where this node connects to ``peer_id``: the override if any, else ``advertised``."""
        return self.peer_addresses.get(peer_id, advertised)


# One Raft config source (#12): the [raft] section's defaults ARE raft.config.RaftConfig's, so a
# group the broker builds and a group a test builds with RaftConfig(node_id=...) behave alike.
_RAFT_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(RaftConfig) if f.default is not _REQUIRED
}


def _raft(name: str, doc: str) -> Any:
    """A [raft] field whose default comes from RaftConfig."""
    return _f(_RAFT_DEFAULTS[name], doc)


@dataclass(frozen=True, kw_only=True)
class RaftSection:
    """Section [raft]: timing and flow control shared by every Raft group on this broker.

    Every field but ``tick_ms`` and ``quiesce`` (which belong to the runtime) is a field of
    ``raft.config.RaftConfig`` with RaftConfig's default; ``to_raft_config`` builds one."""

    tick_ms: int = _f(
        100,
        "Milliseconds per Raft tick; every other Raft duration is counted in ticks. Shorter "
        "reacts faster to failures but costs more timer work and false elections on slow links.",
    )
    election_ticks: int = _raft(
        "election_ticks",
        "Election timeout in ticks; each node randomizes it in [election_ticks, "
        "2*election_ticks). Lower fails over faster; too low for the network's latency causes "
        "needless elections. Must exceed heartbeat_ticks.",
    )
    heartbeat_ticks: int = _raft(
        "heartbeat_ticks",
        "Ticks between leader heartbeats (coalesced per peer). Must be < election_ticks.",
    )
    max_size_per_msg: int = _raft(
        "max_size_per_msg",
        "Bytes of entries in one append message to one follower. Larger catches followers up "
        "faster; smaller keeps latency of other groups' messages on the same stream low.",
    )
    max_inflight_msgs: int = _raft(
        "max_inflight_msgs",
        "Append messages in flight to one follower before waiting for acknowledgements "
        "(pipelining window). Larger hides more latency and uses more memory.",
    )
    max_inflight_bytes: int = _raft(
        "max_inflight_bytes",
        "Bytes in flight to one follower per group; caps memory when a follower is slow. "
        "A follower catching up receives this much per group in one turn; the transport "
        "splits it into batches of server.max_peer_batch_bytes.",
    )
    max_uncommitted_bytes: int = _raft(
        "max_uncommitted_bytes",
        "Uncommitted entry bytes a leader accepts per group before it drops proposals "
        "(producers see a retriable error); bounds memory when followers cannot keep up.",
    )
    pre_vote: bool = _raft(
        "pre_vote",
        "PreVote (thesis 9.6): a node checks it could win before disrupting the term, so a "
        "partitioned node rejoining does not depose a healthy leader. Leave on.",
    )
    check_quorum: bool = _raft(
        "check_quorum",
        "CheckQuorum (thesis 6.2): a leader that has not heard from a quorum within an "
        "election timeout steps down, so a minority leader stops serving. Leave on.",
    )
    quiesce: bool = _f(
        True,
        "Idle groups stop ticking: a leader with nothing in flight for two heartbeats tells its "
        "followers, and liveness is then watched per node instead of per group. Makes "
        "thousands of idle partitions nearly free; off = every group heartbeats every tick.",
    )

    def __post_init__(self) -> None:
        _check_types(self, "raft")
        _in_range("raft.tick_ms", self.tick_ms, 1, 10_000)
        _at_least("raft.heartbeat_ticks", self.heartbeat_ticks, 1)
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError(
                "raft.election_ticks",
                self.election_ticks,
                f"must be greater than raft.heartbeat_ticks ({self.heartbeat_ticks}); "
                "followers would time out between heartbeats",
            )
        _at_least("raft.max_size_per_msg", self.max_size_per_msg, 1)
        _at_least("raft.max_inflight_msgs", self.max_inflight_msgs, 1)
        _at_least("raft.max_inflight_bytes", self.max_inflight_bytes, 1)
        _at_least("raft.max_uncommitted_bytes", self.max_uncommitted_bytes, 1)

    def to_raft_config(
        self, node_id: int, priority: int = 0, *, broadcast_commit: bool = True
    ) -> RaftConfig:
        """The ``RaftConfig`` of one group member on this broker (``broadcast_commit``: see
        RaftConfig; the broker turns it off for partitions, whose followers serve no reads)."""
        return RaftConfig(
            node_id=node_id,
            election_ticks=self.election_ticks,
            heartbeat_ticks=self.heartbeat_ticks,
            max_size_per_msg=self.max_size_per_msg,
            max_inflight_msgs=self.max_inflight_msgs,
            max_inflight_bytes=self.max_inflight_bytes,
            max_uncommitted_bytes=self.max_uncommitted_bytes,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            priority=priority,
            broadcast_commit=broadcast_commit,
        )


@dataclass(frozen=True, kw_only=True)
class StorageConfig:
    """Section [storage]: the durable Raft logs on this broker's disk."""

    fsync: str = _f(
        "always",
        "`always`: nothing is acknowledged before it is fsynced (batched: one fsync covers "
        "every append that arrived meanwhile). `never`: acknowledge once written to the OS; "
        "a power loss on a majority can lose acknowledged records. Use `never` only for "
        "benchmarks and as the chaos suite's negative control.",
    )
    segment_bytes: int = _f(
        64 * MiB,
        "Size at which a log segment file is closed and a new one started (>= 4 KiB). "
        "Retention drops whole segments, so smaller segments free space sooner but mean "
        "more files.",
    )
    snapshot_interval_entries: int = _f(
        10_000,
        "Take a partition snapshot (and allow log truncation) every N applied entries. "
        "Lower bounds restart replay time; higher writes snapshots less often.",
    )

    def __post_init__(self) -> None:
        _check_types(self, "storage")
        _one_of("storage.fsync", self.fsync, FSYNC_POLICIES)
        _at_least("storage.segment_bytes", self.segment_bytes, 4 * KiB)
        _at_least("storage.snapshot_interval_entries", self.snapshot_interval_entries, 1)


@dataclass(frozen=True, kw_only=True)
class PartitionDefaults:
    """Section [partition]: defaults for topics that do not set their own."""

    retention_ms: int = _f(
        604_800_000,
        "Keep records at least this many milliseconds (default 7 days); whole segments "
        "older than this are dropped. -1 = forever.",
    )
    retention_bytes: int = _f(
        -1, "Keep at most about this many bytes per partition (whole segments). -1 = no limit."
    )
    max_batch_bytes: int = _f(
        4 * MiB,
        "Largest record batch a producer may append, in bytes. Must fit in "
        "server.grpc_max_message_bytes.",
    )
    retention_check_ms: int = _f(5_000, "Milliseconds between retention checks on each partition.")
    checkpoint_interval_bytes: int = _f(
        64 * MiB,
        "Write a partition checkpoint (the state and offset index at the applied index) every "
        "this many applied bytes, so a restart replays only what came after it; -1 = never "
        "(a restart then replays the whole retained log). Smaller: faster restarts, more writes.",
    )

    def __post_init__(self) -> None:
        _check_types(self, "partition")
        if self.checkpoint_interval_bytes != -1:
            _at_least("partition.checkpoint_interval_bytes", self.checkpoint_interval_bytes, 1)
        _limit_or_forever("partition.retention_ms", self.retention_ms)
        _limit_or_forever("partition.retention_bytes", self.retention_bytes)
        _at_least("partition.max_batch_bytes", self.max_batch_bytes, 1)
        if self.max_batch_bytes > MAX_MESSAGE_BYTES_LIMIT:
            raise ConfigError(
                "partition.max_batch_bytes",
                self.max_batch_bytes,
                f"must be at most {MAX_MESSAGE_BYTES_LIMIT} bytes (8 MiB): a batch must fit in one "
                "peer message with room to spare, and topics are capped the same way",
            )
        _at_least("partition.retention_check_ms", self.retention_check_ms, 1)


@dataclass(frozen=True, kw_only=True)
class ServerSection:
    """Section [server]: the broker process (RPC limits, liveness, peer links, logging)."""

    produce_timeout_ms: int = _f(
        10_000,
        "Milliseconds a Produce waits for its batch to commit when the request sets no "
        "timeout; then it fails as retriable (the batch may still commit).",
    )
    fetch_max_wait_ms: int = _f(
        500, "Longest a Fetch long-polls for new records when the request sets no wait, in ms."
    )
    broker_heartbeat_ms: int = _f(
        1_000, "Milliseconds between this broker's liveness heartbeats to the metadata group."
    )
    broker_session_timeout_ms: int = _f(
        6_000,
        "A broker is `alive` if it heartbeated within this many ms. Shorter notices dead "
        "brokers sooner; too short marks brokers dead during GC pauses or slow links.",
    )
    outbox_max_messages: int = _f(
        10_000,
        "Raft messages queued per peer; beyond it messages are dropped and every group is told "
        "the peer is unreachable (it probes again later). Bounds memory when a peer is down.",
    )
    outbox_max_bytes: int = _f(
        128 * MiB,
        "Bytes of Raft messages queued per peer; beyond it batches are dropped and their groups "
        "told the peer is unreachable, like outbox_max_messages. Must hold at least one peer "
        "batch; a snapshot larger than this cannot be sent.",
    )
    max_peer_batch_bytes: int = _f(
        0,
        "Largest batch of Raft messages sent to a peer in one write, in bytes: a turn's messages "
        "for a peer are split into batches of at most this size (one message larger than that "
        "travels alone). 0 = a quarter of grpc_max_message_bytes, at most 16 MiB (16 MiB with "
        "the defaults). At most grpc_max_message_bytes. Larger batches mean fewer writes; "
        "smaller ones keep other groups' heartbeats and votes from queueing behind a catch-up.",
    )
    snapshot_chunk_bytes: int = _f(
        0,
        "A Raft snapshot whose data is larger than this travels in chunks of this size, "
        "reassembled by the receiver. 0 = a quarter of max_peer_batch_bytes (4 MiB with the "
        "defaults). At most half of max_peer_batch_bytes.",
    )
    snapshot_reassembly_max_bytes: int = _f(
        512 * MiB,
        "Bytes of snapshot chunks this broker buffers while reassembling snapshots from all "
        "peers; beyond it a snapshot is dropped (its leader sends it again later). Must be at "
        "least snapshot_chunk_bytes; bounds the largest snapshot this broker can receive.",
    )
    max_fetch_streams: int = _f(
        1_000,
        "Fetch streams served at once by this broker; one more is refused with the retriable "
        "TOO_MANY_FETCH_STREAMS error. Every record appended wakes every stream waiting on its "
        "partition, on the loop that also drives Raft, so this bounds that work.",
    )
    max_fetch_streams_per_client: int = _f(
        100,
        "Fetch streams served at once for one client connection (gRPC peer address); one more "
        "is refused with TOO_MANY_FETCH_STREAMS. At most max_fetch_streams.",
    )
    reconnect_backoff_ms: int = _f(
        50, "First delay before redialing a lost peer, in ms; doubles up to the maximum."
    )
    reconnect_backoff_max_ms: int = _f(
        2_000, "Largest delay between redials of a lost peer, in ms."
    )
    shutdown_transfer_timeout_ms: int = _f(
        3_000,
        "On graceful shutdown, ms to spend handing leadership of this broker's groups to "
        "caught-up peers before stopping anyway. 0 = stop without transferring.",
    )
    grpc_max_message_bytes: int = _f(
        64 * MiB, "Largest gRPC message sent or received, in bytes (clients and peers)."
    )
    log_level: str = _f(
        "info", "Least severe log level written: debug, info, warning, error or critical."
    )

    def __post_init__(self) -> None:
        _check_types(self, "server")
        _at_least("server.produce_timeout_ms", self.produce_timeout_ms, 1)
        _at_least("server.fetch_max_wait_ms", self.fetch_max_wait_ms, 0)
        _at_least("server.broker_heartbeat_ms", self.broker_heartbeat_ms, 1)
        if self.broker_session_timeout_ms <= self.broker_heartbeat_ms:
            raise ConfigError(
                "server.broker_session_timeout_ms",
                self.broker_session_timeout_ms,
                f"must be greater than server.broker_heartbeat_ms ({self.broker_heartbeat_ms}), "
                "or healthy brokers would be reported dead",
            )
        _at_least("server.outbox_max_messages", self.outbox_max_messages, 1)
        _at_least("server.reconnect_backoff_ms", self.reconnect_backoff_ms, 1)
        if self.reconnect_backoff_max_ms < self.reconnect_backoff_ms:
            raise ConfigError(
                "server.reconnect_backoff_max_ms",
                self.reconnect_backoff_max_ms,
                f"must be >= server.reconnect_backoff_ms ({self.reconnect_backoff_ms})",
            )
        _at_least("server.shutdown_transfer_timeout_ms", self.shutdown_transfer_timeout_ms, 0)
        _at_least("server.grpc_max_message_bytes", self.grpc_max_message_bytes, 64 * KiB)
        if self.max_peer_batch_bytes == 0:
            object.__setattr__(
                self, "max_peer_batch_bytes", min(16 * MiB, self.grpc_max_message_bytes // 4)
            )
        if not 4 * KiB <= self.max_peer_batch_bytes <= self.grpc_max_message_bytes:
            raise ConfigError(
                "server.max_peer_batch_bytes",
                self.max_peer_batch_bytes,
                f"must be 0 (auto) or in [4096, {self.grpc_max_message_bytes}] "
                "(server.grpc_max_message_bytes)",
            )
        if self.snapshot_chunk_bytes == 0:
            object.__setattr__(self, "snapshot_chunk_bytes", self.max_peer_batch_bytes // 4)
        if not 1 <= self.snapshot_chunk_bytes <= self.max_peer_batch_bytes // 2:
            raise ConfigError(
                "server.snapshot_chunk_bytes",
                self.snapshot_chunk_bytes,
                f"must be 0 (auto) or in [1, {self.max_peer_batch_bytes // 2}] (half of "
                "server.max_peer_batch_bytes)",
            )
        if self.outbox_max_bytes < self.max_peer_batch_bytes:
            raise ConfigError(
                "server.outbox_max_bytes",
                self.outbox_max_bytes,
                f"must be >= server.max_peer_batch_bytes ({self.max_peer_batch_bytes})",
            )
        if self.snapshot_reassembly_max_bytes < self.snapshot_chunk_bytes:
            raise ConfigError(
                "server.snapshot_reassembly_max_bytes",
                self.snapshot_reassembly_max_bytes,
                f"must be >= server.snapshot_chunk_bytes ({self.snapshot_chunk_bytes})",
            )
        _at_least("server.max_fetch_streams", self.max_fetch_streams, 1)
        _in_range(
            "server.max_fetch_streams_per_client",
            self.max_fetch_streams_per_client,
            1,
            self.max_fetch_streams,
        )
        object.__setattr__(self, "log_level", self.log_level.lower())
        _one_of("server.log_level", self.log_level, LOG_LEVELS)


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """The whole broker configuration: one value per section, checked across sections too."""

    node: NodeConfig
    raft: RaftSection = field(default_factory=RaftSection)
    storage: StorageConfig = field(default_factory=StorageConfig)
    partition: PartitionDefaults = field(default_factory=PartitionDefaults)
    server: ServerSection = field(default_factory=ServerSection)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(name, getattr(self, name), f"expected a {cls.__name__}")
        limit = self.server.grpc_max_message_bytes
        if self.partition.max_batch_bytes > limit:
            raise ConfigError(
                "partition.max_batch_bytes",
                self.partition.max_batch_bytes,
                f"must fit in server.grpc_max_message_bytes ({limit})",
            )
        if self.raft.max_size_per_msg > limit:
            raise ConfigError(
                "raft.max_size_per_msg",
                self.raft.max_size_per_msg,
                f"must fit in server.grpc_max_message_bytes ({limit})",
            )
        # One append message carries up to max_size_per_msg of entries and at least one entry
        # (a whole record batch); the transport drops a message that cannot pass the link, so
        # one that could never pass would never replicate (#12 defect 14).
        append_bytes = self.raft.max_size_per_msg + self.partition.max_batch_bytes
        if append_bytes + 64 * KiB > limit:
            raise ConfigError(
                "server.grpc_max_message_bytes",
                limit,
                f"must hold one append message: raft.max_size_per_msg + "
                f"partition.max_batch_bytes + 64 KiB = {append_bytes + 64 * KiB}",
            )


SECTIONS: dict[str, type] = {
    "node": NodeConfig,
    "raft": RaftSection,
    "storage": StorageConfig,
    "partition": PartitionDefaults,
    "server": ServerSection,
}


# ---------------------------------------------------------------- loading


def _valid_keys(section: str) -> list[str]:
    return [f.name for f in dataclasses.fields(SECTIONS[section])]


def _locate(section: str, key: str, value: object, source: str) -> str:
    """Return the checked dotted name, or raise ConfigError listing what is valid."""
    if section not in SECTIONS:
        raise ConfigError(
            section,
            value,
            f"unknown section {section!r} ({source}); valid sections: {', '.join(SECTIONS)}",
        )
    if key not in _valid_keys(section):
        raise ConfigError(
            f"{section}.{key}",
            value,
            f"unknown key ({source}); valid keys in [{section}]: "
            + ", ".join(_valid_keys(section)),
        )
    return f"{section}.{key}"


def _parse_text(name: str, tp: Any, text: str, source: str) -> object:
    """Parse a string from the environment or --set into the field's type."""
    if typing.get_origin(tp) is dict:
        return parse_id_map(name, text)
    if tp is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        raise ConfigError(name, text, f"expected true or false ({source})")
    if tp is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ConfigError(name, text, f"expected an integer ({source})") from None
    return text


def _coerce(section: str, key: str, value: object, source: str) -> object:
    """Bring a value from any layer to the field's type; strings are parsed, tables converted."""
    name = _locate(section, key, value, source)
    tp = _field_types(SECTIONS[section])[key]
    if isinstance(value, str) and tp is not str:
        return _parse_text(name, tp, value, source)
    if typing.get_origin(tp) is dict and isinstance(value, Mapping):
        converted: dict[int, str] = {}
        for raw_id, address in value.items():
            try:
                converted[int(raw_id)] = address
            except (TypeError, ValueError):
                raise ConfigError(
                    name, dict(value), f"node id {raw_id!r} is not a number"
                ) from None
        return converted
    return value  # the section's __post_init__ checks the type


def _split_set(item: str) -> tuple[str, str, str]:
    dotted, sep, text = item.partition("=")
    section, dot, key = dotted.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(
            dotted.strip() or item, item, "--set expects section.key=value, e.g. raft.tick_ms=50"
        )
    return section.lower(), key.lower(), text


def load_config(
    *,
    config_file: str | None,
    env: Mapping[str, str],
    sets: Sequence[str],
    overrides: Mapping[str, object],
) -> ServerConfig:
    """Build the effective config: defaults < ``config_file`` < ``env`` < ``sets`` < ``overrides``.

    ``env`` is usually ``os.environ``; only ``REPLOG_<SECTION>__<KEY>`` names are read (other
    ``REPLOG_*`` variables, such as the client's ``REPLOG_BOOTSTRAP``, are not config).
    ``overrides`` maps dotted keys ("node.node_id") to typed values (strings are parsed); None
    values are skipped, so unset command-line flags can be passed as they are.
    """
    layers: dict[str, dict[str, object]] = {name: {} for name in SECTIONS}

    if config_file is not None:
        try:
            with open(config_file, "rb") as fh:
                document = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError("config_file", config_file, f"cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config_file", config_file, f"not valid TOML: {exc}") from None
        source = f"in {config_file}"
        for section, table in document.items():
            if not isinstance(table, dict) or section not in SECTIONS:
                raise ConfigError(
                    section,
                    table,
                    f"unknown section [{section}] ({source}); valid sections: "
                    + ", ".join(SECTIONS),
                )
            for key, value in table.items():
                layers[section][key] = _coerce(section, key, value, source)

    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        section, _, key = var[len(ENV_PREFIX) :].partition("__")
        section, key = section.lower(), key.lower()
        value = _coerce(section, key, env[var], f"from ${var}")  # raises on unknown names
        layers[section][key] = value

    for item in sets:
        section, key, text = _split_set(item)
        layers[section][key] = _coerce(section, key, text, f"from --set {item}")

    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        layers[section][key] = _coerce(section, key, value, f"from {dotted}")

    for key, flag in (("node_id", "--node-id N"), ("data_dir", "--data-dir DIR")):
        if key not in layers["node"]:
            var = f"{ENV_PREFIX}NODE__{key.upper()}"
            raise ConfigError(
                f"node.{key}",
                None,
                f"required: pass {flag}, set {key} in [node] of the config file, or ${var}",
            )
    sections = {name: SECTIONS[name](**layers[name]) for name in SECTIONS}
    return ServerConfig(**sections)


# ---------------------------------------------------------------- rendering


def _toml_string(text: str) -> str:
    """A TOML basic string: escape backslash, quote and control characters; keep the rest."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = ", ".join(f"{k} = {_toml_value(v)}" for k, v in sorted(value.items()))
        return "{ " + inner + " }"
    raise TypeError(f"cannot render {type(value).__name__} as TOML")


def config_to_toml(cfg: ServerConfig) -> str:
    """The effective configuration as TOML that ``load_config`` reads back to an equal config."""
    lines = ["# replog broker configuration (effective values)"]
    for section in SECTIONS:
        lines.append("")
        lines.append(f"[{section}]")
        values = getattr(cfg, section)
        for f in dataclasses.fields(values):
            lines.append(f"{f.name} = {_toml_value(getattr(values, f.name))}")
    return "\n".join(lines) + "\n"


def describe_fields() -> list[tuple[str, str, str, str, str]]:
    """(section, key, type, default as TOML, doc) for every field, in declaration order."""
    rows: list[tuple[str, str, str, str, str]] = []
    for section, cls in SECTIONS.items():
        types = _field_types(cls)
        for f in dataclasses.fields(cls):
            if f.default is not _REQUIRED:
                default = _toml_value(f.default)
            elif f.default_factory is not _REQUIRED:
                default = _toml_value(f.default_factory())
            else:
                default = "(required)"
            rows.append((section, f.name, _type_name(types[f.name]), default, f.metadata["doc"]))
    return rows


def render_markdown() -> str:
    """docs/configuration.md, generated from the dataclasses (``-m server.config --markdown``)."""
    out = [
        "# Broker configuration",
        "",
        "<!-- Generated by `python -m server.config --markdown`; edit server/config.py, not this"
        " file. -->",
        "",
        "A broker's configuration is built in layers; each layer replaces the keys it sets:",
        "",
        "1. built-in defaults (below);",
        "2. the TOML file given with `--config FILE.toml` (sections and keys as below);",
        "3. environment variables `REPLOG_<SECTION>__<KEY>`, e.g. `REPLOG_RAFT__TICK_MS=50`;",
        "4. `--set section.key=value` (repeatable), e.g. `--set storage.fsync=never`;",
        "5. explicit flags of `replog server` (`--node-id`, `--listen`, `--data-dir`, `--dc`,",
        "   `--rack`, `--voters`, `--peer-address`, `--log-level`).",
        "",
        "Values from the environment and `--set` are parsed to the key's type: integers (`_`",
        "allowed as a separator), booleans `true`/`false`, strings as they are, and id maps as",
        "`1=host:port,2=host:port`. In TOML an id map is an inline table:",
        '`voters = { 1 = "10.0.0.1:9400", 2 = "10.0.0.2:9400", 3 = "10.0.0.3:9400" }`.',
        "A map given at a higher layer replaces the lower one whole; maps are not merged.",
        "",
        "`replog server ... --print-config` prints the effective configuration as TOML and exits;",
        "that output is itself a valid `--config` file.",
        "",
        "## Errors",
        "",
        "An unknown section or key, a value of the wrong type, or a value out of range stops the",
        "broker before it touches its data directory: it prints one line naming the key, the",
        "value and what to do, and exits with status 2, e.g.",
        "",
        "```",
        "replog: config error: raft.election_ticks=1: must be greater than raft.heartbeat_ticks"
        " (1); followers would time out between heartbeats",
        "```",
    ]
    current = ""
    for section, key, type_name, default, doc in describe_fields():
        if section != current:
            current = section
            out += ["", f"## [{section}]", "", "| key | type | default | meaning |"]
            out.append("|---|---|---|---|")
        doc_cell = doc.replace("|", "\\|")
        default_cell = default.replace("|", "\\|")
        out.append(f"| `{key}` | {type_name} | `{default_cell}` | {doc_cell} |")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--markdown"]:
        sys.stdout.write(render_markdown())
        return 0
    sys.stderr.write("usage: python -m server.config --markdown\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
