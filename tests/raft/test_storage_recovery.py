"""Crash and corruption tests for raft.storage: torn tails are cut, damage elsewhere is loud."""

from __future__ import annotations

from pathlib import Path

import pytest

from raft.errors import StorageCorruption
from raft.storage import DurableLog, HardStateFile
from raft.storage.frame import encode_entry
from raft.storage.hard_state import encode_state
from raft.types import ConfState, Entry, HardState


def make_entries(lo: int, hi: int, term: int, size: int = 30) -> list[Entry]:
    return [Entry(index=i, term=term, data=bytes([i % 251]) * size) for i in range(lo, hi)]


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, object]]] = []

    def __call__(self, event: str, **fields: object) -> None:
        self.seen.append((event, fields))

    def named(self, name: str) -> list[dict[str, object]]:
        return [fields for event, fields in self.seen if event == name]


def write_log(
    directory: Path, entries: list[Entry], segment_bytes: int = 1 << 20, acked: int | None = None
) -> None:
    """Write ``entries``; the first ``acked`` (default all) are synced (acknowledged), the rest
    only written, then the process "crashes" (no sync, no close: the page cache keeps them)."""
    log = DurableLog(directory, segment_bytes=segment_bytes)
    acked = len(entries) if acked is None else acked
    log.append(entries[:acked])
    log.sync()
    if acked == len(entries):
        log.close()
        return
    log.append(entries[acked:])
    abandon(log)


def abandon(log: DurableLog) -> None:
    """A process crash: handles close, nothing more is written or synced."""
    for segment in log._segments.values():
        segment.close()


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))


def frame_offsets(path: Path, first_index: int, last_index: int) -> list[int]:
    """File offsets of the frames of [first_index, last_index] (term-1 entries of
    ``make_entries``), located by re-encoding them and matching the file's tail."""
    data = path.read_bytes()
    offsets = []
    position = len(data)
    frames = [encode_entry(e) for e in make_entries(first_index, last_index + 1, term=1)]
    for frame in reversed(frames):
        position -= len(frame)
        assert data[position : position + len(frame)] == frame
        offsets.append(position)
    return list(reversed(offsets))


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def test_every_cut_inside_the_last_frame_recovers_to_the_previous_entry(tmp_path: Path) -> None:
    entries = make_entries(1, 6, term=1)
    write_log(tmp_path, entries, acked=4)  # the last frame was never acknowledged
    (path,) = segment_files(tmp_path)
    original = path.read_bytes()
    last_frame = encode_entry(entries[-1])
    last_start = len(original) - len(last_frame)
    assert original[last_start:] == last_frame
    for cut in range(last_start, len(original)):
        path.write_bytes(original[:cut])
        events = Events()
        log = DurableLog(tmp_path, logger=events)
        assert log.last_index() == 4, f"cut at {cut}"
        assert log.entries(1, 5) == entries[:4]
        torn = events.named("torn_tail_truncated")
        if cut > last_start:
            assert [(t["path"], t["offset"], t["ack_mark"]) for t in torn] == [
                (str(path), last_start, 4)
            ]
        else:
            assert torn == []
        assert path.stat().st_size == last_start
        replacement = Entry(5, 2, data=b"after-crash")
        log.append([replacement])
        log.close()
        with DurableLog(tmp_path, cache_bytes=0) as reopened:
            assert reopened.entries(1, 6) == [*entries[:4], replacement]


def test_torn_header_of_a_new_last_segment_removes_it(tmp_path: Path) -> None:
    entries = make_entries(1, 21, term=1)
    write_log(tmp_path, entries, segment_bytes=200)
    files = segment_files(tmp_path)
    assert len(files) >= 3
    last_first = int(files[-1].stem)
    files[-1].write_bytes(files[-1].read_bytes()[:10])
    events = Events()
    with DurableLog(tmp_path, segment_bytes=200, logger=events) as log:
        assert log.last_index() == last_first - 1
        assert not files[-1].exists()
        assert events.named("torn_tail_truncated")
        log.append(make_entries(last_first, last_first + 2, term=2))
        assert log.term(last_first) == 2


def test_zero_filled_tail_is_a_torn_write(tmp_path: Path) -> None:
    entries = make_entries(1, 6, term=1)
    write_log(tmp_path, entries)
    (path,) = segment_files(tmp_path)
    size = path.stat().st_size
    with path.open("ab") as handle:
        handle.write(b"\0" * 100)
    with DurableLog(tmp_path) as log:
        assert log.entries(1, 6) == entries
        assert path.stat().st_size == size


def test_bad_crc_in_the_last_frame_is_a_torn_tail(tmp_path: Path) -> None:
    entries = make_entries(1, 6, term=1)
    write_log(tmp_path, entries, acked=4)
    (path,) = segment_files(tmp_path)
    size = path.stat().st_size
    flip_byte(path, size - 3)
    events = Events()
    with DurableLog(tmp_path, logger=events) as log:
        assert log.last_index() == 4
        assert events.named("torn_tail_truncated")[0]["offset"] == size - len(
            encode_entry(entries[-1])
        )


