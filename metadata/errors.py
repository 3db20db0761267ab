"""The metadata layer's error tree.

Contract: every expected outcome of a metadata command is a subclass of :class:`MetadataError`
that carries its facts as fields (the server maps them to a gRPC status with typed detail) and
a message that says what was wrong and what to do. ``MetadataState.apply`` raises these after
validating a command and *before* touching any state, so a rejected command changes nothing but
``applied_index``.

A broken invariant of the state machine itself (entries applied out of order, a snapshot that
does not describe a consistent state) is not a MetadataError: it is a bug or a corrupted disk,
and the runtime must stop the metadata replica rather than hand the error to a proposer. Those
raise :class:`MetadataInvariantViolation` (a ``raft.errors.InvariantViolation``).

No I/O here; nothing in this module reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable

from raft.errors import InvariantViolation


def _preview(names: Iterable[str], limit: int = 10) -> str:
    shown = sorted(names)
    if not shown:
        return "none"
    text = ", ".join(repr(n) for n in shown[:limit])
    if len(shown) > limit:
        text += f", ... ({len(shown) - limit} more)"
    return text


class MetadataError(Exception):
    """Base of every expected rejection of a metadata command."""


class MalformedCommand(MetadataError):
    """The bytes are not an encoded metadata command of a version this node understands."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"malformed metadata command: {reason}; encode commands with metadata.commands.encode"
        )


class MalformedSnapshot(MetadataError):
    """The bytes are not a metadata snapshot of a version this node understands."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"malformed metadata snapshot: {reason}; "
            "the snapshot is damaged or was written by an incompatible version"
        )


class TopicExists(MetadataError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"topic {name!r} already exists: pick another name or delete it first")


class UnknownTopic(MetadataError):
    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        self.known = tuple(sorted(known))
        super().__init__(
            f"topic {name!r} does not exist (known topics: {_preview(self.known)}); "
            "create it first or check the spelling"
        )


class InvalidTopicName(MetadataError):
    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"invalid topic name {name!r}: {reason}")


class InvalidPartitionCount(MetadataError):
    def __init__(self, count: int, maximum: int = 0) -> None:
        self.count = count
        self.maximum = maximum
        limit = f"between 1 and {maximum}" if maximum else "at least 1"
        super().__init__(f"invalid partition count {count}: a topic needs {limit} partitions")


class InvalidReplicationFactor(MetadataError):
    def __init__(self, rf: int, maximum: int = 0) -> None:
        self.rf = rf
        self.maximum = maximum
        limit = f"between 1 and {maximum}" if maximum else "at least 1"
        super().__init__(f"invalid replication factor {rf}: it must be {limit}")


class NotEnoughBrokers(MetadataError):
    def __init__(self, needed: int, available: int) -> None:
        self.needed = needed
        self.available = available
        super().__init__(
            f"replication factor {needed} needs {needed} live brokers but only {available} "
            "are live: lower the replication factor or start more brokers"
        )


class UnknownBroker(MetadataError):
    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        super().__init__(
            f"broker {node_id} is not registered: it must register (start it) before it can be used"
        )


class InvalidBroker(MetadataError):
    """A broker registration carries an impossible value (node id < 1, empty address)."""

    def __init__(self, node_id: int, reason: str) -> None:
        self.node_id = node_id
        self.reason = reason
        super().__init__(f"invalid registration for broker {node_id}: {reason}")


class InvalidTopicConfig(MetadataError):
    def __init__(self, key: str, value: str, hint: str) -> None:
        self.key = key
        self.value = value
        self.hint = hint
        super().__init__(f"invalid topic config {key}={value!r}: {hint}")


class UnknownPartitionGroup(MetadataError):
    """No partition of any topic is replicated by this Raft group."""

    def __init__(self, group_id: int) -> None:
        self.group_id = group_id
        super().__init__(
            f"no partition uses raft group {group_id}: the topic may have been deleted; "
            "refresh metadata"
        )


class InvalidReplicas(MetadataError):
    def __init__(self, group_id: int, replicas: tuple[int, ...], reason: str) -> None:
        self.group_id = group_id
        self.replicas = replicas
        self.reason = reason
        super().__init__(f"invalid replica set {list(replicas)} for group {group_id}: {reason}")


class InvalidLeader(MetadataError):
    def __init__(self, group_id: int, leader: int, term: int, reason: str) -> None:
        self.group_id = group_id
        self.leader = leader
        self.term = term
        self.reason = reason
        super().__init__(
            f"invalid leader report for group {group_id} (leader {leader}, term {term}): {reason}"
        )


class InvalidProducerIdCount(MetadataError):
    def __init__(self, count: int, maximum: int) -> None:
        self.count = count
        self.maximum = maximum
        super().__init__(
            f"cannot allocate {count} producer ids: ask for between 1 and {maximum} at a time"
        )


class MetadataInvariantViolation(InvariantViolation):
    """The metadata state machine was driven incorrectly (a bug, not a user error).

    Not a MetadataError: the runtime must not hand it to a proposer as a routine rejection.
    A ``raft.errors.InvariantViolation`` (same fields), so the runtime's per-group isolation
    stops the metadata replica alone instead of aborting the turn for every group (#12
    defect 5).
    """
