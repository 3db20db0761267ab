"""DurableLog against an in-memory model (hypothesis RuleBasedStateMachine).

Rules: append (with overwrite / suffix truncation), save_snapshot (+ compaction), compact,
apply_snapshot, save_hard_state, sync, clean reopen and crash reopen (files closed without
sync or close: the page cache keeps the data, so the log must come back whole, while the
hard state is exactly what was last written eagerly). After every step and every reopen,
first_index, last_index, term() over the whole range, entries() with and without a byte
budget, snapshot() and initial_state() agree with the model.

Compaction drops whole segments only, so the model does not predict ``first_index`` after
a compaction; it checks it is within bounds and then adopts it.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raft.storage import DurableLog
from raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata

SEGMENT_BYTES = 256
CACHE_BYTES = 120
BOOTSTRAP = ConfState(voters=frozenset({1, 2, 3}))


def _no_fsync(fd: int) -> None:
    del fd


class DurableLogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # fsync="always" code paths run, but the fsyncs themselves are no-ops: this test is
        # about the log's logic, not the disk (~4 ms an fsync here). Restored in teardown.
        self.real_fsyncs = (os.fsync, os.fdatasync)
        os.fsync = os.fdatasync = _no_fsync
        self.directory = tempfile.mkdtemp(prefix="replog-storage-")
        self.log = self.open()
        self.entries: dict[int, Entry] = {}
        self.first = 1
        self.prev_term = 0  # term of first - 1
        self.term_now = 1
        self.hs = HardState()
        self.hs_written = HardState()  # what the state file holds (term/vote writes only)
        self.snap = Snapshot()

    def open(self) -> DurableLog:
        return DurableLog(
            self.directory,
            conf_state=BOOTSTRAP,
            segment_bytes=SEGMENT_BYTES,
            cache_bytes=CACHE_BYTES,
            commit_flush_interval_s=1e9,  # commit is written only with term/vote or close
        )

    @property
    def last(self) -> int:
        return self.first - 1 + len(self.entries)

    def model_term(self, index: int) -> int:
        return self.prev_term if index == self.first - 1 else self.entries[index].term

    # -- rules ---------------------------------------------------------------------------

    @rule(
        data=st.data(),
        count=st.integers(1, 8),
        size=st.integers(0, 60),
        new_term=st.booleans(),
        conf=st.booleans(),
    )
    def append(
        self, data: st.DataObject, count: int, size: int, new_term: bool, conf: bool
    ) -> None:
        # Entries covered by the snapshot are committed: never rewritten (last + 1 is fine).
        low = min(max(self.first, self.snap.metadata.index + 1), self.last + 1)
        start = data.draw(st.integers(low, self.last + 1), label="start")
        if new_term or start <= self.last:
            self.term_now += 1
        kind = EntryType.CONF_CHANGE if conf else EntryType.NORMAL
        batch = [
            Entry(index, self.term_now, kind, bytes([index % 251, self.term_now % 251]) * size)
            for index in range(start, start + count)
        ]
        self.log.append(batch)
        for index in range(start, self.last + 1):
            del self.entries[index]
        for entry in batch:
            self.entries[entry.index] = entry

    @precondition(lambda self: self.last >= 1)
    @rule(data=st.data())
    def save_snapshot(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(max(1, self.first - 1), self.last), label="snap_index")
        if index < self.snap.metadata.index:
            return  # the core never snapshots backwards
        voters = frozenset({1, 2, index % 5 + 3})
        snap = Snapshot(SnapshotMetadata(index, self.model_term(index), ConfState(voters)), b"s")
        self.log.save_snapshot(snap)
        self.snap = snap
        self.adopt_compaction(index)

    @precondition(lambda self: not self.snap.is_empty())
    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, self.snap.metadata.index), label="compact_index")
        self.log.compact(index)
        self.adopt_compaction(index)

    def adopt_compaction(self, index: int) -> None:
        new_first = self.log.first_index()
        assert self.first <= new_first <= max(self.first, index + 1)
        if new_first > self.first:
            self.prev_term = self.entries[new_first - 1].term
            for dropped in range(self.first, new_first):
                del self.entries[dropped]
            self.first = new_first

    @rule(data=st.data())
    def apply_snapshot(self, data: st.DataObject) -> None:
        low = max(self.first - 1, self.snap.metadata.index, 1)
        index = data.draw(st.integers(low, self.last + 5), label="install_index")
        self.term_now += 1
        snap = Snapshot(SnapshotMetadata(index, self.term_now, ConfState(frozenset({7}))), b"i")
        self.log.apply_snapshot(snap)
        # The snapshot file and the removal of old segments wait for sync() (the loop never
        # fsyncs); the driver syncs before it reports the Ready persisted. The crash window
        # before that sync is covered with MemFS in test_storage_crash.py.
        self.sync()
        self.snap = snap
        self.entries = {}
        self.first = index + 1
        self.prev_term = self.term_now

    @rule(bump_term=st.booleans(), vote=st.integers(0, 3), commit_delta=st.integers(0, 3))
    def save_hard_state(self, bump_term: bool, vote: int, commit_delta: int) -> None:
        term = max(self.hs.term, self.term_now) + (1 if bump_term else 0)
        self.term_now = term
        hs = HardState(term=term, vote=vote, commit=min(self.hs.commit + commit_delta, self.last))
        self.log.save_hard_state(hs)
        if (hs.term, hs.vote) != (self.hs_written.term, self.hs_written.vote):
            self.vote_pending = True  # durable at the next sync()
        self.hs = hs

    @rule()
    def sync(self) -> None:
        self.log.sync()
        assert not self.log.dirty
        if getattr(self, "vote_pending", False):
            self.hs_written = self.hs  # sync() writes the latest hard state
            self.vote_pending = False

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = self.open()
        self.hs_written = self.hs
        self.vote_pending = False
        self.check_recovered_state()

    @rule()
    def crash_reopen(self) -> None:
        for segment in self.log._segments.values():  # abandon: no sync, no commit write
            segment.close()
        self.log = self.open()
        self.vote_pending = False
        self.hs = HardState(self.hs_written.term, self.hs_written.vote, self.hs_written.commit)
        self.check_recovered_state()

    def check_recovered_state(self) -> None:
        hs, conf = self.log.initial_state()
        expected_commit = min(self.hs.commit, self.last)
        assert hs == HardState(self.hs.term, self.hs.vote, expected_commit)
        self.hs = hs
        assert conf == (BOOTSTRAP if self.snap.is_empty() else self.snap.metadata.conf_state)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def agrees_with_model(self) -> None:
        log = self.log
        assert log.first_index() == self.first
        assert log.last_index() == self.last
        if self.snap.is_empty():  # never compacted: the bootstrap snapshot carries membership
            assert log.snapshot() == Snapshot(SnapshotMetadata(0, 0, BOOTSTRAP))
        else:
            assert log.snapshot() == self.snap
        for index in range(self.first - 1, self.last + 1):
            assert log.term(index) == self.model_term(index), index
        expected = [self.entries[i] for i in range(self.first, self.last + 1)]
        assert log.entries(self.first, self.last + 1) == expected
        if expected:
            budget = expected[0].size() + expected[-1].size()
            limited = log.entries(self.first, self.last + 1, max_bytes=budget)
            assert 1 <= len(limited) <= len(expected)
            assert limited == expected[: len(limited)]
            assert sum(e.size() for e in limited) <= budget or len(limited) == 1
            if len(limited) < len(expected):
                assert sum(e.size() for e in expected[: len(limited) + 1]) > budget

    def teardown(self) -> None:
        try:
            self.log.close()
        finally:
            os.fsync, os.fdatasync = self.real_fsyncs
            shutil.rmtree(self.directory, ignore_errors=True)


DurableLogMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("STORAGE_EXAMPLES", "60")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDurableLog = DurableLogMachine.TestCase