@pytest.mark.parametrize("which", ["payload", "crc", "length", "length_past_eof"])
def test_damage_in_a_middle_frame_is_corruption_naming_file_and_offset(
    tmp_path: Path, which: str
) -> None:
    entries = make_entries(1, 8, term=1)
    write_log(tmp_path, entries)
    (path,) = segment_files(tmp_path)
    offsets = frame_offsets(path, 1, 7)
    target = offsets[3]  # entry 4 of 7
    before = path.read_bytes()
    flip_byte(path, target + {"length": 0, "length_past_eof": 2, "crc": 5, "payload": 20}[which])
    with pytest.raises(StorageCorruption) as info:
        DurableLog(tmp_path)
    assert info.value.path == str(path)
    assert info.value.byte_offset == target
    assert str(target) in str(info.value) and path.name in str(info.value)
    if which == "length_past_eof":  # looked torn, but complete frames follow it
        assert "damaged in place" in info.value.detail
    path.write_bytes(before)  # nothing was cut: the file is intact besides the flip
    with DurableLog(tmp_path) as log:
        assert log.entries(1, 8) == entries


def test_damage_in_the_last_frame_of_a_non_last_segment_is_corruption(tmp_path: Path) -> None:
    write_log(tmp_path, make_entries(1, 21, term=1), segment_bytes=200)
    files = segment_files(tmp_path)
    size = files[0].stat().st_size
    flip_byte(files[0], size - 2)
    with pytest.raises(StorageCorruption) as info:
        DurableLog(tmp_path, segment_bytes=200)
    assert info.value.path == str(files[0])


def test_missing_middle_segment_is_corruption(tmp_path: Path) -> None:
    write_log(tmp_path, make_entries(1, 31, term=1), segment_bytes=200)
    files = segment_files(tmp_path)
    files[1].unlink()
    with pytest.raises(StorageCorruption, match="gap or overlap"):
        DurableLog(tmp_path, segment_bytes=200)


def test_out_of_sequence_index_is_corruption(tmp_path: Path) -> None:
    entries = make_entries(1, 6, term=1)
    write_log(tmp_path, entries)
    (path,) = segment_files(tmp_path)
    offsets = frame_offsets(path, 1, 5)
    data = bytearray(path.read_bytes())
    wrong = encode_entry(Entry(9, 1, data=entries[2].data))  # valid CRC, wrong index
    data[offsets[2] : offsets[2] + len(wrong)] = wrong
    path.write_bytes(bytes(data))
    with pytest.raises(StorageCorruption, match="index 9 where 3") as info:
        DurableLog(tmp_path)
    assert info.value.byte_offset == offsets[2]


def test_valid_frames_after_the_ack_mark_are_cut_whatever_they_hold(tmp_path: Path) -> None:
    write_log(tmp_path, make_entries(1, 6, term=1))
    (path,) = segment_files(tmp_path)
    size = path.stat().st_size
    with path.open("ab") as handle:  # never acknowledged: past the mark (5)
        handle.write(encode_entry(Entry(9, 1, data=b"x")))
        handle.write(encode_entry(Entry(10, 1, data=b"y")))
    with DurableLog(tmp_path) as log:
        assert log.last_index() == 5
    assert path.stat().st_size == size


def test_renamed_segment_is_corruption(tmp_path: Path) -> None:
    write_log(tmp_path, make_entries(1, 6, term=1))
    (path,) = segment_files(tmp_path)
    path.rename(tmp_path / f"{2:020d}.log")
    with pytest.raises(StorageCorruption, match="name says 2"):
        DurableLog(tmp_path)


def test_read_detects_bit_rot_after_open(tmp_path: Path) -> None:
    entries = make_entries(1, 8, term=1)
    write_log(tmp_path, entries)
    (path,) = segment_files(tmp_path)
    offsets = frame_offsets(path, 1, 7)
    with DurableLog(tmp_path, cache_bytes=0) as log:
        flip_byte(path, offsets[2] + 20)
        with pytest.raises(StorageCorruption) as info:
            log.entries(1, 8)
        assert info.value.byte_offset == offsets[2]


def test_stray_temp_file_never_wins(tmp_path: Path) -> None:
    log = DurableLog(tmp_path)
    log.save_hard_state(HardState(term=3, vote=2, commit=0))
    log.close()
    # An interrupted atomic write of a newer state, complete or not: ignored and removed.
    (tmp_path / "state.tmp").write_bytes(encode_state(HardState(9, 9, 9), ConfState()))
    (tmp_path / "snapshot.tmp").write_bytes(b"partial")
    events = Events()
    with DurableLog(tmp_path, logger=events) as reopened:
        assert reopened.initial_state()[0] == HardState(3, 2, 0)
        assert reopened.snapshot().is_empty()
    assert not (tmp_path / "state.tmp").exists()
    assert not (tmp_path / "snapshot.tmp").exists()
    assert len(events.named("stale_temp_removed")) == 2


def test_damaged_state_file_is_corruption(tmp_path: Path) -> None:
    log = DurableLog(tmp_path)
    log.save_hard_state(HardState(term=3, vote=2, commit=0))
    log.close()
    state = HardStateFile(tmp_path, fsync=False).path
    flip_byte(state, 12)
    with pytest.raises(StorageCorruption) as info:
        DurableLog(tmp_path)
    assert info.value.path == str(state)


def test_missing_state_file_with_segments_is_corruption(tmp_path: Path) -> None:
    write_log(tmp_path, make_entries(1, 4, term=1))
    (tmp_path / "state").unlink()
    with pytest.raises(StorageCorruption, match="state file missing"):
        DurableLog(tmp_path)
