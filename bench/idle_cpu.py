"""Idle cost: CPU used per broker while N idle R3 partitions sit on a 3-broker cluster.

    .venv/bin/python bench/idle_cpu.py [--partitions 1000] [--seconds 10]

Starts 3 real brokers on loopback (tests/integration/harness.py), creates topics totalling
--partitions partitions with replication 3, waits until every partition has a leader, lets it settle,
then reads each broker's CPU time (utime+stime from /proc/PID/stat) over --seconds and prints the
share of one core per broker. Stops every process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.harness import LocalCluster, cpu_seconds, wait_until
from wire import replog_pb2 as pb


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--per-topic", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--settle", type=float, default=5.0)
    args = ap.parse_args()
    print(
        f"python {platform.python_implementation()} {platform.python_version()} ({sys.executable})"
    )
    with tempfile.TemporaryDirectory(prefix="replog-idle-") as tmp:
        cluster = LocalCluster(Path(tmp), nodes=3)
        cluster.start()
        try:
            await cluster.wait_ready(60)
            channel, stub = cluster.stub(1)
            async with channel:
                made = 0
                t = 0
                while made < args.partitions:
                    n = min(args.per_topic, args.partitions - made)
                    await stub.CreateTopic(
                        pb.CreateTopicRequest(name=f"idle-{t}", partitions=n, replication_factor=3),
                        timeout=60,
                    )
                    made += n
                    t += 1

                async def all_led() -> str | None:
                    r = await stub.Metadata(pb.MetadataRequest(), timeout=10)
                    missing = sum(1 for tp in r.topics for p in tp.partitions if not p.leader)
                    return None if missing == 0 else f"{missing} partitions without a leader"

                t0 = time.monotonic()
                await wait_until(all_led, 120, "leaders for every partition", cluster, poll_s=0.5)
                print(
                    f"{args.partitions} partitions created and led in {time.monotonic() - t0:.1f}s"
                )
            await asyncio.sleep(args.settle)  # let elections and catch-up traffic finish
            pids = {i: b.proc.pid for i, b in cluster.brokers.items() if b.proc}
            before = {i: cpu_seconds(p) for i, p in pids.items()}
            t0 = time.monotonic()
            await asyncio.sleep(args.seconds)
            elapsed = time.monotonic() - t0
            worst = 0.0
            for i, p in pids.items():
                share = (cpu_seconds(p) - before[i]) / elapsed * 100
                worst = max(worst, share)
                print(f"broker {i}: {share:.1f}% of one core")
            print(
                f"RESULT idle_cpu partitions={args.partitions} worst_broker={worst:.1f}% (target <= 5%)"
            )
        finally:
            cluster.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
