"""DurableLog unit tests: the LogStorage contract, the write side, hard state, snapshots."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import pytest

from raft.errors import Compacted, ConfigError, InvariantViolation, Unavailable
from raft.storage import DurableLog, HardStateFile, SnapshotFile
from raft.storage.frame import FRAME_OVERHEAD_BYTES
from raft.storage_api import LogStorage
from raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata


def make_entries(lo: int, hi: int, term: int, size: int = 20) -> list[Entry]:
    return [Entry(index=i, term=term, data=bytes([i % 251]) * size) for i in range(lo, hi)]


def snapshot_at(index: int, term: int, voters: frozenset[int] = frozenset({1})) -> Snapshot:
    return Snapshot(SnapshotMetadata(index, term, ConfState(voters=voters)), b"state@%d" % index)


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, object]]] = []

    def __call__(self, event: str, **fields: object) -> None:
        self.seen.append((event, fields))

    def names(self) -> list[str]:
        return [name for name, _ in self.seen]


def test_new_log_is_empty_and_satisfies_the_protocol(tmp_path: Path) -> None:
    log: LogStorage = DurableLog(tmp_path)
    assert log.first_index() == 1
    assert log.last_index() == 0
    assert log.term(0) == 0
    assert log.entries(1, 1) == []
    assert log.snapshot().is_empty()
    with pytest.raises(Unavailable):
        log.term(1)
    with pytest.raises(Unavailable):
        log.entries(1, 2)


def test_bootstrap_conf_state_survives_restart_and_is_ignored_later(tmp_path: Path) -> None:
    conf = ConfState(voters=frozenset({1, 2, 3}), learners=frozenset({4}))
    DurableLog(tmp_path, conf_state=conf).close()
    other = ConfState(voters=frozenset({9}))
    with DurableLog(tmp_path, conf_state=other) as log:
        assert log.initial_state() == (HardState(), conf)


def test_append_read_back_across_segments_cache_and_restart(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, segment_bytes=200, cache_bytes=150)
    entries = [*make_entries(1, 41, term=1), Entry(41, 2, EntryType.CONF_CHANGE, b"cc")]
    log.append(entries)
    assert len(log.segments()) > 5
    assert log.entries(1, 42) == entries
    assert log.entries(17, 23) == entries[16:22]
    assert [log.term(i) for i in range(0, 42)] == [0] + [e.term for e in entries]
    log.close()
    with DurableLog(tmp_path, segment_bytes=200, cache_bytes=0) as reopened:
        assert reopened.entries(1, 42) == entries
        assert reopened.last_index() == 41
        assert reopened.term(41) == 2


def test_segments_are_contiguous_and_named_by_first_index(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, segment_bytes=256)
    log.append(make_entries(1, 30, term=1))
    infos = log.segments()
    assert infos[0].first_index == 1
    for before, after in itertools.pairwise(infos):
        assert after.first_index == before.last_index + 1
        assert before.size_bytes <= 256
    assert infos[-1].last_index == 29
    for info in infos:
        assert info.path.name == f"{info.first_index:020d}.log"
        assert info.path.stat().st_size == info.size_bytes
    log.close()


def test_max_bytes_limits_but_returns_at_least_one(tmp_path: Path) -> None:
    for cache_bytes in (0, 1 << 20):  # from disk and from the tail cache
        directory = tmp_path / str(cache_bytes)
        log = DurableLog(directory, segment_bytes=300, cache_bytes=cache_bytes)
        entries = make_entries(1, 21, term=1, size=30)
        log.append(entries)
        one = entries[0].size()
        assert log.entries(1, 21, max_bytes=0) == entries[:1]
        assert log.entries(1, 21, max_bytes=one * 3) == entries[:3]
        assert log.entries(1, 21, max_bytes=one * 3 + one - 1) == entries[:3]
        assert log.entries(5, 21, max_bytes=one * 7) == entries[4:11]
        assert log.entries(1, 21, max_bytes=None) == entries
        log.close()


def test_suffix_truncation_replaces_entries_and_survives_restart(tmp_path: Path) -> None:
    events = Events()
    log = DurableLog(tmp_path, segment_bytes=200, logger=events)
    log.append(make_entries(1, 31, term=1))
    replacement = make_entries(12, 16, term=3, size=5)
    log.append(replacement)
    assert "log_truncated" in events.names()
    assert log.last_index() == 15
    assert log.entries(12, 16) == replacement
    assert log.term(11) == 1
    assert log.term(12) == 3
    with pytest.raises(Unavailable):
        log.term(16)
    log.close()
    with DurableLog(tmp_path, segment_bytes=200, cache_bytes=0) as reopened:
        assert reopened.last_index() == 15
        assert reopened.entries(1, 16) == make_entries(1, 12, term=1) + replacement


def test_truncating_everything_restarts_at_the_same_index(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, segment_bytes=150)
    log.append(make_entries(1, 10, term=1))
    log.append(make_entries(1, 3, term=2))
    assert log.entries(1, 3) == make_entries(1, 3, term=2)
    assert log.last_index() == 2
    log.close()


def test_append_invariants(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, segment_bytes=150)
    log.append(make_entries(1, 20, term=1))
    with pytest.raises(InvariantViolation, match="gap"):
        log.append(make_entries(22, 23, term=1))
    with pytest.raises(InvariantViolation, match="consecutive"):
        log.append([Entry(20, 1), Entry(22, 1)])
    log.save_snapshot(snapshot_at(12, 1))
    first = log.first_index()
    assert 1 < first <= 13
    with pytest.raises(InvariantViolation, match="below the first index"):
        log.append(make_entries(first - 1, first + 1, term=2))
    log.close()


def test_entries_covered_by_the_snapshot_are_never_rewritten(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, segment_bytes=1 << 20)
    log.append(make_entries(1, 20, term=1))
    log.save_snapshot(snapshot_at(12, 1))
    assert log.first_index() == 1  # one segment: nothing compacted
    with pytest.raises(InvariantViolation, match="covered by the snapshot"):
        log.append(make_entries(12, 14, term=2))
    log.append(make_entries(13, 15, term=2))  # just after the snapshot is fine
    assert log.term(12) == 1 and log.term(13) == 2
    assert log.last_index() == 14
    log.close()


def test_compact_requires_a_snapshot_and_drops_whole_segments(tmp_path: Path) -> None:
    events = Events()
    log = DurableLog(tmp_path, segment_bytes=200, logger=events)
    entries = make_entries(1, 41, term=1)
    log.append(entries)
    with pytest.raises(InvariantViolation, match="snapshot"):
        log.compact(10)
    segments_before = log.segments()
    log.save_snapshot(snapshot_at(20, 1))
    first = log.first_index()
    dropped = [s for s in segments_before if s.last_index <= 20]
    assert first == dropped[-1].last_index + 1
    assert first <= 21
    assert all(not s.path.exists() for s in dropped)
    assert log.term(first - 1) == 1
    with pytest.raises(Compacted):
        log.term(first - 2)
    with pytest.raises(Compacted):
        log.entries(first - 1, first + 1)
    assert log.entries(first, 41) == entries[first - 1 :]
    assert "segments_compacted" in events.names()
    log.close()
    with DurableLog(tmp_path, segment_bytes=200) as reopened:
        assert reopened.first_index() == first
        assert reopened.term(first - 1) == 1
        assert reopened.snapshot() == snapshot_at(20, 1)
        assert reopened.initial_state()[1] == ConfState(voters=frozenset({1}))


def test_compact_never_drops_the_last_segment(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, segment_bytes=1 << 20)
    log.append(make_entries(1, 11, term=1))
    log.save_snapshot(snapshot_at(10, 1))
    assert log.first_index() == 1
    assert log.entries(1, 11) == make_entries(1, 11, term=1)
    log.close()


def test_snapshot_beyond_the_log_resets_it(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, segment_bytes=200)
    log.append(make_entries(1, 11, term=1))
    log.save_snapshot(snapshot_at(50, 4))
    assert (log.first_index(), log.last_index(), log.term(50)) == (51, 50, 4)
    assert log.segments() == []
    log.append(make_entries(51, 53, term=5))
    assert log.term(50) == 4
    log.close()
    with DurableLog(tmp_path) as reopened:
        assert (reopened.first_index(), reopened.last_index()) == (51, 52)
        assert reopened.term(50) == 4
        assert reopened.entries(51, 53) == make_entries(51, 53, term=5)


def test_save_snapshot_checks_consistency(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, segment_bytes=200)
    log.append(make_entries(1, 11, term=2))
    with pytest.raises(InvariantViolation, match="does not match"):
        log.save_snapshot(snapshot_at(5, 3))
    log.close()


def test_apply_snapshot_drops_all_entries(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, segment_bytes=200)
    log.append(make_entries(1, 31, term=1))
    snap = snapshot_at(10, 1, voters=frozenset({1, 2, 3}))
    log.apply_snapshot(snap)
    assert (log.first_index(), log.last_index(), log.term(10)) == (11, 10, 1)
    assert log.snapshot() == snap
    assert log.dirty  # the snapshot file and the segment removal wait for sync()
    assert len(list(tmp_path.glob("*.log"))) > 1
    log.sync()
    assert not log.dirty
    assert list(tmp_path.glob("*.log")) == []
    log.close()
    with DurableLog(tmp_path) as reopened:
        assert (reopened.first_index(), reopened.last_index()) == (11, 10)
        assert reopened.initial_state()[1] == ConfState(voters=frozenset({1, 2, 3}))


def test_apply_snapshot_refuses_an_out_of_date_snapshot(tmp_path: Path) -> None:
    log = DurableLog(tmp_path)
    log.apply_snapshot(snapshot_at(10, 2))
    with pytest.raises(InvariantViolation, match="out-of-date"):
        log.apply_snapshot(snapshot_at(9, 2))
    assert log.snapshot() == snapshot_at(10, 2)
    log.close()


def test_interrupted_apply_snapshot_is_finished_at_open(tmp_path: Path) -> None:
    """A crash between writing the snapshot file and dropping the entries."""
    log = DurableLog(tmp_path, segment_bytes=200)
    log.append(make_entries(1, 31, term=1))
    log.close()
    SnapshotFile(tmp_path, fsync=True).store(snapshot_at(20, 7))  # term differs from the log
    events = Events()
    with DurableLog(tmp_path, logger=events) as reopened:
        assert (reopened.first_index(), reopened.last_index(), reopened.term(20)) == (21, 20, 7)
        assert "log_reset_on_open" in events.names()


def test_snapshot_matching_the_log_keeps_later_entries_at_open(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, segment_bytes=200)
    log.append(make_entries(1, 31, term=1))
    log.close()
    SnapshotFile(tmp_path, fsync=True).store(snapshot_at(20, 1))
    with DurableLog(tmp_path) as reopened:
        assert reopened.last_index() == 30
        assert reopened.entries(21, 31) == make_entries(21, 31, term=1)


def test_term_and_vote_are_written_by_the_next_sync_commit_lazily(tmp_path: Path) -> None:
    now = [0.0]
    log = DurableLog(tmp_path, commit_flush_interval_s=1.0, clock=lambda: now[0])
    stored = HardStateFile(tmp_path, fsync=False)
    log.append(make_entries(1, 11, term=1))
    log.save_hard_state(HardState(term=1, vote=2, commit=0))
    assert log.dirty
    assert stored.load() == (HardState(0, 0, 0), ConfState())  # not before sync()
    log.sync()
    assert stored.load() == (HardState(1, 2, 0), ConfState())
    log.save_hard_state(HardState(term=1, vote=2, commit=5))
    assert stored.load() == (HardState(1, 2, 0), ConfState())  # commit alone: lazy
    log.sync()
    assert stored.load() == (HardState(1, 2, 0), ConfState())  # interval not elapsed
    now[0] = 1.5
    log.sync()
    assert stored.load() == (HardState(1, 2, 5), ConfState())
    log.save_hard_state(HardState(term=1, vote=2, commit=7))
    log.save_hard_state(HardState(term=2, vote=0, commit=8))  # term change carries commit
    log.sync()
    assert stored.load() == (HardState(2, 0, 8), ConfState())
    log.save_hard_state(HardState(term=2, vote=0, commit=9))
    log.close()  # close writes the pending commit
    assert stored.load() == (HardState(2, 0, 9), ConfState())


def test_commit_above_the_recovered_log_is_clamped(tmp_path: Path) -> None:
    events = Events()
    log = DurableLog(tmp_path)
    log.append(make_entries(1, 6, term=1))
    log.save_hard_state(HardState(term=1, vote=1, commit=5))
    log.close()
    HardStateFile(tmp_path, fsync=True).store(HardState(1, 1, 9), ConfState())
    with DurableLog(tmp_path, logger=events) as reopened:
        assert reopened.initial_state()[0] == HardState(1, 1, 5)
        assert "commit_clamped" in events.names()


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        DurableLog(tmp_path, fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        DurableLog(tmp_path, segment_bytes=0)


def test_fsync_never_makes_no_fsync_and_always_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def counting_fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def counting_fdatasync(fd: int) -> None:
        calls.append("fdatasync")
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)

    def workload(directory: Path, policy: str) -> DurableLog:
        log = DurableLog(directory, segment_bytes=200, fsync=policy)  # type: ignore[arg-type]
        log.append(make_entries(1, 30, term=1))
        log.append(make_entries(10, 12, term=2))
        log.save_hard_state(HardState(term=2, vote=1, commit=3))
        log.save_snapshot(snapshot_at(9, 1))
        log.sync()
        log.close()
        return log

    never = workload(tmp_path / "never", "never")
    assert calls == []
    assert never.fsyncs_performed == 0
    workload(tmp_path / "always", "always")
    assert calls.count("fdatasync") > 0 and calls.count("fsync") > 0


def test_sync_clears_dirty_and_counts_fdatasyncs(tmp_path: Path) -> None:
    log = DurableLog(tmp_path)
    assert not log.dirty
    log.append(make_entries(1, 4, term=1))
    assert log.dirty
    log.sync()
    assert not log.dirty
    assert log.fsyncs_performed == 1
    log.sync()
    assert log.fsyncs_performed == 1  # nothing new: no fsync
    log.close()


def test_sync_from_another_thread_while_appending(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, segment_bytes=4096)
    done = threading.Event()
    errors: list[BaseException] = []

    def syncer() -> None:
        try:
            while not done.is_set():
                log.sync()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=syncer)
    thread.start()
    try:
        for start in range(1, 2001, 10):
            log.append(make_entries(start, start + 10, term=1, size=40))
    finally:
        done.set()
        thread.join()
    assert errors == []
    log.close()
    with DurableLog(tmp_path, segment_bytes=4096, cache_bytes=0) as reopened:
        assert reopened.entries(1, 2001) == make_entries(1, 2001, term=1, size=40)


def test_closed_log_refuses_writes(tmp_path: Path) -> None:
    log = DurableLog(tmp_path)
    log.close()
    log.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        log.append(make_entries(1, 2, term=1))


def test_frame_overhead_matches_entry_size_accounting() -> None:
    entry = Entry(1, 1, data=b"abc")
    assert FRAME_OVERHEAD_BYTES + len(entry.data) == entry.size() + 1
