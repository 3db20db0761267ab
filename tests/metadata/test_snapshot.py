"""MetadataState.snapshot() / restore(): every field round-trips, and the future is the same."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from metadata.commands import (
    AllocateProducerIds,
    BrokerHeartbeat,
    Command,
    CreateTopic,
    DeleteTopic,
    RegisterBroker,
    SetBrokerFenced,
    SetReplicas,
    UpdateLeader,
    encode,
)
from metadata.errors import MetadataError
from metadata.state import MetadataState

node_ids = st.integers(0, 6)
names = st.sampled_from(["a", "b", "c", "a", "b", "__i", "bad name"])
group_ids = st.integers(999, 1012)
config = st.sampled_from(
    [{}, {"retention.ms": "0"}, {"internal": "true"}, {"max.message.bytes": "1"}]
)

commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(
        RegisterBroker,
        node_ids,
        st.sampled_from(["h:1", "h:2", ""]),
        st.sampled_from(["dc1", "dc2", "dc3"]),
        st.sampled_from(["r1", "r2"]),
        st.integers(0, 10**13),
    ),
    st.builds(BrokerHeartbeat, node_ids, st.integers(0, 10**13)),
    st.builds(SetBrokerFenced, node_ids, st.booleans()),
    st.builds(
        CreateTopic,
        names,
        st.integers(0, 4),
        st.integers(0, 3),
        config,
        st.integers(0, 10**13),
        st.lists(st.integers(1, 6), min_size=2, max_size=6).map(tuple),
    ),
    st.builds(
        CreateTopic,
        st.sampled_from(["a", "b", "c"]),
        st.integers(1, 3),
        st.integers(1, 3),
        st.just({}),
        st.integers(0, 10**13),
        st.just((1, 2, 3, 4, 5, 6)),
    ),
    st.builds(DeleteTopic, names),
    st.builds(UpdateLeader, group_ids, node_ids, st.integers(-1, 5)),
    st.builds(AllocateProducerIds, st.integers(0, 50)),
    st.builds(SetReplicas, group_ids, st.lists(node_ids, max_size=4).map(tuple)),
)
CLUSTER = [encode(RegisterBroker(n, f"h:{n}", f"dc{n % 3}", "r", 1)) for n in range(1, 7)]
entries = st.lists(st.one_of(commands.map(encode), st.just(b"")), max_size=40)


def apply_all(state: MetadataState, data: list[bytes]) -> list[object]:
    out: list[object] = []
    for d in data:
        try:
            out.append(state.apply(state.applied_index + 1, d))
        except MetadataError as e:
            out.append((type(e).__name__, str(e)))
    return out


def observable(state: MetadataState) -> tuple[object, ...]:
    return (
        state.applied_index,
        state.version,
        state.layout_version,
        state.next_topic_id,
        state.next_group_id,
        state.next_producer_id,
        dict(state.brokers),
        {name: (t, dict(t.config)) for name, t in state.topics.items()},
        state.all_assignments(),
        {n: state.assignments_for(n) for n in range(7)},
        state.live_brokers(),
        state.replica_load(),
    )


@settings(max_examples=150, deadline=None)
@given(before=entries, after=entries)
def test_snapshot_restore_keeps_every_field_and_the_same_future(
    before: list[bytes], after: list[bytes]
) -> None:
    """Restore(snapshot) equals the state, and both answer every later command alike: next
    topic, group and producer ids, fenced flags, leaders, replica sets, versions."""
    original = MetadataState()
    apply_all(original, [*CLUSTER, *before])
    data = original.snapshot()
    restored = MetadataState.restore(data)
    assert observable(restored) == observable(original)
    assert restored.snapshot() == data
    # the future: the same commands give the same results and the same state
    after = [
        *after,
        encode(AllocateProducerIds(3)),
        encode(CreateTopic("z", 2, 1, {}, 7, (1, 2, 3, 4, 5, 6))),
    ]
    assert apply_all(restored, after) == apply_all(original, after)
    assert observable(restored) == observable(original)
    assert restored.snapshot() == original.snapshot()
