"""The ``replog`` console script: ``replog server``, ``replog dev``, and every client command.

Contract:
- ``main(argv) -> int`` never raises for a user mistake: bad arguments exit 2 (argparse's
  convention), a ``ConfigError`` prints one line and exits 2.
- Only ``server`` and ``dev`` are handled here. Every other first word (``cluster``, ``topic``,
  ``produce``, ``consume``, ... and global client options) goes, unchanged, to
  ``client.cli.main(argv)``; it is imported lazily so the client never needs the server's
  modules, and the broker starts without loading rich tables.
- The shape of ``replog server`` is a contract that scripts, ``replog dev`` and the chaos suite
  rely on::

      replog server --node-id N --listen HOST:PORT --data-dir DIR --dc DC [--rack R]
          --voters 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT [--peer-address ID=HOST:PORT]...
          [--config FILE.toml] [--set section.key=value]... [--log-level LEVEL] [--print-config]

  Flags are the top configuration layer (see server/config.py): defaults < --config file <
  REPLOG_<SECTION>__<KEY> environment < --set < flags. Every flag is optional on the command
  line because the file or environment may supply it; ``load_config`` reports what is missing.
- The broker itself (``server.broker.run_broker``) is imported only when it is about to run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence

from server.config import (
    ConfigError,
    ServerConfig,
    config_to_toml,
    load_config,
    parse_id_map,
)

__all__ = [
    "CLIENT_COMMANDS",
    "config_from_args",
    "main",
    "parse_server_args",
    "server_config_from_argv",
    "server_parser",
]

VERSION = "0.1.0"

# Listed by `replog --help`; implemented by client/cli.py.
CLIENT_COMMANDS: dict[str, str] = {
    "cluster": "describe the cluster: brokers, liveness, metadata leader",
    "topic": "create, list, describe, delete topics",
    "produce": "append records to a topic, one per stdin line",
    "consume": "read records from a topic",
    "partition": "verify a partition: every replica equal at equal offsets",
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replog",
        description="replog: a partitioned, replicated log where every partition is a Raft group.",
        epilog="Run `replog COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"replog {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("server", help="run one broker (a long-running process)")
    commands.add_parser("dev", help="run a local multi-broker cluster on loopback")
    commands.add_parser("chaos", help="run a workload against a cluster under faults, check it")
    for name, text in CLIENT_COMMANDS.items():
        commands.add_parser(name, help=text)
    return parser


def server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replog server",
        description="Run one replog broker until SIGTERM/SIGINT (graceful shutdown).",
        epilog="Configuration layers, lowest first: defaults < --config < "
        "REPLOG_<SECTION>__<KEY> < --set < flags. See docs/configuration.md.",
    )
    parser.add_argument("--node-id", type=int, metavar="N", help="this broker's id (>= 1)")
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to bind")
    parser.add_argument("--data-dir", metavar="DIR", help="where this broker keeps its data")
    parser.add_argument("--dc", metavar="DC", help="data center name")
    parser.add_argument("--rack", metavar="R", help="rack name")
    parser.add_argument(
        "--voters",
        metavar="1=HOST:PORT,...",
        help="the metadata group's voters (1, 3 or 5), the same on every broker",
    )
    parser.add_argument(
        "--peer-address",
        action="append",
        default=[],
        metavar="ID=HOST:PORT",
        help="dial peer ID at HOST:PORT instead of its advertised address (repeatable; "
        "together they replace node.peer_addresses)",
    )
    parser.add_argument("--config", metavar="FILE.toml", help="configuration file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="sets",
        metavar="section.key=value",
        help="set one configuration value (repeatable)",
    )
    parser.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning, error")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration as TOML and exit",
    )
    return parser


def parse_server_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``replog server`` arguments (raises SystemExit(2) on a malformed command line)."""
    return server_parser().parse_args(list(argv))


def _peer_addresses(items: Sequence[str]) -> dict[int, str] | None:
    if not items:
        return None
    merged: dict[int, str] = {}
    for item in items:
        parsed = parse_id_map("node.peer_addresses", item)
        if len(parsed) != 1:
            raise ConfigError(
                "node.peer_addresses", item, "--peer-address takes one ID=HOST:PORT; repeat it"
            )
        ((node_id, address),) = parsed.items()
        if node_id in merged:
            raise ConfigError(
                "node.peer_addresses", item, f"--peer-address given twice for node {node_id}"
            )
        merged[node_id] = address
    return merged


def config_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> ServerConfig:
    """The effective ServerConfig for parsed ``replog server`` arguments and an environment."""
    overrides: dict[str, object] = {
        "node.node_id": args.node_id,
        "node.listen": args.listen,
        "node.data_dir": args.data_dir,
        "node.dc": args.dc,
        "node.rack": args.rack,
        "node.voters": args.voters,
        "node.peer_addresses": _peer_addresses(args.peer_address),
        "server.log_level": args.log_level,
    }
    return load_config(config_file=args.config, env=env, sets=args.sets, overrides=overrides)


def server_config_from_argv(argv: Sequence[str], env: Mapping[str, str]) -> ServerConfig:
    """Shortcut for tests and tools: ``replog server`` argv (without "server") -> ServerConfig."""
    return config_from_args(parse_server_args(argv), env)


def _run_server(argv: Sequence[str]) -> int:
    args = parse_server_args(argv)
    try:
        cfg = config_from_args(args, os.environ)
    except ConfigError as exc:
        print(f"replog: config error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        sys.stdout.write(config_to_toml(cfg))
        return 0

    from server.logsetup import configure_logging
    from server.memtune import tune_gc, tune_malloc

    tune_malloc()  # large record batches: keep big buffers off mmap (see server/memtune.py)
    tune_gc()

    configure_logging(cfg.server.log_level, cfg.node.node_id)

    from server.broker import run_broker

    try:
        return asyncio.run(run_broker(cfg))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down gracefully
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``replog`` console script; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if not args:
            _top_parser().print_help(sys.stderr)
            return 2
        command = args[0]
        if command in ("-h", "--help", "--version"):
            _top_parser().parse_args(args)  # prints and exits
            return 0
        if command == "server":
            return _run_server(args[1:])
        if command == "dev":
            from server.dev import main as dev_main

            return dev_main(args[1:])
        if command == "chaos":
            from chaos.cli import main as chaos_main

            return int(chaos_main(args[1:]))
        from client.cli import main as client_main

        return int(client_main(args))
    except SystemExit as exc:  # argparse: --help exits 0, a bad command line exits 2
        code = exc.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1


if __name__ == "__main__":
    sys.exit(main())
