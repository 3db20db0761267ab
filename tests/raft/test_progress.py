"""Progress state machine and the Inflights window (count AND bytes)."""

from __future__ import annotations

from raft.progress import Inflights, Progress, ProgressState


def make(match: int = 0, next_index: int = 1, count: int = 4, nbytes: int = 0) -> Progress:
    return Progress(match, next_index, Inflights(count, nbytes))


def test_inflights_count_limit_and_free() -> None:
    inf = Inflights(3)
    for i in (5, 10, 15):
        assert not inf.full()
        inf.add(i, 100)
    assert inf.full()
    inf.free_le(9)
    assert len(inf) == 2 and not inf.full()
    inf.free_le(100)
    assert len(inf) == 0 and inf.bytes == 0


def test_inflights_byte_limit() -> None:
    inf = Inflights(100, max_bytes=1000)
    inf.add(1, 600)
    assert not inf.full()
    inf.add(2, 400)
    assert inf.full()
    inf.free_first_one()
    assert not inf.full() and inf.bytes == 400


def test_probe_pauses_after_one_send_until_ack() -> None:
    pr = make(next_index=5)
    assert pr.state is ProgressState.PROBE and not pr.is_paused()
    pr.sent_entries(3, 100)
    assert pr.is_paused() and pr.next == 5  # probe does not advance next optimistically
    assert pr.maybe_update(7)
    assert not pr.is_paused() and pr.match == 7 and pr.next == 8


def test_replicate_pipelines_and_window_fills() -> None:
    pr = make(match=4, next_index=5, count=2)
    pr.become_replicate()
    pr.sent_entries(3, 10)
    assert pr.next == 8 and not pr.is_paused()
    pr.sent_entries(2, 10)
    assert pr.next == 10 and pr.is_paused()
    pr.maybe_update(7)
    pr.inflights.free_le(7)
    assert not pr.is_paused()


def test_maybe_decr_to_replicate_ignores_stale() -> None:
    pr = make(match=5, next_index=10)
    pr.become_replicate()
    pr.next = 10
    assert not pr.maybe_decr_to(4, 4)  # rejection of an index we know matches: stale
    assert pr.maybe_decr_to(8, 2)
    assert pr.next == 6  # back to match + 1


def test_maybe_decr_to_probe_uses_hint() -> None:
    pr = make(match=0, next_index=11)
    assert not pr.maybe_decr_to(5, 2)  # not the index we probed: stale
    assert pr.maybe_decr_to(10, 3)
    assert pr.next == 4
    pr.probe_sent = True
    assert pr.maybe_decr_to(3, 0)
    assert pr.next == 1 and not pr.probe_sent


def test_snapshot_state_then_probe_after_snapshot() -> None:
    pr = make(match=2, next_index=3)
    pr.become_snapshot(50)
    assert pr.is_paused()
    pr.become_probe()
    assert pr.state is ProgressState.PROBE and pr.next == 51
