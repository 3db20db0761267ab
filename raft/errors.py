"""The Raft layer's error tree.

Two kinds, never mixed: expected outcomes a caller handles (``NotLeader``, ``ProposalDropped``,
``Compacted``, ...) and group failures (``GroupFailure``: ``InvariantViolation``,
``StorageCorruption``, ``StorageFailed``), which mean a bug, a corrupted disk or a failing disk
and stop the one group they happened in. The runtime catches ``GroupFailure`` per group; the
invariant errors of partition/ and metadata/ subclass it too, so there is one failure model.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base of every expected outcome raised by raft/."""


class NotLeader(RaftError):
    """This node is not the leader; ``leader_hint`` is the leader it knows of (0 = unknown)."""

    def __init__(self, leader_hint: int, term: int = 0) -> None:
        self.leader_hint = leader_hint
        self.term = term
        hint = f"node {leader_hint}" if leader_hint else "unknown"
        super().__init__(f"not the leader (term {term}); leader is {hint}: retry there")


class ProposalDropped(RaftError):
    """The proposal was not appended (e.g. leadership transfer in progress, a configuration
    change already pending, the uncommitted tail is full). Retry later or elsewhere."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"proposal dropped: {reason}")


class Compacted(RaftError):
    """The requested index lies below the first index still in the log (compacted away)."""

    def __init__(self, index: int, first_index: int) -> None:
        self.index = index
        self.first_index = first_index
        super().__init__(f"index {index} is compacted; the log starts at {first_index}")


class Unavailable(RaftError):
    """The requested index is beyond the last index in the log."""

    def __init__(self, index: int, last_index: int) -> None:
        self.index = index
        self.last_index = last_index
        super().__init__(f"index {index} is not in the log; the last index is {last_index}")


class SnapshotTemporarilyUnavailable(RaftError):
    """Storage cannot produce a snapshot right now; the leader retries later."""


class ConfigError(RaftError):
    """A configuration value is invalid."""

    def __init__(self, field: str, value: object, hint: str) -> None:
        self.field = field
        self.value = value
        self.hint = hint
        super().__init__(f"invalid {field}={value!r}: {hint}")


class GroupFailure(Exception):
    """Base of every error that stops one group (and only that group): the runtime catches it
    per group, marks the group failed (visible in its status) and keeps serving the others.
    Never a RaftError: never caught as a routine outcome."""


class InvariantViolation(GroupFailure):
    """A Raft safety invariant does not hold. Not a RaftError: never caught as routine."""

    def __init__(self, what: str, expected: object, actual: object, likely_cause: str) -> None:
        self.what = what
        self.expected = expected
        self.actual = actual
        self.likely_cause = likely_cause
        super().__init__(
            f"{what}: expected {expected}, found {actual}; likely cause: {likely_cause}"
        )


class StorageCorruption(GroupFailure):
    """A durable file is damaged somewhere other than a torn tail. Never skipped."""

    def __init__(self, path: str, byte_offset: int, detail: str) -> None:
        self.path = path
        self.byte_offset = byte_offset
        self.detail = detail
        super().__init__(f"corrupt log file {path} at byte {byte_offset}: {detail}")


class StorageFailed(GroupFailure, OSError):
    """A write or sync of a log's files failed (ENOSPC, EIO, EMFILE, ...): the log is failed.

    Every later append and sync raises it again; nothing written after the last successful
    ``sync()`` is ever reported durable, and the files stay recoverable (a restart recovers to
    the last good frame). Also an ``OSError`` (``errno`` is the cause's), so code that handled
    disk errors as ``OSError`` keeps working. ``error`` is the original ``OSError``.
    """

    def __init__(self, path: str, operation: str, error: OSError) -> None:
        super().__init__(
            error.errno,
            f"log {path} failed: {operation}: {error.strerror or error}; the group is stopped "
            "(restart the broker once the disk is fixed; it recovers to the last good frame)",
        )
        self.path = path
        self.operation = operation
        self.error = error

    def __str__(self) -> str:
        return str(self.args[1]) if len(self.args) > 1 else super().__str__()
