"""Consumers across a leader failover (#12 defect 7, client side): a position the consumer has
is never given up for a jump over records it has not seen, nor moved back over records it
has already returned.

In-process fake on a virtual-time loop: back-offs take no real time and every run is the same.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from client import errors
from client.config import ConsumerConfig
from client.consumer import Consumer, ConsumerRecord, OffsetReset
from tests.client.fake_broker import InProcessCluster, wait_until
from tests.client.virtual_loop import run_virtual
from wire.batch import Record, encode

# auto_offset_reset is left at Kafka's default, "latest": the policy that skipped records.
CONFIG = ConsumerConfig(retry_backoff_ms=10, retry_backoff_max_ms=200, max_wait_ms=100)


def append(fake: InProcessCluster, topic: str, values: list[bytes]) -> None:
    batch = encode([Record(b"k", v, 1_000 + i) for i, v in enumerate(values)])
    fake.cluster.append_raw(topic, 0, batch)


async def consume(consumer: Consumer, count: int, within_s: float = 60.0) -> list[ConsumerRecord]:
    """``count`` records, failing after ``within_s`` of (virtual) loop time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    out: list[ConsumerRecord] = []
    while len(out) < count:
        assert loop.time() < deadline, f"only {[r.offset for r in out]} of {count} records came"
        out.extend(await consumer.poll(5.0))
    return out


def values(first: int, last: int) -> list[bytes]:
    return [b"%d" % i for i in range(first, last)]


def test_out_of_range_once_on_the_new_leader_skips_nothing() -> None:
    """guards #12 defect 7: the new leader answers OFFSET_OUT_OF_RANGE once (its high
    watermark trails), then serves. With auto_offset_reset=latest the consumer used to jump
    to the end and skip the records written meanwhile."""

    async def scenario() -> tuple[list[ConsumerRecord], list[OffsetReset]]:
        fake = InProcessCluster(nodes=3)
        fake.cluster.create_topic("t", 1, 3)
        append(fake, "t", values(0, 10))
        async with Consumer(fake.bootstrap, CONFIG, stub_factory=fake.stub_factory) as c:
            c.assign([("t", 0)])
            c.seek("t", 0, 0)
            seen = await consume(c, 10)
            # One step, no await: the leader moves, the new one answers OOR once, and records
            # 10..14 arrive (so a reset to "latest" would land past them).
            fake.cluster.move_leader("t", 0, 2)
            fake.cluster.inject(
                "Fetch",
                "OFFSET_OUT_OF_RANGE",
                topic="t",
                fields={"requested": "10", "start": "0", "end": "7"},
            )
            append(fake, "t", values(10, 15))
            seen += await consume(c, 5)
            assert await c.poll(0.5) == []
            assert not fake.cluster.faults  # the OOR really was answered
            return seen, c.offset_resets

    seen, resets = run_virtual(scenario())
    assert [r.offset for r in seen] == list(range(15))
    assert [r.value for r in seen] == values(0, 15)
    assert resets == []


def test_trailing_high_watermark_on_an_old_broker_neither_skips_nor_repeats() -> None:
    """guards #12 defect 7: a broker that answers OFFSET_OUT_OF_RANGE above its trailing high
    watermark (7 < position 10) until its no-op commits. Resetting to "latest" then asked
    that broker for its end, 7, and returned records 7..9 a second time."""

    async def scenario() -> tuple[list[ConsumerRecord], list[OffsetReset], int]:
        fake = InProcessCluster(nodes=3)
        fake.cluster.create_topic("t", 1, 3)
        append(fake, "t", values(0, 10))
        p = fake.cluster.partition("t", 0)
        async with Consumer(fake.bootstrap, CONFIG, stub_factory=fake.stub_factory) as c:
            c.assign([("t", 0)])
            c.seek("t", 0, 0)
            seen = await consume(c, 10)
            p.hw_lag, p.out_of_range_above_hw = 3, True
            fake.cluster.move_leader("t", 0, 3)
            await wait_until(lambda: p.out_of_range_answers >= 1, "the new leader says OOR")
            await asyncio.sleep(1.0)  # the new leader's no-op takes a while to commit
            p.hw_lag = 0  # now it has
            append(fake, "t", values(10, 15))
            seen += await consume(c, 5)
            assert await c.poll(0.5) == []
            assert [r.offset for r in seen] == list(range(15))  # 7..9 not twice, none skipped
            return seen, c.offset_resets, p.out_of_range_answers

    seen, resets, answers = run_virtual(scenario())
    assert [r.offset for r in seen] == list(range(15))
    assert resets == []
    assert answers >= 3  # it kept asking (with back-off) instead of resetting


