"""Linearizable appends: an acknowledged append gets a higher offset than every append that
was acknowledged before it began (DESIGN guarantee 3), per partition.

Sweep, O(n log n): sort the acknowledged appends by completion time and all candidate appends
by invocation time; walk the invocations in order, folding into a running maximum every ack
that completed strictly before the current invocation; the current append must land above
that maximum. Candidates are the ok appends (at their acked offset) and ``info`` appends that
a read shows (at the offset read): an indeterminate append may have happened, but if it did,
real-time order binds it too. An ``info`` append never bounds others (its completion is +inf).
"""

from __future__ import annotations

from collections.abc import Hashable
from operator import itemgetter

from chaos.checkers.records import TP, RecordHistory, Write
from chaos.checkers.result import Anomalies, CheckResult

__all__ = ["check_linearizable_appends"]


def check_linearizable_appends(rh: RecordHistory) -> CheckResult:
    landed = _info_offsets(rh)
    acks: dict[TP, list[tuple[float, int, Write]]] = {}  # (completion time, offset, write)
    cands: dict[TP, list[tuple[int, int, Write]]] = {}  # (invocation time, offset, write)
    for w in rh.writes.values():
        if w.type == "ok" and w.tp is not None and w.offset is not None:
            acks.setdefault(w.tp, []).append((w.complete_time, w.offset, w))
            cands.setdefault(w.tp, []).append((w.invoke_time, w.offset, w))
        elif w.value in landed:
            tp, o = landed[w.value]
            cands.setdefault(tp, []).append((w.invoke_time, o, w))
    an = Anomalies()
    checked = 0
    first = itemgetter(0)
    for tp, cs in cands.items():
        done = sorted(acks.get(tp, ()), key=first)
        cs.sort(key=first)
        i, n = 0, len(done)
        best = -1  # the highest offset among acks folded in so far, and its write
        best_w: Write | None = None
        for t, o, w in cs:
            while i < n and done[i][0] < t:
                if done[i][1] > best:
                    best, best_w = done[i][1], done[i][2]
                i += 1
            checked += 1
            if best_w is not None and o <= best:
                an.add(
                    "nonlinearizable-append",
                    {
                        "partition": list(tp),
                        "value": w.value,
                        "offset": o,
                        "type": w.type,
                        "line": w.line,
                        "acked_before": {
                            "value": best_w.value,
                            "offset": best,
                            "line": best_w.line,
                        },
                    },
                )
    return an.result("linearizable-appends", {"appends_checked": checked})


def _info_offsets(rh: RecordHistory) -> dict[Hashable, tuple[TP, int]]:
    """Where reads show the indeterminate appends (only those are looked up)."""
    info = {w.value for w in rh.writes.values() if w.type == "info"}
    out: dict[Hashable, tuple[TP, int]] = {}
    if info:
        for tp, o, v, _line in rh.observations():
            if v in info:
                out.setdefault(v, (tp, o))
    return out
