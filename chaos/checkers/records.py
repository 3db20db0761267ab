"""The record model shared by the queue, log and cdc checkers.

Contract: turn one workload's paired operations into writes (one unique value each, with the
partition and offset the ack claimed), full-prefix reads (drains and log reads: every record
of a partition from its start, as ``(offset, value)``) and consumer polls (``(tp, offset,
value)`` in delivery order). Shapes are validated here, once, so a malformed value raises
:class:`~chaos.history.MalformedOp` with its line instead of becoming a false anomaly. No
judgement here.

A partition is identified by ``tp = (topic, partition)`` (topic "" when the history has none).
A cdc record's value is the pair ``(key, version)``; the other workloads' values are scalars.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaos.history import MalformedOp, Op, Pair

__all__ = ["SPECS", "Poll", "Read", "RecordHistory", "Spec", "Write", "build_records"]

TP = tuple[str, int]
INF = float("inf")


@dataclass(frozen=True, slots=True)
class Spec:
    """A record workload's operation names (None: the workload has no such operation)."""

    send: str
    poll: str | None
    drain: str | None
    read: str | None
    assign: str | None
    cdc: bool = False


SPECS: dict[str, Spec] = {
    "queue": Spec(send="send", poll="poll", drain="drain", read=None, assign="assign"),
    "log": Spec(send="append", poll=None, drain=None, read="read", assign=None),
    "cdc": Spec(
        send="cdc-send",
        poll="cdc-poll",
        drain="cdc-drain",
        read=None,
        assign="cdc-assign",
        cdc=True,
    ),
}


@dataclass(slots=True)
class Write:
    value: Hashable
    process: int | str
    type: str  # ok | fail | info (an invocation the history never completed counts as info)
    tp: TP | None  # from the ack, else the invocation; None when a partitioner chose it unseen
    offset: int | None  # the acknowledged offset (ok only)
    invoke_time: int
    complete_time: float  # +inf unless ok/fail: an indeterminate write may land at any time
    line: int


@dataclass(slots=True)
class Read:
    """A full-prefix read of one partition: a queue/cdc drain or a log read."""

    tp: TP
    process: int | str
    invoke_time: int
    complete_time: int
    line: int
    final: bool  # a drain, or a log read flagged "final": judged for loss, not staleness
    items: list[tuple[int, Hashable]]  # (offset, value) as delivered (ascending when correct)

    def values(self) -> set[Hashable]:
        return {v for _, v in self.items}


@dataclass(slots=True)
class Poll:
    """A consumer poll (ok), or a position reset (``reset``: an assign, or a poll whose outcome
    is unknown, after which the consumer's position is unknown too)."""

    process: int | str
    line: int
    items: list[tuple[TP, int, Hashable]] = field(default_factory=list)
    reset: bool = False


@dataclass(slots=True)
class RecordHistory:
    workload: str
    writes: dict[Hashable, Write] = field(default_factory=dict)
    reads: list[Read] = field(default_factory=list)
    polls: list[Poll] = field(default_factory=list)

    def final_reads(self) -> dict[TP, list[Read]]:
        """Per partition, the reads that stand for the final state: every drain or read marked
        final; failing those, the latest-invoked read (a log workload without a marked one)."""
        marked: dict[TP, list[Read]] = {}
        latest: dict[TP, Read] = {}
        for r in self.reads:
            if r.final:
                marked.setdefault(r.tp, []).append(r)
            elif r.tp not in latest or r.invoke_time > latest[r.tp].invoke_time:
                latest[r.tp] = r
        for tp, r in latest.items():
            marked.setdefault(tp, [r])
        return marked

    def observations(self) -> Iterator[tuple[TP, int, Hashable, int]]:
        """Every record seen by any read or poll as ``(tp, offset, value, line)``."""
        for r in self.reads:
            tp, line = r.tp, r.line
            for o, v in r.items:
                yield tp, o, v, line
        for p in self.polls:
            line = p.line
            for tp, o, v in p.items:
                yield tp, o, v, line


def _hashable(v: Any) -> Hashable:
    # JSON has no tuples; a list-valued record value (cdc's key/version) must still key a dict.
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        raise TypeError("a record value may not be a JSON object")
    return v  # type: ignore[no-any-return]


