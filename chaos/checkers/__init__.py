"""Checkers for chaos histories (issue 14, section 3): pure functions of a recorded history.

Contract: nothing here talks to a cluster or reads the clock; ``check_all`` takes operation
events (as read by :mod:`chaos.history`), pairs them, splits them by workload (each workload
has its own operation names) and runs that workload's checkers. The result has the shape of
``results.json``::

    {"valid": true | false | "unknown",
     "anomalies": {kind: {"count": n, "examples": [...]}},     # only kinds that occurred
     "stats": {"ops": ..., "workloads": {...}, "checkers": {"queue/lost": {...}, ...}}}

Verdicts combine as in Jepsen: any False makes the run invalid; otherwise any "unknown"
(something could not be judged, e.g. no final drain) makes it unknown. docs/chaos-checkers.md
describes each anomaly with a tiny example.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from chaos.checkers.cdc import check_cdc_order
from chaos.checkers.linearizable import check_linearizable_appends
from chaos.checkers.lost import check_lost, check_stale_reads
from chaos.checkers.metadata import check_metadata, expected_topics
from chaos.checkers.offsets import (
    check_duplicates,
    check_inconsistent_offsets,
    check_unexpected,
)
from chaos.checkers.order import check_order
from chaos.checkers.records import RecordHistory, build_records
from chaos.checkers.result import MAX_EXAMPLES, Anomalies, CheckResult, Valid, merge_valid
from chaos.history import WORKLOAD_FS, Op, Pair, pair_ops, read_history, workloads_in

__all__ = [
    "RECORD_CHECKERS",
    "Anomalies",
    "CheckResult",
    "Valid",
    "build_records",
    "check_all",
    "check_cdc_order",
    "check_dir",
    "check_duplicates",
    "check_inconsistent_offsets",
    "check_linearizable_appends",
    "check_lost",
    "check_metadata",
    "check_order",
    "check_stale_reads",
    "check_unexpected",
    "expected_topics",
    "merge_valid",
]

RecordChecker = Callable[[RecordHistory], CheckResult]

# Which checkers judge which record workload. Stale reads need non-final full reads, which
# only the log workload makes (queue and cdc drains are final by definition).
_COMMON: tuple[RecordChecker, ...] = (
    check_lost,
    check_duplicates,
    check_inconsistent_offsets,
    check_unexpected,
    check_order,
    check_linearizable_appends,
)
RECORD_CHECKERS: dict[str, tuple[RecordChecker, ...]] = {
    "queue": _COMMON,
    "log": (*_COMMON, check_stale_reads),
    "cdc": (*_COMMON, check_cdc_order),
}


def check_all(
    history: Iterable[Op] | Sequence[Pair], workloads: Iterable[str] | None = None
) -> dict[str, Any]:
    """Check a history; ``workloads`` defaults to those whose operations occur in it. A
    requested workload with no operations is "unknown" (nothing was shown)."""
    items = list(history)
    pairs: list[Pair] = items if items and isinstance(items[0], Pair) else pair_ops(items)  # type: ignore[assignment,arg-type]
    ops = [p.invoke for p in pairs]
    names = list(workloads) if workloads is not None else workloads_in(ops)
    unknown_names = [w for w in names if w not in WORKLOAD_FS]
    if unknown_names:
        raise ValueError(f"unknown workloads {unknown_names}; known: {sorted(WORKLOAD_FS)}")
    by_workload: dict[str, list[Pair]] = {w: [] for w in names}
    f_to_workload = {f: w for w, fs in WORKLOAD_FS.items() for f in fs}
    other_fs: dict[str, int] = {}
    for p in pairs:
        w = f_to_workload.get(p.invoke.f)
        if w in by_workload:
            by_workload[w].append(p)
        else:
            other_fs[p.invoke.f] = other_fs.get(p.invoke.f, 0) + 1
    results: dict[str, CheckResult] = {}
    workload_stats: dict[str, Any] = {}
    for w, ps in by_workload.items():
        workload_stats[w] = _op_stats(ps)
        if not ps:
            results[f"{w}/ops"] = CheckResult("ops", "unknown", stats={"reason": "no operations"})
            continue
        if w == "metadata":
            results[f"{w}/metadata"] = check_metadata(ps)
            continue
        rh = build_records(w, ps)
        for checker in RECORD_CHECKERS[w]:
            r = checker(rh)
            results[f"{w}/{r.name}"] = r
    return _combine(results, workload_stats, len(pairs), other_fs)


def check_dir(
    path: str | os.PathLike[str], workloads: Iterable[str] | None = None
) -> dict[str, Any]:
    """What ``replog chaos check DIR`` runs: check ``DIR/history.jsonl``. A malformed history
    raises :class:`chaos.history.HistoryError` (with the line) rather than yielding a verdict."""
    return check_all(read_history(Path(path) / "history.jsonl"), workloads)


def _op_stats(pairs: Sequence[Pair]) -> dict[str, Any]:
    by_f: dict[str, dict[str, int]] = {}
    for p in pairs:
        counts = by_f.setdefault(p.invoke.f, {"ok": 0, "fail": 0, "info": 0})
        counts[p.type] += 1
    return {"ops": len(pairs), "by_f": by_f}


def _combine(
    results: dict[str, CheckResult],
    workload_stats: dict[str, Any],
    n_pairs: int,
    other_fs: dict[str, int],
) -> dict[str, Any]:
    anomalies: dict[str, dict[str, Any]] = {}
    for name, r in results.items():
        workload = name.split("/", 1)[0]
        for kind, count in r.anomalies.items():
            if not count:
                continue
            a = anomalies.setdefault(kind, {"count": 0, "examples": []})
            a["count"] += count
            room = MAX_EXAMPLES - len(a["examples"])
            a["examples"].extend(
                {"workload": workload, **e} for e in r.examples.get(kind, [])[:room]
            )
    stats: dict[str, Any] = {
        "operations": n_pairs,
        "workloads": workload_stats,
        "checkers": {
            name: {"valid": r.valid, "anomalies": r.anomalies, **r.stats}
            for name, r in results.items()
        },
    }
    if other_fs:
        stats["unchecked_operations"] = other_fs
    valid: Valid = merge_valid(r.valid for r in results.values()) if results else "unknown"
    return {"valid": valid, "anomalies": anomalies, "stats": stats}
