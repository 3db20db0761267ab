"""The client's seams for the system simulation: network (``stub_factory``), clocks (the
loop's ``time()`` for deadlines, ``wall_clock_ms`` for timestamps) and randomness (``rng``)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import grpc
import pytest

from client import errors
from client.admin import AdminClient
from client.config import ConsumerConfig, ProducerConfig
from client.connection import Connection
from client.consumer import Consumer, ConsumerRecord
from client.producer import Producer
from tests.client.fake_broker import InProcessCluster, arun
from tests.client.virtual_loop import run_virtual

FAST_PRODUCER = ProducerConfig(retry_backoff_ms=1, retry_backoff_max_ms=20, linger_ms=1)
FAST_CONSUMER = ConsumerConfig(auto_offset_reset="earliest", retry_backoff_ms=1, max_wait_ms=50)


@pytest.fixture
def no_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a grpc channel (hence a socket) fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a grpc channel was opened: {args}")

    monkeypatch.setattr(grpc.aio, "insecure_channel", refuse)
    monkeypatch.setattr(grpc.aio, "secure_channel", refuse)


async def _consume(consumer: Consumer, n: int) -> list[ConsumerRecord]:
    out: list[ConsumerRecord] = []
    while len(out) < n:
        out.extend(await consumer.poll(1.0))
    return out


def test_producer_consumer_admin_round_trip_through_a_stub_factory_without_sockets(
    no_channels: None,
) -> None:
    async def scenario() -> None:
        fake = InProcessCluster(nodes=3)
        fake.cluster.create_topic("orders", 2, 3)
        seams: dict[str, Any] = {"stub_factory": fake.stub_factory}
        async with AdminClient(fake.bootstrap, **seams) as admin:
            assert [t.name for t in await admin.list_topics()] == ["orders"]
        async with Producer(fake.bootstrap, FAST_PRODUCER, **seams) as producer:
            futures = [
                await producer.send("orders", b"v%d" % i, partition=i % 2) for i in range(40)
            ]
            await producer.flush()
            metas = [f.result() for f in futures]
        assert [m.offset for m in metas if m.partition == 0] == list(range(20))
        async with Consumer(fake.bootstrap, FAST_CONSUMER, **seams) as consumer:
            consumer.assign([("orders", 0), ("orders", 1)])
            records = await _consume(consumer, 40)
        got = {(r.partition, r.offset): r.value for r in records}
        assert got == {(i % 2, i // 2): b"v%d" % i for i in range(40)}
        assert len(records) == 40
        assert set(fake.stubs_made) <= set(fake.bootstrap.split(","))
        assert fake.stubs_made  # the calls really went through the factory

    arun(scenario())


def test_failures_come_through_the_one_conversion_point(no_channels: None) -> None:
    async def scenario() -> None:
        fake = InProcessCluster(nodes=1)
        conn = Connection(fake.bootstrap, stub_factory=fake.stub_factory)
        with pytest.raises(errors.UnknownTopic):
            await conn.partition_count("missing", deadline=asyncio.get_running_loop().time() + 1)
        bad = Connection("nowhere:1", stub_factory=fake.stub_factory)
        with pytest.raises(errors.BrokerUnavailable):
            await bad.call("ListTopics", None)
        await conn.close()  # no channel to close
        await bad.close()

    arun(scenario())


def test_deadlines_follow_the_event_loop_clock_not_time_monotonic(no_channels: None) -> None:
    """On a virtual-time loop a 2 s metadata deadline ends after 2 virtual seconds. Read from
    ``time.monotonic()`` it would keep retrying for 2 real seconds, thousands of virtual ones."""

    async def scenario() -> tuple[float, float]:
        fake = InProcessCluster(nodes=1)
        fake.cluster.inject(
            "Metadata", "UNAVAILABLE", times=10**9, bare_status=grpc.StatusCode.UNAVAILABLE
        )
        loop = asyncio.get_running_loop()
        config = ProducerConfig(
            metadata_timeout_ms=2_000, retry_backoff_ms=100, retry_backoff_max_ms=100
        )
        started = loop.time()
        async with Producer(fake.bootstrap, config, stub_factory=fake.stub_factory) as producer:
            with pytest.raises(errors.BrokerUnavailable):
                await producer.send("orders", b"x")
        return started, loop.time()

    real_start = time.monotonic()
    started, ended = run_virtual(scenario())
    assert 2.0 <= ended - started <= 2.3
    assert time.monotonic() - real_start < 2.0


def test_delivery_timeout_and_backoff_run_in_virtual_time(no_channels: None) -> None:
    """A partition without a reachable leader fails its records after delivery_timeout_ms of
    loop time (120 virtual seconds here), in far less real time."""

    async def scenario() -> float:
        fake = InProcessCluster(nodes=1)
        fake.cluster.create_topic("t", 1, 1)
        loop = asyncio.get_running_loop()
        async with Producer(fake.bootstrap, stub_factory=fake.stub_factory) as producer:
            await producer.send_and_wait("t", b"warm")
            fake.cluster.inject("Produce", "LEADER_NOT_AVAILABLE", times=10**9)
            started = loop.time()
            future = await producer.send("t", b"x")
            with pytest.raises(errors.LeaderNotAvailable):
                await future
            return loop.time() - started

    real_start = time.monotonic()
    elapsed = run_virtual(scenario())
    assert 120.0 <= elapsed <= 122.0
    assert time.monotonic() - real_start < 10.0


def test_record_timestamps_come_from_the_injected_wall_clock(no_channels: None) -> None:
    async def scenario() -> list[int]:
        fake = InProcessCluster(nodes=1)
        fake.cluster.create_topic("t", 1, 1)
        ticks = iter(range(5_000, 6_000, 10))
        async with Producer(
            fake.bootstrap,
            FAST_PRODUCER,
            stub_factory=fake.stub_factory,
            wall_clock_ms=lambda: next(ticks),
        ) as producer:
            for value in (b"a", b"b", b"c"):
                await producer.send("t", value)
            await producer.send("t", b"d", timestamp_ms=42)  # explicit wins
            await producer.flush()
        async with Consumer(
            fake.bootstrap, FAST_CONSUMER, stub_factory=fake.stub_factory
        ) as consumer:
            consumer.assign([("t", 0)])
            return [r.timestamp_ms for r in await _consume(consumer, 4)]

    assert arun(scenario()) == [5_000, 5_010, 5_020, 42]


def test_rng_and_clocks_default_to_production_and_are_injectable() -> None:
    rng = random.Random(7)
    conn = Connection("h:1", rng=rng, wall_clock_ms=lambda: 1)
    assert conn.rng is rng and conn.wall_clock_ms() == 1
    default = Connection("h:1")
    assert isinstance(default.rng, random.Random)
    assert abs(default.wall_clock_ms() - time.time() * 1000) < 5_000


def test_a_run_on_the_virtual_loop_replays_exactly(no_channels: None) -> None:
    """Same seams, same inputs -> the same calls, outcomes and virtual end time: nothing in the
    client reads a real clock or an unseeded source of randomness."""

    async def scenario() -> tuple[list[Any], list[Any], list[Any], float]:
        fake = InProcessCluster(nodes=3)
        fake.cluster.create_topic("t", 3, 3)
        seams: dict[str, Any] = {
            "stub_factory": fake.stub_factory,
            "wall_clock_ms": lambda: 1_700_000_000_000,
            "rng": random.Random(5),
        }
        config = ProducerConfig(linger_ms=2, retry_backoff_ms=5, batch_bytes=400)
        async with Producer(fake.bootstrap, config, **seams) as producer:
            for i in range(60):
                if i == 20:
                    fake.cluster.move_leader("t", 1, 3)
                if i == 35:
                    fake.cluster.partition("t", 2).producers.clear()
                    fake.cluster.inject("Produce", "REQUEST_TIMED_OUT", topic="t")
                await producer.send("t", b"v%d" % i + b"." * 50, key=b"k%d" % (i % 7))
            await producer.flush()
        async with Consumer(fake.bootstrap, FAST_CONSUMER, **seams) as consumer:
            consumer.assign([("t", p) for p in range(3)])
            records = await _consume(consumer, 60)
        loop = asyncio.get_running_loop()
        return (
            list(fake.cluster.calls),
            list(fake.cluster.produce_outcomes),
            [(r.partition, r.offset, r.value, r.timestamp_ms) for r in records],
            loop.time(),
        )

    first = run_virtual(scenario())
    second = run_virtual(scenario())
    assert first == second
    assert len(first[2]) == 60