def _tp(op: Op, fallback: Op | None = None) -> TP | None:
    part = op.partition if op.partition is not None else (fallback.partition if fallback else None)
    if part is None:
        return None
    topic = op.topic if op.topic is not None else (fallback.topic if fallback else None)
    return (topic or "", part)


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def build_records(workload: str, pairs: Sequence[Pair]) -> RecordHistory:
    spec = SPECS[workload]
    rh = RecordHistory(workload)
    for pair in pairs:
        inv, comp = pair.invoke, pair.completion
        f, typ = inv.f, pair.type
        if f == spec.send:
            _add_write(rh, spec, inv, comp, typ)
        elif f == spec.poll:
            if typ == "ok":
                assert comp is not None
                topic = comp.topic if comp.topic is not None else inv.topic
                rh.polls.append(Poll(inv.process, comp.line, _poll_items(comp, spec, topic)))
            elif typ == "info":
                rh.polls.append(Poll(inv.process, inv.line, reset=True))
        elif f == spec.assign:
            if typ != "fail":
                rh.polls.append(Poll(inv.process, inv.line, reset=True))
        elif f in (spec.drain, spec.read) and typ == "ok":
            assert comp is not None
            tp = _tp(comp, inv)
            if tp is None:
                raise MalformedOp(comp.line, f, "a read/drain needs a partition")
            rh.reads.append(
                Read(
                    tp,
                    inv.process,
                    inv.time,
                    comp.time,
                    comp.line,
                    f == spec.drain or comp.final or inv.final,
                    _read_items(comp, spec),
                )
            )
    _check_topics(rh)
    return rh


def _check_topics(rh: RecordHistory) -> None:
    # Records are matched by (topic, partition, offset); a poll recorded without its topic
    # next to sends recorded with one would turn every record into a false duplicate.
    named = any(w.tp is not None and w.tp[0] for w in rh.writes.values()) or any(
        r.tp[0] for r in rh.reads
    )
    if not named:
        return
    for r in rh.reads:
        if not r.tp[0]:
            raise MalformedOp(r.line, "read", "topic missing while other operations name one")
    for p in rh.polls:
        if p.items and not p.items[0][0][0]:
            raise MalformedOp(p.line, "poll", "topic missing while other operations name one")


def _add_write(rh: RecordHistory, spec: Spec, inv: Op, comp: Op | None, typ: str) -> None:
    if spec.cdc:
        if inv.key is None or not _int(inv.value):
            raise MalformedOp(inv.line, inv.f, "needs a key and an integer version as value")
        value: Hashable = (_hashable(inv.key), inv.value)
    else:
        try:
            value = _hashable(inv.value)
        except TypeError as e:
            raise MalformedOp(inv.line, inv.f, str(e)) from None
    if value in rh.writes:
        # Checks identify a record by its value; a reused value would make loss undecidable.
        raise MalformedOp(
            inv.line,
            inv.f,
            f"value {value!r} already sent on line {rh.writes[value].line}; values must be unique",
        )
    offset = None
    if typ == "ok":
        assert comp is not None
        offset = comp.offset
        if not _int(offset) or _tp(comp, inv) is None:
            raise MalformedOp(comp.line, inv.f, "an ok append needs partition and offset")
    tp = _tp(comp, inv) if comp is not None else _tp(inv)
    ct: float = comp.time if comp is not None and typ != "info" else INF
    rh.writes[value] = Write(value, inv.process, typ, tp, offset, inv.time, ct, inv.line)


def _poll_items(op: Op, spec: Spec, topic: str | None) -> list[tuple[TP, int, Hashable]]:
    topic = topic or ""
    out: list[tuple[TP, int, Hashable]] = []
    if not isinstance(op.value, list):
        raise MalformedOp(op.line, op.f, "value must be a list of records")
    width = 4 if spec.cdc else 3
    for item in op.value:
        if (
            not isinstance(item, list)
            or len(item) != width
            or not _int(item[0])
            or not _int(item[1])
        ):
            shape = (
                "[partition, offset, key, version]" if spec.cdc else "[partition, offset, value]"
            )
            raise MalformedOp(op.line, op.f, f"each record must be {shape}, got {item!r}")
        v = (_hashable(item[2]), item[3]) if spec.cdc else _hashable(item[2])
        out.append(((topic, item[0]), item[1], v))
    return out


def _read_items(op: Op, spec: Spec) -> list[tuple[int, Hashable]]:
    if not isinstance(op.value, list):
        raise MalformedOp(op.line, op.f, "value must be a list of records")
    width = 3 if spec.cdc else 2
    out: list[tuple[int, Hashable]] = []
    for item in op.value:
        if not isinstance(item, list) or len(item) != width or not _int(item[0]):
            shape = "[offset, key, version]" if spec.cdc else "[offset, value]"
            raise MalformedOp(op.line, op.f, f"each record must be {shape}, got {item!r}")
        # Offsets out of order are the system's anomaly (the order checker reports them),
        # not a malformed history, so they are kept as recorded.
        v = (_hashable(item[1]), item[2]) if spec.cdc else _hashable(item[1])
        out.append((item[0], v))
    return out
