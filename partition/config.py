"""PartitionConfig, and the one set of rules for a topic's config (#12 defect 13).

Contract: a frozen value, validated once in ``__post_init__`` (ConfigError(field, value,
hint)). Nothing here reads the environment or files; the server layers defaults < TOML <
env < --set into the defaults, and :func:`topic_config` applies a topic's overrides (the
``config`` map of CreateTopic) on top of them. The metadata state machine validates a
CreateTopic's config with the same function, so a topic whose config a partition could not
open is refused at creation, with the same message, instead of leaving a topic no broker can
host.

What 0 means: ``retention.ms=0`` and ``retention.bytes=0`` are accepted, as in Kafka: every
closed segment may be deleted at once (the active segment and anything not yet applied are
always kept). ``max.message.bytes`` is capped at :data:`MAX_MESSAGE_BYTES_LIMIT`, so every
accepted batch fits a transport message (64 MiB) with the Raft framing around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from partition.errors import ConfigError

__all__ = [
    "MAX_MESSAGE_BYTES_LIMIT",
    "TOPIC_CONFIG_KEYS",
    "PartitionConfig",
    "topic_config",
]

MAX_MESSAGE_BYTES_LIMIT = 8 << 20
"""Largest ``max.message.bytes`` (8 MiB): the transport carries up to 64 MiB per message,
which must hold a batch plus the Raft and gRPC framing around it, and several batches when a
follower catches up."""
_MIN_BATCH_BYTES = 61  # one RecordBatch v2 header
_MIN_SEGMENT_BYTES = 1 << 20
_MAX_SEGMENT_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class PartitionConfig:
    max_batch_bytes: int = 4 << 20
    """Largest record batch (whole v2 batch, header included) a producer may append, at
    most MAX_MESSAGE_BYTES_LIMIT (topic key max.message.bytes). Bigger batches amortise Raft
    overhead but delay replication of everything behind them."""
    retention_ms: int = 7 * 24 * 3600 * 1000
    """Segments whose newest record is older than this may be dropped; -1 keeps forever, 0
    drops every closed segment (topic key retention.ms)."""
    retention_bytes: int = -1
    """Drop the oldest segments while the log is larger than this; -1 means no size limit,
    0 drops every closed segment (topic key retention.bytes)."""
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
    checkpoint_interval_bytes: int = 64 << 20
    """Write a partition checkpoint (server/checkpoint.py) every this many bytes of applied
    entries; -1 disables checkpoints (a restart then replays the whole retained log, and an
    existing checkpoint file is not read). Smaller means a shorter replay at restart for more
    checkpoint writes (each writes ~17 bytes per retained entry plus the producer table)."""
    segment_bytes: int | None = None
    """The topic's segment size (topic key segment.bytes), None for the broker's
    storage.segment_bytes. Partition state does not use it; the server sizes the log."""

    def __post_init__(self) -> None:
        if not _MIN_BATCH_BYTES <= self.max_batch_bytes <= MAX_MESSAGE_BYTES_LIMIT:
            raise ConfigError(
                "max_batch_bytes",
                self.max_batch_bytes,
                f"use {_MIN_BATCH_BYTES} (one batch header) to {MAX_MESSAGE_BYTES_LIMIT} bytes "
                "(8 MiB: a batch and its framing must fit one transport message)",
            )
        if self.retention_ms < -1:
            raise ConfigError(
                "retention_ms",
                self.retention_ms,
                "use -1 (forever), 0 (drop closed segments at once) or more ms",
            )
        if self.retention_bytes < -1:
            raise ConfigError(
                "retention_bytes",
                self.retention_bytes,
                "use -1 (no limit), 0 (drop closed segments at once) or more bytes",
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
        for name in ("message_timestamp_before_max_ms", "message_timestamp_after_max_ms"):
            value = getattr(self, name)
            if value < -1:
                raise ConfigError(name, value, "use -1 (unlimited) or >= 0 ms")
        if self.checkpoint_interval_bytes < -1 or self.checkpoint_interval_bytes == 0:
            raise ConfigError(
                "checkpoint_interval_bytes",
                self.checkpoint_interval_bytes,
                "use -1 (no checkpoints) or > 0 bytes (default 64 MiB)",
            )
        if self.segment_bytes is not None and not (
            _MIN_SEGMENT_BYTES <= self.segment_bytes <= _MAX_SEGMENT_BYTES
        ):
            raise ConfigError(
                "segment_bytes",
                self.segment_bytes,
                f"use {_MIN_SEGMENT_BYTES} (1 MiB) to {_MAX_SEGMENT_BYTES} (1 GiB) bytes",
            )


# A topic config key -> the PartitionConfig field it sets (an integer).
_TOPIC_FIELDS: dict[str, str] = {
    "max.message.bytes": "max_batch_bytes",
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "message.timestamp.before.max.ms": "message_timestamp_before_max_ms",
    "message.timestamp.after.max.ms": "message_timestamp_after_max_ms",
    "segment.bytes": "segment_bytes",
}
# Keys that are not partition state but are validated here too, so there is one list.
_TOPIC_ENUMS: dict[str, tuple[str, ...]] = {
    "cleanup.policy": ("delete", "compact"),
    "internal": ("true", "false"),
}
TOPIC_CONFIG_KEYS: tuple[str, ...] = tuple(sorted([*_TOPIC_FIELDS, *_TOPIC_ENUMS]))
"""Every topic config key a CreateTopic may carry."""


def _parse_int(key: str, value: str) -> int:
    digits = value[1:] if value.startswith("-") else value
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        raise ConfigError(key, value, "must be a decimal integer", scope="topic")
    return int(value)


def topic_config(
    overrides: Mapping[str, str], defaults: PartitionConfig | None = None
) -> PartitionConfig:
    """``defaults`` (the broker's, PartitionConfig() if None) with a topic's config keys
    applied: the one validation of a topic config, used by metadata at CreateTopic and by
    the server when it opens the partition. Raises ConfigError(field=the topic key, value,
    hint) for an unknown key, a value that is not a decimal integer, or one out of range."""
    base = PartitionConfig() if defaults is None else defaults
    changes: dict[str, int] = {}
    for key in sorted(overrides):
        value = overrides[key]
        if key in _TOPIC_ENUMS:
            allowed = _TOPIC_ENUMS[key]
            if value not in allowed:
                raise ConfigError(key, value, f"must be one of {', '.join(allowed)}", scope="topic")
        elif key in _TOPIC_FIELDS:
            changes[_TOPIC_FIELDS[key]] = _parse_int(key, value)
        else:
            raise ConfigError(
                key,
                value,
                f"unknown config key; known keys are {', '.join(TOPIC_CONFIG_KEYS)}",
                scope="topic",
            )
    try:
        return replace(base, **changes)
    except ConfigError as e:
        keys = [k for k, f in _TOPIC_FIELDS.items() if f == e.field and k in overrides]
        if not keys:
            raise  # the broker's own default is invalid
        raise ConfigError(keys[0], overrides[keys[0]], e.hint, scope="topic") from None