def test_empty_answers_between_high_watermark_and_log_end_do_not_move_the_position() -> None:
    """The broker's side of #12 defect 7: offsets between a trailing high watermark and the
    log end are answered empty (Kafka's behaviour); the consumer waits there, then reads on."""

    async def scenario() -> list[ConsumerRecord]:
        fake = InProcessCluster(nodes=3)
        fake.cluster.create_topic("t", 1, 3)
        append(fake, "t", values(0, 10))
        p = fake.cluster.partition("t", 0)
        async with Consumer(fake.bootstrap, CONFIG, stub_factory=fake.stub_factory) as c:
            c.assign([("t", 0)])
            c.seek("t", 0, 0)
            seen = await consume(c, 10)
            p.hw_lag = 4
            fake.cluster.move_leader("t", 0, 2)
            append(fake, "t", values(10, 12))
            assert await c.poll(1.0) == []  # 10, 11 are not committed on the new leader yet
            assert c.position("t", 0) == 10
            p.hw_lag = 0
            p.notify()
            seen += await consume(c, 2)
            return seen

    seen = run_virtual(scenario())
    assert [r.offset for r in seen] == list(range(12))


def test_out_of_range_above_the_end_is_retried_for_a_bounded_time_then_reset(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """guards #12 defect 7: the retries are bounded: a position that stays above the log end
    (the user seeked past it) is reset after out_of_range_retry_ms, and the reset is logged
    and listed. Metadata is refreshed while retrying."""

    async def scenario() -> tuple[list[ConsumerRecord], list[OffsetReset], float, int]:
        fake = InProcessCluster(nodes=1)
        fake.cluster.create_topic("t", 1, 1)
        append(fake, "t", values(0, 3))
        loop = asyncio.get_running_loop()
        config = ConsumerConfig(
            auto_offset_reset="earliest", out_of_range_retry_ms=2_000, retry_backoff_ms=10
        )
        async with Consumer(fake.bootstrap, config, stub_factory=fake.stub_factory) as c:
            c.assign([("t", 0)])
            c.seek("t", 0, 99)
            started = loop.time()
            seen = await consume(c, 3)
            metadata_calls = sum(1 for _, m in fake.cluster.calls if m == "Metadata")
            return seen, c.offset_resets, loop.time() - started, metadata_calls

    with caplog.at_level(logging.WARNING, logger="replog.client"):
        seen, resets, elapsed, metadata_calls = run_virtual(scenario())
    assert [r.offset for r in seen] == [0, 1, 2]
    assert resets == [OffsetReset("t", 0, 99, "earliest", 0, 3, "above log end")]
    assert 2.0 <= elapsed < 4.0
    assert metadata_calls >= 3
    assert "auto_offset_reset=earliest" in caplog.text


def test_position_below_log_start_resets_at_once_and_says_so() -> None:
    """guards #12 defect 7: records really gone to retention: the policy applies at once (no
    pointless retries), and the reset is surfaced rather than silent."""

    async def scenario() -> tuple[list[ConsumerRecord], list[OffsetReset]]:
        fake = InProcessCluster(nodes=1)
        fake.cluster.create_topic("t", 1, 1)
        for i in range(4):
            append(fake, "t", [b"%d" % i])
        fake.cluster.truncate_before("t", 0, 2)
        config = ConsumerConfig(auto_offset_reset="earliest", retry_backoff_ms=10)
        async with Consumer(fake.bootstrap, config, stub_factory=fake.stub_factory) as c:
            c.assign([("t", 0)])
            c.seek("t", 0, 0)
            return await consume(c, 2), c.offset_resets

    seen, resets = run_virtual(scenario())
    assert [r.offset for r in seen] == [2, 3]
    assert resets == [OffsetReset("t", 0, 0, "earliest", 2, 4, "below log start")]


def test_error_policy_raises_after_the_bounded_retries() -> None:
    async def scenario() -> None:
        fake = InProcessCluster(nodes=1)
        fake.cluster.create_topic("t", 1, 1)
        append(fake, "t", [b"x"])
        config = ConsumerConfig(auto_offset_reset="error", out_of_range_retry_ms=500)
        async with Consumer(fake.bootstrap, config, stub_factory=fake.stub_factory) as c:
            c.assign([("t", 0)])
            c.seek("t", 0, 99)
            with pytest.raises(errors.OffsetOutOfRange):
                await c.poll(5.0)

    run_virtual(scenario())
