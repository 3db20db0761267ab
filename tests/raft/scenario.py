"""Scenario scripts for the Raft core: a small datadriven format in the style of etcd-raft.

Contract: a script is a list of cases; each case is a command line, ``----``, and the
expected output, then a blank line. Lines starting with ``#`` before a command are comments
and are kept on rewrite. :func:`run_script` executes every command against an in-memory
cluster of ``RawNode`` s over ``MemoryStorage`` and returns the script text with the *actual*
outputs; the test compares it with the file (``pytest --rewrite`` writes it back, so a
reviewer reads the diff). Rendered output never contains blank lines (an empty output is
rendered as ``ok``), so the format stays unambiguous.

Persistence here is synchronous: ``process-ready`` writes the Ready into storage and calls
``advance`` at once, so a crashed node keeps everything it processed. Messages go into one
in-flight queue that ``deliver-msgs`` drains (honouring ``partition`` and ``drop=``).
Determinism: node N's core gets ``random.Random(N)``.

Commands: add-nodes, campaign, propose, tick, tick-election, tick-heartbeat, deliver-msgs,
process-ready, stabilize, partition, heal, raft-log, status, transfer-leadership,
propose-conf-change, read-index, compact, crash, restart, log-level.
"""

from __future__ import annotations

import random
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raft.config import RaftConfig
from raft.errors import RaftError
from raft.memory import MemoryStorage
from raft.rawnode import RawNode
from raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    Role,
)

MSG_NAMES = {
    MessageType.APP: "MsgApp",
    MessageType.APP_RESP: "MsgAppResp",
    MessageType.VOTE: "MsgVote",
    MessageType.VOTE_RESP: "MsgVoteResp",
    MessageType.PRE_VOTE: "MsgPreVote",
    MessageType.PRE_VOTE_RESP: "MsgPreVoteResp",
    MessageType.HEARTBEAT: "MsgHeartbeat",
    MessageType.HEARTBEAT_RESP: "MsgHeartbeatResp",
    MessageType.SNAPSHOT: "MsgSnap",
    MessageType.SNAPSHOT_STATUS: "MsgSnapStatus",
    MessageType.TIMEOUT_NOW: "MsgTimeoutNow",
    MessageType.READ_INDEX: "MsgReadIndex",
    MessageType.READ_INDEX_RESP: "MsgReadIndexResp",
    MessageType.TRANSFER_LEADER: "MsgTransferLeader",
    MessageType.UNREACHABLE: "MsgUnreachable",
}
CC_NAMES = {
    ConfChangeType.ADD_LEARNER: "AddLearner",
    ConfChangeType.ADD_VOTER: "AddVoter",
    ConfChangeType.REMOVE_NODE: "RemoveNode",
}
CC_ARGS = {
    "add-learner": ConfChangeType.ADD_LEARNER,
    "add-voter": ConfChangeType.ADD_VOTER,
    "remove": ConfChangeType.REMOVE_NODE,
}


# -- rendering -------------------------------------------------------------------------------


def fmt_entry(e: Entry) -> str:
    if e.type == EntryType.CONF_CHANGE:
        try:
            cc = ConfChange.decode(e.data)
            return f"{e.term}/{e.index} EntryConfChange {CC_NAMES[cc.type]} {cc.node_id}"
        except ValueError:
            return f"{e.term}/{e.index} EntryConfChange {e.data!r}"
    return f'{e.term}/{e.index} EntryNormal "{e.data.decode(errors="backslashreplace")}"'


def fmt_msg(m: Message) -> str:
    s = f"{m.from_}->{m.to} {MSG_NAMES.get(m.type, str(m.type))} Term:{m.term}"
    s += f" Log:{m.log_term}/{m.index}"
    if m.commit:
        s += f" Commit:{m.commit}"
    if m.reject:
        s += f" Rejected (Hint: {m.reject_hint})"
    if m.context:
        s += f" Context:{m.context.decode(errors='backslashreplace')}"
    if m.entries:
        s += " Entries:[" + ", ".join(fmt_entry(e) for e in m.entries) + "]"
    if m.snapshot is not None and not m.snapshot.is_empty():
        md = m.snapshot.metadata
        s += f" Snapshot: Index:{md.index} Term:{md.term} {fmt_conf(md.conf_state)}"
    return s


def fmt_conf(c: ConfState) -> str:
    voters = ",".join(str(v) for v in sorted(c.voters))
    learners = ",".join(str(v) for v in sorted(c.learners))
    return f"Voters:({voters}) Learners:({learners})"


def fmt_hs(hs: HardState) -> str:
    return f"HardState Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit}"


