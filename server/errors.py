"""The one place where domain errors become gRPC statuses with a typed ``ErrorDetail``.

Every layer raises its own typed errors (raft.errors, partition.errors, metadata.errors) or a
``BrokerError`` from the server itself; services call ``abort_with(context, exc)``. The code strings
are the wire contract shared with client/errors.py. Anything unexpected becomes INTERNAL and is
logged by the service, and the broker keeps serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from wire import replog_pb2 as pb

ERROR_METADATA_KEY = "replog-error-bin"


@dataclass
class BrokerError(Exception):
    code: str
    message: str
    retriable: bool = False
    hint: str = ""
    status: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION
    leader_id: int = 0
    leader_address: str = ""
    fields: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def not_leader(what: str, leader_id: int, leader_address: str) -> BrokerError:
    if leader_id:
        return BrokerError(
            "NOT_LEADER",
            f"this broker is not the leader of {what}",
            retriable=True,
            hint=f"send it to broker {leader_id} at {leader_address}",
            status=grpc.StatusCode.FAILED_PRECONDITION,
            leader_id=leader_id,
            leader_address=leader_address,
        )
    return BrokerError(
        "LEADER_NOT_AVAILABLE",
        f"{what} has no leader right now (an election is in progress)",
        retriable=True,
        hint="retry after a short back-off",
        status=grpc.StatusCode.UNAVAILABLE,
    )


def invalid_request(message: str, hint: str) -> BrokerError:
    return BrokerError(
        "INVALID_REQUEST", message, hint=hint, status=grpc.StatusCode.INVALID_ARGUMENT
    )


def timed_out(what: str) -> BrokerError:
    return BrokerError(
        "REQUEST_TIMED_OUT",
        f"{what} did not complete in time",
        retriable=True,
        hint="the outcome is unknown; retry (idempotent producers are safe to retry)",
        status=grpc.StatusCode.DEADLINE_EXCEEDED,
    )


# Domain error class name -> (code, status, retriable). Matching by class name keeps this module free
# of imports from every layer's error tree, and a new error class falls back to INTERNAL loudly.
_BY_CLASS: dict[str, tuple[str, grpc.StatusCode, bool]] = {
    "ProposalDropped": ("LEADER_NOT_AVAILABLE", grpc.StatusCode.UNAVAILABLE, True),
    "OffsetOutOfRange": ("OFFSET_OUT_OF_RANGE", grpc.StatusCode.OUT_OF_RANGE, False),
    "InvalidBatch": ("INVALID_BATCH", grpc.StatusCode.INVALID_ARGUMENT, False),
    "UnsupportedCompression": ("INVALID_BATCH", grpc.StatusCode.INVALID_ARGUMENT, False),
    "BatchTooLarge": ("BATCH_TOO_LARGE", grpc.StatusCode.INVALID_ARGUMENT, False),
    "OutOfOrderSequence": ("OUT_OF_ORDER_SEQUENCE", grpc.StatusCode.FAILED_PRECONDITION, True),
    "ProducerFenced": ("PRODUCER_FENCED", grpc.StatusCode.FAILED_PRECONDITION, False),
    "TopicExists": ("TOPIC_EXISTS", grpc.StatusCode.ALREADY_EXISTS, False),
    "UnknownTopic": ("UNKNOWN_TOPIC", grpc.StatusCode.NOT_FOUND, False),
    "InvalidTopicName": ("INVALID_TOPIC", grpc.StatusCode.INVALID_ARGUMENT, False),
    "InvalidPartitionCount": ("INVALID_TOPIC", grpc.StatusCode.INVALID_ARGUMENT, False),
    "InvalidReplicationFactor": ("INVALID_TOPIC", grpc.StatusCode.INVALID_ARGUMENT, False),
    "InvalidTopicConfig": ("INVALID_CONFIG", grpc.StatusCode.INVALID_ARGUMENT, False),
    "NotEnoughBrokers": ("NOT_ENOUGH_BROKERS", grpc.StatusCode.FAILED_PRECONDITION, False),
    "UnknownBroker": ("INVALID_REQUEST", grpc.StatusCode.INVALID_ARGUMENT, False),
}

_FIELDS = (
    "requested",
    "start",
    "end",
    "expected",
    "got",
    "producer_id",
    "epoch",
    "current_epoch",
    "size",
    "limit",
    "needed",
    "available",
    "name",
    "key",
    "value",
)


def to_detail(exc: BaseException) -> tuple[grpc.StatusCode, pb.ErrorDetail]:
    if isinstance(exc, BrokerError):
        return exc.status, pb.ErrorDetail(
            code=exc.code,
            message=exc.message,
            retriable=exc.retriable,
            hint=exc.hint,
            leader_id=exc.leader_id,
            leader_address=exc.leader_address,
            fields=exc.fields,
        )
    mapped = None
    for cls in type(exc).__mro__:
        mapped = _BY_CLASS.get(cls.__name__)
        if mapped is not None:
            break
    if mapped is None:
        return grpc.StatusCode.INTERNAL, pb.ErrorDetail(
            code="INTERNAL",
            message=f"{type(exc).__name__}: {exc}",
            hint="this is a broker bug; the broker logged it and keeps serving",
        )
    code, status, retriable = mapped
    fields = {name: str(getattr(exc, name)) for name in _FIELDS if hasattr(exc, name)}
    return status, pb.ErrorDetail(
        code=code,
        message=str(exc),
        retriable=retriable,
        hint=str(getattr(exc, "hint", "")),
        fields=fields,
    )


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    status, detail = to_detail(exc)
    context.set_trailing_metadata(((ERROR_METADATA_KEY, detail.SerializeToString()),))
    await context.abort(status, f"{detail.code}: {detail.message}")
