"""End-to-end benchmarks against a real local cluster (3 brokers on loopback by default).

    .venv/bin/python bench/cluster.py produce  [--replicas 3] [--partitions 3] [--records 100000]
    .venv/bin/python bench/cluster.py latency  [--rate 22000] [--seconds 10]
    .venv/bin/python bench/cluster.py consume  [--records 100000]
    .venv/bin/python bench/cluster.py failover [--runs 5]
    .venv/bin/python bench/cluster.py all

Every run starts its own brokers (fsync always unless --fsync never) in a temp dir with the same
command line users type, prints the interpreter, the settings and the figures, ends with a
``RESULT ...`` line per figure, and stops every process it started. Load loops are bounded by
count and by time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.admin import AdminClient
from client.config import ConsumerConfig, ProducerConfig
from client.consumer import Consumer
from client.producer import Producer
from server.memtune import tune_gc, tune_malloc
from tests.integration.harness import LocalCluster, cpu_seconds

MAX_SECONDS = 120.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = tempfile.TemporaryDirectory(prefix="replog-bench-")
        settings = [f"storage.fsync={args.fsync}", *args.set]
        self.cluster = LocalCluster(Path(self.tmp.name), nodes=args.brokers, settings=settings)

    async def __aenter__(self) -> Bench:
        self.cluster.start()
        await self.cluster.wait_ready(60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cluster.stop_all()
        self.tmp.cleanup()

    async def create(self, name: str, partitions: int, replicas: int) -> None:
        async with AdminClient(self.cluster.bootstrap) as admin:
            await admin.create_topic(name, partitions, replicas)
        for p in range(partitions):
            await self.cluster.partition_leader(name, p)

    def producer_config(self) -> ProducerConfig:
        a = self.args
        return ProducerConfig(linger_ms=a.linger_ms, batch_bytes=a.batch_bytes, acks=a.acks)


class CpuMeter:
    """Share of one core used by this process and by each broker while the meter runs."""

    def __init__(self, b: Bench) -> None:
        self.pids = {i: x.proc.pid for i, x in b.cluster.brokers.items() if x.proc and x.alive}
        self.t0 = time.monotonic()
        self.me0 = resource.getrusage(resource.RUSAGE_SELF)
        self.brokers0 = {i: cpu_seconds(p) for i, p in self.pids.items()}

    def read(self) -> dict:
        dt = time.monotonic() - self.t0
        me = resource.getrusage(resource.RUSAGE_SELF)
        client = me.ru_utime + me.ru_stime - self.me0.ru_utime - self.me0.ru_stime
        out = {"client_cpu": client / dt}
        for i, p in self.pids.items():
            out[f"broker{i}_cpu"] = (cpu_seconds(p) - self.brokers0[i]) / dt
        return out


async def produce(b: Bench, topic: str, records: int, record_bytes: int, partitions: int) -> dict:
    value = b"x" * record_bytes
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    async with Producer(b.cluster.bootstrap, b.producer_config()) as producer:
        # Warm up: metadata, producer id, leaders, connections.
        await asyncio.gather(
            *[await producer.send(topic, value, partition=p) for p in range(partitions)]
        )
        start = loop.time()
        deadline = start + MAX_SECONDS
        meter = CpuMeter(b)
        sent = 0
        futs = []
        while sent < records and loop.time() < deadline:
            t0 = loop.time()
            fut = await producer.send(topic, value, partition=sent % partitions)
            fut.add_done_callback(lambda _f, t0=t0: latencies.append(loop.time() - t0))
            futs.append(fut)
            sent += 1
            if sent % 64 == 0:
                await asyncio.sleep(0)  # let the producer's sender tasks run
        await producer.flush()
        await asyncio.gather(*futs)
        elapsed = loop.time() - start
        cpu = meter.read()
    return {
        "records": sent,
        "seconds": elapsed,
        "records_per_s": sent / elapsed,
        "mb_per_s": sent * record_bytes / elapsed / 1e6,
        "p50_ms": pct(latencies, 0.50) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "p999_ms": pct(latencies, 0.999) * 1000,
        **cpu,
    }


async def paced(
    b: Bench, topic: str, rate: float, seconds: float, record_bytes: int, partitions: int
) -> dict:
    """Sends at a fixed rate (records/s) and measures send-to-ack latency of every record.
    Keeps no per-record objects beyond the latency figures, so the load generator's own
    garbage collection does not show up as broker latency."""
    value = b"x" * record_bytes
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    all_acked = asyncio.Event()
    state = {"sent": 0, "acked": 0, "failed": 0, "closed": False}

    def on_ack(fut: asyncio.Future, t0: float) -> None:
        latencies.append(loop.time() - t0)
        state["acked"] += 1
        if fut.exception() is not None:
            state["failed"] += 1
        if state["closed"] and state["acked"] == state["sent"]:
            all_acked.set()

    async with Producer(b.cluster.bootstrap, b.producer_config()) as producer:
        await asyncio.gather(
            *[await producer.send(topic, value, partition=p) for p in range(partitions)]
        )
        gc.collect()
        start = loop.time()
        tick = 0.001  # send in 1 ms slices so pacing costs no per-record sleep
        while loop.time() - start < seconds:
            due = int((loop.time() - start) * rate)
            while state["sent"] < due:
                t0 = loop.time()
                fut = await producer.send(topic, value, partition=state["sent"] % partitions)
                fut.add_done_callback(lambda f, t0=t0: on_ack(f, t0))
                state["sent"] += 1
            await asyncio.sleep(tick)
        state["closed"] = True
        if state["acked"] < state["sent"]:
            await producer.flush()
            await asyncio.wait_for(all_acked.wait(), MAX_SECONDS)
        sent_for = loop.time() - start
    return {
        "offered_rate": rate,
        "records": state["sent"],
        "failed": state["failed"],
        "seconds": sent_for,
        "p50_ms": pct(latencies, 0.50) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "p999_ms": pct(latencies, 0.999) * 1000,
        "max_ms": max(latencies) * 1000,
    }


async def consume(b: Bench, topic: str, partitions: int, expect: int, record_bytes: int) -> dict:
    got = 0
    loop = asyncio.get_running_loop()
    async with Consumer(b.cluster.bootstrap, ConsumerConfig(auto_offset_reset="earliest")) as c:
        c.assign([(topic, p) for p in range(partitions)])
        c.seek_to_beginning()
        start = loop.time()
        while got < expect and loop.time() - start < MAX_SECONDS:
            got += len(await c.poll(1.0))
        elapsed = loop.time() - start
    return {
        "records": got,
        "records_per_s": got / elapsed,
        "mb_per_s": got * record_bytes / elapsed / 1e6,
    }


async def failover_once(b: Bench, topic: str) -> float:
    """SIGKILL the partition leader while appending one record at a time; returns seconds from
    the kill until the next append is acknowledged."""
    # Leadership must be settled (a restarted preferred replica takes it back by priority).
    leader = await b.cluster.partition_leader(topic, 0)
    for _ in range(20):
        await asyncio.sleep(0.5)
        again = await b.cluster.partition_leader(topic, 0)
        if again == leader:
            break
        leader = again
    cfg = ProducerConfig(linger_ms=0, retry_backoff_ms=10, retry_backoff_max_ms=50)
    async with Producer(b.cluster.live_bootstrap(), cfg) as producer:
        for _ in range(20):  # steady state first
            await (await producer.send(topic, b"before", partition=0))
        b.cluster.kill(leader)
        killed = time.monotonic()
        await (await producer.send(topic, b"after", partition=0))
        took = time.monotonic() - killed
    new_leader = await b.cluster.partition_leader(topic, 0)
    assert new_leader != leader, f"leader {leader} still leads after SIGKILL?"
    b.cluster.start(leader)  # bring it back for the next run
    await b.cluster.wait_ready(60)
    return took


def header(args: argparse.Namespace) -> None:
    print(f"python {platform.python_implementation()} {platform.python_version()} {sys.executable}")
    print(
        f"brokers={args.brokers} fsync={args.fsync} acks={args.acks} record_bytes={args.record_bytes} "
        f"batch_bytes={args.batch_bytes} linger_ms={args.linger_ms}"
        + "".join(f" set:{kv}" for kv in args.set)
    )


def show(name: str, result: dict) -> None:
    figures = " ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
    )
    print(f"RESULT {name} {figures}", flush=True)


async def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["produce", "latency", "consume", "failover", "all"])
    ap.add_argument("--brokers", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--record-bytes", type=int, default=1024)
    ap.add_argument("--batch-bytes", type=int, default=256 << 10)
    ap.add_argument("--linger-ms", type=int, default=5)
    ap.add_argument("--acks", default="all", choices=["all", "leader"])
    ap.add_argument("--fsync", default="always", choices=["always", "never"])
    ap.add_argument("--rate", type=float, default=22_000.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a broker config override for every broker (as `replog server --set`)",
    )
    args = ap.parse_args()
    tune_malloc()  # the client builds 256 KiB batches too (see server/memtune.py)
    tune_gc()
    header(args)
    whats = ["produce", "consume", "latency", "failover"] if args.what == "all" else [args.what]
    async with Bench(args) as b:
        if "produce" in whats or "consume" in whats:
            await b.create("bench", args.partitions, args.replicas)
            r = await produce(b, "bench", args.records, args.record_bytes, args.partitions)
            show(f"produce R{args.replicas} P{args.partitions}", r)
            if "consume" in whats:
                show(
                    "consume",
                    await consume(b, "bench", args.partitions, r["records"], args.record_bytes),
                )
        if "latency" in whats:
            await b.create("paced", args.partitions, args.replicas)
            r = await paced(b, "paced", args.rate, args.seconds, args.record_bytes, args.partitions)
            show(f"latency R{args.replicas} P{args.partitions} rate={args.rate:.0f}/s", r)
        if "failover" in whats:
            await b.create("fo", 1, args.replicas)
            times = [await failover_once(b, "fo") for _ in range(args.runs)]
            show(
                "failover",
                {
                    "runs": len(times),
                    "median_s": statistics.median(times),
                    "max_s": max(times),
                    "all_s": "/".join(f"{t:.2f}" for t in times),
                },
            )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
