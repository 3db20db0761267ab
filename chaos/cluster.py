"""A broker cluster for chaos runs: real ``replog server`` processes on 127.0.0.1 whose every
connection goes through a Toxiproxy proxy.

Contract: node i dials node j through the proxy ``n{i}-n{j}`` (``--peer-address j=...``) and
clients dial node j through ``client-n{j}`` (``broker_addresses`` overrides, bootstrap of those
proxies), so the nemesis can cut or slow any directed link. Processes are handled by PID only:
SIGKILL, restart, SIGSTOP, SIGCONT. With ``lazyfs=True`` each data directory is a LazyFS mount,
so a power loss (kill, drop what was never made durable, restart) can be simulated. ``stop()``
ends every process this object started and unmounts every mount, also after errors; it is safe
to call twice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import toxiproxy

from chaos.toxiproxy.launcher import ToxiproxyHandle, start_toxiproxy

REPO = Path(__file__).resolve().parents[1]
# toxiproxy-python passes no timeout to requests: the process-wide default bounds each API call.
API_TIMEOUT_S = 10.0
# Clusters started and not yet stopped: the CLI stops these on any exit (SIGTERM included).
ACTIVE: list[ChaosCluster] = []


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class Node:
    node_id: int
    address: str
    dc: str
    data_dir: Path
    log_path: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    fs: Any = None  # chaos.lazyfs.LazyFS when the data dir is a LazyFS mount

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class ChaosCluster:
    """``with ChaosCluster(root, nodes=3) as c: c.start(); ...`` (``stop()`` on exit)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        nodes: int = 3,
        dcs: int = 1,
        settings: list[str] | None = None,
        lazyfs: bool = False,
        bundled_toxiproxy: bool | None = None,
    ) -> None:
        if nodes < 1 or dcs < 1:
            raise ValueError("nodes and dcs must be at least 1")
        self.root = Path(root)
        self.n = nodes
        self.dcs = dcs
        self.settings = list(settings or [])
        self.use_lazyfs = lazyfs
        self.bundled_toxiproxy = bundled_toxiproxy
        self.nodes: dict[int, Node] = {}
        self.toxi: ToxiproxyHandle | None = None
        self.api = toxiproxy.Toxiproxy()
        self.proxies: dict[str, Any] = {}  # name -> toxiproxy.proxy.Proxy
        self.client_addresses: dict[int, str] = {}

    # ------------------------------------------------------------------ topology
    @property
    def node_ids(self) -> list[int]:
        return sorted(self.nodes)

    def dc_of(self, node_id: int) -> str:
        return self.nodes[node_id].dc

    def dc_names(self) -> list[str]:
        return sorted({n.dc for n in self.nodes.values()})

    @staticmethod
    def link_name(src: int, dst: int) -> str:
        return f"n{src}-n{dst}"

    @staticmethod
    def client_proxy_name(node_id: int) -> str:
        return f"client-n{node_id}"

    def proxy(self, name: str) -> Any:
        return self.proxies[name]

    @property
    def bootstrap(self) -> str:
        return ",".join(self.client_addresses[i] for i in self.node_ids)

    def client_kwargs(self) -> dict[str, Any]:
        """Config fields every client of the run takes (dial each broker through its proxy)."""
        return {"broker_addresses": dict(self.client_addresses)}

    # ------------------------------------------------------------------ start / stop
    def start(self) -> ChaosCluster:
        socket.setdefaulttimeout(API_TIMEOUT_S)
        self.root.mkdir(parents=True, exist_ok=True)
        ACTIVE.append(self)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        ports = free_ports(self.n)
        voters_n = 5 if self.n >= 5 else (3 if self.n >= 3 else 1)
        voters = ",".join(f"{i}=127.0.0.1:{ports[i - 1]}" for i in range(1, voters_n + 1))
        for i in range(1, self.n + 1):
            self.nodes[i] = Node(
                i,
                f"127.0.0.1:{ports[i - 1]}",
                f"dc{(i - 1) % self.dcs + 1}",
                self.root / f"node-{i}" / "data",
                self.root / f"node-{i}.log",
            )
        log = open(self.root / "toxiproxy.log", "ab")  # noqa: SIM115 (the child keeps it)
        try:
            self.toxi = start_toxiproxy("127.0.0.1", 0, bundled=self.bundled_toxiproxy, log=log)
        finally:
            log.close()
        self.api.update_api_consumer(self.toxi.host, self.toxi.port)
        for i in self.node_ids:
            for j in self.node_ids:
                if i != j:
                    self._create_proxy(self.link_name(i, j), self.nodes[j].address)
            p = self._create_proxy(self.client_proxy_name(i), self.nodes[i].address)
            self.client_addresses[i] = p.listen
        for node in self.nodes.values():
            node.args = self._args(node, voters)
            if self.use_lazyfs:
                self._mount(node)
            else:
                node.data_dir.mkdir(parents=True, exist_ok=True)
        for i in self.node_ids:
            self.start_node(i)

    def _create_proxy(self, name: str, upstream: str) -> Any:
        p = self.api.create(upstream=upstream, name=name, listen="127.0.0.1:0")
        self.proxies[name] = p
        return p

    def _args(self, node: Node, voters: str) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "server.cli",
            "server",
            "--node-id",
            str(node.node_id),
            "--listen",
            node.address,
            "--data-dir",
            str(node.data_dir),
            "--dc",
            node.dc,
            "--voters",
            voters,
            "--log-level",
            "info",
        ]
        for j in self.node_ids:
            if j != node.node_id:
                listen = self.proxies[self.link_name(node.node_id, j)].listen
                args += ["--peer-address", f"{j}={listen}"]
        for s in self.settings:
            args += ["--set", s]
        return args

    def _mount(self, node: Node) -> None:
        from chaos.lazyfs import LazyFS

        backing = node.data_dir.parent / "backing"
        backing.mkdir(parents=True, exist_ok=True)
        node.data_dir.mkdir(parents=True, exist_ok=True)
        node.fs = LazyFS(node.data_dir, backing).start()

    def stop(self) -> None:
        """Kill every broker (SIGCONT first so a paused one can die), unmount, stop Toxiproxy."""
        for node in self.nodes.values():
            self._kill(node)
        for node in self.nodes.values():
            if node.fs is not None:
                with contextlib.suppress(Exception):
                    node.fs.stop()
                node.fs = None
        if self.toxi is not None:
            with contextlib.suppress(Exception):
                self.toxi.stop()
            self.toxi = None
        if self in ACTIVE:
            ACTIVE.remove(self)

    def __enter__(self) -> ChaosCluster:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ processes
    def start_node(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.alive:
            return
        with open(node.log_path, "ab") as logf:
            node.proc = subprocess.Popen(
                node.args,
                cwd=REPO,
                stdout=logf,
                stderr=logf,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        node.paused = False

    def _kill(self, node: Node) -> None:
        if node.proc is None or node.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.proc.pid, signal.SIGKILL)
            if node.paused:
                os.kill(node.proc.pid, signal.SIGCONT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.proc.wait(timeout=10)
        node.paused = False

    def kill(self, node_id: int) -> None:
        self._kill(self.nodes[node_id])

    def pause(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.alive and not node.paused:
            os.kill(node.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
            node.paused = True

    def resume(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.alive and node.paused:
            os.kill(node.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        node.paused = False

    def power_loss(self, node_id: int, torn_seed: int | None = None) -> dict[str, Any]:
        """SIGKILL the broker, drop everything its LazyFS holds that was not made durable,
        start it again. Returns what LazyFS reports it lost."""
        node = self.nodes[node_id]
        if node.fs is None:
            raise RuntimeError("power loss needs the cluster started with lazyfs=True")
        self._kill(node)
        lost = node.fs.crash() if torn_seed is None else node.fs.crash(torn_seed=torn_seed)
        self.start_node(node_id)
        return lost if isinstance(lost, dict) else {"lost": lost}

    def down_nodes(self) -> list[int]:
        return [i for i in self.node_ids if not self.nodes[i].alive]

    # ------------------------------------------------------------------ network
    def reset_network(self) -> None:
        """Every proxy enabled, every toxic removed (Toxiproxy's POST /reset)."""
        self.api.reset()

    def heal(self) -> None:
        """Undo every fault: network reset, paused brokers resumed, dead brokers started."""
        self.reset_network()
        for i in self.node_ids:
            self.resume(i)
            if not self.nodes[i].alive:
                self.start_node(i)

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for node in self.nodes.values():
            text = (
                node.log_path.read_text(errors="replace").splitlines()
                if node.log_path.exists()
                else []
            )
            out.append(f"--- node {node.node_id} ({'up' if node.alive else 'down'})")
            out.extend(text[-lines:])
        return "\n".join(out)


def wait_until(check: Any, timeout_s: float, poll_s: float = 0.2) -> bool:
    """Poll ``check()`` until true or ``timeout_s`` passes; returns whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(poll_s)
    return False
