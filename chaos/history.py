"""The chaos history: one JSON object per line, one line per operation event.

Contract: this module owns the on-disk format (reader, streaming writer), the in-memory
:class:`Op` and the pairing of each invocation with its completion. It knows nothing of
clusters, clients or faults, and never judges a history (``chaos/checkers/`` does).

Format (docs/chaos-checkers.md has the full table and examples). Required keys:

``process``  int or str: the logical client; it has at most one operation outstanding.
``type``     ``"invoke"`` | ``"ok"`` | ``"fail"`` | ``"info"`` (as in Jepsen: ``fail`` means
             the operation certainly did not take effect, ``info`` means it may or may not
             have, e.g. a timeout).
``f``        the operation name; each workload has its own names (:data:`WORKLOAD_FS`) so
             several workloads can share one history.
``time``     int, monotonic nanoseconds (``time.monotonic_ns()`` of the recording process).

Optional keys: ``value`` (default null), ``topic``, ``partition``, ``offset``, ``key``,
``node``, ``final``, ``error``; any other key is kept in :attr:`Op.extra` untouched.

Reading never skips a line: a line that is not a JSON object with the required keys raises
:class:`MalformedLine` carrying its 1-based line number (a history that silently lost an
acknowledged append would make the checkers lie). Whitespace-only lines are not events and
are ignored.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    "COMPLETION_TYPES",
    "TYPES",
    "WORKLOAD_FS",
    "HistoryError",
    "HistoryWriter",
    "MalformedLine",
    "MalformedOp",
    "Op",
    "Pair",
    "UnpairedOp",
    "iter_history",
    "pair_ops",
    "read_history",
    "workloads_in",
]

TYPES = frozenset({"invoke", "ok", "fail", "info"})
COMPLETION_TYPES = frozenset({"ok", "fail", "info"})

# Which operation names each workload emits (shapes in docs/chaos-checkers.md). Names are
# distinct across workloads so that ``check_all`` can split a mixed history without a
# per-line workload tag.
WORKLOAD_FS: dict[str, frozenset[str]] = {
    "queue": frozenset({"send", "poll", "drain", "assign"}),
    "log": frozenset({"append", "read"}),
    "cdc": frozenset({"cdc-send", "cdc-poll", "cdc-drain", "cdc-assign"}),
    "metadata": frozenset({"create", "delete", "list"}),
}

_KNOWN = ("topic", "partition", "offset", "key", "node", "final", "error")
_REQUIRED = ("process", "type", "f", "time")
_ALL_KEYS = frozenset((*_REQUIRED, "value", *_KNOWN))


class HistoryError(Exception):
    """A history that cannot be checked: the base of this module's typed errors."""


class MalformedLine(HistoryError):
    """A line that is not a well-formed operation event."""

    def __init__(self, line: int, reason: str, text: str = "") -> None:
        self.line = line
        self.reason = reason
        self.text = text
        shown = text if len(text) <= 120 else text[:117] + "..."
        super().__init__(f"history line {line}: {reason}" + (f": {shown!r}" if shown else ""))


class MalformedOp(HistoryError):
    """A well-formed event whose value does not have its operation's shape."""

    def __init__(self, line: int, f: str, reason: str) -> None:
        self.line = line
        self.f = f
        self.reason = reason
        super().__init__(f"history line {line} ({f}): {reason}")


class UnpairedOp(HistoryError):
    """A completion with no outstanding invocation, or a second invocation while one is
    outstanding on the same process (a process is single-threaded by definition)."""

    def __init__(self, line: int, process: int | str, reason: str) -> None:
        self.line = line
        self.process = process
        self.reason = reason
        super().__init__(f"history line {line} (process {process!r}): {reason}")


@dataclass(slots=True)
class Op:
    """One operation event. ``line`` is the 1-based line in the file (0 when built in memory)."""

    process: int | str
    type: str
    f: str
    value: Any = None
    time: int = 0
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: Any = None
    node: int | str | None = None
    final: bool = False
    error: Any = None
    line: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "value": self.value,
            "time": self.time,
        }
        for name in _KNOWN:
            v = getattr(self, name)
            if v is not None and v is not False:
                out[name] = v
        out.update(self.extra)
        return out


@dataclass(slots=True, frozen=True)
class Pair:
    """An invocation and its completion; ``completion`` is None when the history ended first
    (checkers treat that like ``info``: it may or may not have happened)."""

    invoke: Op
    completion: Op | None

    @property
    def type(self) -> str:
        return "info" if self.completion is None else self.completion.type

    @property
    def complete_time(self) -> float:
        """Completion time; +inf for an indeterminate op, which may take effect at any time."""
        c = self.completion
        return float("inf") if c is None or c.type == "info" else c.time


