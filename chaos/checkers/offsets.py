"""Duplicates, inconsistent offsets and unexpected values: what reads say about identity.

- **duplicate**: one value seen at two different ``(partition, offset)`` positions. With an
  idempotent producer a retried append must never land twice (DESIGN guarantee 4).
- **inconsistent-offset**: one position seen holding two different values (by two reads, or
  by a read and the ack that claimed the position), or an ack that named a position while the
  reads show the value elsewhere (guarantee 2: every consumer sees the same record at the same
  offset).
- **unexpected**: a value no invocation ever sent. **aborted-read**: a value whose append
  *failed* (a definite failure must leave no trace). An ``info`` append that shows up is fine.

One pass over the observations, dictionaries keyed by value and by position: linear.
"""

from __future__ import annotations

from collections.abc import Hashable

from chaos.checkers.records import TP, RecordHistory
from chaos.checkers.result import Anomalies, CheckResult

__all__ = ["check_duplicates", "check_inconsistent_offsets", "check_unexpected"]

Loc = tuple[TP, int]


def _loc(loc: Loc) -> list[object]:
    return [loc[0][0], loc[0][1], loc[1]]


def check_duplicates(rh: RecordHistory) -> CheckResult:
    first: dict[Hashable, Loc] = {}
    extra: dict[Hashable, set[Loc]] = {}
    seen = 0
    for tp, o, v, _line in rh.observations():
        seen += 1
        loc = (tp, o)
        f = first.setdefault(v, loc)
        if f != loc:
            extra.setdefault(v, {f}).add(loc)
    an = Anomalies()
    for v, locs in extra.items():
        an.add("duplicate", {"value": v, "at": [_loc(x) for x in sorted(locs)]})
    return an.result("duplicate", {"records_seen": seen, "distinct_values": len(first)})


def check_inconsistent_offsets(rh: RecordHistory) -> CheckResult:
    at: dict[Loc, Hashable] = {}
    where: dict[Hashable, Loc] = {}
    conflicts: dict[Loc, dict[Hashable, int]] = {}  # position -> value -> first line seen
    for tp, o, v, line in rh.observations():
        loc = (tp, o)
        cur = at.setdefault(loc, v)
        where.setdefault(v, loc)
        if cur != v:
            c = conflicts.setdefault(loc, {cur: 0})
            c.setdefault(v, line)
    an = Anomalies()
    for w in rh.writes.values():
        if w.type != "ok" or w.tp is None or w.offset is None:
            continue
        loc = (w.tp, w.offset)
        cur = at.get(loc)
        if cur is None:
            seen_at = where.get(w.value)
            if seen_at is not None:
                an.add(
                    "inconsistent-offset",
                    {
                        "value": w.value,
                        "acked_at": _loc(loc),
                        "seen_at": _loc(seen_at),
                        "append_line": w.line,
                    },
                )
        elif cur != w.value:
            conflicts.setdefault(loc, {cur: 0}).setdefault(w.value, w.line)
    for loc, values in conflicts.items():
        an.add(
            "inconsistent-offset",
            {
                "at": _loc(loc),
                "values": list(values),
                "lines": [ln for ln in values.values() if ln],
            },
        )
    return an.result("inconsistent-offset", {"positions_seen": len(at)})


def check_unexpected(rh: RecordHistory) -> CheckResult:
    writes = rh.writes
    reported: set[Hashable] = set()
    an = Anomalies()
    for tp, o, v, line in rh.observations():
        w = writes.get(v)
        if w is not None and w.type != "fail":
            continue
        if v in reported:
            continue
        reported.add(v)
        example = {"value": v, "at": _loc((tp, o)), "read_line": line}
        if w is None:
            an.add("unexpected", example)
        else:
            an.add("aborted-read", {**example, "append_line": w.line})
    return an.result("unexpected", {"values_sent": len(writes)})
