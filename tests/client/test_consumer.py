"""Consumer against the in-process fake cluster: order, no duplicates, no gaps, resets."""

from __future__ import annotations

from collections.abc import Iterator

import crc32c
import pytest

from client import errors
from client.config import ConsumerConfig
from client.consumer import Consumer, ConsumerRecord
from tests.client.fake_broker import FakeBroker, arun, unique
from wire.batch import Record, encode

FAST = ConsumerConfig(retry_backoff_ms=1, retry_backoff_max_ms=20, max_wait_ms=100)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBroker]:
    with FakeBroker(nodes=3) as fb:
        yield fb


def append(fake: FakeBroker, topic: str, partition: int, values: list[bytes]) -> None:
    """One batch holding ``values`` (written straight into the fake's log)."""
    batch = encode([Record(b"k", v, 1_000 + i) for i, v in enumerate(values)])
    fake.run(lambda c: c.append_raw(topic, partition, batch))


async def consume(consumer: Consumer, count: int) -> list[ConsumerRecord]:
    out: list[ConsumerRecord] = []
    while len(out) < count:
        out.extend(await consumer.poll(5.0))
    return out


def test_reads_every_partition_in_order_from_the_beginning(fake: FakeBroker) -> None:
    topic = unique()
    fake.create_topic(topic, partitions=2)
    for i in range(5):
        append(fake, topic, 0, [b"a%d-%d" % (i, j) for j in range(3)])
        append(fake, topic, 1, [b"b%d" % i])

    async def scenario() -> list[ConsumerRecord]:
        async with Consumer(fake.bootstrap, FAST) as consumer:
            consumer.assign([(topic, 0), (topic, 1)])
            consumer.seek_to_beginning()
            records = await consume(consumer, 20)
            assert await consumer.poll(0.05) == []
            assert consumer.position(topic, 0) == 15
            assert consumer.position(topic, 1) == 5
            return records

    records = arun(scenario())
    by_partition = {p: [r for r in records if r.partition == p] for p in (0, 1)}
    assert [r.offset for r in by_partition[0]] == list(range(15))
    assert [r.value for r in by_partition[1]] == [b"b%d" % i for i in range(5)]
    first = by_partition[0][0]
    assert (first.topic, first.key, first.timestamp_ms) == (topic, b"k", 1_000)


def test_no_duplicate_no_gap_across_stream_errors_and_leader_moves(fake: FakeBroker) -> None:
    topic = unique()
    fake.create_topic(topic, partitions=1)
    append(fake, topic, 0, [b"%d" % i for i in range(10)])

    async def scenario() -> list[ConsumerRecord]:
        async with Consumer(fake.bootstrap, FAST) as consumer:
            consumer.assign([(topic, 0)])
            consumer.seek(topic, 0, 0)
            seen = await consume(consumer, 10)
            next_value = 10
            for round_ in range(6):
                if round_ % 2 == 0:
                    fake.break_fetch_streams(topic, 0)  # bare UNAVAILABLE
                else:
                    fake.move_leader(topic, 0, round_ % 3 + 1)  # NOT_LEADER
                fake.inject("Fetch", "LEADER_NOT_AVAILABLE", topic=topic)
                values = [b"%d" % i for i in range(next_value, next_value + 7)]
                append(fake, topic, 0, values)
                next_value += 7
                seen.extend(await consume(consumer, next_value - len(seen)))
            assert await consumer.poll(0.1) == []
            return seen

    seen = arun(scenario())
    assert [r.offset for r in seen] == list(range(52))
    assert [r.value for r in seen] == [b"%d" % i for i in range(52)]
    assert fake.run(lambda c: len(c.faults)) == 0
    reconnects = fake.run(lambda c: sum(1 for _, m in c.calls if m == "Fetch"))
    assert reconnects >= 7


def test_seek_into_the_middle_of_a_batch_skips_the_records_before(fake: FakeBroker) -> None:
    topic = unique()
    fake.create_topic(topic, partitions=1)
    append(fake, topic, 0, [b"%d" % i for i in range(10)])

    async def scenario() -> list[int]:
        async with Consumer(fake.bootstrap, FAST) as consumer:
            consumer.assign([(topic, 0)])
            consumer.seek(topic, 0, 6)
            return [r.offset for r in await consume(consumer, 4)]

    assert arun(scenario()) == [6, 7, 8, 9]


def test_default_position_is_the_end(fake: FakeBroker) -> None:
    topic = unique()
    fake.create_topic(topic, partitions=1)
    append(fake, topic, 0, [b"old"])

    async def scenario() -> list[bytes | None]:
        async with Consumer(fake.bootstrap, FAST) as consumer:
            consumer.assign([(topic, 0)])
            assert await consumer.poll(0.2) == []
            assert consumer.position(topic, 0) == 1
            append(fake, topic, 0, [b"new"])
            return [r.value for r in await consume(consumer, 1)]

    assert arun(scenario()) == [b"new"]


