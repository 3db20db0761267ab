"""A broker cluster for chaos runs: real ``replog server`` processes on 127.0.0.1 whose every
connection goes through a Toxiproxy proxy.

Contract: node i dials node j through the proxy ``n{i}-n{j}`` (``--peer-address j=...``) and
clients dial node j through ``client-n{j}`` (``broker_addresses`` overrides, bootstrap of those
proxies), so the nemesis can cut or slow any directed link. Processes are handled by PID only:
SIGKILL, restart, SIGSTOP, SIGCONT. With ``lazyfs=True`` each data directory is a LazyFS mount,
so a power loss (kill, drop what was never made durable, restart) can be simulated. ``stop()``
ends every process this object started and unmounts every mount, also after errors; it is safe
to call twice.

A cluster can outlive the run: ``replog chaos prepare`` starts one with this class and writes a
description (``describe()``, ``cluster.json``: Toxiproxy API, per node its address, client
proxy, data dir, pid, command line, environment, working directory, log, LazyFS control
socket). ``AttachedCluster`` is built from that file and offers the same interface (the nemesis
cannot tell them apart); it drives faults through the existing Toxiproxy and PIDs, starts a
broker again with the recorded command, writes the new pid back to ``cluster.json``, and its
``stop()`` only heals and detaches: it never stops the prepared cluster. The prepare process
re-reads ``cluster.json`` when it stops and also ends any process whose command line is exactly
a recorded broker command (``pids_running``), so brokers a run restarted are not orphaned.
Processes are identified by PID *and* command line (``/proc/PID/cmdline``), so a recycled PID is
never signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
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
from server.launch import HOST, dc_of, free_ports, server_command, voters_flag

REPO = Path(__file__).resolve().parents[1]
# toxiproxy-python passes no timeout to requests: the process-wide default bounds each API call.
API_TIMEOUT_S = 10.0
# Clusters started and not yet stopped: the CLI stops these on any exit (SIGTERM included).
ACTIVE: list[ChaosCluster] = []
DESCRIPTION_FORMAT = "replog-chaos-cluster/1"
DESCRIPTION_NAME = "cluster.json"
# The environment a broker gets (and that cluster.json records, so a restart is the same
# process): what Python, the broker's config layer (REPLOG_<SECTION>__<KEY>) and gRPC read.
# Nothing else is passed on (in particular no proxy variables: every address is 127.0.0.1).
BROKER_ENV_KEYS = ("PATH", "HOME", "LANG", "TZ", "TMPDIR", "VIRTUAL_ENV")
BROKER_ENV_PREFIXES = ("REPLOG_", "PYTHON", "LC_", "GRPC_")
NO_POWER_LOSS_ATTACHED = (
    "the prepared cluster has no LazyFS mounts (start it with `replog chaos prepare --lazyfs` "
    "to offer power loss)"
)


def broker_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    return {
        k: v for k, v in env.items() if k in BROKER_ENV_KEYS or k.startswith(BROKER_ENV_PREFIXES)
    }


def cmdline(pid: int) -> list[str] | None:
    """The command line of a live process; None when it is gone or a zombie (Linux /proc)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None
    return [os.fsdecode(a) for a in raw.rstrip(b"\0").split(b"\0")]


def runs(pid: int | None, args: list[str]) -> bool:
    """Process ``pid`` is alive (not a zombie) and its command line is exactly ``args``."""
    return pid is not None and bool(args) and cmdline(pid) == args


