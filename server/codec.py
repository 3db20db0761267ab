"""Conversion between the Raft core's message values and the wire's RaftMessage.

Owns nothing else. Entries' data bytes are passed through untouched (a record batch stays the same
bytes object from the wire to the log), so the only per-entry cost is one small protobuf object.
"""

from __future__ import annotations

from collections.abc import Callable

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


# Upper bounds of a RaftMessage's encoding, so the transport can bound batches without
# building the message (it is built once, straight into the outgoing RaftBatch, at send time):
# every scalar field with its tag at most 11 bytes (a 10-byte uint64 varint), the context's tag
# and length prefix 6, and per entry its tag and length prefix (6) plus index, term, type and
# the data's tag and length prefix (11 + 11 + 6 + 6).
MESSAGE_BOUND_BYTES = 8 * 11 + 6 + 2 + 6  # 8 uint64 fields, type, reject, context's prefix
ENTRY_BOUND_BYTES = 6 + 11 + 11 + 6 + 6


def message_size_bound(msg: Message) -> int:
    """At least the encoded size of ``message_to_proto(group_id, msg)`` for any group id, for a
    message without a snapshot (the transport measures snapshot messages exactly)."""
    size = MESSAGE_BOUND_BYTES + len(msg.context)
    for e in msg.entries:
        size += ENTRY_BOUND_BYTES + len(e.data)
    return size


def message_to_proto(group_id: int, msg: Message) -> pb.RaftMessage:
    return build_message(pb.RaftMessage, group_id, msg)


def build_message(
    factory: Callable[..., pb.RaftMessage], group_id: int, msg: Message
) -> pb.RaftMessage:
    """``msg`` as a RaftMessage made by ``factory``: ``pb.RaftMessage`` for a message of its own,
    or a batch's ``messages.add``, which builds it in place: one copy of each entry's data
    instead of two (the copy into a batch costs ~50 us per 256 KiB entry, see
    docs/benchmarks.md)."""
    out = factory(
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
        add = out.entries.add
        for e in msg.entries:
            add(index=e.index, term=e.term, type=int(e.type), data=e.data)
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
