"""``acks=leader`` (#12 defect 8, client side): a batch is reported written only at offsets that
can be its own; a rejection (an error status) fails it, with any acks setting."""

from __future__ import annotations

import pytest

from client import errors
from client.config import ProducerConfig
from client.producer import Producer
from tests.client.fake_broker import InProcessCluster, arun
from wire import replog_pb2 as pb

LEADER = ProducerConfig(acks="leader", linger_ms=0, retry_backoff_ms=1, retry_backoff_max_ms=5)


@pytest.mark.parametrize(
    ("base", "last"),
    [(-1, -1), (0, 4)],  # "no offset", and offsets for 5 records when the batch holds 2
)
def test_an_acknowledgement_that_cannot_be_the_batch_is_not_reported_as_written(
    base: int, last: int
) -> None:
    """guards #12 defect 8: a broker that answers success for a batch it did not append (the
    acks=leader answer came before the idempotence decision) must not make the producer
    report the records written at offsets no consumer will see."""

    async def scenario() -> None:
        fake = InProcessCluster(nodes=1)
        fake.cluster.create_topic("t", 1, 1)
        async with Producer(fake.bootstrap, LEADER, stub_factory=fake.stub_factory) as p:
            answer = pb.ProduceResponse(base_offset=base, last_offset=last)
            fake.cluster.inject("Produce", "ANSWER", topic="t", answer=answer)
            futures = [await p.send("t", v) for v in (b"a", b"b")]
            await p.flush()
            for future in futures:
                with pytest.raises(errors.InternalError, match="not reported as written"):
                    future.result()
            meta = await p.send_and_wait("t", b"c")  # the producer goes on
            assert meta.offset == 0
        assert fake.cluster.records_in("t", 0) == [(0, b"c")]

    arun(scenario())


@pytest.mark.parametrize("code", ["INVALID_BATCH", "PRODUCER_FENCED"])
def test_a_rejected_batch_with_acks_leader_fails(code: str) -> None:
    async def scenario() -> None:
        fake = InProcessCluster(nodes=1)
        fake.cluster.create_topic("t", 1, 1)
        async with Producer(fake.bootstrap, LEADER, stub_factory=fake.stub_factory) as p:
            fake.cluster.inject("Produce", code, topic="t")
            future = await p.send("t", b"a")
            with pytest.raises(errors.ReplogError) as raised:
                await future
            assert raised.value.wire_code == code
        assert fake.cluster.records_in("t", 0) == []

    arun(scenario())


def test_duplicate_answer_with_acks_leader_reports_the_original_offsets() -> None:
    async def scenario() -> None:
        fake = InProcessCluster(nodes=1)
        fake.cluster.create_topic("t", 1, 1)
        async with Producer(fake.bootstrap, LEADER, stub_factory=fake.stub_factory) as p:
            await p.send_and_wait("t", b"x")
            fake.cluster.inject("Produce", "REQUEST_TIMED_OUT", topic="t", after_append=True)
            meta = await p.send_and_wait("t", b"y")  # appended, ack lost, retried: duplicate
            assert meta.offset == 1
        outcomes = [o[3] for o in fake.cluster.produce_outcomes]
        assert outcomes == ["appended", "appended", "duplicate"]
        assert fake.cluster.records_in("t", 0) == [(0, b"x"), (1, b"y")]

    arun(scenario())
