"""``replog chaos run ...`` and ``replog chaos check DIR`` (server/cli.py dispatches here).

Exit status: 0 only when the history is valid; 1 when invalid or unknown; 2 on usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from chaos.cluster import ACTIVE
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
    r.add_argument("--nodes", type=int, default=5)
    r.add_argument("--dcs", type=int, default=3)
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
    r.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override passed to every node (repeatable)",
    )
    r.add_argument(
        "--bootstrap",
        default=None,
        metavar="ADDRS",
        help="run against an existing cluster (workloads only, --nemesis none)",
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
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.command == "check":
        return _check(args.dir)
    from chaos.run import Options, run, summary

    for s in args.settings:
        if "=" not in s:
            print(f"replog chaos: --set takes KEY=VALUE, got {s!r}", file=sys.stderr)
            return 2
    if args.nodes < 1 or args.dcs < 1 or args.time <= 0 or args.rate <= 0:
        print("replog chaos: --nodes, --dcs, --time and --rate must be positive", file=sys.stderr)
        return 2
    if args.bootstrap and args.nemesis != ["none"]:
        print(
            "replog chaos: --bootstrap runs workloads only; use --nemesis none (faults "
            "need the processes and proxies the suite starts itself)",
            file=sys.stderr,
        )
        return 2
    opts = Options(
        nodes=args.nodes,
        dcs=args.dcs,
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
        print("replog chaos: interrupted; the cluster was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        for cluster in list(ACTIVE):  # whatever an interrupted run could not stop itself
            cluster.stop()
    print(summary(results))
    print(f"wrote {opts.out}/history.jsonl, results.json, report.html")
    return 0 if results["valid"] is True else 1


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
