"""client.partitioner against Kafka's own murmur2 (tests/fixtures/murmur2.json)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.partitioner import murmur2, partition_for_key

FIXTURES = json.loads((Path(__file__).parent.parent / "fixtures" / "murmur2.json").read_text())


def test_fixture_has_200_keys() -> None:
    assert len(FIXTURES) == 200


@pytest.mark.parametrize("case", FIXTURES, ids=lambda c: c["key"])
def test_murmur2_matches_kafka(case: dict) -> None:
    key = base64.b64decode(case["key"])
    h = murmur2(key)
    assert h == case["murmur2"]
    signed = h - (1 << 32) if h >= 1 << 31 else h
    assert signed == case["murmur2_signed"]
    assert h & 0x7FFFFFFF == case["positive"]
    for n, expected in case["partition"].items():
        assert partition_for_key(key, int(n)) == expected


def test_fixture_covers_every_tail_length() -> None:
    lengths = {len(base64.b64decode(c["key"])) % 4 for c in FIXTURES}
    assert lengths == {0, 1, 2, 3}


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=1000))
def test_partition_in_range_and_deterministic(key: bytes, n: int) -> None:
    p = partition_for_key(key, n)
    assert 0 <= p < n
    assert p == partition_for_key(bytes(key), n)
    assert 0 <= murmur2(key) < 1 << 32


def test_zero_partitions_rejected() -> None:
    with pytest.raises(ValueError, match="num_partitions"):
        partition_for_key(b"k", 0)
