"""``replog partition verify``: are a partition's replicas equal at equal offsets?

Each broker hosting a replica answers ``ReplicaDigest`` for ITS replica (followers too): the
base offset, last offset, CRC32C and size of each committed, live batch from an offset. The
verifier asks every replica for its log start and high watermark, compares the range they all
hold ([max log start, min high watermark)) page by page, and reports the first offset where
two replicas differ (a batch with other bytes, other offsets, or missing on one of them).

Replicas behind the others are compared only up to what all hold, so a follower that is
merely catching up is not "different"; a replica that cannot be asked makes the result
unknown, never equal.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from client.connection import Connection
from client.errors import ReplogError
from wire import replog_pb2 as pb

PAGE_BYTES = 4 << 20
MAX_PAGES = 1_000_000  # bounds the walk; a page holds at least one batch


@dataclass(frozen=True, slots=True)
class ReplicaView:
    node_id: int
    role: str = ""
    term: int = 0
    log_start_offset: int | None = None
    high_watermark: int | None = None
    error: str = ""  # set when the replica could not be asked


@dataclass(slots=True)
class Verification:
    topic: str
    partition: int
    replicas: list[ReplicaView] = field(default_factory=list)
    compared_from: int = 0
    compared_to: int = 0  # exclusive: every replica holds [compared_from, compared_to)
    batches: int = 0  # batches compared (per replica)
    records: int = 0
    first_difference: int | None = None  # offset where the replicas first differ
    difference: dict[int, str] = field(default_factory=dict)  # node -> what it holds there

    @property
    def equal(self) -> bool | None:
        """True: equal over the compared range; False: they differ; None: unknown (a replica
        could not be asked)."""
        if self.first_difference is not None:
            return False
        if any(r.error for r in self.replicas):
            return None
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "equal": self.equal,
            "compared_from": self.compared_from,
            "compared_to": self.compared_to,
            "batches": self.batches,
            "records": self.records,
            "first_difference": self.first_difference,
            "difference": {str(k): v for k, v in self.difference.items()},
            "replicas": [
                {
                    "node_id": r.node_id,
                    "role": r.role,
                    "term": r.term,
                    "log_start_offset": r.log_start_offset,
                    "high_watermark": r.high_watermark,
                    "error": r.error,
                }
                for r in self.replicas
            ],
        }


Digest = tuple[int, int, int, int]  # (base offset, last offset, crc32c, size)


def first_difference(pages: dict[int, list[Digest]]) -> tuple[int, dict[int, str]] | None:
    """Compare replicas' digests of the same offset range, batch by batch: the first offset
    where they differ and what each holds there, or None if all are equal."""
    nodes = sorted(pages)
    longest = max((len(p) for p in pages.values()), default=0)
    for i in range(longest):
        here = {n: pages[n][i] if i < len(pages[n]) else None for n in nodes}
        if len(set(here.values())) == 1:
            continue
        offset = min(d[0] for d in here.values() if d is not None)
        return offset, {
            n: (f"[{d[0]}, {d[1]}] crc32c={d[2]:08x} size={d[3]}" if d else "nothing")
            for n, d in here.items()
        }
    return None


async def verify_partition(
    conn: Connection, topic: str, partition: int, replicas: list[int], *, timeout_s: float
) -> Verification:
    """Compare the replicas ``replicas`` (broker ids) of ``topic``/``partition``."""
    result = Verification(topic, partition)

    async def ask(node: int, offset: int) -> pb.ReplicaDigestResponse:
        address = conn.address_of(node)
        if address is None:
            raise LookupError(f"broker {node} has no known address")
        response: pb.ReplicaDigestResponse = await conn.call(
            "ReplicaDigest",
            pb.ReplicaDigestRequest(
                topic=topic, partition=partition, from_offset=offset, max_bytes=PAGE_BYTES
            ),
            address=address,
            timeout_s=timeout_s,
        )
        return response

    firsts = await asyncio.gather(*(ask(n, 0) for n in replicas), return_exceptions=True)
    live: list[int] = []
    for node, first in zip(replicas, firsts):
        if isinstance(first, pb.ReplicaDigestResponse) and first.node_id != node:
            # A wrong address (e.g. two overrides to one proxy) would compare a replica with
            # itself and call it equal: refuse the answer.
            first = LookupError(f"asked broker {node}, broker {first.node_id} answered")
        if isinstance(first, ReplogError | LookupError | OSError):
            result.replicas.append(ReplicaView(node, error=str(first)))
        elif isinstance(first, BaseException):
            raise first
        else:
            live.append(node)
            result.replicas.append(
                ReplicaView(
                    node,
                    first.role,
                    first.term,
                    first.log_start_offset,
                    first.high_watermark,
                )
            )
    views = [r for r in result.replicas if not r.error]
    if len(views) < 2:
        return result
    start = max(v.log_start_offset or 0 for v in views)
    end = min(v.high_watermark or 0 for v in views)
    result.compared_from, result.compared_to = start, max(start, end)
    offset = start
    for _page in range(MAX_PAGES):
        if offset >= end:
            break
        answers = await asyncio.gather(*(ask(n, offset) for n in live), return_exceptions=True)
        failed = {n: a for n, a in zip(live, answers) if isinstance(a, BaseException)}
        if failed:
            for node, exc in failed.items():
                if not isinstance(exc, ReplogError | LookupError | OSError):
                    raise exc
                i = next(i for i, r in enumerate(result.replicas) if r.node_id == node)
                result.replicas[i] = ReplicaView(node, error=f"at offset {offset}: {exc}")
            break
        pages: dict[int, list[Digest]] = {}
        for node, answer in zip(live, answers):
            assert isinstance(answer, pb.ReplicaDigestResponse)
            pages[node] = [
                (b.base_offset, b.last_offset, b.crc32c, b.size)
                for b in answer.batches
                if b.base_offset < end
            ]
        # Compare the common prefix of this page (page cuts may fall at different batches).
        common = min(len(p) for p in pages.values())
        if common == 0:
            if any(pages.values()):
                diff = first_difference(pages)
                assert diff is not None  # one replica has a batch the other lacks
                result.first_difference, result.difference = diff
            break
        diff = first_difference({n: p[:common] for n, p in pages.items()})
        if diff is not None:
            result.first_difference, result.difference = diff
            break
        any_page = next(iter(pages.values()))
        result.batches += common
        result.records += sum(d[1] - d[0] + 1 for d in any_page[:common])
        offset = any_page[common - 1][1] + 1
    return result
