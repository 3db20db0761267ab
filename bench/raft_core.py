"""Benchmark of the pure Raft core: a 3-node in-memory cluster, no I/O.

Usage: ``python bench/raft_core.py [--seconds 5] [--max-entries 2000000] [--profile]``

The leader takes proposals of 1 KiB entries in batches of 64 (``propose_many``); every node
runs the full Ready loop (persist into ``MemoryStorage``, send, apply, ``advance``) and
messages are delivered in-process. The run stops at ``--max-entries`` committed-and-applied
entries on every node or after ``--seconds``, whichever first. Prints entries/s, µs/entry and
the interpreter. With ``--profile`` it runs under cProfile and prints the top functions by
own time (the hot spots of the core). Target: >= 50,000 entries/s.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import platform
import pstats
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raft.config import RaftConfig
from raft.memory import MemoryStorage
from raft.rawnode import RawNode
from raft.types import ConfState, HardState, Message, Role

ENTRY_BYTES = 1024
BATCH = 64


class Bench:
    def __init__(self) -> None:
        voters = frozenset({1, 2, 3})
        self.storages = {i: MemoryStorage(ConfState(voters=voters), HardState()) for i in voters}
        self.nodes = {
            i: RawNode(
                RaftConfig(node_id=i, max_inflight_msgs=256, max_size_per_msg=1 << 20),
                self.storages[i],
                random.Random(i),
            )
            for i in voters
        }
        self.applied = dict.fromkeys(voters, 0)
        self.inbox: list[Message] = []

    def pump(self) -> None:
        """One turn: every node's Ready, then deliver everything that was sent."""
        for node_id, raw in self.nodes.items():
            while raw.has_ready():
                rd = raw.ready()
                st = self.storages[node_id]
                if rd.snapshot is not None and not rd.snapshot.is_empty():
                    st.apply_snapshot(rd.snapshot)
                if rd.entries:
                    st.append(rd.entries)
                if rd.hard_state is not None:
                    st.set_hard_state(rd.hard_state)
                self.inbox.extend(rd.messages)
                if rd.committed_entries:
                    self.applied[node_id] = rd.committed_entries[-1].index
                raw.advance(rd)
        msgs, self.inbox = self.inbox, []
        for m in msgs:
            self.nodes[m.to].step(m)

    def elect(self) -> RawNode:
        self.nodes[1].campaign()
        for _ in range(50):
            self.pump()
            if self.nodes[1].status().role == Role.LEADER:
                break
        assert self.nodes[1].status().role == Role.LEADER, "node 1 did not win"
        for _ in range(10):
            self.pump()
        return self.nodes[1]

    def run(self, seconds: float, max_entries: int) -> tuple[int, float]:
        leader = self.elect()
        base = min(self.applied.values())
        payload = [bytes(ENTRY_BYTES) for _ in range(BATCH)]
        proposed = 0
        started = time.perf_counter()
        deadline = started + seconds
        while proposed < max_entries and time.perf_counter() < deadline:
            leader.propose_many(payload)
            proposed += BATCH
            self.pump()
            self.pump()
        target = leader.status().last_index
        for _ in range(1000):
            if min(self.applied.values()) >= target:
                break
            self.pump()
        elapsed = time.perf_counter() - started
        done = min(self.applied.values()) - base
        return done, elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--max-entries", type=int, default=2_000_000)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    bench = Bench()
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        done, elapsed = bench.run(args.seconds, args.max_entries)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
        print(buf.getvalue())
    else:
        done, elapsed = bench.run(args.seconds, args.max_entries)
    rate = done / elapsed if elapsed else 0.0
    print(
        f"python {platform.python_version()} ({sys.executable}): "
        f"{done} entries of {ENTRY_BYTES} B in {elapsed:.2f} s on all 3 nodes: "
        f"{rate:,.0f} entries/s, {1e6 / rate if rate else float('inf'):.2f} us/entry"
        + (" (under cProfile: slower than real)" if args.profile else "")
    )
    print(json.dumps({"entries": done, "seconds": round(elapsed, 3), "entries_per_s": round(rate)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
