"""``replog chaos run ...``, ``replog chaos check DIR`` and ``replog chaos prepare ...``
(server/cli.py dispatches here).

Exit status of run and check: 0 only when the history is valid; 1 when invalid or unknown; 2 on
usage errors. ``prepare`` starts a cluster for ``run --bootstrap DIR/cluster.json``, stays in
the foreground until SIGINT/SIGTERM (or ``--max-time``), then stops every process of the cluster
by PID, including brokers a run restarted (it re-reads cluster.json); 0 on a clean stop, 1 when
the cluster did not come up, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from chaos.cluster import (
    ACTIVE,
    DESCRIPTION_NAME,
    AttachError,
    description_path,
    load_description,
)
from chaos.nemesis import NEMESES
from chaos.workloads import WORKLOADS


def _csv(known: tuple[str, ...] | list[str], what: str):  # type: ignore[no-untyped-def]
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in known]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(bad) or '(none given)'}; known: {', '.join(known)}"
            )
        return items

    return parse


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override passed to every node (repeatable)",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="replog chaos",
        description=(
            "Run a workload against a cluster while faults are injected, record every operation, "
            "check the history and write a report (docs/chaos.md)."
        ),
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="start a cluster, run workloads under faults, check")
    r.add_argument("--nodes", type=int, default=None, help="brokers (default 5)")
    r.add_argument("--dcs", type=int, default=None, help="DCs, round-robin (default 3)")
    r.add_argument(
        "--workload",
        type=_csv(sorted(WORKLOADS), "workload"),
        default=["queue"],
        help=f"comma-separated: {', '.join(sorted(WORKLOADS))}",
    )
    r.add_argument(
        "--nemesis",
        type=_csv(NEMESES, "nemesis"),
        default=["partition"],
        help=f"comma-separated: {', '.join(NEMESES)}",
    )
    r.add_argument("--time", type=float, default=120.0, help="seconds of workload under faults")
    r.add_argument("--rate", type=float, default=500.0, help="operations per second, in total")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--out", type=Path, default=None, help="output folder (default chaos-SEED)")
    _add_set(r)
    r.add_argument(
        "--bootstrap",
        default=None,
        metavar="DIR/cluster.json|ADDRS",
        help=(
            "run against an existing cluster: a description written by `replog chaos prepare` "
            "(a .json file or its folder; every nemesis) or comma-separated addresses "
            "(workloads only, --nemesis none)"
        ),
    )
    r.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds each fault lasts (default: 30 for mix, else time/4 in 3..15)",
    )
    r.add_argument("--partitions", type=int, default=4, help="partitions per workload topic")
    r.add_argument("--workers", type=int, default=8, help="producer processes per workload")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    c = sub.add_parser("check", help="re-check a saved history (DIR/history.jsonl)")
    c.add_argument("dir", type=Path)
    pr = sub.add_parser(
        "prepare",
        help="start a cluster behind proxies for `run --bootstrap DIR/cluster.json`; "
        "stop it with Ctrl-C or SIGTERM",
    )
    pr.add_argument("--nodes", type=int, default=5)
    pr.add_argument("--dcs", type=int, default=3, help="DCs, round-robin")
    pr.add_argument("--dir", type=Path, required=True, help="an empty (or new) folder")
    _add_set(pr)
    pr.add_argument(
        "--lazyfs",
        action="store_true",
        help="every data dir a LazyFS mount, so runs can inject power loss (needs FUSE)",
    )
    pr.add_argument(
        "--max-time",
        type=float,
        default=None,
        help="stop by itself after this many seconds (default: only on a signal)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.command == "check":
        return _check(args.dir)
    for s in args.settings:
        if "=" not in s:
            print(f"replog chaos: --set takes KEY=VALUE, got {s!r}", file=sys.stderr)
            return 2
    if args.command == "prepare":
        return _prepare(args)
    from chaos.run import Options, run, summary

    nodes = args.nodes if args.nodes is not None else 5
    dcs = args.dcs if args.dcs is not None else 3
    if nodes < 1 or dcs < 1 or args.time <= 0 or args.rate <= 0:
        print("replog chaos: --nodes, --dcs, --time and --rate must be positive", file=sys.stderr)
        return 2
    described = description_path(args.bootstrap)
    if args.bootstrap and described is None and args.nemesis != ["none"]:
        print(
            "replog chaos: --bootstrap with addresses runs workloads only; use --nemesis none "
            "(faults need the processes and proxies: let the run start its own cluster, or "
            "start one with `replog chaos prepare --dir DIR` and pass --bootstrap "
            "DIR/cluster.json)",
            file=sys.stderr,
        )
        return 2
    if described is not None:
        problem = _attach_problem(described, args)
        if problem:
            print(f"replog chaos: {problem}", file=sys.stderr)
            return 2
        desc = load_description(described)
        nodes = len(desc["nodes"])
        dcs = len({n["dc"] for n in desc["nodes"]})
    opts = Options(
        nodes=nodes,
        dcs=dcs,
        workloads=args.workload,
        nemeses=args.nemesis,
        time_s=args.time,
        rate=args.rate,
        seed=args.seed,
        settings=args.settings,
        bootstrap=args.bootstrap,
        interval_s=args.interval,
        partitions=args.partitions,
        workers=args.workers,
        quiet=args.quiet,
    )
    opts.out = args.out or Path(f"chaos-{args.seed if args.seed is not None else 'run'}")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        results = asyncio.run(run(opts))
    except KeyboardInterrupt:
        if described is not None:
            print("replog chaos: interrupted; the prepared cluster was healed", file=sys.stderr)
        else:
            print("replog chaos: interrupted; the cluster was stopped", file=sys.stderr)
        return 130
    except AttachError as e:
        print(f"replog chaos: --bootstrap {described}: {e}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
        for cluster in list(ACTIVE):  # whatever an interrupted run could not stop itself
            cluster.stop()
    print(summary(results))
    print(f"wrote {opts.out}/history.jsonl, results.json, report.html")
    return 0 if results["valid"] is True else 1


def _attach_problem(path: Path, args: argparse.Namespace) -> str | None:
    """Why ``run --bootstrap PATH`` cannot use the prepared cluster PATH describes, or None."""
    try:
        desc = load_description(path)
    except ValueError as exc:
        return f"--bootstrap {path}: {exc}"
    if args.settings:
        return (
            "--set applies to brokers the run starts; a prepared cluster has the settings "
            "given to `replog chaos prepare --set`"
        )
    nodes = len(desc["nodes"])
    dcs = len({n["dc"] for n in desc["nodes"]})
    if args.nodes is not None and args.nodes != nodes:
        return f"--nodes {args.nodes}, but the prepared cluster has {nodes} (omit --nodes)"
    if args.dcs is not None and args.dcs != dcs:
        return f"--dcs {args.dcs}, but the prepared cluster has {dcs} (omit --dcs)"
    return None


def _prepare(args: argparse.Namespace) -> int:
    """``replog chaos prepare``: start the cluster exactly as a run does (ChaosCluster), write
    DIR/cluster.json once it is ready, print it, wait for a signal, stop everything."""
    from chaos.cluster import ChaosCluster, wait_ready, write_json

    if args.nodes < 1 or args.dcs < 1:
        print("replog chaos prepare: --nodes and --dcs must be positive", file=sys.stderr)
        return 2
    root = args.dir.resolve()
    if (root / DESCRIPTION_NAME).exists() or any(root.glob("node-*")):
        print(
            f"replog chaos prepare: {root} already holds a cluster; use an empty folder",
            file=sys.stderr,
        )
        return 2
    if args.lazyfs:
        from chaos.lazyfs import fuse_unavailable_reason

        reason = fuse_unavailable_reason()
        if reason:
            print(f"replog chaos prepare: --lazyfs needs FUSE: {reason}", file=sys.stderr)
            return 2
    path = root / DESCRIPTION_NAME
    cluster = ChaosCluster(root, args.nodes, args.dcs, args.settings, lazyfs=args.lazyfs)
    handlers = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    desc: dict[str, Any] | None = None
    try:
        cluster.start()
        ready = asyncio.run(wait_ready(cluster.bootstrap, cluster.client_kwargs(), cluster.n, 60))
        if not ready:
            print(
                f"replog chaos prepare: cluster not ready in 60 s\n{cluster.log_tail()}",
                file=sys.stderr,
            )
            return 1
        desc = cluster.describe()
        write_json(path, desc)
        print(json.dumps(desc, indent=1), flush=True)
        print(
            f"replog chaos prepare: {cluster.n} brokers ready; run "
            f"`replog chaos run --bootstrap {path} ...`; Ctrl-C or SIGTERM (pid "
            f"{desc['owner']['pid']}) stops them",
            file=sys.stderr,
            flush=True,
        )
        deadline = None if args.max_time is None else time.monotonic() + args.max_time
        while deadline is None or time.monotonic() < deadline:
            cluster.down_nodes()  # reaps brokers a run killed (our children)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for s in handlers:
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        try:
            if desc is not None:
                # Brokers a run restarted are not our children: their pids are in the file
                # (marked "stopping" first, so an attached run starts no broker any more).
                cluster.adopt_description(path, "stopping")
                cluster.stop()
                desc["state"] = "stopped"
                for n in desc["nodes"]:
                    n["pid"] = None
                write_json(path, desc)
            else:
                cluster.stop()
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
    print("replog chaos prepare: stopped", file=sys.stderr)
    return code


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _check(folder: Path) -> int:
    from chaos.history import HistoryError
    from chaos.run import finish, summary

    if not (folder / "history.jsonl").exists():
        print(f"replog chaos check: no history.jsonl in {folder}", file=sys.stderr)
        return 2
    old = folder / "results.json"
    run_info = json.loads(old.read_text()).get("run") if old.exists() else None
    try:
        results = finish(folder)
    except HistoryError as e:
        print(f"replog chaos check: {e}", file=sys.stderr)
        return 2
    if run_info is not None:
        results["run"] = run_info
    old.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(summary(results))
    return 0 if results["valid"] is True else 1
