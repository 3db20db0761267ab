"""PartitionConfig validation."""

from __future__ import annotations

import pytest

from partition import ConfigError, PartitionConfig


def test_defaults() -> None:
    c = PartitionConfig()
    assert c.max_batch_bytes == 4 << 20
    assert c.retention_ms == 7 * 24 * 3600 * 1000
    assert c.retention_bytes == -1
    assert c.producer_state_keep == 5


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_batch_bytes", 60),
        ("retention_ms", 0),
        ("retention_ms", -2),
        ("retention_bytes", 0),
        ("retention_bytes", -5),
        ("producer_state_keep", 0),
    ],
)
def test_invalid_values_raise_with_fields(field: str, value: int) -> None:
    with pytest.raises(ConfigError) as e:
        PartitionConfig(**{field: value})
    assert (e.value.field, e.value.value) == (field, value)
    assert field in str(e.value)


def test_forever_and_unlimited_are_allowed() -> None:
    c = PartitionConfig(retention_ms=-1, retention_bytes=-1)
    assert c.retention_ms == -1
