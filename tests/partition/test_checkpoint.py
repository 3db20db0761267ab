"""Partition checkpoints: restoring one and replaying only the entries after it gives the same
state as a full replay of the retained log (snapshot bytes, fetches, producer decisions)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partition import ApplyResult, PartitionState
from partition.checkpoint import CheckpointInvalid, decode, encode
from tests.partition.test_snapshot import build, fetch_all
from tests.partition.test_support import FakeLog, fresh, make_batch

op = st.one_of(
    st.tuples(st.just("data"), st.integers(1, 4)),
    st.tuples(st.sampled_from(["noop", "conf"])),
    st.tuples(
        st.just("idem"), st.integers(0, 2), st.integers(0, 1), st.integers(0, 6), st.integers(1, 3)
    ),
)

KEEP, EXPIRY = 5, 24 * 3600 * 1000


def roundtrip(state: PartitionState) -> bytes:
    return encode(state.capture_checkpoint())


def full_replay(log: FakeLog, snapshot_index: int) -> tuple[PartitionState, list[ApplyResult]]:
    """What a restart without a checkpoint does: snapshot, whole log, apply after it."""
    snap_state = fresh()
    for e in log.entries[:snapshot_index]:
        snap_state.apply(e)
    state = fresh()
    if snapshot_index:
        state.restore(snap_state.snapshot(), snapshot_index)
    state.on_log_append(log.entries)
    results = [state.apply(e) for e in log.entries[snapshot_index:]]
    return state, results


def probes(state: PartitionState) -> list[object]:
    """The leader's idempotence decisions for a spread of batches (does not change state)."""
    out: list[object] = []
    for pid in range(3):
        for epoch in range(2):
            for seq in range(0, 9):
                out.append(state.admit(make_batch(1, pid=pid, epoch=epoch, seq=seq, ts=50)))
    return out


def assert_same(a: PartitionState, b: PartitionState, log: FakeLog) -> None:
    assert a.snapshot() == b.snapshot()
    assert (a.applied_index, a.high_watermark, a.log_start_offset, a.next_offset()) == (
        b.applied_index,
        b.high_watermark,
        b.log_start_offset,
        b.next_offset(),
    )
    assert dict(a.producer_table()) == dict(b.producer_table())
    assert fetch_all(a, log, a.log_start_offset) == fetch_all(b, log, b.log_start_offset)
    assert probes(a) == probes(b)


@settings(max_examples=80, deadline=None)
@given(ops=st.lists(op, min_size=1, max_size=30), data=st.data())
def test_restart_from_checkpoint_equals_full_replay(
    ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    log = build(ops)
    n = len(log.entries)
    # the live replica: a retention cut at s_then, a checkpoint at a, a later cut at s_now
    a = data.draw(st.integers(0, n), label="checkpoint index")
    s_then = data.draw(st.integers(0, a), label="snapshot when checkpointed")
    s_now = data.draw(st.integers(s_then, a), label="snapshot at restart")
    live = fresh()
    for e in log.entries[:a]:
        live.apply(e)
        if e.index == s_then:
            live.on_compacted(s_then + 1)
    image = decode(roundtrip(live), keep=KEEP, expiry_ms=EXPIRY)
    assert image.index == a and image.snapshot_index == s_then

    reference, results = full_replay(log, s_now)

    restarted = fresh()
    restarted.restore_checkpoint(image, s_now)
    restarted.on_log_append(log.entries[a:])
    assert [restarted.apply(e) for e in log.entries[a:]] == results[a - s_now :]
    assert_same(restarted, reference, log)


@settings(max_examples=30, deadline=None)
@given(ops=st.lists(op, min_size=2, max_size=20), data=st.data())
def test_checkpoint_with_an_unapplied_tail(ops: list[tuple[Any, ...]], data: st.DataObject) -> None:
    """The live state has appended entries it has not applied: only the applied prefix goes
    into the checkpoint, and the tail is reported again after the restore."""
    log = build(ops)
    n = len(log.entries)
    a = data.draw(st.integers(0, n - 1))
    live = fresh()
    live.on_log_append(log.entries)
    for e in log.entries[:a]:
        live.apply(e)
    image = decode(roundtrip(live), keep=KEEP, expiry_ms=EXPIRY)
    assert image.index == a and image.entries == a
    restarted = fresh()
    restarted.restore_checkpoint(image, 0)
    restarted.on_log_append(log.entries)  # the whole stored log: entries <= a are known
    for e in log.entries[a:]:
        restarted.apply(e)
    reference, _ = full_replay(log, 0)
    assert_same(restarted, reference, log)


def test_every_damaged_byte_is_detected() -> None:
    log = build([("data", 2), ("idem", 1, 0, 0, 2), ("noop",), ("idem", 1, 0, 0, 2)])
    live = fresh()
    for e in log.entries:
        live.apply(e)
    data = roundtrip(live)
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x40
        with pytest.raises(CheckpointInvalid):
            decode(bytes(damaged), keep=KEEP, expiry_ms=EXPIRY)
    for cut in range(len(data)):
        with pytest.raises(CheckpointInvalid):
            decode(data[:cut], keep=KEEP, expiry_ms=EXPIRY)
    with pytest.raises(CheckpointInvalid, match="version"):
        decode(data[:4] + b"\x09" + data[5:], keep=KEEP, expiry_ms=EXPIRY)


def test_a_checkpoint_older_than_the_snapshot_is_refused() -> None:
    log = build([("data", 1)] * 6)
    live = fresh()
    for e in log.entries[:3]:
        live.apply(e)
    image = decode(roundtrip(live), keep=KEEP, expiry_ms=EXPIRY)
    with pytest.raises(CheckpointInvalid, match="does not cover"):
        fresh().restore_checkpoint(image, 4)  # a retention cut at 4 happened after it
    restored = fresh()
    restored.restore_checkpoint(image, 3)  # a cut exactly at the checkpoint is fine
    assert restored.log_start_offset == live.high_watermark


def test_capture_is_a_copy() -> None:
    """The image does not change when the live state moves on (it is encoded off the loop)."""
    log = build([("idem", 1, 0, 0, 1), ("idem", 1, 0, 1, 1), ("data", 2)])
    live = fresh()
    live.apply(log.entries[0])
    image = live.capture_checkpoint()
    before = encode(image)
    for e in log.entries[1:]:
        live.apply(e)
    live.on_compacted(3)
    assert encode(image) == before
