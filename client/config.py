"""Client configuration: one frozen dataclass per component, validated in ``__post_init__``.

Each field documents its unit, its trade-off and its default. An invalid value raises
``ConfigError(field, value, hint)`` at construction, never later in a background task. There is
no global configuration: each client object takes its own config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from client.errors import ConfigError

__all__ = ["AdminConfig", "ConsumerConfig", "ProducerConfig"]

COMPRESSIONS = ("none", "gzip", "lz4", "zstd")
ACKS = ("all", "leader")
OFFSET_RESETS = ("earliest", "latest", "error")


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ConfigError(name, value, "must be a positive number")


def _non_negative(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ConfigError(name, value, "must be zero or a positive number")


def _broker_addresses(obj: Any) -> None:
    value = obj.broker_addresses
    if not isinstance(value, dict):
        raise ConfigError("broker_addresses", value, "must map broker ids to HOST:PORT")
    for node_id, address in value.items():
        host, sep, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
        if (
            not isinstance(node_id, int)
            or isinstance(node_id, bool)
            or node_id < 1
            or not (sep and host and port.isdigit())
        ):
            raise ConfigError(
                "broker_addresses",
                {node_id: address},
                "each entry maps a broker id (>= 1) to the HOST:PORT to dial it at",
            )


def _no_overrides() -> dict[int, str]:
    return {}


def _one_of(obj: Any, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    if value not in allowed:
        raise ConfigError(name, value, f"must be one of {', '.join(allowed)}")


@dataclass(frozen=True)
class ProducerConfig:
    # Close a partition's batch once its encoded size reaches this many bytes. Bigger batches
    # mean fewer requests and better compression, at the cost of memory and latency. 256 KiB.
    batch_bytes: int = 256 * 1024
    # Wait up to this long for more records before sending a batch that is not full. 0 sends at
    # once (lowest latency, smallest batches). 5 ms.
    linger_ms: float = 5.0
    # Batch compression: none | gzip | lz4 | zstd. The broker stores batches as sent.
    compression: str = "none"
    # "all": acknowledged once committed by a majority (survives failover). "leader":
    # acknowledged once the leader appended it (faster; may be lost if the leader fails).
    acks: str = "all"
    # Idempotent producer: a producer id and per-partition sequence numbers let the broker drop
    # retried duplicates. On by default; turning it off allows duplicates on retry.
    idempotence: bool = True
    # A record is failed with the last error if not acknowledged this long after send(). 120 s.
    delivery_timeout_ms: float = 120_000.0
    # Deadline for one Produce call; a slower call is retried (same sequence). 30 s.
    request_timeout_ms: float = 30_000.0
    # First pause between retries; doubles per attempt up to retry_backoff_max_ms.
    retry_backoff_ms: float = 50.0
    retry_backoff_max_ms: float = 1_000.0
    # Per-broker address overrides (broker id -> HOST:PORT), as the broker's --peer-address: a
    # broker the metadata advertises at A is dialed at its override instead (a proxy, e.g. the
    # chaos suite's Toxiproxy). Bootstrap addresses are dialed as given. Empty by default.
    broker_addresses: dict[int, str] = field(default_factory=_no_overrides)
    # Produce requests in flight per partition, 1..5. More overlaps network and commit latency
    # (the broker needs several concurrent batches to reach its throughput). Order and
    # exactly-once hold for any value with idempotence (sequence numbers; the broker remembers
    # a producer's last 5 batches); without idempotence the producer sends one at a time. 5.
    max_in_flight: int = 5
    # send() waits once this many bytes are buffered and not yet acknowledged. 64 MiB.
    buffer_bytes: int = 64 * 1024 * 1024
    # How long a metadata lookup (partition count, leader) may take before send() fails. 60 s.
    metadata_timeout_ms: float = 60_000.0

    def __post_init__(self) -> None:
        _broker_addresses(self)
        _positive(
            self,
            "batch_bytes",
            "delivery_timeout_ms",
            "request_timeout_ms",
            "retry_backoff_max_ms",
            "max_in_flight",
            "buffer_bytes",
            "metadata_timeout_ms",
        )
        _non_negative(self, "linger_ms", "retry_backoff_ms")
        _one_of(self, "compression", COMPRESSIONS)
        _one_of(self, "acks", ACKS)
        if not isinstance(self.max_in_flight, int) or not 1 <= self.max_in_flight <= 5:
            raise ConfigError(
                "max_in_flight",
                self.max_in_flight,
                "must be an integer from 1 to 5 (the broker deduplicates a producer's last 5 "
                "batches)",
            )
        if self.buffer_bytes < self.batch_bytes:
            raise ConfigError("buffer_bytes", self.buffer_bytes, "must be >= batch_bytes")
        if not isinstance(self.idempotence, bool):
            raise ConfigError("idempotence", self.idempotence, "must be true or false")


@dataclass(frozen=True)
class ConsumerConfig:
    # Where to start when there is no position (assign() without seek) or the position fell out
    # of the log: earliest | latest | error. Kafka's default is latest. A position the
    # consumer already has is reset only when its records are gone (below the log start) or
    # after out_of_range_retry_ms of OFFSET_OUT_OF_RANGE above the log end; each such reset is
    # logged and listed in Consumer.offset_resets.
    auto_offset_reset: str = "latest"
    # How long a consumer keeps retrying (metadata refresh + back-off) a fetch whose position
    # lies above the partition's end before it applies auto_offset_reset: a new leader's high
    # watermark trails the old leader's until its first entry commits, so the position is
    # usually served again within an election or two. 10 s.
    out_of_range_retry_ms: float = 10_000.0
    # Upper bound on one Fetch response's batches (at least one batch is always returned). 1 MiB.
    max_bytes: int = 1024 * 1024
    # How long the broker long-polls when there is nothing new. 500 ms.
    max_wait_ms: int = 500
    # poll() returns at most this many records.
    max_poll_records: int = 10_000
    # Decoded responses buffered per consumer before fetch streams pause (back-pressure).
    max_buffered_responses: int = 64
    # Pause between reconnect attempts; doubles up to retry_backoff_max_ms.
    retry_backoff_ms: float = 50.0
    retry_backoff_max_ms: float = 1_000.0
    # Per-broker address overrides (broker id -> HOST:PORT), as the broker's --peer-address: a
    # broker the metadata advertises at A is dialed at its override instead (a proxy, e.g. the
    # chaos suite's Toxiproxy). Bootstrap addresses are dialed as given. Empty by default.
    broker_addresses: dict[int, str] = field(default_factory=_no_overrides)
    # Deadline of unary calls (ListOffsets, Metadata). 30 s.
    request_timeout_ms: float = 30_000.0

    def __post_init__(self) -> None:
        _broker_addresses(self)
        _one_of(self, "auto_offset_reset", OFFSET_RESETS)
        _positive(
            self,
            "max_bytes",
            "max_wait_ms",
            "max_poll_records",
            "max_buffered_responses",
            "retry_backoff_max_ms",
            "request_timeout_ms",
        )
        _non_negative(self, "retry_backoff_ms", "out_of_range_retry_ms")


@dataclass(frozen=True)
class AdminConfig:
    # Deadline of one RPC. 30 s.
    request_timeout_ms: float = 30_000.0
    # A whole admin operation (with its retries of retriable errors) gives up after this. 60 s.
    operation_timeout_ms: float = 60_000.0
    # Pause between retries; doubles up to retry_backoff_max_ms.
    retry_backoff_ms: float = 50.0
    retry_backoff_max_ms: float = 1_000.0
    # Per-broker address overrides (broker id -> HOST:PORT), as the broker's --peer-address: a
    # broker the metadata advertises at A is dialed at its override instead (a proxy, e.g. the
    # chaos suite's Toxiproxy). Bootstrap addresses are dialed as given. Empty by default.
    broker_addresses: dict[int, str] = field(default_factory=_no_overrides)

    def __post_init__(self) -> None:
        _broker_addresses(self)
        _positive(self, "request_timeout_ms", "operation_timeout_ms", "retry_backoff_max_ms")
        _non_negative(self, "retry_backoff_ms")
