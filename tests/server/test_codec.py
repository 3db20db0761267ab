"""server/codec.py: Raft messages to and from the wire, and the size bound the transport uses.

The transport bounds its batches (and refuses messages that could never pass the link) with
``message_size_bound`` instead of encoding each message (#12 defect 14's bounds, kept cheap):
if the bound were ever below the real size, a batch could exceed ``max_batch_bytes`` and, near
the gRPC limit, a message the link refuses would take a whole batch down with it.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from raft.types import Entry, EntryType, Message, MessageType
from server.codec import build_message, message_from_proto, message_size_bound, message_to_proto
from wire import replog_pb2 as pb

U64 = st.integers(0, 2**64 - 1)
entries = st.lists(
    st.builds(
        Entry,
        index=U64,
        term=U64,
        type=st.sampled_from(list(EntryType)),
        data=st.binary(max_size=300),
    ),
    max_size=8,
).map(tuple)
messages = st.builds(
    Message,
    type=st.sampled_from(
        [t for t in MessageType if t not in (MessageType.SNAPSHOT, MessageType.SNAPSHOT_STATUS)]
    ),
    to=U64,
    from_=U64,
    term=U64,
    log_term=U64,
    index=U64,
    entries=entries,
    commit=U64,
    reject=st.booleans(),
    reject_hint=U64,
    context=st.binary(max_size=300),
)


MAX = 2**64 - 1
# Every field at its widest: the case random draws rarely reach, where the bound is tightest.
WIDEST = Message(
    MessageType.APP,
    to=MAX,
    from_=MAX,
    term=MAX,
    log_term=MAX,
    index=MAX,
    entries=tuple(Entry(MAX, MAX, EntryType.CONF_CHANGE, b"x" * 300) for _ in range(8)),
    commit=MAX,
    reject=True,
    reject_hint=MAX,
    context=b"c" * 300,
)


@given(group_id=U64, msg=messages)
@example(group_id=MAX, msg=WIDEST)
def test_size_bound_is_never_below_the_encoded_size(group_id: int, msg: Message) -> None:
    encoded = message_to_proto(group_id, msg).ByteSize()
    assert encoded <= message_size_bound(msg)


@given(group_id=U64, msg=messages)
def test_built_in_place_equals_built_alone_and_round_trips(group_id: int, msg: Message) -> None:
    alone = message_to_proto(group_id, msg)
    batch = pb.RaftBatch()
    build_message(batch.messages.add, group_id, msg)
    assert batch.messages[0] == alone
    back = pb.RaftBatch.FromString(batch.SerializeToString()).messages[0]
    assert back.group_id == group_id
    assert message_from_proto(back) == msg
