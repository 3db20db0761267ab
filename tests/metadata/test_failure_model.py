"""One failure model: a metadata broken invariant is a raft InvariantViolation."""

from __future__ import annotations

import pytest

from metadata import MetadataError, MetadataInvariantViolation, MetadataState
from raft.errors import InvariantViolation


def test_metadata_invariant_violation_is_an_invariant_violation() -> None:
    """guards #12 defect 5: the runtime isolates InvariantViolation per group; the metadata
    replica's own invariant error must be one, and never a routine MetadataError."""
    assert issubclass(MetadataInvariantViolation, InvariantViolation)
    assert not issubclass(MetadataInvariantViolation, MetadataError)
    state = MetadataState()
    state.apply(1, b"")
    with pytest.raises(InvariantViolation) as info:
        state.apply(1, b"")  # applied twice: the runtime's bug
    assert isinstance(info.value, MetadataInvariantViolation)
    assert info.value.actual == 1