def test_seek_discards_records_fetched_for_the_old_position(fake: FakeBroker) -> None:
    topic = unique()
    fake.create_topic(topic, partitions=1)
    for i in range(20):
        append(fake, topic, 0, [b"%d" % i])

    async def scenario() -> None:
        config = ConsumerConfig(max_poll_records=3, retry_backoff_ms=1)
        async with Consumer(fake.bootstrap, config) as consumer:
            consumer.assign([(topic, 0)])
            consumer.seek(topic, 0, 0)
            first = await consumer.poll(5.0)
            assert [r.offset for r in first] == [0, 1, 2]
            consumer.seek(topic, 0, 15)
            again = await consume(consumer, 5)
            assert [r.offset for r in again] == [15, 16, 17, 18, 19]
            consumer.seek(topic, 0, 1)
            assert [r.offset for r in await consumer.poll(5.0)] == [1, 2, 3]

    arun(scenario())


def test_offset_out_of_range_error_policy_raises(fake: FakeBroker) -> None:
    topic = unique()
    fake.create_topic(topic, partitions=1)
    append(fake, topic, 0, [b"x"])

    async def scenario() -> None:
        config = ConsumerConfig(
            auto_offset_reset="error", retry_backoff_ms=1, out_of_range_retry_ms=100
        )
        async with Consumer(fake.bootstrap, config) as consumer:
            consumer.assign([(topic, 0)])
            consumer.seek(topic, 0, 99)
            with pytest.raises(errors.OffsetOutOfRange) as raised:
                await consumer.poll(5.0)
            assert (raised.value.requested, raised.value.start, raised.value.end) == (99, 0, 1)
            consumer.seek(topic, 0, 0)  # seeking restarts the stopped fetcher
            assert [r.value for r in await consume(consumer, 1)] == [b"x"]

    arun(scenario())


def test_offset_out_of_range_earliest_resets_to_log_start(fake: FakeBroker) -> None:
    topic = unique()
    fake.create_topic(topic, partitions=1)
    for i in range(4):
        append(fake, topic, 0, [b"%d" % i])
    fake.run(lambda c: c.truncate_before(topic, 0, 2))

    async def scenario() -> list[int]:
        config = ConsumerConfig(auto_offset_reset="earliest", retry_backoff_ms=1)
        async with Consumer(fake.bootstrap, config) as consumer:
            consumer.assign([(topic, 0)])
            consumer.seek(topic, 0, 0)  # below the log start now
            return [r.offset for r in await consume(consumer, 2)]

    assert arun(scenario()) == [2, 3]


def test_unknown_topic_is_raised_by_poll(fake: FakeBroker) -> None:
    async def scenario() -> None:
        async with Consumer(fake.bootstrap, FAST) as consumer:
            consumer.assign([("never-created", 0)])
            with pytest.raises(errors.UnknownTopic):
                await consumer.poll(5.0)

    arun(scenario())


def test_async_iteration_yields_records_in_order(fake: FakeBroker) -> None:
    topic = unique()
    fake.create_topic(topic, partitions=1)
    append(fake, topic, 0, [b"%d" % i for i in range(7)])

    async def scenario() -> list[int]:
        offsets = []
        async with Consumer(fake.bootstrap, FAST) as consumer:
            consumer.assign([(topic, 0)])
            consumer.seek_to_beginning()
            async for record in consumer:
                offsets.append(record.offset)
                if len(offsets) == 7:
                    break
        return offsets

    assert arun(scenario()) == list(range(7))


def test_control_batches_are_skipped(fake: FakeBroker) -> None:
    topic = unique()
    fake.create_topic(topic, partitions=1)
    append(fake, topic, 0, [b"a"])
    control = bytearray(encode([Record(None, b"\x00\x00\x00\x00", 0)]))
    control[21:23] = (0x20).to_bytes(2, "big")  # attributes: control bit
    control[17:21] = crc32c.crc32c(bytes(control[21:])).to_bytes(4, "big")
    fake.run(lambda c: c.append_raw(topic, 0, bytes(control)))
    append(fake, topic, 0, [b"b"])

    async def scenario() -> list[tuple[int, bytes | None]]:
        async with Consumer(fake.bootstrap, FAST) as consumer:
            consumer.assign([(topic, 0)])
            consumer.seek_to_beginning()
            return [(r.offset, r.value) for r in await consume(consumer, 2)]

    assert arun(scenario()) == [(0, b"a"), (2, b"b")]


def test_closed_consumer_refuses_use() -> None:
    async def scenario() -> None:
        consumer = Consumer("127.0.0.1:1", FAST)
        await consumer.close()
        with pytest.raises(errors.ClientClosed):
            consumer.assign([("t", 0)])
        with pytest.raises(errors.ClientClosed):
            await consumer.poll(0)

    arun(scenario())
