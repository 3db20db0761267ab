"""The partition layer's error tree.

Expected outcomes a caller handles carry fields and subclass :class:`PartitionError`
(``OffsetOutOfRange``, ``OutOfOrderSequence``, ``ProducerFenced``, ``BatchTooLarge``,
``ConfigError``); ``InvalidBatch`` is the codec's own error, re-exported so the server maps
one type. A broken invariant (offsets that do not line up with the log) raises
:class:`PartitionInvariantError`, which is deliberately *not* a PartitionError but a
``raft.errors.InvariantViolation``: the runtime's one per-group failure model catches it,
stops this one partition replica and reports it, and never treats it as routine (#12 defect 5).
"""

from __future__ import annotations

from raft.errors import InvariantViolation
from wire.batch import InvalidBatch, UnsupportedCompression

__all__ = [
    "BatchTooLarge",
    "ConfigError",
    "InvalidBatch",
    "OffsetOutOfRange",
    "OutOfOrderSequence",
    "PartitionError",
    "PartitionInvariantError",
    "ProducerFenced",
    "UnsupportedCompression",
]


class PartitionError(Exception):
    """Base of every expected outcome raised by partition/.

    Compared by type and fields, so that ``Rejected(error)`` results from two replicas that
    applied the same log compare equal (the determinism the tests check)."""

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), self.args))


class ConfigError(PartitionError):
    """A PartitionConfig value (scope "partition", ``field`` a field name) or a topic config
    key (scope "topic", ``field`` the key, e.g. "retention.ms") is invalid."""

    def __init__(self, field: str, value: object, hint: str, *, scope: str = "partition") -> None:
        self.field = field
        self.value = value
        self.hint = hint
        self.scope = scope
        super().__init__(f"invalid {scope} config {field}={value!r}: {hint}")


class OffsetOutOfRange(PartitionError):
    """``requested`` is outside [start, end] (end = the high watermark)."""

    def __init__(self, requested: int, start: int, end: int) -> None:
        self.requested = requested
        self.start = start
        self.end = end
        super().__init__(
            f"offset {requested} is out of range: the partition holds offsets [{start}, {end}); "
            f"seek to {start} (earliest) or {end} (latest)"
        )


class OutOfOrderSequence(PartitionError):
    """An idempotent producer's batch does not continue its sequence (a batch is missing)."""

    def __init__(self, producer_id: int, expected: int, got: int) -> None:
        self.producer_id = producer_id
        self.expected = expected
        self.got = got
        super().__init__(
            f"producer {producer_id}: expected sequence {expected}, got {got}; an earlier "
            "batch was lost: the producer must re-send from sequence "
            f"{expected} (or bump its epoch)"
        )


class ProducerFenced(PartitionError):
    """A newer instance of this producer (higher epoch) has written: this one is a zombie."""

    def __init__(self, producer_id: int, epoch: int, current_epoch: int) -> None:
        self.producer_id = producer_id
        self.epoch = epoch
        self.current_epoch = current_epoch
        super().__init__(
            f"producer {producer_id} epoch {epoch} is fenced by epoch {current_epoch}: "
            "another instance took over; close this producer"
        )


class BatchTooLarge(PartitionError):
    """The batch is larger than the partition's ``max_batch_bytes``."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"record batch of {size} bytes exceeds the partition limit of {limit} bytes; "
            "lower the producer's batch size"
        )


class PartitionInvariantError(InvariantViolation):
    """Offsets or indexes do not line up: a bug or a corrupted log. Stops this replica.

    An ``InvariantViolation`` (fields ``what``, ``expected``, ``actual``, ``likely_cause``), so
    the runtime isolates it to this group like any other broken invariant."""
