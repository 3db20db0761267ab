"""Per-key CDC order: each consumer sees each key's versions in increasing order, none missing.

The cdc workload writes, per key, versions 1, 2, 3, ... (one writer per key, as a database's
change stream would). A consumer process reads its partitions from the beginning; within one
consumer session, for each key:

- **cdc-out-of-order**: a version at or below the last one seen for that key (a repeat or a
  step back: the stream's order is the key's history and may not be replayed or permuted);
- **cdc-missing**: acknowledged versions strictly between the last one seen and the next (or
  below the first one seen, for a session that started at the beginning). Versions whose
  append failed or is indeterminate may be absent.

Sessions: every drain is a fresh session from the beginning; a consumer's ``cdc-assign`` (or a
poll with an unknown outcome) ends its session, and the next one may start mid-stream, so its
first version of each key is not checked for versions below it.

Cost: per record seen, one bisect in the key's sorted acknowledged versions.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterable
from typing import cast

from chaos.checkers.records import RecordHistory
from chaos.checkers.result import Anomalies, CheckResult

__all__ = ["check_cdc_order"]


class _Session:
    __slots__ = ("from_start", "last")

    def __init__(self, from_start: bool) -> None:
        self.from_start = from_start
        self.last: dict[Hashable, int] = {}


def check_cdc_order(rh: RecordHistory) -> CheckResult:
    acked: dict[Hashable, list[int]] = {}
    for w in rh.writes.values():
        if w.type == "ok":
            key, version = cast(tuple[Hashable, int], w.value)
            acked.setdefault(key, []).append(version)
    for versions in acked.values():
        versions.sort()
    an = Anomalies()
    sessions: dict[int | str, _Session] = {}
    seen = 0
    for p in rh.polls:
        if p.reset:
            sessions[p.process] = _Session(from_start=False)
            continue
        s = sessions.setdefault(p.process, _Session(from_start=True))
        seen += len(p.items)
        _check(s, ((v, p.line) for _tp, _o, v in p.items), acked, an, {"process": p.process})
    for r in rh.reads:
        seen += len(r.items)
        _check(
            _Session(from_start=True),
            ((v, r.line) for _o, v in r.items),
            acked,
            an,
            {"drain_line": r.line, "partition": list(r.tp)},
        )
    return an.result("cdc-order", {"records_seen": seen, "keys": len(acked)})


def _check(
    s: _Session,
    items: Iterable[tuple[Hashable, int]],
    acked: dict[Hashable, list[int]],
    an: Anomalies,
    where: dict[str, object],
) -> None:
    last = s.last
    for value, line in items:
        key, version = cast(tuple[Hashable, int], value)
        prev = last.get(key)
        if prev is not None and version <= prev:
            an.add(
                "cdc-out-of-order", {**where, "key": key, "versions": [prev, version], "line": line}
            )
            continue  # keep the higher mark: a step back must not hide later gaps
        last[key] = version
        if prev is None and not s.from_start:
            continue
        lo = 0 if prev is None else prev
        versions = acked.get(key, ())
        gap = bisect.bisect_left(versions, version) - bisect.bisect_right(versions, lo)
        if gap > 0:
            i = bisect.bisect_right(versions, lo)
            an.add(
                "cdc-missing",
                {
                    **where,
                    "key": key,
                    "after": prev,
                    "got": version,
                    "missing": list(versions[i : i + min(gap, 8)]),
                    "line": line,
                },
                count=gap,
            )
