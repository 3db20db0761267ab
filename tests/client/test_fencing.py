"""Producer fencing with epochs (#12 defect 10): after OUT_OF_ORDER_SEQUENCE the producer keeps
its id, bumps its epoch and restarts the partition's sequences at 0, so the broker fences any
delayed copy sent under the old epoch instead of appending it after its successor.

Runs on the in-process fake (one event loop, no sockets): every step is deterministic."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from client import errors
from client.config import ProducerConfig
from client.producer import Producer
from tests.client.fake_broker import InProcessCluster, arun
from wire.batch import read_header

ONE_PER_BATCH = ProducerConfig(
    batch_bytes=300, linger_ms=0, retry_backoff_ms=1, retry_backoff_max_ms=5, max_in_flight=5
)


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Yield to the loop until ``condition`` holds (bounded: fails loudly instead of hanging)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


def stored(fake: InProcessCluster, topic: str) -> list[bytes]:
    records = fake.cluster.records_in(topic, 0)
    assert [o for o, _ in records] == list(range(len(records))), "offsets must be dense"
    return [v for _, v in records]


def sessions(fake: InProcessCluster, topic: str) -> list[tuple[int, int, int]]:
    """(producer id, epoch, base sequence) of every stored batch, in log order."""
    headers = [read_header(raw) for raw in fake.cluster.partition(topic, 0).batches]
    return [(h.producer_id, h.producer_epoch, h.base_sequence) for h in headers]


def test_delayed_copy_under_the_old_epoch_is_fenced_not_appended_after_its_successor() -> None:
    """guards #12 defect 10: the broker forgot our producer (OUT_OF_ORDER_SEQUENCE for the
    oldest batch); a copy of our first batch, delayed in the network, arrives after the
    resealed batches. Under a fresh producer id it was a new producer's sequence 0 and was
    appended again (a duplicate, out of order); under the bumped epoch it is fenced."""

    async def scenario() -> tuple[InProcessCluster, int, int]:
        fake = InProcessCluster(nodes=1)
        fake.cluster.create_topic("t", 1, 1)
        async with Producer(fake.bootstrap, ONE_PER_BATCH, stub_factory=fake.stub_factory) as p:
            await p.send_and_wait("t", b"a0")
            delayed_copy = fake.cluster.produce_requests[-1][2]
            await p.send_and_wait("t", b"a1")
            fake.cluster.partition("t", 0).producers.clear()  # e.g. expired on the broker
            await p.send_and_wait("t", b"b")
            await p.send_and_wait("t", b"c")
            assert fake.cluster.deliver_late("t", 0, delayed_copy) == "fenced"
            await p.send_and_wait("t", b"d")  # the producer is unharmed
            return fake, p.producer_id, p.producer_epoch

    fake, producer_id, epoch = arun(scenario())
    assert stored(fake, "t") == [b"a0", b"a1", b"b", b"c", b"d"]
    assert epoch == 1
    # Same id; the resealed batches restart at sequence 0 under epoch 1.
    assert sessions(fake, "t") == [
        (producer_id, 0, 0),
        (producer_id, 0, 1),
        (producer_id, 1, 0),
        (producer_id, 1, 1),
        (producer_id, 1, 2),
    ]


def test_epoch_bump_reseals_the_whole_window_in_order_from_sequence_zero() -> None:
    """guards #12 defect 10: a pipeline of 8 batches meets a broker that forgot the producer:
    all of them are resealed under epoch 1 from sequence 0, in record order, none twice."""

    async def scenario() -> InProcessCluster:
        fake = InProcessCluster(nodes=1)
        fake.cluster.create_topic("t", 1, 1)
        async with Producer(fake.bootstrap, ONE_PER_BATCH, stub_factory=fake.stub_factory) as p:
            await p.send_and_wait("t", b"%03d" % 0 + b"." * 200)
            fake.cluster.partition("t", 0).producers.clear()
            futures = [await p.send("t", b"%03d" % i + b"." * 200) for i in range(1, 9)]
            await p.flush()
            assert [f.result().offset for f in futures] == list(range(1, 9))
            late = [
                b for _, _, b in fake.cluster.produce_requests if read_header(b).producer_epoch == 0
            ]
            for copy in late:  # every old-epoch copy the network might still deliver
                assert fake.cluster.deliver_late("t", 0, copy) == "fenced"
        return fake

    fake = arun(scenario())
    assert [v[:3] for v in stored(fake, "t")] == [b"%03d" % i for i in range(9)]
    assert [(e, s) for _, e, s in sessions(fake, "t")] == [(0, 0), *[(1, s) for s in range(8)]]


def test_fenced_answer_to_a_request_of_an_older_epoch_does_not_fail_the_producer() -> None:
    """guards #12 defect 10: topic u's batch was sent under epoch 0; meanwhile topic t bumped
    the producer to epoch 1. PRODUCER_FENCED for that old-epoch request is the fate of a stale
    copy: the batch is resealed under epoch 1 (sequence 0) and delivered, once."""

    async def scenario() -> tuple[InProcessCluster, int]:
        fake = InProcessCluster(nodes=1)
        fake.cluster.create_topic("t", 1, 1)
        fake.cluster.create_topic("u", 1, 1)
        async with Producer(fake.bootstrap, ONE_PER_BATCH, stub_factory=fake.stub_factory) as p:
            await p.send_and_wait("t", b"t0")
            await p.send_and_wait("u", b"u0")
            barrier = fake.cluster.produce_barrier("u", 2)
            pending = await p.send("u", b"u1")
            await wait_until(lambda: len(barrier.waiting) == 1, "u1 reaches the broker")
            fake.cluster.partition("t", 0).producers.clear()
            await (await p.send("t", b"t1"))  # OUT_OF_ORDER_SEQUENCE: epoch 0 -> 1
            assert len(barrier.waiting) == 1  # u1 still held (flush() would wait for it)
            fake.cluster.inject("Produce", "PRODUCER_FENCED", topic="u")
            fake.cluster.barriers.pop("u")
            barrier.release()  # u1 (epoch 0) goes on, and is answered PRODUCER_FENCED
            meta = await pending
            assert meta.offset == 1
            await p.send_and_wait("u", b"u2")
            return fake, p.producer_id

    fake, producer_id = arun(scenario())
    assert stored(fake, "u") == [b"u0", b"u1", b"u2"]
    assert sessions(fake, "u") == [(producer_id, 0, 0), (producer_id, 1, 0), (producer_id, 1, 1)]
    assert stored(fake, "t") == [b"t0", b"t1"]


def test_fenced_in_the_current_epoch_is_fatal_and_fails_every_pending_send() -> None:
    """guards #12 defect 10: PRODUCER_FENCED for the producer's current epoch means another
    producer took over the id: this one fails its pending records (every partition) with a
    clear error, and later sends raise it."""

    async def scenario() -> None:
        fake = InProcessCluster(nodes=1)
        fake.cluster.create_topic("t", 2, 1)
        config = ProducerConfig(
            batch_bytes=300, linger_ms=60_000, retry_backoff_ms=1, retry_backoff_max_ms=5
        )
        async with Producer(fake.bootstrap, config, stub_factory=fake.stub_factory) as p:
            await p.send_and_wait("t", b"warm", partition=0)
            lingering = await p.send("t", b"lingering", partition=1)  # not sent for 60 s
            fake.cluster.inject("Produce", "PRODUCER_FENCED", topic="t")
            full = await p.send("t", b"x" * 250, partition=0)  # a full batch goes at once
            with pytest.raises(errors.ProducerFenced) as raised:
                await full
            with pytest.raises(errors.ProducerFenced):
                await lingering
            assert "another producer" in str(raised.value)
            with pytest.raises(errors.ProducerFenced):
                await p.send("t", b"z", partition=1)
        assert fake.cluster.records_in("t", 1) == []

    arun(scenario())


def test_epoch_overflow_asks_for_a_new_producer_id() -> None:
    """Part of the epoch scheme (not a regression test): at epoch 32767 the next bump would overflow the int16: the
    producer asks InitProducerId for a new id instead (sequences restart at 0 under it)."""

    async def scenario() -> tuple[InProcessCluster, int, int]:
        fake = InProcessCluster(nodes=1)
        fake.cluster.create_topic("t", 1, 1)
        fake.cluster.initial_producer_epoch = 32767
        async with Producer(fake.bootstrap, ONE_PER_BATCH, stub_factory=fake.stub_factory) as p:
            await p.send_and_wait("t", b"a")
            first_id = p.producer_id
            fake.cluster.initial_producer_epoch = 0
            fake.cluster.partition("t", 0).producers.clear()
            await p.send_and_wait("t", b"b")
            return fake, first_id, p.producer_id

    fake, first_id, second_id = arun(scenario())
    assert second_id != first_id
    assert stored(fake, "t") == [b"a", b"b"]
    assert sessions(fake, "t") == [(first_id, 32767, 0), (second_id, 0, 0)]
