"""Real broker processes on loopback for integration tests.

``LocalCluster`` starts ``replog server`` processes (the same command line users type), waits on
conditions with deadlines (never bare sleeps), kills with SIGKILL or stops with SIGTERM by PID, and
always stops every process it started. On a failed wait it prints what it saw plus each broker's
log tail, so a red test explains itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from server.launch import HOST, dc_of, free_ports, server_command, voters_flag
from wire import replog_pb2 as pb
from wire import replog_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class BrokerProc:
    node_id: int
    address: str
    data_dir: Path
    log_path: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalCluster:
    root: Path
    nodes: int = 3
    dcs: int = 1
    settings: list[str] = field(default_factory=list)
    brokers: dict[int, BrokerProc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ports = free_ports(self.nodes)
        addresses = {i: f"{HOST}:{ports[i - 1]}" for i in range(1, self.nodes + 1)}
        voters = voters_flag(addresses)
        for i, address in addresses.items():
            data_dir = self.root / f"node-{i}"
            args = server_command(
                i,
                address,
                str(data_dir),
                dc_of(i, self.dcs),
                voters,
                settings=self.settings,
                log_level="info",
            )
            self.brokers[i] = BrokerProc(i, address, data_dir, self.root / f"node-{i}.log", args)

    @property
    def bootstrap(self) -> str:
        return ",".join(b.address for b in self.brokers.values())

    def live_bootstrap(self) -> str:
        return ",".join(b.address for b in self.brokers.values() if b.alive)

    # ------------------------------------------------------------------ processes
    def start(self, node_id: int | None = None) -> None:
        targets = [node_id] if node_id is not None else list(self.brokers)
        for i in targets:
            b = self.brokers[i]
            assert not b.alive, f"broker {i} is already running"
            b.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(b.log_path, "ab") as logf:
                b.proc = subprocess.Popen(
                    b.args, cwd=REPO, stdout=logf, stderr=logf, start_new_session=True
                )

    def kill(self, node_id: int) -> None:
        b = self.brokers[node_id]
        if b.proc is not None and b.alive:
            os.kill(b.proc.pid, signal.SIGKILL)
            b.proc.wait(timeout=10)

    def terminate(self, node_id: int, timeout_s: float = 15.0) -> int:
        b = self.brokers[node_id]
        assert b.proc is not None
        os.kill(b.proc.pid, signal.SIGTERM)
        return b.proc.wait(timeout=timeout_s)

    def stop_all(self) -> None:
        for b in self.brokers.values():
            if b.proc is not None and b.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(b.proc.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    b.proc.wait(timeout=10)

    def log_tail(self, lines: int = 25) -> str:
        out = []
        for b in self.brokers.values():
            text = (
                b.log_path.read_text(errors="replace").splitlines() if b.log_path.exists() else []
            )
            out.append(f"--- node {b.node_id} ({'up' if b.alive else 'down'}) {b.log_path}")
            out.extend(text[-lines:])
        return "\n".join(out)

    # ------------------------------------------------------------------ raw API access
    def stub(self, node_id: int) -> tuple[grpc.aio.Channel, pb_grpc.ReplogStub]:
        channel = grpc.aio.insecure_channel(self.brokers[node_id].address)
        return channel, pb_grpc.ReplogStub(channel)

    async def describe_cluster(self, node_id: int) -> pb.DescribeClusterResponse:
        channel, stub = self.stub(node_id)
        async with channel:
            return await stub.DescribeCluster(pb.DescribeClusterRequest(), timeout=2.0)

    async def metadata(self, node_id: int, topic: str) -> pb.MetadataResponse:
        channel, stub = self.stub(node_id)
        async with channel:
            return await stub.Metadata(pb.MetadataRequest(topics=[topic]), timeout=2.0)

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Every running broker is registered and alive, and the metadata group has a leader."""

        async def check() -> str | None:
            running = [b.node_id for b in self.brokers.values() if b.alive]
            for i in running:
                d = await self.describe_cluster(i)
                alive = {x.id for x in d.brokers if x.alive}
                if d.metadata_leader == 0 or not set(running) <= alive:
                    return f"node {i}: leader={d.metadata_leader} alive={sorted(alive)}"
            return None

        await wait_until(check, timeout_s, "cluster ready", self)

    async def partition_leader(self, topic: str, partition: int, timeout_s: float = 15.0) -> int:
        """The broker that currently accepts appends for the partition (asks the brokers)."""
        found: dict[str, int] = {}

        async def check() -> str | None:
            for b in self.brokers.values():
                if not b.alive:
                    continue
                channel, stub = self.stub(b.node_id)
                async with channel:
                    try:
                        r = await stub.ListOffsets(
                            pb.ListOffsetsRequest(topic=topic, partition=partition), timeout=2.0
                        )
                    except grpc.aio.AioRpcError:
                        continue
                found["leader"] = r.leader
                return None
            return "no broker answers ListOffsets as leader"

        await wait_until(check, timeout_s, f"leader of {topic}/{partition}", self)
        return found["leader"]


async def wait_until(
    check: Callable[[], Awaitable[str | None]],
    timeout_s: float,
    what: str,
    cluster: LocalCluster | None = None,
    poll_s: float = 0.05,
) -> None:
    """Polls ``check`` (None = satisfied, else a description of what it saw) until a deadline."""
    deadline = time.monotonic() + timeout_s
    seen = "nothing yet"
    while time.monotonic() < deadline:
        try:
            result = await check()
        except grpc.aio.AioRpcError as exc:
            result = f"{exc.code().name}: {exc.details()}"
        except OSError as exc:
            result = f"{type(exc).__name__}: {exc}"
        if result is None:
            return
        seen = result
        await asyncio.sleep(poll_s)
    tail = cluster.log_tail() if cluster is not None else ""
    raise AssertionError(
        f"timed out after {timeout_s}s waiting for {what}; last saw: {seen}\n{tail}"
    )


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]
