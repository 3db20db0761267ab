"""One failure model: a partition's broken invariant is a raft InvariantViolation."""

from __future__ import annotations

import pytest

from partition import PartitionInvariantError
from raft.errors import InvariantViolation
from tests.partition.test_support import fresh, noop


def test_partition_invariant_error_is_an_invariant_violation() -> None:
    """guards #12 defect 5: the runtime isolates InvariantViolation per group; a partition
    invariant error that is not one aborts the whole turn for every group."""
    assert issubclass(PartitionInvariantError, InvariantViolation)
    state = fresh()
    with pytest.raises(InvariantViolation) as info:
        state.apply(noop(5, 1))  # skipped entries 1..4: the runtime's bug
    err = info.value
    assert isinstance(err, PartitionInvariantError)
    assert (err.what, err.expected, err.actual) == ("apply order", 1, 5)
