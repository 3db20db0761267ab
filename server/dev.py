"""``replog dev``: a local multi-broker cluster on loopback in one command, and a scripted demo.

Contract:
- Starts N real ``replog server`` processes (``sys.executable -m server.cli server ...``), node i
  on 127.0.0.1:(port + i - 1) in dc ``dc{((i-1) % dcs) + 1}`` with data in DIR/node-i and its
  stdout+stderr in DIR/node-i.log. The metadata voters are the first 5 nodes when N >= 5, the
  first 3 when N >= 3, else node 1 alone. ``plan_nodes`` computes this layout as a pure function.
- Children run in their own session, so a terminal Ctrl-C reaches only this supervisor, which
  then stops them in order: SIGTERM by pid (graceful: they hand off leadership), SIGKILL after
  ``stop_timeout_s``. The same happens on SIGTERM and at interpreter exit. No child outlives us.
- Readiness is observed, never assumed: poll DescribeCluster through the public AdminClient until
  a metadata leader is known and every broker is registered and alive, within a deadline; on
  failure print what was last seen and the tail of each log.
- ``--demo`` drives the cluster only through the public client (Producer, Consumer,
  AdminClient) and process signals, exactly as a user would, prints PASS/FAIL per check and
  exits 0 only if every check passed. Each step has its own deadline; the whole demo is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.launch import HOST, dc_of, server_command, voter_count

__all__ = [
    "DevCluster",
    "DevNode",
    "bootstrap_of",
    "dc_of",
    "main",
    "parse_dev_args",
    "plan_nodes",
    "server_argv",
    "voter_count",
    "voters_flag",
]


# ---------------------------------------------------------------- layout (pure)


@dataclass(frozen=True)
class DevNode:
    node_id: int
    address: str
    dc: str
    data_dir: str
    log_file: str
    voter: bool


def plan_nodes(nodes: int, dcs: int, data_dir: str, port: int) -> list[DevNode]:
    """The layout of a dev cluster; raises ValueError on an impossible request."""
    if nodes < 1:
        raise ValueError(f"--nodes must be >= 1, got {nodes}")
    if dcs < 1 or dcs > nodes:
        raise ValueError(f"--dcs must be in [1, {nodes}] (one DC needs one node), got {dcs}")
    if port < 1 or port + nodes - 1 > 65535:
        raise ValueError(f"ports {port}..{port + nodes - 1} do not fit in [1, 65535]")
    voters = voter_count(nodes)
    base = Path(data_dir)
    return [
        DevNode(
            node_id=i,
            address=f"{HOST}:{port + i - 1}",
            dc=dc_of(i, dcs),
            data_dir=str(base / f"node-{i}"),
            log_file=str(base / f"node-{i}.log"),
            voter=i <= voters,
        )
        for i in range(1, nodes + 1)
    ]


def voters_flag(plan: Sequence[DevNode]) -> str:
    return ",".join(f"{n.node_id}={n.address}" for n in plan if n.voter)


def bootstrap_of(plan: Sequence[DevNode]) -> str:
    return ",".join(n.address for n in plan)


def server_argv(
    node: DevNode,
    plan: Sequence[DevNode],
    *,
    fsync: str,
    sets: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """The command line that starts ``node`` (the ``replog server`` contract shape)."""
    return server_command(
        node.node_id,
        node.address,
        node.data_dir,
        node.dc,
        voters_flag(plan),
        settings=[f"storage.fsync={fsync}", *sets],
        python=python,
    )


def dev_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replog dev",
        description="Run a local replog cluster on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("--nodes", type=int, default=3, help="number of brokers (default 3)")
    parser.add_argument("--dcs", type=int, default=1, help="spread brokers over N DCs")
    parser.add_argument("--data-dir", default=".replog", help="parent of node-i data and logs")
    parser.add_argument("--port", type=int, default=9400, help="port of node 1; node i: +i-1")
    parser.add_argument("--demo", action="store_true", help="run the scripted demo and exit")
    parser.add_argument("--fsync", choices=("always", "never"), default="always")
    parser.add_argument(
        "--clean", action="store_true", help="delete DIR/node-* data and logs before starting"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="sets",
        metavar="section.key=value",
        help="passed to every broker (repeatable)",
    )
    parser.add_argument(
        "--ready-timeout-s", type=float, default=30.0, help="how long to wait for the cluster"
    )
    return parser


def parse_dev_args(argv: Sequence[str]) -> argparse.Namespace:
    return dev_parser().parse_args(list(argv))


# ---------------------------------------------------------------- processes


def _port_in_use(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError:
            return True
    return False


def _tail(path: str, lines: int = 8) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class DevCluster:
    """The child broker processes of one ``replog dev`` run, addressed by node id."""

    plan: list[DevNode]
    fsync: str = "always"
    sets: Sequence[str] = ()
    stop_timeout_s: float = 10.0
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def node(self, node_id: int) -> DevNode:
        for n in self.plan:
            if n.node_id == node_id:
                return n
        raise KeyError(f"no node {node_id} in this dev cluster")

    def clean(self) -> None:
        for n in self.plan:
            shutil.rmtree(n.data_dir, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(n.log_file)

    def start(self, node_id: int) -> None:
        n = self.node(node_id)
        Path(n.data_dir).mkdir(parents=True, exist_ok=True)
        with open(n.log_file, "ab") as log:
            self.procs[node_id] = subprocess.Popen(
                server_argv(n, self.plan, fsync=self.fsync, sets=self.sets),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a terminal Ctrl-C goes to us, not to the brokers
            )

    def start_all(self) -> None:
        busy = [n.address for n in self.plan if _port_in_use(n.address)]
        if busy:
            raise RuntimeError(
                f"address(es) already in use: {', '.join(busy)}; "
                "is another cluster running? use --port to pick others"
            )
        for n in self.plan:
            self.start(n.node_id)

    def pid(self, node_id: int) -> int:
        return self.procs[node_id].pid

    def exited(self) -> dict[int, int]:
        """Node id -> exit code of every child that is no longer running."""
        codes = {node_id: p.poll() for node_id, p in self.procs.items()}
        return {node_id: code for node_id, code in codes.items() if code is not None}

    def kill(self, node_id: int) -> None:
        """SIGKILL one broker (no graceful shutdown) and reap it."""
        proc = self.procs[node_id]
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        """SIGTERM every running child by pid, then SIGKILL whatever outlives the timeout."""
        running = [p for p in self.procs.values() if p.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

    def log_tails(self) -> str:
        return "\n".join(f"--- {n.log_file}\n{_tail(n.log_file)}" for n in self.plan)


# ---------------------------------------------------------------- readiness


async def wait_ready(cluster: DevCluster, timeout_s: float) -> tuple[bool, str]:
    """Poll DescribeCluster until a metadata leader exists and every started broker is alive.

    Returns (ready, what was last seen) so a failure can say what it saw.
    """
    from client.admin import AdminClient
    from client.config import AdminConfig

    expected = set(cluster.procs)
    seen = "no answer yet"
    deadline = time.monotonic() + timeout_s
    quick = AdminConfig(request_timeout_ms=1_000, operation_timeout_ms=2_000)
    async with AdminClient(bootstrap_of(cluster.plan), quick) as admin:
        while time.monotonic() < deadline:
            exited = cluster.exited()
            if exited:
                return False, f"broker(s) exited during startup (id: code): {exited}"
            try:
                described = await asyncio.wait_for(admin.describe_cluster(), timeout=3.0)
            except Exception as exc:  # not up yet: any error means "ask again"
                seen = f"{type(exc).__name__}: {exc}"
            else:
                alive = {b.id for b in described.brokers if b.alive}
                leader = described.metadata_leader
                seen = f"metadata leader {leader}, alive brokers {sorted(alive)}"
                if leader and expected <= alive:
                    return True, seen
            await asyncio.sleep(0.2)  # polling interval of an external system, not a sync wait
    return False, seen


def print_nodes(cluster: DevCluster, out: Callable[[str], None] = print) -> None:
    rows = [("id", "address", "dc", "voter", "pid", "log")]
    for n in cluster.plan:
        pid = str(cluster.procs[n.node_id].pid) if n.node_id in cluster.procs else "-"
        rows.append((str(n.node_id), n.address, n.dc, "yes" if n.voter else "", pid, n.log_file))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    out("")
    out(f"export REPLOG_BOOTSTRAP={bootstrap_of(cluster.plan)}")


# ---------------------------------------------------------------- entry point


class _Stop(Exception):
    """Raised from the SIGTERM handler so the normal cleanup path runs."""


def main(argv: Sequence[str]) -> int:
    args = parse_dev_args(argv)
    try:
        plan = plan_nodes(args.nodes, args.dcs, args.data_dir, args.port)
    except ValueError as exc:
        print(f"replog dev: {exc}", file=sys.stderr)
        return 2
    if args.demo and args.nodes < 3:
        print("replog dev: --demo kills a broker, so it needs --nodes 3 or more", file=sys.stderr)
        return 2
    cluster = DevCluster(plan=plan, fsync=args.fsync, sets=tuple(args.sets))
    if args.clean:
        cluster.clean()
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)

    def on_sigterm(_signum: int, _frame: object) -> None:
        raise _Stop()

    atexit.register(cluster.stop_all)
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        try:
            cluster.start_all()
        except RuntimeError as exc:
            print(f"replog dev: {exc}", file=sys.stderr)
            return 1
        print(f"starting {len(plan)} broker(s) in {args.data_dir} ...", flush=True)
        ready, seen = asyncio.run(wait_ready(cluster, args.ready_timeout_s))
        if not ready:
            print("replog dev: the cluster did not become ready", flush=True)
            print(f"last seen: {seen}")
            print(cluster.log_tails())
            return 1
        print_nodes(cluster)
        if args.demo:
            return asyncio.run(run_demo(cluster))
        print("\ncluster running; Ctrl-C stops it", flush=True)
        _supervise(cluster)
        return 0
    except (KeyboardInterrupt, _Stop):
        print("\nstopping brokers ...", flush=True)
        return 0
    finally:
        cluster.stop_all()
        signal.signal(signal.SIGTERM, previous)
        atexit.unregister(cluster.stop_all)


def _supervise(cluster: DevCluster) -> None:
    """Block until a signal arrives, reporting children that exit on their own meanwhile.

    SIGCHLD is blocked and collected with sigtimedwait, so an exit between the check and the
    wait stays pending instead of being missed; Ctrl-C and SIGTERM still interrupt the wait.
    Nothing is spawned while SIGCHLD is blocked (children would inherit the mask).
    """
    reported: set[int] = set()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        while True:
            for node_id, code in cluster.exited().items():
                if node_id not in reported:
                    reported.add(node_id)
                    log = cluster.node(node_id).log_file
                    print(f"broker {node_id} exited with code {code}; see {log}", flush=True)
            if len(reported) == len(cluster.plan):
                print("every broker has exited", flush=True)
                return
            signal.sigtimedwait({signal.SIGCHLD}, 60.0)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})


# ---------------------------------------------------------------- --demo

DEMO_TOPIC = "demo"
DEMO_KEYS = 20
DEMO_BATCH = 1_000
PROBE = b"probe"


@dataclass(frozen=True)
class Consumed:
    """What the demo checks of one consumed record (the client's ConsumerRecord has more)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def demo_record(i: int) -> tuple[bytes, bytes]:
    """(key, value) of the demo's i-th record: DEMO_KEYS keys, values are the sequence number."""
    return f"key-{i % DEMO_KEYS}".encode(), str(i).encode()


def check_consumed(
    records: Sequence[Consumed],
    expected_values: set[bytes],
    acked: dict[bytes, tuple[int, int]] | None = None,
) -> list[str]:
    """Problems with what was consumed (empty = all good); a pure function, unit-tested.

    Checks: nothing lost, nothing duplicated, nothing unexpected; offsets strictly increase
    within each partition; records of one key arrive in the order they were sent; and, given
    ``acked`` (value -> (partition, offset) the producer was told), each record sits exactly
    where its acknowledgement said.
    """
    problems: list[str] = []
    values = [r.value for r in records]
    seen = set(values)
    lost = expected_values - seen
    if lost:
        problems.append(f"{len(lost)} record(s) lost, e.g. {sorted(lost)[:5]}")
    unexpected = seen - expected_values
    if unexpected:
        problems.append(
            f"{len(unexpected)} unexpected record(s), e.g. {sorted(unexpected, key=repr)[:5]}"
        )
    duplicates = len(values) - len(seen)
    if duplicates:
        problems.append(f"{duplicates} duplicate record(s)")
    last_offset: dict[int, int] = {}
    last_seq: dict[bytes | None, int] = {}
    for r in records:
        previous = last_offset.get(r.partition, -1)
        if r.offset <= previous:
            problems.append(f"partition {r.partition}: offset {r.offset} after {previous}")
        last_offset[r.partition] = r.offset
        if r.value is not None and r.value.isdigit():
            seq = int(r.value)
            if seq < last_seq.get(r.key, -1):
                problems.append(f"key {r.key!r}: value {seq} after {last_seq[r.key]}")
            last_seq[r.key] = max(seq, last_seq.get(r.key, -1))
        if acked is not None and r.value in acked and acked[r.value] != (r.partition, r.offset):
            problems.append(
                f"record {r.value!r} acknowledged at {acked[r.value]} "
                f"but read at {(r.partition, r.offset)}"
            )
    return problems


class _Demo:
    """The scripted demo: every step prints PASS or FAIL; ``failed`` counts the FAILs."""

    def __init__(self, cluster: DevCluster, out: Callable[[str], None] = print) -> None:
        self.cluster = cluster
        self.bootstrap = bootstrap_of(cluster.plan)
        self.out = out
        self.failed = 0
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.expected: set[bytes] = set()

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.out(f"{'PASS' if ok else 'FAIL'}  {name}" + (f": {detail}" if detail else ""))
        if not ok:
            self.failed += 1
        return ok

    async def run(self) -> int:
        from client.admin import AdminClient
        from client.config import ProducerConfig
        from client.producer import Producer

        nodes = len(self.cluster.plan)
        replicas = min(3, nodes)
        self.out(f"\n== demo: topic {DEMO_TOPIC!r}, 3 partitions, {replicas} replicas")
        # Retry back-off capped at 100 ms so the printed figure is the cluster's failover
        # time, not the client's exponential back-off (default cap 1 s).
        producer_config = ProducerConfig(delivery_timeout_ms=30_000, retry_backoff_max_ms=100)
        async with (
            AdminClient(self.bootstrap) as admin,
            Producer(self.bootstrap, producer_config) as producer,
        ):
            try:
                await asyncio.wait_for(
                    admin.create_topic(DEMO_TOPIC, 3, replicas, config={}), timeout=15
                )
            except Exception as exc:
                self.check("create topic", False, f"{type(exc).__name__}: {exc} (try --clean)")
                return 1
            if not self.check("create topic", await self._leaders_known(admin, 15.0)):
                return 1

            await self._produce(producer, range(0, DEMO_BATCH), "produce 1000 keyed records")
            await self._consume_and_verify(f"consume {DEMO_BATCH} back, in order")

            description = await admin.describe_topic(DEMO_TOPIC)
            leader = description.partitions[0].leader
            if not self.check("partition 0 has a leader", leader != 0, f"broker {leader}"):
                return 1
            self.cluster.kill(leader)
            self.out(f"killed broker {leader} (SIGKILL), the leader of partition 0")
            started = time.monotonic()
            try:
                metadata = await asyncio.wait_for(
                    producer.send_and_wait(DEMO_TOPIC, PROBE, key=PROBE, partition=0), timeout=30
                )
            except Exception as exc:
                self.check("append to partition 0 after failover", False, repr(exc))
                return 1
            failover_ms = (time.monotonic() - started) * 1000
            self.acked[PROBE] = (metadata.partition, metadata.offset)
            self.expected.add(PROBE)
            self.check(
                "append to partition 0 after failover",
                True,
                f"acknowledged {failover_ms:.0f} ms after the kill",
            )

            await self._produce(
                producer, range(DEMO_BATCH, 2 * DEMO_BATCH), "produce 1000 more records"
            )
            await self._consume_and_verify(
                f"consume all {2 * DEMO_BATCH} (+1 probe): none lost, none duplicated"
            )

            self.cluster.start(leader)
            ready, seen = await wait_ready(self.cluster, 20.0)
            self.check(f"broker {leader} restarted and rejoined", ready, seen)

        self._print_describe()
        verdict = "PASS" if self.failed == 0 else f"FAIL ({self.failed} check(s) failed)"
        self.out(f"\n== demo {verdict}")
        return 0 if self.failed == 0 else 1

    async def _leaders_known(self, admin: Any, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                description = await admin.describe_topic(DEMO_TOPIC)
                if all(p.leader for p in description.partitions):
                    return True
            await asyncio.sleep(0.2)  # polling the cluster, not synchronizing a test
        return False

    async def _produce(self, producer: Any, numbers: range, name: str) -> None:
        futures = []
        for i in numbers:
            key, value = demo_record(i)
            futures.append((value, await producer.send(DEMO_TOPIC, value, key=key)))
        try:
            await asyncio.wait_for(producer.flush(), timeout=30)
            results = [(value, await future) for value, future in futures]
        except Exception as exc:
            self.check(name, False, f"{type(exc).__name__}: {exc}")
            return
        for value, metadata in results:
            self.acked[value] = (metadata.partition, metadata.offset)
            self.expected.add(value)
        spread = sorted({p for p, _ in self.acked.values()})
        self.check(name, True, f"{len(results)} acknowledged, partitions {spread}")

    async def _consume_and_verify(self, name: str) -> None:
        from client.consumer import Consumer

        records: list[Consumed] = []
        deadline = time.monotonic() + 30.0
        async with Consumer(self.bootstrap) as consumer:
            consumer.assign([(DEMO_TOPIC, p) for p in range(3)])
            consumer.seek_to_beginning()
            while len(records) < len(self.expected) and time.monotonic() < deadline:
                try:
                    batch = await consumer.poll(1.0)
                except Exception as exc:
                    self.check(name, False, f"{type(exc).__name__}: {exc}")
                    return
                records += [Consumed(r.partition, r.offset, r.key, r.value) for r in batch]
            # one more short poll: anything beyond the expected count is a duplicate
            records += [
                Consumed(r.partition, r.offset, r.key, r.value) for r in await consumer.poll(0.3)
            ]
        problems = check_consumed(records, self.expected, self.acked)
        detail = f"{len(records)} records" + (f"; {'; '.join(problems[:5])}" if problems else "")
        self.check(name, not problems, detail)

    def _print_describe(self) -> None:
        self.out("")
        result = subprocess.run(
            [sys.executable, "-m", "server.cli", "topic", "describe", DEMO_TOPIC],
            env={**os.environ, "REPLOG_BOOTSTRAP": self.bootstrap},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        self.out(result.stdout.rstrip())
        self.check("replog topic describe demo", result.returncode == 0, result.stderr.strip())


async def run_demo(cluster: DevCluster, timeout_s: float = 120.0) -> int:
    """Run the scripted demo against a ready cluster; 0 only if every check passed."""
    demo = _Demo(cluster)
    try:
        return await asyncio.wait_for(demo.run(), timeout=timeout_s)
    except TimeoutError:
        demo.check("demo finished in time", False, f"still running after {timeout_s:.0f} s")
        return 1
    except Exception as exc:  # a client bug or an unexpected error: report it as a failed check
        demo.check("demo ran without errors", False, f"{type(exc).__name__}: {exc}")
        return 1
