"""Kafka's default partitioner for keyed records: murmur2 of the key bytes.

Contract: pure functions, no state. ``partition_for_key`` must agree with the Java client
(``Utils.murmur2`` + ``toPositive``) on every key, so that replog and Kafka producers route
the same key to the same partition (the CDC guarantee: one key, one partition, one order).
Keyless records are the producer's business (sticky/round-robin), not this module's.
"""

from __future__ import annotations

__all__ = ["murmur2", "partition_for_key"]

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(key: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c) of ``key`` as an unsigned 32-bit int."""
    length = len(key)
    h = (_SEED ^ length) & _MASK
    whole = length & ~3
    for i in range(0, whole, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= key[whole + 2] << 16
    if rest >= 2:
        h ^= key[whole + 1] << 8
    if rest >= 1:
        h ^= key[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``:
    ``(murmur2(key) & 0x7fffffff) % num_partitions``."""
    if num_partitions < 1:
        raise ValueError(
            f"num_partitions must be >= 1, got {num_partitions}: the topic has no partitions"
        )
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions
