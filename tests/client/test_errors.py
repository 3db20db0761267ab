"""client/errors.py and the one gRPC -> ReplogError conversion (client/connection.py)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from client import errors
from client.admin import AdminClient
from client.config import AdminConfig, ConsumerConfig, ProducerConfig
from client.connection import parse_bootstrap, to_replog_error
from tests.client.fake_broker import FakeBroker, arun
from wire import replog_pb2 as pb

# code -> (class, retriable, refresh_metadata): the table of the brief, spelled out once.
EXPECTED = {
    "NOT_LEADER": (errors.NotLeader, True, True),
    "LEADER_NOT_AVAILABLE": (errors.LeaderNotAvailable, True, True),
    "TOO_MANY_FETCH_STREAMS": (errors.TooManyFetchStreams, True, False),
    "REPLICA_NOT_AVAILABLE": (errors.ReplicaNotAvailable, False, False),
    "UNKNOWN_TOPIC": (errors.UnknownTopic, False, True),
    "UNKNOWN_PARTITION": (errors.UnknownPartition, False, True),
    "OFFSET_OUT_OF_RANGE": (errors.OffsetOutOfRange, False, False),
    "INVALID_BATCH": (errors.InvalidBatch, False, False),
    "BATCH_TOO_LARGE": (errors.BatchTooLarge, False, False),
    "OUT_OF_ORDER_SEQUENCE": (errors.OutOfOrderSequence, True, False),
    "PRODUCER_FENCED": (errors.ProducerFenced, False, False),
    "TOPIC_EXISTS": (errors.TopicExists, False, False),
    "INVALID_TOPIC": (errors.InvalidTopic, False, False),
    "INVALID_CONFIG": (errors.InvalidConfig, False, False),
    "NOT_ENOUGH_BROKERS": (errors.NotEnoughBrokers, False, False),
    "REQUEST_TIMED_OUT": (errors.RequestTimedOut, True, False),
    "INVALID_REQUEST": (errors.InvalidRequest, False, False),
    "CLUSTER_MISMATCH": (errors.ClusterMismatch, False, False),
    "INTERNAL": (errors.InternalError, False, False),
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBroker]:
    with FakeBroker(nodes=2) as fb:
        yield fb


def rpc_error(
    status: grpc.StatusCode, detail: pb.ErrorDetail | None = None
) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata()
    if detail is not None:
        trailing.add("replog-error-bin", detail.SerializeToString())
    return grpc.aio.AioRpcError(status, grpc.aio.Metadata(), trailing, "status details")


def test_registry_covers_every_wire_code_with_the_right_flags() -> None:
    assert set(errors.known_codes()) == set(EXPECTED)
    for code, (cls, retriable, refresh) in EXPECTED.items():
        assert errors.for_code(code) is cls
        assert cls.code == code
        assert cls.retriable is retriable, code
        assert cls.refresh_metadata is refresh, code
        assert issubclass(cls, errors.ReplogError)


def test_unknown_code_maps_to_the_base_class_and_keeps_the_code() -> None:
    assert errors.for_code("SOMETHING_NEW") is errors.ReplogError
    error = errors.from_detail("SOMETHING_NEW", "a newer broker said so")
    assert type(error) is errors.ReplogError
    assert error.wire_code == "SOMETHING_NEW"
    assert not error.retriable
    assert error.describe().startswith("SOMETHING_NEW: a newer broker said so")


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_status_with_detail_converts_to_the_typed_error(code: str) -> None:
    detail = pb.ErrorDetail(
        code=code,
        message=f"{code} happened",
        hint="do the right thing",
        leader_id=7,
        leader_address="10.0.0.7:9400",
        fields={"requested": "5", "start": "10", "end": "20", "expected": "3", "got": "9"},
    )
    error = to_replog_error(rpc_error(grpc.StatusCode.FAILED_PRECONDITION, detail))
    assert type(error) is EXPECTED[code][0]
    assert error.message == f"{code} happened"
    assert error.hint == "do the right thing"
    assert "do the right thing" in str(error)
    assert error.describe().startswith(f"{code}: {code} happened")


def test_typed_fields_survive_the_conversion() -> None:
    not_leader = to_replog_error(
        rpc_error(
            grpc.StatusCode.FAILED_PRECONDITION,
            pb.ErrorDetail(code="NOT_LEADER", leader_id=3, leader_address="h:1"),
        )
    )
    assert isinstance(not_leader, errors.NotLeader)
    assert (not_leader.leader_id, not_leader.leader_address) == (3, "h:1")
    assert "node 3 at h:1" in str(not_leader)

    out_of_range = to_replog_error(
        rpc_error(
            grpc.StatusCode.OUT_OF_RANGE,
            pb.ErrorDetail(
                code="OFFSET_OUT_OF_RANGE", fields={"requested": "5", "start": "10", "end": "20"}
            ),
        )
    )
    assert isinstance(out_of_range, errors.OffsetOutOfRange)
    assert (out_of_range.requested, out_of_range.start, out_of_range.end) == (5, 10, 20)
    assert "offset 5 is out of range [10, 20]" in str(out_of_range)

    sequence = errors.from_detail("OUT_OF_ORDER_SEQUENCE", fields={"expected": "4", "got": "8"})
    assert isinstance(sequence, errors.OutOfOrderSequence)
    assert (sequence.expected, sequence.got) == (4, 8)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (grpc.StatusCode.UNAVAILABLE, errors.BrokerUnavailable),
        (grpc.StatusCode.CANCELLED, errors.BrokerUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.RequestTimedOut),
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidRequest),
        (grpc.StatusCode.DATA_LOSS, errors.InternalError),
    ],
)
def test_status_without_detail(status: grpc.StatusCode, cls: type[errors.ReplogError]) -> None:
    error = to_replog_error(rpc_error(status), "127.0.0.1:1")
    assert type(error) is cls
    assert status.name in str(error)
    assert "127.0.0.1:1" in str(error)


def test_broker_unavailable_is_retriable_and_refreshes_metadata() -> None:
    assert errors.BrokerUnavailable.retriable
    assert errors.BrokerUnavailable.refresh_metadata
    assert errors.BrokerUnavailable.default_hint  # says what to check


def test_corrupt_detail_is_an_internal_error_not_a_crash() -> None:
    trailing = grpc.aio.Metadata(("replog-error-bin", b"\xff\xff\xff"))
    exc = grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), trailing, "x")
    assert isinstance(to_replog_error(exc), errors.InternalError)


@given(
    code=st.sampled_from(sorted(EXPECTED)) | st.text(min_size=1, max_size=20),
    message=st.text(max_size=50),
    fields=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
)
def test_any_detail_round_trips_through_the_wire_encoding(
    code: str, message: str, fields: dict[str, str]
) -> None:
    detail = pb.ErrorDetail(code=code, message=message, fields=fields)
    error = to_replog_error(rpc_error(grpc.StatusCode.ABORTED, detail))
    assert type(error) is errors.for_code(code)
    assert error.wire_code == code
    if message:
        assert error.message == message
    for key, value in fields.items():
        assert error.fields[key] == value


def test_every_code_arrives_typed_over_a_real_grpc_call(fake: FakeBroker) -> None:
    """The fake answers ListTopics with each code in turn; the client raises its class."""

    async def scenario() -> None:
        config = AdminConfig(operation_timeout_ms=1, retry_backoff_ms=1)
        async with AdminClient(fake.bootstrap, config) as admin:
            for code, (cls, _, _) in EXPECTED.items():
                fake.inject("ListTopics", code, times=10**6)  # retriable ones: until deadline
                with pytest.raises(cls) as raised:
                    await admin.list_topics()
                fake.run(lambda c: c.faults.clear())
                assert raised.value.wire_code == code
                assert raised.value.hint == "fake hint"
            assert await admin.list_topics() == []  # no fault left: a clean answer

    arun(scenario())


def test_admin_retries_retriable_errors_until_success(fake: FakeBroker) -> None:
    async def scenario() -> None:
        async with AdminClient(fake.bootstrap, AdminConfig(retry_backoff_ms=1)) as admin:
            fake.inject("DescribeCluster", "LEADER_NOT_AVAILABLE", times=3)
            cluster = await admin.describe_cluster()
            assert [b.id for b in cluster.brokers] == [1, 2]

    arun(scenario())


def test_connection_refused_is_broker_unavailable() -> None:
    async def scenario() -> None:
        config = AdminConfig(operation_timeout_ms=200, retry_backoff_ms=10)
        async with AdminClient("127.0.0.1:1", config) as admin:
            with pytest.raises(errors.BrokerUnavailable) as raised:
                await admin.list_topics()
            assert "UNAVAILABLE" in str(raised.value)

    arun(scenario())


def test_bootstrap_parsing() -> None:
    assert parse_bootstrap("a:1, b:2,a:1") == ("a:1", "b:2")
    assert parse_bootstrap(["h:9"]) == ("h:9",)
    with pytest.raises(errors.InvalidRequest):
        parse_bootstrap("no-port")
    with pytest.raises(errors.InvalidRequest):
        parse_bootstrap("host:abc")


@pytest.mark.parametrize(
    ("factory", "field"),
    [
        (lambda: ProducerConfig(batch_bytes=0), "batch_bytes"),
        (lambda: ProducerConfig(linger_ms=-1), "linger_ms"),
        (lambda: ProducerConfig(compression="snappy"), "compression"),
        (lambda: ProducerConfig(acks="1"), "acks"),
        (lambda: ProducerConfig(max_in_flight=6), "max_in_flight"),
        (lambda: ProducerConfig(batch_bytes=1024, buffer_bytes=100), "buffer_bytes"),
        (lambda: ConsumerConfig(auto_offset_reset="smallest"), "auto_offset_reset"),
        (lambda: ConsumerConfig(max_bytes=0), "max_bytes"),
        (lambda: AdminConfig(operation_timeout_ms=0), "operation_timeout_ms"),
    ],
)
def test_config_validation_names_the_field(factory: object, field: str) -> None:
    with pytest.raises(errors.ConfigError) as raised:
        factory()  # type: ignore[operator]
    assert raised.value.field == field
    assert field in str(raised.value)
    assert raised.value.hint
