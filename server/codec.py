"""Conversion between the Raft core's message values and the wire's RaftMessage.

Owns nothing else. Entries' data bytes are passed through untouched (a record batch stays the same
bytes object from the wire to the log), so the only per-entry cost is one small protobuf object.
"""

from __future__ import annotations

from raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from wire import replog_pb2 as pb

_ENTRY_TYPES = {t.value: t for t in EntryType}
_MESSAGE_TYPES = {t.value: t for t in MessageType}


class MalformedPeerMessage(ValueError):
    """A peer sent a RaftMessage this broker cannot interpret (refused, never applied)."""


def message_to_proto(group_id: int, msg: Message) -> pb.RaftMessage:
    out = pb.RaftMessage(
        group_id=group_id,
        type=int(msg.type),
        to=msg.to,
        term=msg.term,
        log_term=msg.log_term,
        index=msg.index,
        commit=msg.commit,
        reject=msg.reject,
        reject_hint=msg.reject_hint,
        context=msg.context,
    )
    setattr(out, "from", msg.from_)  # `from` is a Python keyword
    if msg.entries:
        out.entries.extend(
            pb.RaftEntry(index=e.index, term=e.term, type=int(e.type), data=e.data)
            for e in msg.entries
        )
    snap = msg.snapshot
    if snap is not None:
        md = snap.metadata
        out.snapshot.CopyFrom(
            pb.RaftSnapshot(
                index=md.index,
                term=md.term,
                voters=sorted(md.conf_state.voters),
                learners=sorted(md.conf_state.learners),
                data=snap.data,
            )
        )
    return out


def message_from_proto(m: pb.RaftMessage) -> Message:
    mtype = _MESSAGE_TYPES.get(m.type)
    if mtype is None:
        raise MalformedPeerMessage(f"unknown raft message type {m.type}")
    try:
        entries = tuple(Entry(e.index, e.term, _ENTRY_TYPES[e.type], e.data) for e in m.entries)
    except KeyError as exc:
        raise MalformedPeerMessage(f"unknown entry type {exc.args[0]}") from None
    snapshot = None
    if m.HasField("snapshot"):
        s = m.snapshot
        snapshot = Snapshot(
            SnapshotMetadata(
                s.index, s.term, ConfState(frozenset(s.voters), frozenset(s.learners))
            ),
            s.data,
        )
    return Message(
        type=mtype,
        to=m.to,
        from_=getattr(m, "from"),
        term=m.term,
        log_term=m.log_term,
        index=m.index,
        entries=entries,
        commit=m.commit,
        reject=m.reject,
        reject_hint=m.reject_hint,
        snapshot=snapshot,
        context=m.context,
    )
