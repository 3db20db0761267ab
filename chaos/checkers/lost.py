"""Lost acknowledged records and stale reads, both judged against full-prefix reads.

A full-prefix read (a drain, or a log read) that *began after* an append was acknowledged
must contain it. Missing from a final read (the drain after the heal, or the log's last read)
the record is **lost**; missing from an earlier read while the final read has it, the read was
**stale** (e.g. a deposed leader or a follower answering without ReadIndex).

Indeterminate appends (``info``) are never counted as lost: they may not have happened. An
append whose ack came after every final read began cannot be judged and is only counted in
the stats ("unverified"); a partition with acknowledged appends and no final read at all makes
the verdict "unknown".

Cost: one set per read plus one look-up per append acknowledged before the read began; in a
correct history that is bounded by the read's own size, so linear in the history.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable

from chaos.checkers.records import TP, Read, RecordHistory, Write
from chaos.checkers.result import Anomalies, CheckResult

__all__ = ["check_lost", "check_stale_reads"]


def _tp_name(tp: TP | None) -> list[object] | None:
    return None if tp is None else [tp[0], tp[1]]


def check_lost(rh: RecordHistory) -> CheckResult:
    finals = {tp: [(r, r.values()) for r in rs] for tp, rs in rh.final_reads().items()}
    an = Anomalies()
    acked = unverified = info_present = info_absent = 0
    unjudged_tps: set[TP] = set()
    all_final: set[Hashable] | None = None
    for w in rh.writes.values():
        if w.type != "ok":
            if w.type == "info":
                # Stats only: Jepsen's rule is that an indeterminate write is either outcome.
                if all_final is None:
                    all_final = set().union(*(v for rs in finals.values() for _, v in rs))
                if w.value in all_final:
                    info_present += 1
                else:
                    info_absent += 1
            continue
        acked += 1
        assert w.tp is not None  # records.build_records requires a partition on an ok ack
        reads = finals.get(w.tp)
        if not reads:
            unjudged_tps.add(w.tp)
            unverified += 1
            continue
        judged = False
        for r, values in reads:
            if r.invoke_time > w.complete_time:
                judged = True
                if w.value not in values:
                    an.add(
                        "lost",
                        {
                            "value": w.value,
                            "partition": _tp_name(w.tp),
                            "offset": w.offset,
                            "process": w.process,
                            "append_line": w.line,
                            "final_read_line": r.line,
                        },
                    )
                    break
        if not judged:
            unverified += 1
    stats = {
        "acknowledged": acked,
        "unverified": unverified,
        "indeterminate_present": info_present,
        "indeterminate_absent": info_absent,
        "partitions_without_final_read": sorted(_tp_name(tp) for tp in unjudged_tps),
    }  # type: ignore[type-var]
    return an.result("lost", stats, unknown=bool(unjudged_tps))


def check_stale_reads(rh: RecordHistory) -> CheckResult:
    finals = rh.final_reads()
    final_ids = {id(r) for rs in finals.values() for r in rs}
    present: dict[TP, set[Hashable]] = {
        tp: set().union(*(r.values() for r in rs)) for tp, rs in finals.items()
    }
    by_tp: dict[TP, list[Write]] = {}
    for w in rh.writes.values():
        if w.type == "ok" and w.tp is not None:
            by_tp.setdefault(w.tp, []).append(w)
    times: dict[TP, list[float]] = {}
    for tp, ws in by_tp.items():
        ws.sort(key=lambda w: w.complete_time)
        times[tp] = [w.complete_time for w in ws]
    an = Anomalies()
    checked = missing_total = 0
    for r in rh.reads:
        if id(r) in final_ids or r.tp not in by_tp:
            continue
        checked += 1
        k = bisect.bisect_left(times[r.tp], r.invoke_time)  # acks strictly before the read began
        if k == 0:
            continue
        missing = _missing(r, by_tp[r.tp][:k], present.get(r.tp, set()))
        if missing:
            missing_total += len(missing)
            an.add(
                "stale-read",
                {
                    "read_line": r.line,
                    "process": r.process,
                    "partition": _tp_name(r.tp),
                    "missing": len(missing),
                    "missing_examples": [
                        {"value": w.value, "offset": w.offset, "append_line": w.line}
                        for w in missing[:4]
                    ],
                },
            )
    return an.result("stale-read", {"reads_checked": checked, "missing_records": missing_total})


def _missing(r: Read, before: list[Write], present: set[Hashable]) -> list[Write]:
    # A record missing here and absent from the final state too is lost, and reported once,
    # by check_lost, not again as a stale read.
    values = r.values()
    return [w for w in before if w.value not in values and w.value in present]