def fmt_ready(rd: Ready) -> list[str]:
    out = [f"Ready MustSync={str(rd.must_sync).lower()}:"]
    if rd.soft_state is not None:
        out.append(f"Lead:{rd.soft_state.leader_id} State:{rd.soft_state.role.name}")
    if rd.hard_state is not None:
        out.append(fmt_hs(rd.hard_state))
    if rd.snapshot is not None and not rd.snapshot.is_empty():
        md = rd.snapshot.metadata
        out.append(f"Snapshot Index:{md.index} Term:{md.term} {fmt_conf(md.conf_state)}")
    if rd.entries:
        out.append("Entries:")
        out.extend(fmt_entry(e) for e in rd.entries)
    if rd.committed_entries:
        out.append("CommittedEntries:")
        out.extend(fmt_entry(e) for e in rd.committed_entries)
    if rd.messages:
        out.append("Messages:")
        out.extend(fmt_msg(m) for m in rd.messages)
    if rd.read_states:
        out.append("ReadStates:")
        out.extend(
            f"Index:{r.index} Context:{r.context.decode(errors='backslashreplace')}"
            for r in rd.read_states
        )
    return out


# -- parsing ---------------------------------------------------------------------------------


@dataclass
class Case:
    comments: list[str]
    command: str
    expected: str


def parse_script(text: str) -> list[Case]:
    cases: list[Case] = []
    lines = text.splitlines()
    i = 0
    comments: list[str] = []
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("#"):
            comments.append(line)
            i += 1
            continue
        command = line
        i += 1
        if i >= len(lines) or lines[i] != "----":
            raise ValueError(f"line {i + 1}: expected '----' after command {command!r}")
        i += 1
        out: list[str] = []
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        cases.append(Case(comments, command, "\n".join(out)))
        comments = []
    if comments:
        cases.append(Case(comments, "", ""))
    return cases


def render_script(cases: list[Case], outputs: list[str]) -> str:
    parts: list[str] = []
    for case, output in zip(cases, outputs, strict=True):
        block = list(case.comments)
        if case.command:
            block += [case.command, "----", output]
        parts.append("\n".join(block))
    return "\n\n".join(parts) + "\n"


