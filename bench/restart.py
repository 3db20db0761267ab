"""Restart benchmark: opening one partition with 1 GiB retained, without and with checkpoints.

Run: ``python bench/restart.py [--gib 1.0] [--batch-kib 32] [--dir PATH] [--keep]``

Build (once): one partition's data directory holding ``--gib`` GiB of retained records, 1 KiB
records in batches of ``--batch-kib`` KiB from one idempotent producer, every batch through
the real ``PartitionState.admit`` (validation, idempotence, offset stamping), then
``DurableLog.append`` + ``sync`` (fsync always), applied in order, commit index at the end.
The batch is encoded once; each copy gets its next base sequence and a fresh CRC (what the
producer would send), which is faster than encoding 1M records in Python and stores the same
bytes. The partition checkpoint the broker writes at clean shutdown (at the last index) and
the newest periodic one a crash would leave (the last 64 MiB boundary of applied data) are
captured during the build.

Then each scenario opens the directory the way the broker does (server/node.py
``_open_partition``): ``DurableLog`` (recovery scan), ``load_partition_state``, ``RawNode``
(``applied`` = the checkpoint's index, if any), and drains the Ready loop until the core has
handed out every committed entry and the partition state has applied it:

* before: checkpoints disabled (``checkpoint_interval_bytes=-1``): full replay;
* after, clean shutdown: the checkpoint at the last index;
* after, crash: the periodic checkpoint up to 64 MiB behind.

Each is run once, on a warm page cache (the build just wrote the files). Timings per phase
are printed, then ``RESULT`` lines. The temp directory is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import crc32c

from partition import Append, PartitionConfig, PartitionState
from partition.checkpoint import CheckpointImage
from partition.checkpoint import encode as encode_checkpoint
from raft.config import RaftConfig
from raft.rawnode import RawNode
from raft.storage import DurableLog
from raft.storage.fs import OS_FS
from raft.types import ConfState, Entry, EntryType, HardState
from server.checkpoint import CheckpointStore
from server.partition_replica import load_partition_state
from wire.batch import Record, encode

RECORD_BYTES = 1024
INTERVAL_BYTES = 64 << 20
_SEQ_AT = 53  # baseSequence: after baseOffset..producerEpoch (RecordBatch v2)
_CRC_AT = 17
_ATTRS_AT = 21


class _Quiet:
    def warning(self, event: str, **fields: object) -> None:
        print(f"  log: {event} {fields}")


def _with_sequence(template: bytes, seq: int) -> bytes:
    """The template batch with baseSequence ``seq`` and its CRC32C recomputed."""
    buf = bytearray(template)
    struct.pack_into(">i", buf, _SEQ_AT, seq)
    struct.pack_into(">I", buf, _CRC_AT, crc32c.crc32c(memoryview(buf)[_ATTRS_AT:]))
    return bytes(buf)


def build(directory: Path, total_bytes: int, batch_bytes: int) -> tuple[int, dict[str, bytes]]:
    """Writes the partition's log; returns (last index, {name: checkpoint bytes})."""
    per_batch = max(1, batch_bytes // RECORD_BYTES)
    ts = int(time.time() * 1000)
    records = [Record(b"key-%06d" % i, bytes(RECORD_BYTES), ts) for i in range(per_batch)]
    template = encode(records, producer_id=7, producer_epoch=0, base_sequence=0)
    state = PartitionState(PartitionConfig())
    log = DurableLog(directory, conf_state=ConfState(voters=frozenset({1})))
    noop = Entry(1, 1, EntryType.NORMAL, b"")
    log.append([noop])
    state.on_log_append([noop])
    state.apply(noop)
    index, seq, written, since = 1, 0, 0, 0
    periodic: CheckpointImage | None = None
    chunk: list[Entry] = []
    while written < total_bytes:
        admission = state.admit(_with_sequence(template, seq), now_ms=ts)
        assert isinstance(admission, Append), admission
        index += 1
        entry = Entry(index, 1, EntryType.NORMAL, admission.data)
        state.on_log_append([entry])
        chunk.append(entry)
        seq += per_batch
        written += len(admission.data)
        since += len(admission.data)
        if len(chunk) >= 256:
            log.append(chunk)
            log.sync()
            for e in chunk:
                state.apply(e)
            chunk = []
            if since >= INTERVAL_BYTES:
                periodic, since = state.capture_checkpoint(ConfState(voters=frozenset({1}))), 0
    if chunk:
        log.append(chunk)
        log.sync()
        for e in chunk:
            state.apply(e)
    log.save_hard_state(HardState(term=1, vote=1, commit=index))
    log.sync()
    log.close()
    conf = ConfState(voters=frozenset({1}))
    shutdown = state.capture_checkpoint(conf)
    assert periodic is not None
    images = {"clean": encode_checkpoint(shutdown), "crash": encode_checkpoint(periodic)}
    return index, images


def open_partition(directory: Path, checkpoints: bool) -> dict[str, float | int]:
    """Opens the partition as the broker does; returns phase timings (s) and counts."""
    config = PartitionConfig(checkpoint_interval_bytes=INTERVAL_BYTES if checkpoints else -1)
    gc.collect()
    t0 = time.perf_counter()
    log = DurableLog(directory)
    t1 = time.perf_counter()
    store = CheckpointStore(OS_FS, directory, 0, _Quiet())
    loaded = load_partition_state(log, lambda: PartitionState(config), store)
    state, applied = loaded.state, loaded.applied
    t2 = time.perf_counter()
    node = RawNode(
        RaftConfig(node_id=1),
        log,
        random.Random(1),
        applied=applied,
        applied_conf_state=loaded.conf_state if applied is not None else None,
    )
    t3 = time.perf_counter()
    handed = 0
    while node.has_ready():
        rd = node.ready()
        if rd.entries:
            log.append(rd.entries)
            state.on_log_append(rd.entries)
        for e in rd.committed_entries:
            state.apply(e)
        handed += len(rd.committed_entries)
        if rd.committed_entries:
            node.advance_apply(rd.committed_entries[-1].index)
        node.on_persisted(rd.number)
    t4 = time.perf_counter()
    last = log.last_index()
    assert state.applied_index == last, (state.applied_index, last)
    log.close()
    return {
        "open_log_s": t1 - t0,
        "load_state_s": t2 - t1,
        "rawnode_s": t3 - t2,
        "apply_s": t4 - t3,
        "total_s": t4 - t0,
        "checkpoint_index": applied or 0,
        "entries_handed_out": handed,
        "last_index": last,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0, help="retained data (GiB)")
    ap.add_argument("--batch-kib", type=int, default=32, help="batch size (KiB)")
    ap.add_argument("--dir", default=None, help="parent of the temp directory")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = ap.parse_args()
    print(f"python {platform.python_version()} ({sys.executable}) on {platform.platform()}")
    root = Path(tempfile.mkdtemp(prefix="replog-restart-", dir=args.dir))
    directory = root / "partition"
    try:
        total = int(args.gib * (1 << 30))
        t = time.perf_counter()
        last, images = build(directory, total, args.batch_kib << 10)
        size = sum(p.stat().st_size for p in directory.iterdir())
        print(
            f"built {size / (1 << 30):.2f} GiB on disk, {last} entries of ~{args.batch_kib} KiB "
            f"(1 KiB records) in {time.perf_counter() - t:.1f} s"
        )
        runs: dict[str, dict[str, float | int]] = {}
        ckpt = directory / "checkpoint"
        runs["before"] = open_partition(directory, checkpoints=False)
        for name in ("clean", "crash"):
            ckpt.write_bytes(images[name])
            runs[f"after_{name}"] = open_partition(directory, checkpoints=True)
        for name, r in runs.items():
            print(
                f"{name:13s} total {r['total_s']:6.2f} s = open log {r['open_log_s']:.2f} + load "
                f"state {r['load_state_s']:.2f} + RawNode {r['rawnode_s']:.2f} + apply "
                f"{r['apply_s']:.2f}; checkpoint index {r['checkpoint_index']}, entries handed "
                f"out {r['entries_handed_out']}"
            )
        for name, r in runs.items():
            print(f"RESULT restart_{name}_s={r['total_s']:.2f}")
        print(f"RESULT checkpoint_bytes_clean={len(images['clean'])}")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
