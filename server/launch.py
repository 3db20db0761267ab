"""How a local cluster's brokers are laid out and started: one place for the ``replog server``
command line, the metadata voter count, the DC assignment and free loopback ports.

Used by everything that starts real broker processes on this machine: ``replog dev``
(server/dev.py), the chaos suite (chaos/cluster.py) and the integration tests and benchmarks
(tests/integration/harness.py). The command line is the one users type (docs/operations.md).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping, Sequence

HOST = "127.0.0.1"


def voter_count(nodes: int) -> int:
    """Metadata voters for a cluster of ``nodes``: 5 if >= 5, 3 if >= 3, else 1."""
    if nodes >= 5:
        return 5
    if nodes >= 3:
        return 3
    return 1


def dc_of(node_id: int, dcs: int) -> str:
    """Round-robin DC assignment, so consecutive nodes land in different DCs."""
    return f"dc{((node_id - 1) % dcs) + 1}"


def voters_flag(addresses: Mapping[int, str], voters: int | None = None) -> str:
    """``--voters`` for nodes ``addresses`` (id -> address): the first ``voters`` ids
    (default ``voter_count(len(addresses))``)."""
    ids = sorted(addresses)[: voter_count(len(addresses)) if voters is None else voters]
    return ",".join(f"{i}={addresses[i]}" for i in ids)


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now (bound together, then released)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def server_command(
    node_id: int,
    listen: str,
    data_dir: str,
    dc: str,
    voters: str,
    *,
    settings: Sequence[str] = (),
    peer_addresses: Mapping[int, str] | None = None,
    log_level: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The ``replog server`` command line of one broker (``python -m server.cli server ...``):
    ``settings`` are ``--set KEY=VALUE`` overrides, ``peer_addresses`` the ``--peer-address``
    ones (dial node j there instead of its advertised address, e.g. through a proxy)."""
    argv = [python, "-m", "server.cli", "server", "--node-id", str(node_id), "--listen", listen]
    argv += ["--data-dir", data_dir, "--dc", dc, "--voters", voters]
    if log_level is not None:
        argv += ["--log-level", log_level]
    for peer, address in sorted((peer_addresses or {}).items()):
        argv += ["--peer-address", f"{peer}={address}"]
    for item in settings:
        argv += ["--set", item]
    return argv
