"""Malformed and invalid requests get typed errors, and the broker keeps serving."""

from __future__ import annotations

import grpc
import pytest

from client.admin import AdminClient
from server.errors import ERROR_METADATA_KEY
from tests.integration.harness import LocalCluster, run
from wire import batch as codec
from wire import replog_pb2 as pb

pytestmark = pytest.mark.xdist_group("integration")


def good_batch(n: int = 3) -> bytes:
    return codec.encode([codec.Record(b"k", f"v{i}".encode(), 1_700_000_000_000) for i in range(n)])


async def call_error(coro) -> pb.ErrorDetail:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro
    for key, value in info.value.trailing_metadata() or ():
        if key == ERROR_METADATA_KEY:
            detail = pb.ErrorDetail()
            detail.ParseFromString(value)
            return detail
    raise AssertionError(f"no typed error detail in {info.value!r}")


def test_malformed_requests_get_typed_errors(cluster_factory) -> None:
    cluster: LocalCluster = cluster_factory(1)

    async def scenario() -> None:
        await cluster.wait_ready()
        async with AdminClient(cluster.bootstrap) as admin:
            await admin.create_topic("strict", 1, 1, config={"max.message.bytes": "4096"})
        channel, stub = cluster.stub(1)
        async with channel:

            async def produce_err(batch: bytes, topic: str = "strict", partition: int = 0):
                return await call_error(
                    stub.Produce(
                        pb.ProduceRequest(topic=topic, partition=partition, batch=batch),
                        timeout=5,
                    )
                )

            good = good_batch()
            bad_crc = bytearray(good)
            bad_crc[-1] ^= 0xFF
            d = await produce_err(bytes(bad_crc))
            assert d.code == "INVALID_BATCH" and "crc" in d.message.lower()

            wrong_magic = bytearray(good)
            wrong_magic[16] = 1
            d = await produce_err(bytes(wrong_magic))
            assert d.code == "INVALID_BATCH" and "magic" in d.message.lower()

            d = await produce_err(good_batch(400))  # > max.message.bytes
            assert d.code == "BATCH_TOO_LARGE", d

            d = await produce_err(good[:30])  # truncated
            assert d.code == "INVALID_BATCH"

            d = await produce_err(b"\x00" * 7)
            assert d.code == "INVALID_BATCH"

            d = await produce_err(good, topic="nope")
            assert d.code == "UNKNOWN_TOPIC" and "nope" in d.message

            d = await produce_err(good, partition=5)
            assert d.code == "UNKNOWN_PARTITION" and "1 partitions" in d.message

            d = await produce_err(good, partition=-1)
            assert d.code == "INVALID_REQUEST"

            d = await produce_err(b"")
            assert d.code == "INVALID_REQUEST"

            async def fetch_err(offset: int) -> pb.ErrorDetail:
                async def first():
                    async for r in stub.Fetch(
                        pb.FetchRequest(topic="strict", partition=0, offset=offset, max_wait_ms=10),
                        timeout=5,
                    ):
                        return r
                    return None

                return await call_error(first())

            d = await fetch_err(-5)
            assert d.code == "OFFSET_OUT_OF_RANGE"
            assert d.fields["requested"] == "-5"

            # The broker still serves: a good batch lands and is readable.
            r = await stub.Produce(pb.ProduceRequest(topic="strict", partition=0, batch=good))
            assert r.last_offset - r.base_offset == 2
            d = await fetch_err(r.last_offset + 100)
            assert d.code == "OFFSET_OUT_OF_RANGE"
            assert int(d.fields["end"]) == r.last_offset + 1
            async for resp in stub.Fetch(
                pb.FetchRequest(topic="strict", partition=0, offset=r.base_offset), timeout=5
            ):
                _header, records = codec.decode(resp.batches)
                assert [x.value for x in records] == [b"v0", b"v1", b"v2"]
                break

            # Topic admin errors are typed too.
            d = await call_error(
                stub.CreateTopic(
                    pb.CreateTopicRequest(name="x", partitions=1, replication_factor=3)
                )
            )
            assert d.code == "NOT_ENOUGH_BROKERS", d
            d = await call_error(
                stub.CreateTopic(
                    pb.CreateTopicRequest(name="bad/name", partitions=1, replication_factor=1)
                )
            )
            assert d.code == "INVALID_TOPIC", d
            d = await call_error(
                stub.CreateTopic(
                    pb.CreateTopicRequest(name="strict", partitions=1, replication_factor=1)
                )
            )
            assert d.code == "TOPIC_EXISTS", d

    run(scenario())
