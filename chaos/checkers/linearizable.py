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

from chaos.checkers.records import TP, RecordHistory, Write
from chaos.checkers.result import Anomalies, CheckResult

__all__ = ["check_linearizable_appends"]


def check_linearizable_appends(rh: RecordHistory) -> CheckResult:
    seen: dict[Hashable, tuple[TP, int]] = {}
    for tp, o, v, _line in rh.observations():
        seen.setdefault(v, (tp, o))
    acks: dict[TP, list[Write]] = {}
    cands: dict[TP, list[tuple[int, int, Write]]] = {}  # (invoke time, offset, write)
    for w in rh.writes.values():
        if w.type == "ok" and w.tp is not None and w.offset is not None:
            acks.setdefault(w.tp, []).append(w)
            cands.setdefault(w.tp, []).append((w.invoke_time, w.offset, w))
        elif w.type == "info" and w.value in seen:
            tp, o = seen[w.value]
            cands.setdefault(tp, []).append((w.invoke_time, o, w))
    an = Anomalies()
    checked = 0
    for tp, cs in cands.items():
        done = sorted(acks.get(tp, ()), key=lambda w: w.complete_time)
        cs.sort(key=lambda c: c[0])
        i, best = 0, None  # best: the ack with the highest offset folded in so far
        for t, o, w in cs:
            while i < len(done) and done[i].complete_time < t:
                d = done[i]
                if best is None or d.offset > best.offset:  # type: ignore[operator]
                    best = d
                i += 1
            checked += 1
            if best is not None and o <= best.offset:  # type: ignore[operator]
                an.add("nonlinearizable-append", {
                    "partition": list(tp), "value": w.value, "offset": o, "type": w.type,
                    "line": w.line,
                    "acked_before": {"value": best.value, "offset": best.offset,
                                     "line": best.line}})
    return an.result("linearizable-appends", {"appends_checked": checked})