def parse_ids(value: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", value)]


def parse_args(command: str) -> tuple[str, list[str], dict[str, str]]:
    # "(1 2 3)" is one argument: join the ids inside parentheses with commas.
    command = re.sub(r"\(([^)]*)\)", lambda m: "(" + ",".join(m.group(1).split()) + ")", command)
    words = shlex.split(command)
    pos: list[str] = []
    kw: dict[str, str] = {}
    for w in words[1:]:
        if "=" in w and not w.startswith("("):
            k, v = w.split("=", 1)
            kw[k] = v
        else:
            pos.append(w)
    return words[0], pos, kw


# -- the engine ------------------------------------------------------------------------------


@dataclass
class ScenarioNode:
    node_id: int
    config: RaftConfig
    storage: MemoryStorage
    raw: RawNode | None
    applied: int = 0


@dataclass
class Scenario:
    nodes: dict[int, ScenarioNode] = field(default_factory=dict)
    in_flight: list[Message] = field(default_factory=list)
    groups: list[set[int]] = field(default_factory=list)  # empty = fully connected
    out: list[str] = field(default_factory=list)
    log_events: bool = True

    # -- plumbing ---------------------------------------------------------------------

    def emit(self, line: str) -> None:
        self.out.append(line)

    def logger_for(self, node_id: int) -> Callable[..., None]:
        def log(event: str, **fields: Any) -> None:
            if self.log_events:
                fields.pop("node_id", None)
                kv = " ".join(f"{k}={_fmt_field(v)}" for k, v in fields.items())
                self.emit(f"INFO {node_id} {event}" + (f" {kv}" if kv else ""))

        return log

    def node(self, node_id: int) -> RawNode:
        n = self.nodes.get(node_id)
        if n is None or n.raw is None:
            raise ValueError(f"node {node_id} does not exist or is crashed")
        return n.raw

    def connected(self, a: int, b: int) -> bool:
        if not self.groups:
            return True
        return any(a in g and b in g for g in self.groups)

    def run(self, command: str) -> str:
        self.out = []
        name, pos, kw = parse_args(command)
        handler = getattr(self, "cmd_" + name.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {name!r}")
        try:
            handler(pos, kw)
        except RaftError as exc:
            self.emit(f"error: {type(exc).__name__}: {exc}")
        return "\n".join(self.out) if self.out else "ok"

    # -- commands ---------------------------------------------------------------------

    def cmd_add_nodes(self, pos: list[str], kw: dict[str, str]) -> None:
        count = int(pos[0])
        first = max(self.nodes, default=0) + 1
        ids = list(range(first, first + count))
        voters = frozenset(parse_ids(kw["voters"])) if "voters" in kw else frozenset(ids)
        learners = frozenset(parse_ids(kw.get("learners", "")))
        if "voters" not in kw and learners:
            voters = voters - learners
        empty = kw.get("empty", "")  # nodes that join with no configuration
        empty_ids = set(parse_ids(empty))
        for node_id in ids:
            conf = ConfState() if node_id in empty_ids else ConfState(voters, learners)
            config = RaftConfig(
                node_id=node_id,
                election_ticks=int(kw.get("election", 10)),
                heartbeat_ticks=int(kw.get("heartbeat", 1)),
                pre_vote=kw.get("prevote", "true") == "true",
                check_quorum=kw.get("checkquorum", "true") == "true",
                max_inflight_msgs=int(kw.get("inflight", 256)),
                max_size_per_msg=int(kw.get("max-msg-bytes", 1 << 20)),
            )
            storage = MemoryStorage(conf_state=conf, hard_state=HardState())
            raw = RawNode(config, storage, random.Random(node_id), self.logger_for(node_id))
            self.nodes[node_id] = ScenarioNode(node_id, config, storage, raw)
            self.emit(f"INFO {node_id} added {fmt_conf(conf)}")

    def cmd_campaign(self, pos: list[str], kw: dict[str, str]) -> None:
        self.node(int(pos[0])).campaign()

    def cmd_propose(self, pos: list[str], kw: dict[str, str]) -> None:
        index = self.node(int(pos[0])).propose(pos[1].encode())
        self.emit(f"proposed at index {index}")

    def cmd_tick(self, pos: list[str], kw: dict[str, str]) -> None:
        raw = self.node(int(pos[0]))
        for _ in range(int(pos[1]) if len(pos) > 1 else 1):
            raw.tick()

    def cmd_tick_election(self, pos: list[str], kw: dict[str, str]) -> None:
        # The randomized timeout lies in [election_ticks, 2 * election_ticks): tick past it.
        for node_id in self._ids(pos):
            n = self.nodes[node_id]
            raw = self.node(node_id)
            for _ in range(2 * n.config.election_ticks):
                raw.tick()

    def cmd_tick_heartbeat(self, pos: list[str], kw: dict[str, str]) -> None:
        for node_id in self._ids(pos):
            n = self.nodes[node_id]
            raw = self.node(node_id)
            for _ in range(n.config.heartbeat_ticks):
                raw.tick()

    def _ids(self, pos: list[str]) -> list[int]:
        if not pos or pos[0] == "all":
            return sorted(i for i, n in self.nodes.items() if n.raw is not None)
        return [int(p) for p in pos]

    def cmd_process_ready(self, pos: list[str], kw: dict[str, str]) -> None:
        for node_id in self._ids(pos):
            self.process_ready(node_id, always_print=True)

    def process_ready(self, node_id: int, always_print: bool) -> bool:
        n = self.nodes[node_id]
        raw = self.node(node_id)
        if not raw.has_ready():
            if always_print:
                self.emit(f"> {node_id} has no Ready")
            return False
        self.emit(f"> {node_id} handling Ready")
        mark = len(self.out)
        rd = raw.ready()
        lines = fmt_ready(rd)
        self.out[mark:mark] = ["  " + line for line in lines]
        # persist (synchronously), send, apply, advance
        if rd.snapshot is not None and not rd.snapshot.is_empty():
            n.storage.apply_snapshot(rd.snapshot)
            n.applied = rd.snapshot.metadata.index
        if rd.entries:
            n.storage.append(list(rd.entries))
        if rd.hard_state is not None:
            n.storage.set_hard_state(rd.hard_state)
        self.in_flight.extend(rd.messages)
        if rd.committed_entries:
            n.applied = rd.committed_entries[-1].index
        raw.advance(rd)
        return True

    def cmd_deliver_msgs(self, pos: list[str], kw: dict[str, str]) -> None:
        drop = set(parse_ids(kw.get("drop", "")))
        only = set(self._ids(pos)) if pos else None
        self.deliver(only, drop)

    def deliver(self, only: set[int] | None, drop: set[int]) -> bool:
        keep: list[Message] = []
        batch: list[Message] = []
        for m in self.in_flight:
            (batch if only is None or m.to in only else keep).append(m)
        self.in_flight = keep
        for m in batch:
            target = self.nodes.get(m.to)
            if m.to in drop or target is None or target.raw is None:
                self.emit(f"dropped: {fmt_msg(m)}")
                continue
            if not self.connected(m.from_, m.to):
                self.emit(f"dropped (partition): {fmt_msg(m)}")
                continue
            self.emit(fmt_msg(m))
            try:
                target.raw.step(m)
            except RaftError as exc:
                self.emit(f"  error: {type(exc).__name__}: {exc}")
        return bool(batch)

    def cmd_stabilize(self, pos: list[str], kw: dict[str, str]) -> None:
        ids = self._ids(pos)
        for _ in range(100):
            progressed = False
            for node_id in ids:
                if self.nodes[node_id].raw is not None:
                    progressed |= self.process_ready(node_id, always_print=False)
            live = {i for i in ids if self.nodes[i].raw is not None}
            progressed |= self.deliver(live, set())
            if not progressed:
                return
        raise AssertionError("stabilize did not converge in 100 rounds")

    def cmd_partition(self, pos: list[str], kw: dict[str, str]) -> None:
        self.groups = [set(parse_ids(p)) for p in pos]
        self.emit("partition: " + " | ".join(str(sorted(g)) for g in self.groups))

    def cmd_heal(self, pos: list[str], kw: dict[str, str]) -> None:
        self.groups = []

    def cmd_raft_log(self, pos: list[str], kw: dict[str, str]) -> None:
        s = self.nodes[int(pos[0])].storage
        first, last = s.first_index(), s.last_index()
        if first > 1:
            self.emit(f"compacted up to {first - 1} (term {s.term(first - 1)})")
        if last < first:
            self.emit("log is empty")
            return
        for e in s.entries(first, last + 1):
            self.emit(fmt_entry(e))

    def cmd_status(self, pos: list[str], kw: dict[str, str]) -> None:
        st = self.node(int(pos[0])).status()
        self.emit(
            f"{st.node_id}: term={st.term} vote={st.vote} role={Role(st.role).name} "
            f"leader={st.leader_id} commit={st.commit} applied={st.applied} "
            f"log=[{st.first_index}, {st.last_index}] {fmt_conf(st.conf_state)}"
        )
        if st.role == Role.LEADER:
            for peer, pr in sorted(st.progress.items()):
                self.emit(f"  {peer}: {_fmt_progress(pr)}")

    def cmd_transfer_leadership(self, pos: list[str], kw: dict[str, str]) -> None:
        self.node(int(kw["from"])).transfer_leadership(int(kw["to"]))

    def cmd_propose_conf_change(self, pos: list[str], kw: dict[str, str]) -> None:
        cc = ConfChange(CC_ARGS[pos[1]], int(pos[2]))
        index = self.node(int(pos[0])).propose_conf_change(cc)
        self.emit(f"proposed at index {index}")

    def cmd_read_index(self, pos: list[str], kw: dict[str, str]) -> None:
        self.node(int(pos[0])).read_index(pos[1].encode())

    def cmd_compact(self, pos: list[str], kw: dict[str, str]) -> None:
        n = self.nodes[int(pos[0])]
        index = int(pos[1])
        raw = self.node(n.node_id)
        conf = raw.status().conf_state
        n.storage.create_snapshot(index, conf, f"snap@{index}".encode())
        n.storage.compact(index)
        self.emit(f"compacted node {n.node_id} up to {index}")

    def cmd_crash(self, pos: list[str], kw: dict[str, str]) -> None:
        n = self.nodes[int(pos[0])]
        n.raw = None
        self.emit(f"node {n.node_id} crashed")

    def cmd_restart(self, pos: list[str], kw: dict[str, str]) -> None:
        n = self.nodes[int(pos[0])]
        n.raw = RawNode(n.config, n.storage, random.Random(n.node_id), self.logger_for(n.node_id))
        self.emit(f"node {n.node_id} restarted")

    def cmd_report_unreachable(self, pos: list[str], kw: dict[str, str]) -> None:
        self.node(int(pos[0])).report_unreachable(int(pos[1]))

    def cmd_report_snapshot(self, pos: list[str], kw: dict[str, str]) -> None:
        self.node(int(pos[0])).report_snapshot(int(pos[1]), pos[2] == "ok")

    def cmd_log_level(self, pos: list[str], kw: dict[str, str]) -> None:
        self.log_events = pos[0] != "none"


def _fmt_field(v: object) -> str:
    if isinstance(v, bytes):
        return v.decode(errors="backslashreplace")
    if hasattr(v, "name") and not isinstance(v, str | int):
        return str(v.name)
    if isinstance(v, Role | MessageType):
        return v.name
    return str(v)


def _fmt_progress(pr: object) -> str:
    fields = []
    for name in ("state", "match", "next_index", "next"):
        if hasattr(pr, name):
            v = getattr(pr, name)
            fields.append(f"{name}={getattr(v, 'name', v)}")
    return " ".join(fields) if fields else repr(pr)


def run_script(text: str) -> str:
    """Run a script; return its text with the actual outputs in place of the expected."""
    cases = parse_script(text)
    sc = Scenario()
    outputs: list[str] = []
    for case in cases:
        outputs.append(sc.run(case.command) if case.command else "")
    return render_script(cases, outputs)
