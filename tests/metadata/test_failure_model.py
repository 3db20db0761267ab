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


def test_entries_below_the_restored_snapshot_are_skipped_not_fatal() -> None:
    """guards #12 defect 2 (metadata side, defence in depth): after a restart the core handed
    out entries 1..commit again and apply raised for those the snapshot already covers, so
    the replica stopped applying and diverged. They are skipped; later ones apply."""
    from metadata.commands import AllocateProducerIds, encode

    log = [encode(AllocateProducerIds(10)) for _ in range(5)]
    original = MetadataState()
    for i, data in enumerate(log[:3], 1):
        original.apply(i, data)
    restarted = MetadataState.restore(original.snapshot())
    assert [restarted.apply(i, d) for i, d in enumerate(log, 1)] == [None, None, None, 31, 41]
    assert restarted.next_producer_id == 51
    with pytest.raises(MetadataInvariantViolation):
        restarted.apply(5, log[4])  # above the snapshot: applying twice is still a bug
