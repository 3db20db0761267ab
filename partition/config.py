"""PartitionConfig: per-topic settings the partition state machine needs.

Contract: a frozen value, validated once in ``__post_init__`` (ConfigError(field, value,
hint)). Nothing here reads the environment or files; the server layers defaults < TOML <
env < --set and builds one of these per partition.
"""

from __future__ import annotations

from dataclasses import dataclass

from partition.errors import ConfigError

__all__ = ["PartitionConfig"]


@dataclass(frozen=True, slots=True)
class PartitionConfig:
    max_batch_bytes: int = 4 << 20
    """Largest record batch (whole v2 batch, header included) a producer may append.
    Bigger batches amortise Raft overhead but delay replication of everything behind them."""
    retention_ms: int = 7 * 24 * 3600 * 1000
    """Segments whose newest record is older than this may be dropped; -1 keeps forever."""
    retention_bytes: int = -1
    """Drop the oldest segments while the log is larger than this; -1 means no size limit."""
    producer_state_keep: int = 5
    """How many recent batches per idempotent producer are remembered for duplicate
    detection (Kafka keeps 5 = max in-flight requests per connection)."""
    producer_expiry_ms: int = 24 * 3600 * 1000
    """An idempotent producer is forgotten once the log's newest batch timestamp is more than
    this past its last batch (Kafka's producer.id.expiration.ms, default one day); -1 never.
    Shorter bounds the producer table and the snapshots sooner; a producer idle for longer
    restarts its sequence (its client bumps the epoch)."""

    message_timestamp_before_max_ms: int = -1
    """A produced record may carry a timestamp at most this far behind the leader's clock;
    -1 unlimited (Kafka's message.timestamp.before.max.ms, default unlimited: old event times
    are legitimate, e.g. a CDC backfill)."""
    message_timestamp_after_max_ms: int = 3_600_000
    """A produced record may carry a timestamp at most this far ahead of the leader's clock;
    -1 unlimited (Kafka's message.timestamp.after.max.ms; one hour as in Kafka 4.0). Time
    retention and producer expiry follow the newest timestamp, so a far-future one would
    stop the first and expire every producer."""

    def __post_init__(self) -> None:
        if self.max_batch_bytes < 61:
            raise ConfigError(
                "max_batch_bytes", self.max_batch_bytes, "must hold a 61-byte batch header"
            )
        if self.retention_ms < -1 or self.retention_ms == 0:
            raise ConfigError("retention_ms", self.retention_ms, "use -1 (forever) or > 0 ms")
        if self.retention_bytes < -1 or self.retention_bytes == 0:
            raise ConfigError(
                "retention_bytes", self.retention_bytes, "use -1 (no limit) or > 0 bytes"
            )
        if self.producer_expiry_ms < -1 or self.producer_expiry_ms == 0:
            raise ConfigError(
                "producer_expiry_ms",
                self.producer_expiry_ms,
                "use -1 (never) or > 0 ms (Kafka's default is one day, 86400000)",
            )
        if not 1 <= self.producer_state_keep <= 1000:
            raise ConfigError(
                "producer_state_keep",
                self.producer_state_keep,
                "keep between 1 and 1000 recent batches per producer (Kafka uses 5)",
            )
