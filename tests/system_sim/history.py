"""The history of one seed: every client operation, Jepsen style, plus what the checkers read.

Contract: the workload and the fault schedule *append* to a :class:`History`; nothing here
drives the cluster, reads randomness or looks at the clock by itself (the caller passes the
virtual time). The checkers (checkers.py) read a finished history together with the facts
gathered at the end of the seed (:class:`FinalState`).

An operation is a pair of events of one process: ``invoke`` then exactly one of ``ok`` (it
happened), ``fail`` (it certainly did not happen) or ``info`` (unknown: it may or may not have
happened, e.g. a delivery timeout). Processes are strings (``producer-3``, ``consumer-1``,
``admin``, ``nemesis``, ``probe``); an operation's ``f`` says what it was:

=================  ==========================================  ==============================
f                  invoke value                                ok value
=================  ==========================================  ==============================
``send``           :class:`Send`                               :class:`Ack` (where it landed)
``poll``           ``(topic, partition)`` or None              tuple of :class:`Observation`
``seek``           ``(topic, partition, offset)``              same
``create_topic``   ``(name, partitions, replicas, config)``    same
``delete_topic``   ``name``                                    same
``transfer``       ``(topic, partition, to_node)``             leader the broker reported
``probe``          ``(topic, partition)``                      :class:`Ack` (liveness probe)
``fault``          a description string (nemesis, info only)   -
=================  ==========================================  ==============================

Every value is built from ints, strings, bytes, tuples and frozen dataclasses of those, so
``repr`` is canonical and :meth:`History.digest` is the same for the same run: two runs of a
seed must produce equal digests (the determinism test compares them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

OpType = Literal["invoke", "ok", "fail", "info"]


@dataclass(frozen=True, slots=True)
class Send:
    """One record handed to ``Producer.send``. ``value`` is unique in the whole seed (the
    workload writes ``<process>:<n>``), so a value identifies its record in every read."""

    topic: str
    partition: int
    value: bytes
    acks: str  # "all" | "leader"
    idempotent: bool
    seq: int  # the producer's send order (0, 1, 2, ...) across all its partitions


@dataclass(frozen=True, slots=True)
class Ack:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Observation:
    """One record a consumer handed out."""

    topic: str
    partition: int
    offset: int
    value: bytes


@dataclass(frozen=True, slots=True)
class Op:
    index: int  # position in the history
    process: str
    type: OpType
    f: str
    value: Any
    time_s: float  # virtual seconds since the seed began

    def __str__(self) -> str:
        value = repr(self.value)
        if len(value) > 240:
            value = value[:240] + "..."
        return f"#{self.index} t={self.time_s:.3f} {self.process} {self.type} {self.f} {value}"


class History:
    """An append-only list of :class:`Op` (see the module contract)."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def add(self, process: str, type: OpType, f: str, value: Any, time_s: float) -> Op:
        op = Op(len(self.ops), process, type, f, value, round(time_s, 6))
        self.ops.append(op)
        return op

    def invoke(self, process: str, f: str, value: Any, time_s: float) -> Op:
        return self.add(process, "invoke", f, value, time_s)

    def ok(self, process: str, f: str, value: Any, time_s: float) -> Op:
        return self.add(process, "ok", f, value, time_s)

    def fail(self, process: str, f: str, value: Any, time_s: float) -> Op:
        return self.add(process, "fail", f, value, time_s)

    def info(self, process: str, f: str, value: Any, time_s: float) -> Op:
        return self.add(process, "info", f, value, time_s)

    def pairs(self, f: str) -> list[tuple[Op, Op | None]]:
        """Every ``invoke`` of ``f`` with its completion (None if it never completed). A
        process has one operation of a given ``f`` open at a time, except ``send`` and
        ``probe``, whose completions carry their Send: ``(send, ack_or_error)``."""
        out: list[tuple[Op, Op | None]] = []
        open_by_key: dict[Any, int] = {}
        for op in self.ops:
            if op.f != f:
                continue
            key = (op.process, _pair_key(op))
            if op.type == "invoke":
                open_by_key[key] = len(out)
                out.append((op, None))
            else:
                at = open_by_key.pop(key, None)
                if at is not None:
                    out[at] = (out[at][0], op)
        return out

    def digest(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        for op in self.ops:
            h.update(repr((op.process, op.type, op.f, op.value, op.time_s)).encode())
        return h.hexdigest()

    def dump(self, limit: int | None = None) -> str:
        ops = self.ops if limit is None else self.ops[-limit:]
        return "\n".join(str(op) for op in ops)


def _pair_key(op: Op) -> Any:
    # Sends of one producer overlap (pipelining), and so do probes: a completion names its
    # Send in ``value`` as (send, ack_or_error); every other f has one open op per process.
    if op.f in ("send", "probe"):
        return op.value if op.type == "invoke" else op.value[0]
    return None


@dataclass(frozen=True, slots=True)
class PartitionRead:
    """The final drain read of one partition, from its log start to its high watermark."""

    topic: str
    partition: int
    log_start: int
    high_watermark: int
    records: tuple[tuple[int, bytes], ...]  # (offset, value) of every data record, in order
    complete: bool = True  # False: the read did not finish (the reason is in ``error``)
    error: str = ""


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """One replica's status of one Raft group at the end of the seed (from node.status())."""

    node_id: int
    group_id: int
    role: str
    term: int
    leader_id: int
    commit: int
    applied: int
    failed: str  # "" when healthy, else the reason
    last_index: int


@dataclass
class FinalState:
    """Facts gathered while the seed ran and at its end, for the checkers.

    - ``reads``: the final drain read of every partition of every live topic.
    - ``retention_topics``: topics configured with a retention limit (records below the log
      start may legitimately vanish).
    - ``committed_logs``: group -> node -> [(index, term, digest of data)] committed entries
      each replica still holds.
    - ``leaders``: (group, term, node) for every time a node was seen as leader of a term.
    - ``metadata_digests``: (node, applied index, digest of the metadata state).
    - ``statuses``: every replica's :class:`GroupStatus` at the end.
    - ``live_groups``: groups that must be healthy at the end (not of a deleted topic).
    - ``errors``: anything the harness itself saw go wrong (a node that would not start, a
      task that crashed): each is a violation.
    - ``liveness_bound_s``: how long after the heal a partition may take to accept a record.
    """

    reads: dict[tuple[str, int], PartitionRead] = field(default_factory=dict)
    retention_topics: set[str] = field(default_factory=set)
    committed_logs: dict[int, dict[int, list[tuple[int, int, bytes]]]] = field(default_factory=dict)
    leaders: set[tuple[int, int, int]] = field(default_factory=set)
    metadata_digests: list[tuple[int, int, bytes]] = field(default_factory=list)
    statuses: list[GroupStatus] = field(default_factory=list)
    live_groups: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    group_topics: dict[int, str] = field(default_factory=dict)  # partition group -> topic
    liveness_bound_s: float = 30.0  # a probe must be acknowledged within this (virtual) time
