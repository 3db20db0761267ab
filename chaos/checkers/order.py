"""Order within a partition: producers' acknowledged order, consumers' delivery order.

- **reorder**: a producer process appended A and, after A was acknowledged, B to the same
  partition (a process is sequential, so its later invocation began after the earlier
  completion), yet B sits at a lower offset than A. The offset used is where the final read
  shows the value, else the one its ack named.
- **poll-nonmonotonic**: a consumer was handed a partition's offsets going backwards (or the
  same offset twice) without a reset (an ``assign``, or a poll whose outcome is unknown).
- **poll-skip**: between two consecutive records a consumer got from a partition, the final
  read holds records it never delivered (a consumer that jumps, e.g. resets to "latest" across
  a failover). Offsets themselves may have gaps (control entries occupy offsets), so skips
  are counted in the final read's record ranks, not in offsets.
- **read-order**: a full-prefix read whose offsets do not strictly ascend.

All linear: per process/partition the last position, per partition an offset -> rank table.
"""

from __future__ import annotations

from collections.abc import Hashable

from chaos.checkers.records import TP, RecordHistory
from chaos.checkers.result import Anomalies, CheckResult

__all__ = ["check_order"]


def check_order(rh: RecordHistory) -> CheckResult:
    an = Anomalies()
    finals = rh.final_reads()
    final_offset: dict[Hashable, int] = {}
    rank: dict[TP, dict[int, int]] = {}
    for tp, reads in finals.items():
        for r in reads:
            for o, v in r.items:
                final_offset.setdefault(v, o)
        # The longest final read fixes the ranks; several drains of one partition agree when
        # the system is correct, and any disagreement is reported by the offset checkers.
        longest = max(reads, key=lambda r: len(r.items))
        rank[tp] = {o: i for i, o in enumerate(sorted({o for o, _ in longest.items}))}
    _producers(rh, final_offset, an)
    _consumers(rh, rank, an)
    for r in rh.reads:
        last = None
        for o, _v in r.items:
            if last is not None and o <= last:
                an.add(
                    "read-order",
                    {"read_line": r.line, "partition": list(r.tp), "offsets": [last, o]},
                )
                break
            last = o
    return an.result("order", {"consumer_polls": sum(1 for p in rh.polls if not p.reset)})


def _producers(rh: RecordHistory, final_offset: dict[Hashable, int], an: Anomalies) -> None:
    last: dict[tuple[int | str, TP], tuple[int, Hashable, int]] = {}
    # rh.writes is in invocation order, which per process is also completion order.
    for w in rh.writes.values():
        if w.type != "ok" or w.tp is None:
            continue
        o = final_offset.get(w.value, w.offset)
        if o is None:
            continue
        k = (w.process, w.tp)
        prev = last.get(k)
        if prev is not None and o < prev[0]:
            an.add(
                "reorder",
                {
                    "process": w.process,
                    "partition": list(w.tp),
                    "earlier": {"value": prev[1], "offset": prev[0], "line": prev[2]},
                    "later": {"value": w.value, "offset": o, "line": w.line},
                },
            )
        last[k] = (o, w.value, w.line)


def _consumers(rh: RecordHistory, rank: dict[TP, dict[int, int]], an: Anomalies) -> None:
    pos: dict[int | str, dict[TP, int]] = {}
    for p in rh.polls:
        if p.reset:
            pos.pop(p.process, None)
            continue
        mine = pos.setdefault(p.process, {})
        for tp, o, _v in p.items:
            prev = mine.get(tp)
            mine[tp] = o
            if prev is None:
                continue
            if o <= prev:
                an.add(
                    "poll-nonmonotonic",
                    {
                        "process": p.process,
                        "partition": list(tp),
                        "offsets": [prev, o],
                        "poll_line": p.line,
                    },
                )
                continue
            ranks = rank.get(tp)
            if ranks is None:
                continue
            a, b = ranks.get(prev), ranks.get(o)
            if a is not None and b is not None and b - a > 1:
                an.add(
                    "poll-skip",
                    {
                        "process": p.process,
                        "partition": list(tp),
                        "offsets": [prev, o],
                        "skipped": b - a - 1,
                        "poll_line": p.line,
                    },
                )
