"""Shared helpers for the partition tests: batches, a fake Raft log, a leader that stamps.

(Named test_*.py because only those files are ours to write; it holds no tests itself.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from partition import PartitionConfig, PartitionState
from raft.types import ConfChange, ConfChangeType, Entry, EntryType
from wire.batch import Record, encode


def make_batch(
    n: int = 1,
    *,
    pid: int = -1,
    epoch: int = -1,
    seq: int = -1,
    ts: int = 1_000,
    value: bytes = b"v",
) -> bytes:
    records = [Record(b"k%d" % i, value, ts + i) for i in range(n)]
    return encode(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def noop(index: int, term: int) -> Entry:
    return Entry(index, term, EntryType.NORMAL, b"")


def conf(index: int, term: int) -> Entry:
    return Entry(
        index, term, EntryType.CONF_CHANGE, ConfChange(ConfChangeType.ADD_VOTER, 2).encode()
    )


@dataclass
class FakeLog:
    """A Raft log as the runtime stores it: entries by index, starting at ``first``."""

    entries: list[Entry] = field(default_factory=list)
    first: int = 1
    reads: int = 0

    @property
    def last_index(self) -> int:
        return self.first + len(self.entries) - 1

    def write(self, new: list[Entry]) -> None:
        """Persist a Ready's entries: suffix truncation at new[0].index, like the storage."""
        if not new:
            return
        del self.entries[new[0].index - self.first :]
        assert new[0].index == self.last_index + 1
        self.entries.extend(new)

    def read(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """LogStorage.entries: at least one entry, then up to max_bytes of entry data."""
        self.reads += 1
        assert self.first <= lo < hi <= self.last_index + 1, (lo, hi, self.first)
        out: list[Entry] = []
        total = 0
        for e in self.entries[lo - self.first : hi - self.first]:
            if out and total + e.size() > max_bytes:
                break
            out.append(e)
            total += e.size()
        return out

    def compact(self, first_kept: int) -> None:
        del self.entries[: first_kept - self.first]
        self.first = first_kept


def propose(state: PartitionState, log: FakeLog, term: int, data: bytes) -> Entry:
    """What a leader's runtime does: stamp, propose (append to its log), report."""
    stamped, base, last = state.stamp(data)
    e = Entry(log.last_index + 1, term, EntryType.NORMAL, stamped)
    log.write([e])
    state.on_log_append([e])
    assert base == state.next_offset() - (last - base + 1)
    return e


def propose_control(state: PartitionState, log: FakeLog, term: int, kind: str = "noop") -> Entry:
    idx = log.last_index + 1
    e = noop(idx, term) if kind == "noop" else conf(idx, term)
    log.write([e])
    state.on_log_append([e])
    return e


def fresh(**config: int) -> PartitionState:
    return PartitionState(PartitionConfig(**config))


def propose_log_start(state: PartitionState, log: FakeLog, term: int, offset: int) -> Entry:
    """The leader's retention decision as the runtime proposes it: a log-start control entry."""
    from partition.header import encode_log_start

    e = Entry(log.last_index + 1, term, EntryType.NORMAL, encode_log_start(offset))
    log.write([e])
    state.on_log_append([e])
    return e


def planned_cut(state: PartitionState, segments: list[tuple[int, int, int]], now_ms: int) -> int:
    """The Raft index of the last entry below the offset ``plan_retention`` proposes (the
    retention cut of the leader's own segments), or None."""
    offset = state.plan_retention(segments, now_ms)
    if offset is None:
        return None  # type: ignore[return-value]
    if offset >= state.next_offset():
        return state.index_for_offset(state.next_offset() - 1)
    return state.index_for_offset(offset) - 1


def cut_log_start(
    state: PartitionState,
    log: FakeLog,
    term: int,
    now_ms: int,
    segments: list[tuple[int, int, int]],
) -> int | None:
    """Plan on ``state`` (the leader), propose and apply the log-start entry; the offset."""
    offset = state.plan_retention(segments, now_ms)
    if offset is None:
        return None
    state.apply(propose_log_start(state, log, term, offset))
    return offset
