"""``python -m chaos.toxiproxy --host 127.0.0.1 --port 8474``.

Go-style single-dash flags (``-host``, ``-port``, ``-config``, ``-seed``, ``-version``) are
accepted too, so this can stand in wherever ``toxiproxy-server`` is invoked.
"""

from __future__ import annotations

import argparse
import asyncio
import random

from chaos.toxiproxy.api import VERSION
from chaos.toxiproxy.server import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaos.toxiproxy", description="Bundled Toxiproxy-compatible server"
    )
    parser.add_argument(
        "--host",
        "-host",
        default="localhost",
        help="host for the HTTP API to listen on (default localhost)",
    )
    parser.add_argument(
        "--port",
        "-port",
        type=int,
        default=8474,
        help="port for the HTTP API (default 8474; 0 picks a free one)",
    )
    parser.add_argument(
        "--config", "-config", default=None, help="JSON file of proxies to create on startup"
    )
    parser.add_argument(
        "--seed",
        "-seed",
        type=int,
        default=None,
        help="seed for toxicity, jitter and slicer randomness",
    )
    parser.add_argument(
        "--version", "-version", action="store_true", help="print the version and exit"
    )
    args = parser.parse_args(argv)
    if args.version:
        print(f"toxiproxy-server version {VERSION}")
        return 0
    if args.seed is not None:
        random.seed(args.seed)
    asyncio.run(run(args.host, args.port, args.config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