def _op_from_obj(obj: Any, line: int, text: str) -> Op:
    if not isinstance(obj, dict):
        raise MalformedLine(line, "not a JSON object", text)
    for name in _REQUIRED:
        if name not in obj:
            raise MalformedLine(line, f"missing required key {name!r}", text)
    process, typ, f, t = obj["process"], obj["type"], obj["f"], obj["time"]
    if isinstance(process, bool) or not isinstance(process, int | str):
        raise MalformedLine(line, "process must be an int or a string", text)
    if typ not in TYPES:
        raise MalformedLine(line, f"type must be one of {sorted(TYPES)}", text)
    if not isinstance(f, str) or not f:
        raise MalformedLine(line, "f must be a non-empty string", text)
    if isinstance(t, bool) or not isinstance(t, int):
        raise MalformedLine(line, "time must be an integer (monotonic ns)", text)
    partition, offset = obj.get("partition"), obj.get("offset")
    if partition is not None and (isinstance(partition, bool) or not isinstance(partition, int)):
        raise MalformedLine(line, "partition must be an integer", text)
    if offset is not None and (isinstance(offset, bool) or not isinstance(offset, int)):
        raise MalformedLine(line, "offset must be an integer", text)
    # The subset test runs in C; the comprehension only for the rare line with extra keys.
    extra = {} if obj.keys() <= _ALL_KEYS else {k: v for k, v in obj.items() if k not in _ALL_KEYS}
    return Op(
        process=process,
        type=typ,
        f=f,
        value=obj.get("value"),
        time=t,
        topic=obj.get("topic"),
        partition=partition,
        offset=offset,
        key=obj.get("key"),
        node=obj.get("node"),
        final=bool(obj.get("final", False)),
        error=obj.get("error"),
        line=line,
        extra=extra,
    )


def iter_history(lines: Iterable[str]) -> Iterator[Op]:
    """Parse lines lazily; raises :class:`MalformedLine` at the first bad line."""
    loads = json.loads
    for number, text in enumerate(lines, 1):
        stripped = text.strip()
        if not stripped:
            continue
        try:
            obj = loads(stripped)
        except ValueError as e:
            # A torn last line (the recorder was killed mid-write) lands here too: the caller
            # decides whether to truncate the file; the reader never guesses.
            raise MalformedLine(
                number, f"invalid JSON ({e.args[0] if e.args else e})", stripped
            ) from None
        yield _op_from_obj(obj, number, stripped)


def read_history(path: str | os.PathLike[str]) -> list[Op]:
    """Read a whole history file (``history.jsonl``)."""
    with open(path, encoding="utf-8") as fh:
        return list(iter_history(fh))


def pair_ops(ops: Iterable[Op]) -> list[Pair]:
    """Pair each invocation with the next completion of the same process, in invocation
    order. Raises :class:`UnpairedOp` on a completion without an invocation, a completion
    whose ``f`` differs from its invocation's, or an overlapping invocation."""
    pairs: list[Pair] = []
    pending: dict[int | str, int] = {}  # process -> index in pairs of its outstanding invoke
    for op in ops:
        if op.type == "invoke":
            if op.process in pending:
                prior = pairs[pending[op.process]].invoke
                raise UnpairedOp(
                    op.line, op.process, f"invoked while line {prior.line} is outstanding"
                )
            pending[op.process] = len(pairs)
            pairs.append(Pair(op, None))
            continue
        i = pending.pop(op.process, None)
        if i is None:
            raise UnpairedOp(op.line, op.process, f"{op.type} {op.f!r} without an invocation")
        inv = pairs[i].invoke
        if inv.f != op.f:
            raise UnpairedOp(op.line, op.process, f"completion {op.f!r} for invocation {inv.f!r}")
        pairs[i] = Pair(inv, op)
    return pairs


def workloads_in(ops: Iterable[Op]) -> list[str]:
    """The workloads whose operation names occur in ``ops`` (in :data:`WORKLOAD_FS` order)."""
    fs = {op.f for op in ops}
    return [name for name, names in WORKLOAD_FS.items() if fs & names]


class HistoryWriter:
    """Appends events to a JSON-lines file and flushes each one, so a history survives the
    recorder being killed (a torn last line is reported by the reader, never hidden).

    ``invoke`` and ``complete`` stamp ``time.monotonic_ns()`` unless given a time.
    """

    def __init__(self, target: str | os.PathLike[str] | IO[str]) -> None:
        if isinstance(target, str | os.PathLike):
            self._fh: IO[str] = open(Path(target), "a", encoding="utf-8")  # noqa: SIM115
            self._owned = True
        else:
            self._fh = target
            self._owned = False

    def write(self, op: Op | dict[str, Any]) -> None:
        obj = op.to_json() if isinstance(op, Op) else op
        self._fh.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._fh.flush()

    def invoke(
        self,
        process: int | str,
        f: str,
        value: Any = None,
        *,
        time_ns: int | None = None,
        **fields: Any,
    ) -> Op:
        op = _make(process, "invoke", f, value, time_ns, fields)
        self.write(op)
        return op

    def complete(
        self, invoke: Op, type: str, value: Any = None, *, time_ns: int | None = None, **fields: Any
    ) -> Op:
        """Record the completion of ``invoke``; topic and partition are carried over unless
        given."""
        if type not in COMPLETION_TYPES:
            raise ValueError(f"completion type must be one of {sorted(COMPLETION_TYPES)}")
        for name in ("topic", "partition", "key"):
            if name not in fields and getattr(invoke, name) is not None:
                fields[name] = getattr(invoke, name)
        op = _make(invoke.process, type, invoke.f, value, time_ns, fields)
        self.write(op)
        return op

    def close(self) -> None:
        if self._owned:
            self._fh.close()
        else:
            self._fh.flush()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _make(
    process: int | str, typ: str, f: str, value: Any, time_ns: int | None, fields: dict[str, Any]
) -> Op:
    known = {k: fields.pop(k) for k in _KNOWN if k in fields}
    return Op(
        process=process,
        type=typ,
        f=f,
        value=value,
        time=time.monotonic_ns() if time_ns is None else time_ns,
        extra=fields,
        **known,
    )
