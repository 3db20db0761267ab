"""The client's error tree: one exception class per broker error code.

Contract:
- Every expected failure a client call can see is a ``ReplogError`` subclass carrying three class
  attributes that retry loops read instead of matching on types: ``code`` (the exact string the
  broker sends in ``ErrorDetail.code``), ``retriable`` (the same request may succeed later) and
  ``refresh_metadata`` (the cached leader / partition map is probably stale: refresh before the
  retry).
- ``for_code(code)`` maps a wire code to its class; unknown codes map to ``ReplogError`` itself,
  so a newer broker never crashes an older client.
- ``from_detail(detail)`` builds an instance from a decoded ``replog_pb2.ErrorDetail``. The one
  place that turns a ``grpc.aio.AioRpcError`` into one of these is ``client/connection.py``.
- Messages say what was wrong and what to do (the broker's ``hint`` is appended).

No I/O and no gRPC here: this module is pure and safe to import anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "BatchTooLarge",
    "BrokerUnavailable",
    "ClientClosed",
    "ClusterMismatch",
    "ConfigError",
    "InternalError",
    "InvalidBatch",
    "InvalidConfig",
    "InvalidRequest",
    "InvalidTopic",
    "LeaderNotAvailable",
    "NotEnoughBrokers",
    "NotLeader",
    "OffsetOutOfRange",
    "OutOfOrderSequence",
    "ProducerFenced",
    "ReplogError",
    "RequestTimedOut",
    "TopicExists",
    "UnknownPartition",
    "UnknownTopic",
    "for_code",
    "from_detail",
]


class ReplogError(Exception):
    """Base of every expected client-side failure.

    ``code``/``retriable``/``refresh_metadata`` are class attributes (what retry loops read); an
    instance built from a broker answer whose code this client does not know keeps that code on
    the instance.
    """

    code: ClassVar[str] = "UNKNOWN"
    retriable: ClassVar[bool] = False
    refresh_metadata: ClassVar[bool] = False
    default_hint: ClassVar[str] = ""

    def __init__(
        self,
        message: str = "",
        *,
        hint: str = "",
        fields: Mapping[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        self.wire_code = code or self.code
        self.message = message or f"broker error {self.wire_code}"
        self.hint = hint or self.default_hint
        self.fields: dict[str, str] = dict(fields or {})
        text = self.message
        if self.hint:
            text = f"{text} (hint: {self.hint})"
        super().__init__(text)

    def describe(self) -> str:
        """One line for humans: ``CODE: message (hint)``."""
        return f"{self.wire_code}: {self}"

    def _int_field(self, name: str, default: int = -1) -> int:
        try:
            return int(self.fields.get(name, default))
        except ValueError:
            return default


_REGISTRY: dict[str, type[ReplogError]] = {}


def _register(cls: type[ReplogError]) -> type[ReplogError]:
    if cls.code in _REGISTRY:
        raise RuntimeError(f"error code {cls.code} registered twice")
    _REGISTRY[cls.code] = cls
    return cls


def for_code(code: str) -> type[ReplogError]:
    """The exception class for a wire code; ``ReplogError`` for codes this client does not know."""
    return _REGISTRY.get(code, ReplogError)


def known_codes() -> tuple[str, ...]:
    """Every wire code with a class of its own (tests iterate over these)."""
    return tuple(_REGISTRY)


@_register
class NotLeader(ReplogError):
    """The broker does not lead the partition; ``leader_id``/``leader_address`` are its hint."""

    code = "NOT_LEADER"
    retriable = True
    refresh_metadata = True
    default_hint = "the client retries on the leader; refresh metadata if this persists"

    def __init__(
        self,
        message: str = "",
        *,
        leader_id: int = 0,
        leader_address: str = "",
        hint: str = "",
        fields: Mapping[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        self.leader_id = leader_id
        self.leader_address = leader_address
        if not message:
            where = f"node {leader_id} at {leader_address}" if leader_id else "unknown"
            message = f"this broker is not the partition leader; leader is {where}"
        super().__init__(message, hint=hint, fields=fields, code=code)


@_register
class TooManyFetchStreams(ReplogError):
    """The broker (or this client's connection to it) has as many Fetch streams open as it
    allows; ``fields["limit"]`` says how many."""

    code = "TOO_MANY_FETCH_STREAMS"
    retriable = True
    default_hint = "close idle consumers or raise server.max_fetch_streams; the client retries"


@_register
class ReplicaNotAvailable(ReplogError):
    """This broker's replica of the partition is stopped (failed); it serves nothing."""

    code = "REPLICA_NOT_AVAILABLE"
    default_hint = "see `replog cluster status` for the failed group and the broker's log"


@_register
class LeaderNotAvailable(ReplogError):
    code = "LEADER_NOT_AVAILABLE"
    retriable = True
    refresh_metadata = True
    default_hint = "an election is probably in progress; retry shortly"


@_register
class UnknownTopic(ReplogError):
    code = "UNKNOWN_TOPIC"
    refresh_metadata = True
    default_hint = "check the name with `replog topic list` or create it first"


@_register
class UnknownPartition(ReplogError):
    code = "UNKNOWN_PARTITION"
    refresh_metadata = True
    default_hint = "check the partition count with `replog topic describe`"


@_register
class OffsetOutOfRange(ReplogError):
    """``requested`` lies outside ``[start, end]`` of the partition's log."""

    code = "OFFSET_OUT_OF_RANGE"
    default_hint = "seek to an offset between the log start and the high watermark"

    def __init__(
        self,
        message: str = "",
        *,
        requested: int | None = None,
        start: int | None = None,
        end: int | None = None,
        hint: str = "",
        fields: Mapping[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        merged = dict(fields or {})
        for name, value in (("requested", requested), ("start", start), ("end", end)):
            if value is not None:
                merged[name] = str(value)
        if not message:
            message = (
                f"offset {merged.get('requested', '?')} is out of range "
                f"[{merged.get('start', '?')}, {merged.get('end', '?')}]"
            )
        super().__init__(message, hint=hint, fields=merged, code=code)

    @property
    def requested(self) -> int:
        return self._int_field("requested")

    @property
    def start(self) -> int:
        return self._int_field("start")

    @property
    def end(self) -> int:
        return self._int_field("end")


@_register
class InvalidBatch(ReplogError):
    code = "INVALID_BATCH"
    default_hint = "the record batch was rejected (bad CRC or header); this is a client bug"


@_register
class BatchTooLarge(ReplogError):
    code = "BATCH_TOO_LARGE"
    default_hint = "lower ProducerConfig.batch_bytes or the record size"


@_register
class OutOfOrderSequence(ReplogError):
    """The broker expected sequence ``expected`` but got ``got`` for this producer/partition.

    Retriable for the producer's own ordering logic: an earlier batch may still be retried, or
    the producer restarts its sequence under a new producer id.
    """

    code = "OUT_OF_ORDER_SEQUENCE"
    retriable = True
    default_hint = "the producer resets its sequence and resends"

    def __init__(
        self,
        message: str = "",
        *,
        expected: int | None = None,
        got: int | None = None,
        hint: str = "",
        fields: Mapping[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        merged = dict(fields or {})
        for name, value in (("expected", expected), ("got", got)):
            if value is not None:
                merged[name] = str(value)
        if not message:
            message = (
                f"out of order sequence: expected {merged.get('expected', '?')}, "
                f"got {merged.get('got', '?')}"
            )
        super().__init__(message, hint=hint, fields=merged, code=code)

    @property
    def expected(self) -> int:
        return self._int_field("expected")

    @property
    def got(self) -> int:
        return self._int_field("got")


@_register
class ProducerFenced(ReplogError):
    code = "PRODUCER_FENCED"
    default_hint = "a newer producer with the same id took over; close this producer"


@_register
class TopicExists(ReplogError):
    code = "TOPIC_EXISTS"
    default_hint = "pick another name or delete the existing topic first"


@_register
class InvalidTopic(ReplogError):
    code = "INVALID_TOPIC"
    default_hint = "topic names use letters, digits, '.', '_' and '-' (at most 249 characters)"


@_register
class InvalidConfig(ReplogError):
    code = "INVALID_CONFIG"
    default_hint = "check the value against docs/configuration.md"


@_register
class NotEnoughBrokers(ReplogError):
    code = "NOT_ENOUGH_BROKERS"
    default_hint = "lower the replication factor or start more brokers"


@_register
class RequestTimedOut(ReplogError):
    code = "REQUEST_TIMED_OUT"
    retriable = True
    default_hint = "the broker or the network is slow; the client retries"


@_register
class InvalidRequest(ReplogError):
    code = "INVALID_REQUEST"
    default_hint = "the request is malformed; check the arguments"


@_register
class ClusterMismatch(ReplogError):
    code = "CLUSTER_MISMATCH"
    default_hint = "the bootstrap addresses point at brokers of different clusters"


@_register
class InternalError(ReplogError):
    code = "INTERNAL"
    default_hint = "a broker bug; see the broker log"


# ---- client-side errors (never sent by a broker, so not in the wire registry)


class BrokerUnavailable(ReplogError):
    """No answer from a broker (connection refused, reset, unreachable)."""

    code = "BROKER_UNAVAILABLE"
    retriable = True
    refresh_metadata = True
    default_hint = "check that the broker runs and that --bootstrap / REPLOG_BOOTSTRAP is right"


class ClientClosed(ReplogError):
    code = "CLIENT_CLOSED"
    default_hint = "the client was closed; create a new one"


class ConfigError(ReplogError):
    """A client configuration value is invalid: ``field`` = ``value``; ``hint`` says what fits."""

    code = "CONFIG_ERROR"

    def __init__(self, field: str, value: Any, hint: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"invalid config {field}={value!r}", hint=hint)


def from_detail(
    code: str,
    message: str = "",
    *,
    hint: str = "",
    leader_id: int = 0,
    leader_address: str = "",
    fields: Mapping[str, str] | None = None,
) -> ReplogError:
    """Build the typed error for a broker's ``ErrorDetail`` (given as plain values)."""
    cls = for_code(code)
    if cls is NotLeader:
        return NotLeader(
            message, leader_id=leader_id, leader_address=leader_address, hint=hint, fields=fields
        )
    return cls(message, hint=hint, fields=fields, code=code)
