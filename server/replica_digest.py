"""``ReplicaDigest``: what one broker's replica of a partition holds, for ``replog partition
verify`` (client/verify.py) to compare replicas at equal offsets.

Answered by followers too, from the replica's own applied (committed) batches, read off the
loop like a fetch (``PartitionReplica.fetch(any_replica=True)``). The digested bytes are the
replicated entry data, so they are identical on every replica whose committed log is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from crc32c import crc32c

from wire.batch import read_header

if TYPE_CHECKING:
    from server.partition_replica import PartitionReplica


@dataclass(frozen=True)
class ReplicaDigest:
    log_start_offset: int
    high_watermark: int
    batches: list[tuple[int, int, int, int]]  # (base offset, last offset, crc32c, size)
    next_offset: int


async def digest(replica: PartitionReplica, from_offset: int, max_bytes: int) -> ReplicaDigest:
    """Base offset, last offset, CRC32C and size of each committed, live batch of ``replica``
    from ``from_offset`` (raised to its log start), up to about ``max_bytes`` of batches."""
    offset = max(from_offset, replica.state.log_start_offset)
    result = await replica.fetch(offset, max_bytes, any_replica=True)
    batches = []
    for raw in result.batches:
        h = read_header(raw)
        batches.append((h.base_offset, h.last_offset, crc32c(raw), len(raw)))
    return ReplicaDigest(
        log_start_offset=result.log_start_offset,
        high_watermark=result.high_watermark,
        batches=batches,
        next_offset=result.next_offset,
    )