def pids_running(args: list[str]) -> list[int]:
    """Every live process whose command line is exactly ``args`` (a broker command names its
    own data directory, so this finds that broker whoever started it)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and runs(int(entry), args):
            found.append(int(entry))
    return found


def _kill_pid(pid: int, args: list[str], timeout_s: float = 10.0) -> None:
    """SIGKILL ``pid`` if it still runs ``args`` (then SIGCONT, should it be stopped); wait
    (bounded) until it is gone or a zombie its parent has not reaped yet."""
    if not runs(pid, args):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: not runs(pid, args), timeout_s, 0.02)


@dataclass
class Node:
    node_id: int
    address: str
    dc: str
    data_dir: Path
    log_path: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO
    proc: subprocess.Popen[bytes] | None = None
    # A broker another process started (a prepared cluster this run attached to): known by
    # PID and command line only.
    external_pid: int | None = None
    paused: bool = False
    fs: Any = None  # chaos.lazyfs.LazyFS (or LazyFSControl) when the data dir is a LazyFS mount

    @property
    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return runs(self.external_pid, self.args)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else self.external_pid


class LazyFSControl:
    """The control socket of a LazyFS mount another process serves (a prepared cluster):
    enough for a power loss (``crash``); the mount itself stays with its owner."""

    def __init__(self, control: str) -> None:
        self.control = control

    def crash(self, torn_seed: int | None = None) -> dict[str, Any]:
        from chaos.lazyfs import send

        words = ["crash"] if torn_seed is None else ["crash", str(torn_seed)]
        return send(self.control, *words)


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
        addresses = {i: f"{HOST}:{ports[i - 1]}" for i in range(1, self.n + 1)}
        voters = voters_flag(addresses)
        for i, address in addresses.items():
            self.nodes[i] = Node(
                i,
                address,
                dc_of(i, self.dcs),
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
        env = broker_env()
        for node in self.nodes.values():
            node.args = self._args(node, voters)
            node.env = dict(env)
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
        peers = {
            j: self.proxies[self.link_name(node.node_id, j)].listen
            for j in self.node_ids
            if j != node.node_id
        }
        return server_command(
            node.node_id,
            node.address,
            str(node.data_dir),
            node.dc,
            voters,
            settings=self.settings,
            peer_addresses=peers,
            log_level="info",
        )

    def _mount(self, node: Node) -> None:
        from chaos.lazyfs import LazyFS

        backing = node.data_dir.parent / "backing"
        backing.mkdir(parents=True, exist_ok=True)
        node.data_dir.mkdir(parents=True, exist_ok=True)
        node.fs = LazyFS(str(node.data_dir), str(backing)).start()

    def stop(self) -> None:
        """Kill every broker (SIGCONT first so a paused one can die), unmount, stop Toxiproxy.

        Besides the processes it knows (its children, pids adopted from ``cluster.json``), it
        kills any process whose command line is exactly a broker command of this cluster (one
        a run attached to a prepared cluster restarted and could not record)."""
        for node in self.nodes.values():
            self._kill(node)
        for node in self.nodes.values():
            for pid in pids_running(node.args) if node.args else []:
                _kill_pid(pid, node.args)
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
                cwd=node.cwd,
                env=node.env or None,
                stdout=logf,
                stderr=logf,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        node.external_pid = None
        node.paused = False

    def _kill(self, node: Node) -> None:
        if not node.alive:
            node.paused = False
            return
        if node.proc is None:
            assert node.external_pid is not None
            _kill_pid(node.external_pid, node.args)
            node.paused = False
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
        if node.alive and not node.paused and node.pid is not None:
            os.kill(node.pid, signal.SIGSTOP)
            node.paused = True

    def resume(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.alive and node.paused and node.pid is not None:
            os.kill(node.pid, signal.SIGCONT)
        node.paused = False

    def power_loss(self, node_id: int, torn_seed: int | None = None) -> dict[str, Any]:
        """SIGKILL the broker, drop everything its LazyFS holds that was not made durable,
        start it again. Returns what LazyFS reports it lost."""
        node = self.nodes[node_id]
        if node.fs is None:
            raise RuntimeError(self.power_loss_unavailable() or "no LazyFS mount")
        self._kill(node)
        lost = node.fs.crash() if torn_seed is None else node.fs.crash(torn_seed=torn_seed)
        self.start_node(node_id)
        return lost if isinstance(lost, dict) else {"lost": lost}

    def power_loss_unavailable(self) -> str | None:
        """None when every data dir is a LazyFS mount (power loss can be simulated), else why."""
        if self.nodes and all(n.fs is not None for n in self.nodes.values()):
            return None
        return "the cluster was started without LazyFS mounts (lazyfs=True)"

    def down_nodes(self) -> list[int]:
        """Nodes not running (polling our children also reaps those that were killed)."""
        return [i for i in self.node_ids if not self.nodes[i].alive]

    # ------------------------------------------------------------------ description
    def describe(self, state: str = "running") -> dict[str, Any]:
        """Everything another process needs to attach to this cluster (cluster.json)."""
        proxies = {
            name: {"listen": p.listen, "upstream": p.upstream} for name, p in self.proxies.items()
        }
        nodes = []
        for i in self.node_ids:
            node = self.nodes[i]
            fs = None
            if node.fs is not None:
                fs = {
                    "mountpoint": str(getattr(node.fs, "mountpoint", node.data_dir)),
                    "backing": str(getattr(node.fs, "backing", "")),
                    "control": node.fs.control,
                    "pid": getattr(getattr(node.fs, "proc", None), "pid", None),
                }
            nodes.append(
                {
                    "id": i,
                    "dc": node.dc,
                    "address": node.address,
                    "client_address": self.client_addresses[i],
                    "data_dir": str(node.data_dir),
                    "log": str(node.log_path),
                    "pid": node.pid if node.alive else None,
                    "args": list(node.args),
                    "env": dict(node.env),
                    "cwd": str(node.cwd),
                    "lazyfs": fs,
                }
            )
        toxi = None
        if self.toxi is not None:
            toxi = {
                "url": self.toxi.url,
                "host": self.toxi.host,
                "port": self.toxi.port,
                "pid": self.toxi.pid,
                "bundled": self.toxi.bundled,
            }
        return {
            "format": DESCRIPTION_FORMAT,
            "state": state,
            "owner": {"pid": os.getpid(), "cmdline": cmdline(os.getpid())},
            "root": str(self.root),
            "toxiproxy": toxi,
            "bootstrap": self.bootstrap,
            "settings": list(self.settings),
            # Why a run attached to this cluster cannot inject power loss (None: it can).
            "power_loss_unavailable": None
            if self.power_loss_unavailable() is None
            else NO_POWER_LOSS_ATTACHED,
            "proxies": proxies,
            "nodes": nodes,
        }

    def adopt_description(self, path: str | os.PathLike[str], state: str = "stopping") -> None:
        """Mark ``path`` as ``state`` (an attached run then starts no broker any more) and take
        over the pids it records for brokers another process restarted (a run attached to this
        cluster), so ``stop()`` kills them too. Both under the description lock, so a run
        cannot start a broker in between."""
        with contextlib.suppress(OSError, ValueError, KeyError), description_lock(path):
            desc = json.loads(Path(path).read_text())
            desc["state"] = state
            write_json(path, desc)
            for entry in desc["nodes"]:
                node = self.nodes.get(int(entry["id"]))
                pid = entry.get("pid")
                if node is None or pid is None or pid == node.pid:
                    continue
                if not node.alive:  # our own child is dead: the recorded one replaced it
                    node.proc = None
                    node.external_pid = int(pid)
                elif runs(int(pid), node.args):  # two copies (should not happen): kill both
                    _kill_pid(int(pid), node.args)

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


def write_json(path: str | os.PathLike[str], value: dict[str, Any]) -> None:
    """Replace ``path`` atomically (a reader sees the old or the new file, never half)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def description_lock(path: str | os.PathLike[str], timeout_s: float = 10.0) -> Any:
    """Exclusive lock for a read-modify-write of ``path`` (the prepare process and an attached
    run both update it); bounded wait."""
    fd = os.open(Path(path).with_name(f".{Path(path).name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} stayed locked for {timeout_s} s") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


def description_path(bootstrap: str | None) -> Path | None:
    """``--bootstrap`` names a prepared cluster rather than addresses when it is a ``.json``
    file or a folder (then its ``cluster.json``); an address list has neither shape."""
    if not bootstrap:
        return None
    path = Path(bootstrap)
    if bootstrap.endswith(".json") or path.is_file():
        return path
    if path.is_dir():
        return path / DESCRIPTION_NAME
    return None


def load_description(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a ``cluster.json``; ValueError says what is wrong with it."""
    path = Path(path)
    try:
        desc = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(desc, dict) or desc.get("format") != DESCRIPTION_FORMAT:
        raise ValueError(f"{path} is not a cluster description ({DESCRIPTION_FORMAT})")
    if desc.get("state") != "running":
        raise ValueError(f"the prepared cluster of {path} was stopped (state {desc.get('state')})")
    if not desc.get("toxiproxy") or not desc.get("nodes"):
        raise ValueError(f"{path} names no Toxiproxy server or no nodes")
    return desc


class AttachError(RuntimeError):
    """A prepared cluster cannot be attached to (gone, stopped, or another run holds it)."""


class AttachedCluster(ChaosCluster):
    """A cluster ``replog chaos prepare`` started, driven through its ``cluster.json``.

    ``start()`` attaches: checks that the preparing process and Toxiproxy are up, that every
    proxy the description names exists, takes ``cluster.lock`` (one run at a time), and heals
    what an earlier run may have left (toxics, stopped or dead brokers). Faults work as on a
    cluster this process started; a broker is started again with exactly the recorded command,
    environment and working directory, and its new pid is written to ``cluster.json`` at once.
    ``stop()`` heals and detaches; the prepared cluster keeps running. Power loss works when
    the prepared cluster has LazyFS mounts (``prepare --lazyfs``): the broker is killed, the
    mount's control socket is told to crash, the broker is started again."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        desc = load_description(self.path)
        nodes = desc["nodes"]
        super().__init__(
            desc["root"],
            len(nodes),
            len({n["dc"] for n in nodes}),
            desc.get("settings") or [],
            lazyfs=all(n.get("lazyfs") for n in nodes),
        )
        self.description = desc
        self._lock: int | None = None
        for n in nodes:
            node = Node(
                int(n["id"]),
                n["address"],
                n["dc"],
                Path(n["data_dir"]),
                Path(n["log"]),
                args=list(n["args"]),
                env=dict(n.get("env") or {}),
                cwd=Path(n.get("cwd") or REPO),
                external_pid=n.get("pid"),
            )
            if n.get("lazyfs"):
                node.fs = LazyFSControl(n["lazyfs"]["control"])
            self.nodes[node.node_id] = node
            self.client_addresses[node.node_id] = n["client_address"]

    def owner_alive(self) -> bool:
        owner = self.description.get("owner") or {}
        return runs(owner.get("pid"), owner.get("cmdline") or [])

    def start(self) -> AttachedCluster:
        socket.setdefaulttimeout(API_TIMEOUT_S)
        if not self.owner_alive():
            raise AttachError(
                f"the process that prepared {self.path} (pid "
                f"{(self.description.get('owner') or {}).get('pid')}) is gone"
            )
        fd = os.open(self.path.with_name("cluster.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise AttachError(f"another chaos run is attached to {self.path}") from None
        self._lock = fd
        ACTIVE.append(self)
        try:
            toxi = self.description["toxiproxy"]
            self.api.update_api_consumer(toxi["host"], toxi["port"])
            if not self.api.running():
                raise AttachError(f"Toxiproxy at {toxi['url']} does not answer")
            found = self.api.proxies()
            for name, want in self.description["proxies"].items():
                if name not in found or found[name].listen != want["listen"]:
                    raise AttachError(f"Toxiproxy at {toxi['url']} has no proxy {name} as recorded")
                self.proxies[name] = found[name]
            self.heal()  # a run that died mid-fault may have left toxics or stopped brokers
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, node_id: int) -> None:
        if self.nodes[node_id].alive:
            return
        with description_lock(self.path):
            # Nobody would stop a broker started once the prepare process is gone or stopping:
            # refuse rather than orphan it.
            state = json.loads(self.path.read_text()).get("state")
            if state != "running" or not self.owner_alive():
                raise RuntimeError(
                    f"not restarting node {node_id}: the prepared cluster is "
                    f"{state if state != 'running' else 'gone (no prepare process)'}"
                )
            super().start_node(node_id)
            self._save()

    def heal(self) -> None:
        """Network reset, SIGCONT to every broker (also one a dead run left stopped), dead
        brokers started again."""
        self.reset_network()
        for i in self.node_ids:
            node = self.nodes[i]
            if node.alive and node.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.pid, signal.SIGCONT)
            node.paused = False
            if not node.alive:
                self.start_node(i)

    def power_loss_unavailable(self) -> str | None:
        if all(n.fs is not None for n in self.nodes.values()):
            return None
        return NO_POWER_LOSS_ATTACHED

    def save(self) -> None:
        """Write the current pids back to cluster.json (the prepare process reads them)."""
        with description_lock(self.path):
            self._save()

    def _save(self) -> None:
        desc = json.loads(self.path.read_text())  # keeps the state the prepare process set
        for entry in desc["nodes"]:
            node = self.nodes[int(entry["id"])]
            entry["pid"] = node.pid if node.alive else None
        self.description["nodes"] = desc["nodes"]
        write_json(self.path, desc)

    def stop(self) -> None:
        """Detach: heal (the prepared cluster is left running), record the pids, unlock.
        Never stops a broker, Toxiproxy or a mount."""
        if self._lock is None:
            if self in ACTIVE:
                ACTIVE.remove(self)
            return
        try:
            self.heal()
        except Exception as exc:  # reported, not raised: the run's own verdict stands
            print(f"chaos: could not heal the prepared cluster: {exc}", file=sys.stderr)
        finally:
            with contextlib.suppress(OSError):
                self.save()
            os.close(self._lock)  # releases the flock
            self._lock = None
            if self in ACTIVE:
                ACTIVE.remove(self)


async def wait_ready(
    bootstrap: str, client_kwargs: dict[str, Any], nodes: int, timeout_s: float
) -> bool:
    """The metadata group has a leader and ``nodes`` brokers are alive (bounded)."""
    from client import AdminClient, AdminConfig

    deadline = time.monotonic() + timeout_s
    cfg = AdminConfig(request_timeout_ms=5000, operation_timeout_ms=10000, **client_kwargs)
    a = AdminClient(bootstrap, cfg)
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                d = await asyncio.wait_for(a.describe_cluster(), 10)
                if (
                    d.metadata_leader
                    and d.brokers
                    and all(b.alive for b in d.brokers)
                    and len(d.brokers) >= nodes
                ):
                    return True
            await asyncio.sleep(0.5)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(a.close(), 5)
    return False


def wait_until(check: Any, timeout_s: float, poll_s: float = 0.2) -> bool:
    """Poll ``check()`` until true or ``timeout_s`` passes; returns whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(poll_s)
    return False
