"""`replog partition verify` (client/verify.py): replicas compared at equal offsets, the first
differing offset reported, a lagging replica compared only up to what all hold, an
unreachable replica making the result unknown (never "equal")."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from client.connection import Connection
from client.verify import first_difference, verify_partition
from wire import replog_pb2 as pb

Batch = tuple[int, int, int, int]


def log(n: int, *, records: int = 3, crc: int = 7) -> list[Batch]:
    return [(i * records, i * records + records - 1, crc + i, 100) for i in range(n)]


class Replica:
    """One broker's replica: answers ReplicaDigest from its batches, ``page`` at a time."""

    def __init__(self, node: int, batches: list[Batch], *, hw: int | None = None, page: int = 2):
        self.node, self.batches, self.page = node, batches, page
        self.hw = hw if hw is not None else (batches[-1][1] + 1 if batches else 0)
        self.down = False

    async def ReplicaDigest(self, request: pb.ReplicaDigestRequest, timeout: Any = None) -> Any:
        if self.down:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
            )
        live = [b for b in self.batches if b[1] >= request.from_offset and b[0] < self.hw]
        out = live[: self.page]
        return pb.ReplicaDigestResponse(
            node_id=self.node,
            log_start_offset=self.batches[0][0] if self.batches else 0,
            high_watermark=self.hw,
            batches=[
                pb.BatchDigest(base_offset=b, last_offset=e, crc32c=c, size=s) for b, e, c, s in out
            ],
            next_offset=out[-1][1] + 1 if out else request.from_offset,
            role="FOLLOWER",
        )


def verify(replicas: list[Replica]) -> Any:
    by_address = {f"b{r.node}:1": r for r in replicas}

    async def scenario() -> Any:
        conn = Connection("b1:1", stub_factory=lambda address: by_address[address])
        conn.brokers = {r.node: pb.Broker(id=r.node, address=f"b{r.node}:1") for r in replicas}
        return await verify_partition(conn, "t", 0, [r.node for r in replicas], timeout_s=5)

    return asyncio.run(scenario())


def test_equal_replicas_are_equal_over_every_page() -> None:
    result = verify([Replica(1, log(7)), Replica(2, log(7), page=3), Replica(3, log(7), page=1)])
    assert result.equal is True
    assert (result.compared_from, result.compared_to) == (0, 21)
    assert result.batches == 7 and result.records == 21


def test_the_first_differing_offset_is_reported() -> None:
    bad = log(7)
    bad[4] = (bad[4][0], bad[4][1], 999, 100)  # other bytes at offsets 12..14
    bad[6] = (bad[6][0], bad[6][1], 998, 100)
    result = verify([Replica(1, log(7)), Replica(2, bad), Replica(3, log(7))])
    assert result.equal is False
    assert result.first_difference == 12
    assert "crc32c=000003e7" in result.difference[2]


def test_other_batch_boundaries_are_a_difference() -> None:
    split = [*log(2), (6, 7, 1, 50), (8, 8, 2, 50), (9, 11, 10, 100)]
    result = verify([Replica(1, log(4)), Replica(2, split)])
    assert result.equal is False and result.first_difference == 6


def test_a_lagging_replica_is_compared_up_to_what_all_hold() -> None:
    result = verify([Replica(1, log(7)), Replica(2, log(7), hw=9), Replica(3, log(7))])
    assert result.equal is True
    assert result.compared_to == 9 and result.records == 9


def test_a_missing_batch_on_one_replica_is_a_difference() -> None:
    holey = log(5)
    del holey[2]  # offsets 6..8 absent, yet it claims the same high watermark
    result = verify([Replica(1, log(5)), Replica(2, holey, hw=15)])
    assert result.equal is False and result.first_difference == 6


def test_an_unreachable_replica_makes_the_result_unknown() -> None:
    down = Replica(3, log(4))
    down.down = True
    result = verify([Replica(1, log(4)), Replica(2, log(4)), down])
    assert result.equal is None
    assert "UNAVAILABLE" in next(r for r in result.replicas if r.node_id == 3).error
    assert result.to_json()["equal"] is None


def test_first_difference_of_equal_pages_is_none() -> None:
    assert first_difference({1: log(3), 2: log(3)}) is None
    assert first_difference({1: log(3), 2: log(2)}) == (
        6,
        {1: "[6, 8] crc32c=00000009 size=100", 2: "nothing"},
    )


def test_an_answer_from_the_wrong_broker_is_refused() -> None:
    """Broker 2's address leads to broker 1 (a wrong override): comparing broker 1's replica
    with itself would say "equal"; the answer is refused and the result is unknown."""
    by_address = {"b1:1": Replica(1, log(3)), "b2:1": Replica(1, log(3))}

    async def scenario() -> Any:
        conn = Connection("b1:1", stub_factory=lambda address: by_address[address])
        conn.brokers = {n: pb.Broker(id=n, address=f"b{n}:1") for n in (1, 2)}
        return await verify_partition(conn, "t", 0, [1, 2], timeout_s=5)

    swapped = asyncio.run(scenario())
    assert swapped.equal is None
    assert "broker 1 answered" in next(r for r in swapped.replicas if r.node_id == 2).error
