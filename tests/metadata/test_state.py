"""The metadata state machine: every command, every rejection, determinism, snapshots."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metadata.commands import (
    AllocateProducerIds,
    BrokerHeartbeat,
    Command,
    CreateTopic,
    DeleteTopic,
    RegisterBroker,
    SetReplicas,
    UpdateLeader,
    encode,
)
from metadata.errors import (
    InvalidBroker,
    InvalidLeader,
    InvalidPartitionCount,
    InvalidProducerIdCount,
    InvalidReplicas,
    InvalidReplicationFactor,
    InvalidTopicConfig,
    InvalidTopicName,
    MalformedCommand,
    MalformedSnapshot,
    MetadataError,
    MetadataInvariantViolation,
    NotEnoughBrokers,
    TopicExists,
    UnknownBroker,
    UnknownPartitionGroup,
    UnknownTopic,
)
from metadata.state import Broker, MetadataState, PartitionAssignment, Topic


class Driver:
    """Feeds commands to a state with increasing indexes, as the runtime does."""

    def __init__(self, state: MetadataState | None = None) -> None:
        self.state = state or MetadataState()

    def run(self, cmd: Command) -> object:
        return self.state.apply(self.state.applied_index + 1, encode(cmd))

    def cluster(self, dcs: Sequence[str] = ("a", "b", "c"), per_dc: int = 1) -> list[int]:
        node_id = 0
        for dc in dcs:
            for i in range(per_dc):
                node_id += 1
                self.run(RegisterBroker(node_id, f"h{node_id}:9092", dc, f"r{i}", 1_000))
        return list(range(1, node_id + 1))


def create(
    name: str = "orders", partitions: int = 3, rf: int = 3, config: dict[str, str] | None = None
) -> CreateTopic:
    return CreateTopic(name, partitions, rf, config or {}, 5_000, (1, 2, 3))


@pytest.fixture
def d() -> Driver:
    driver = Driver()
    driver.cluster()
    return driver


# -- brokers -----------------------------------------------------------------------------------


def test_register_and_heartbeat(d: Driver) -> None:
    assert d.state.brokers[1] == Broker(1, "h1:9092", "a", "r0", 1_000, 1_000)
    broker = d.run(BrokerHeartbeat(1, 4_000))
    assert broker == Broker(1, "h1:9092", "a", "r0", 1_000, 4_000)
    # liveness never moves backwards (proposers' clocks differ)
    d.run(BrokerHeartbeat(1, 3_000))
    assert d.state.brokers[1].last_heartbeat_ms == 4_000
    assert d.state.live_brokers(now_ms=5_000, timeout_ms=1_000) == [1]
    assert d.state.live_brokers(now_ms=5_000, timeout_ms=4_000) == [1, 2, 3]
    assert d.state.live_brokers(now_ms=5_001, timeout_ms=1_000) == []


def test_reregistration_keeps_first_registration_time(d: Driver) -> None:
    layout = d.state.layout_version
    d.run(RegisterBroker(2, "h2:9092", "b", "r0", 9_000))  # a plain restart
    assert d.state.brokers[2] == Broker(2, "h2:9092", "b", "r0", 1_000, 9_000)
    assert d.state.layout_version == layout
    d.run(RegisterBroker(2, "new:9092", "b", "r0", 9_500))  # moved
    assert d.state.brokers[2].address == "new:9092"
    assert d.state.layout_version == layout + 1


def test_broker_errors(d: Driver) -> None:
    with pytest.raises(UnknownBroker) as info:
        d.run(BrokerHeartbeat(9, 1))
    assert info.value.node_id == 9
    with pytest.raises(InvalidBroker):
        d.run(RegisterBroker(0, "h:1", "a", "r", 1))
    with pytest.raises(InvalidBroker):
        d.run(RegisterBroker(4, "", "a", "r", 1))


# -- topics ------------------------------------------------------------------------------------


def test_create_topic_places_and_numbers_groups(d: Driver) -> None:
    topic = d.run(create(partitions=3, rf=3, config={"retention.ms": "-1"}))
    assert isinstance(topic, Topic)
    assert d.state.topic("orders") == topic
    assert topic.topic_id == 1
    assert dict(topic.config) == {"retention.ms": "-1"}
    assert topic.created_ms == 5_000
    assert [a.group_id for a in topic.assignments] == [1000, 1001, 1002]
    assert [a.partition for a in topic.assignments] == [0, 1, 2]
    for a in topic.assignments:
        assert sorted(a.replicas) == [1, 2, 3]
        assert (a.leader, a.leader_term) == (0, 0)
        assert d.state.assignment(a.group_id) == a
    # preferred leaders rotate over the three brokers
    assert sorted(a.replicas[0] for a in topic.assignments) == [1, 2, 3]
    second = d.run(create("payments", partitions=2, rf=1))
    assert isinstance(second, Topic)
    assert second.topic_id == 2
    assert [a.group_id for a in second.assignments] == [1003, 1004]


def test_create_topic_uses_only_named_live_brokers() -> None:
    d = Driver()
    d.cluster(per_dc=2)  # brokers 1..6
    topic = d.run(CreateTopic("t", 6, 2, {}, 0, (1, 3, 5, 5)))
    assert isinstance(topic, Topic)
    assert {n for a in topic.assignments for n in a.replicas} <= {1, 3, 5}


def test_placement_accounts_for_existing_load() -> None:
    d = Driver()
    d.cluster(dcs=("a",), per_dc=4)
    d.run(CreateTopic("one", 2, 1, {}, 0, (1, 2)))  # brokers 1 and 2 now host one each
    topic = d.run(CreateTopic("two", 2, 1, {}, 0, (1, 2, 3, 4)))
    assert isinstance(topic, Topic)
    assert sorted(a.replicas[0] for a in topic.assignments) == [3, 4]


def test_assignments_for_and_all_assignments() -> None:
    d = Driver()
    d.cluster(dcs=("a",), per_dc=4)
    d.run(CreateTopic("t", 4, 2, {}, 0, (1, 2, 3, 4)))
    hosted = {n: d.state.assignments_for(n) for n in range(1, 5)}
    assert sum(len(v) for v in hosted.values()) == 8
    for n, assignments in hosted.items():
        assert all(n in a.replicas for a in assignments)
        assert [a.group_id for a in assignments] == sorted(a.group_id for a in assignments)
    assert d.state.assignments_for(99) == []
    assert [a.group_id for a in d.state.all_assignments()] == [1000, 1001, 1002, 1003]


def test_delete_topic(d: Driver) -> None:
    topic = d.run(create())
    assert isinstance(topic, Topic)
    deleted = d.run(DeleteTopic("orders"))
    assert deleted == topic
    assert "orders" not in d.state.topics
    with pytest.raises(UnknownPartitionGroup):
        d.state.assignment(1000)
    assert d.state.assignments_for(1) == []
    # group ids are never reused
    again = d.run(create())
    assert isinstance(again, Topic)
    assert again.assignments[0].group_id == 1003
    assert again.topic_id == 2


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "empty"),
        (".", "not allowed"),
        ("..", "not allowed"),
        ("a" * 250, "limit is 249"),
        ("has space", "not allowed"),
        ("ünïcode", "not allowed"),
        ("a/b", "not allowed"),
        ("__consumer_offsets", "reserved"),
    ],
)
def test_invalid_topic_names(d: Driver, name: str, fragment: str) -> None:
    with pytest.raises(InvalidTopicName) as info:
        d.run(create(name))
    assert info.value.name == name
    assert fragment in info.value.reason


@pytest.mark.parametrize("name", ["a", "A-z_0.9", "a" * 249, "...", "_x", "-"])
def test_valid_topic_names(d: Driver, name: str) -> None:
    assert isinstance(d.run(create(name, partitions=1, rf=1)), Topic)


def test_internal_topics_need_the_internal_flag(d: Driver) -> None:
    topic = d.run(create("__consumer_offsets", partitions=1, rf=3, config={"internal": "true"}))
    assert isinstance(topic, Topic)
    assert topic.internal
    assert not d.run(create("plain", partitions=1, rf=1)).internal  # type: ignore[attr-defined]
    with pytest.raises(InvalidTopicName):
        d.run(create("__x", config={"internal": "false"}))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("retention.ms", "-2"),
        ("retention.ms", "1.5"),
        ("retention.ms", "ten"),
        ("retention.bytes", "-5"),
        ("segment.bytes", str(1024 * 1024 - 1)),
        ("max.message.bytes", "60"),
        ("max.message.bytes", str(8 * 1024 * 1024 + 1)),
        ("retention.ms", "1_000"),
        ("retention.ms", " 5"),
        ("message.timestamp.after.max.ms", "-2"),
        ("cleanup.policy", "compact,delete"),
        ("internal", "yes"),
        ("retention.hours", "1"),
    ],
)
def test_invalid_topic_config(d: Driver, key: str, value: str) -> None:
    with pytest.raises(InvalidTopicConfig) as info:
        d.run(create(config={key: value}))
    assert (info.value.key, info.value.value) == (key, value)
    assert info.value.hint
    assert "orders" not in d.state.topics


def test_valid_topic_config(d: Driver) -> None:
    config = {
        "retention.ms": "-1",
        "retention.bytes": "0",
        "segment.bytes": str(1024 * 1024),
        "max.message.bytes": "1024",
        "cleanup.policy": "compact",
    }
    topic = d.run(create(config=config))
    assert isinstance(topic, Topic)
    assert dict(topic.config) == config
    with pytest.raises(TypeError):
        topic.config["retention.ms"] = "5"  # type: ignore[index]


def test_create_topic_errors(d: Driver) -> None:
    d.run(create())
    with pytest.raises(TopicExists) as exists:
        d.run(create())
    assert exists.value.name == "orders"
    with pytest.raises(InvalidPartitionCount) as count:
        d.run(create("x", partitions=0))
    assert count.value.count == 0
    with pytest.raises(InvalidPartitionCount):
        d.run(create("x", partitions=10_001))
    with pytest.raises(InvalidReplicationFactor) as rf:
        d.run(create("x", rf=0))
    assert rf.value.rf == 0
    with pytest.raises(NotEnoughBrokers) as nb:
        d.run(CreateTopic("x", 1, 3, {}, 0, (1, 2)))
    assert (nb.value.needed, nb.value.available) == (3, 2)
    with pytest.raises(NotEnoughBrokers):
        d.run(CreateTopic("x", 1, 2, {}, 0, (1, 1)))  # duplicates do not count twice
    with pytest.raises(UnknownBroker) as ub:
        d.run(CreateTopic("x", 1, 1, {}, 0, (1, 42)))
    assert ub.value.node_id == 42


def test_unknown_topic_lists_known_names(d: Driver) -> None:
    d.run(create())
    with pytest.raises(UnknownTopic) as info:
        d.state.topic("order")
    assert info.value.known == ("orders",)
    assert "'orders'" in str(info.value)
    with pytest.raises(UnknownTopic):
        d.run(DeleteTopic("order"))


# -- leaders, replicas, producer ids -----------------------------------------------------------


def test_update_leader_keeps_the_highest_term(d: Driver) -> None:
    d.run(create())
    a = d.run(UpdateLeader(1000, 2, 5))
    assert isinstance(a, PartitionAssignment)
    assert (a.leader, a.leader_term) == (2, 5)
    assert d.state.topic("orders").assignments[0] == a
    version = d.state.version
    stale = d.run(UpdateLeader(1000, 3, 4))
    assert stale == a
    assert d.state.version == version  # a stale report changes nothing
    newer = d.run(UpdateLeader(1000, 3, 6))
    assert isinstance(newer, PartitionAssignment)
    assert (newer.leader, newer.leader_term) == (3, 6)
    assert d.state.assignment(1001).leader == 0  # other partitions untouched


def test_update_leader_errors(d: Driver) -> None:
    d.run(create())
    with pytest.raises(UnknownPartitionGroup) as info:
        d.run(UpdateLeader(5, 1, 1))
    assert info.value.group_id == 5
    with pytest.raises(InvalidLeader):
        d.run(UpdateLeader(1000, -1, 1))
    with pytest.raises(InvalidLeader):
        d.run(UpdateLeader(1000, 1, -1))


def test_set_replicas(d: Driver) -> None:
    d.run(create(rf=2))
    d.run(UpdateLeader(1000, d.state.assignment(1000).replicas[0], 3))
    a = d.run(SetReplicas(1000, (3, 2, 1)))
    assert isinstance(a, PartitionAssignment)
    assert a.replicas == (3, 2, 1)
    assert a.leader_term == 3  # the last reported leader stands until the group reports again
    assert d.state.assignments_for(3)[0].group_id == 1000
    for bad, error in [
        ((), InvalidReplicas),
        ((1, 1), InvalidReplicas),
        ((1, 77), UnknownBroker),
    ]:
        with pytest.raises(error):
            d.run(SetReplicas(1000, bad))
    with pytest.raises(UnknownPartitionGroup):
        d.run(SetReplicas(1, (1,)))


def test_allocate_producer_ids(d: Driver) -> None:
    assert d.run(AllocateProducerIds(10)) == 1
    assert d.run(AllocateProducerIds(5)) == 11
    assert d.run(AllocateProducerIds(1)) == 16
    for bad in (0, -3, 1_000_001):
        with pytest.raises(InvalidProducerIdCount) as info:
            d.run(AllocateProducerIds(bad))
        assert info.value.count == bad
    assert d.run(AllocateProducerIds(1)) == 17


# -- apply contract ----------------------------------------------------------------------------


def test_rejection_changes_nothing_but_applied_index(d: Driver) -> None:
    d.run(create())
    before = json.loads(d.state.snapshot())
    rejected: list[Command] = [
        create(),
        create("__x"),
        create("y", rf=9),
        CreateTopic("y", 1, 1, {}, 0, (7,)),
        DeleteTopic("nope"),
        BrokerHeartbeat(8, 1),
        UpdateLeader(9, 1, 1),
        SetReplicas(1000, (1, 1)),
        AllocateProducerIds(0),
    ]
    for cmd in rejected:
        with pytest.raises(MetadataError):
            d.run(cmd)
    with pytest.raises(MalformedCommand):
        d.state.apply(d.state.applied_index + 1, b"{garbage")
    after = json.loads(d.state.snapshot())
    assert after.pop("applied_index") == before.pop("applied_index") + len(rejected) + 1
    assert after == before


def test_empty_entry_is_a_noop_that_advances_the_index(d: Driver) -> None:
    version = d.state.version
    assert d.state.apply(100, b"") is None
    assert d.state.applied_index == 100
    assert d.state.version == version


def test_reapplying_an_index_is_an_invariant_violation(d: Driver) -> None:
    index = d.state.applied_index
    with pytest.raises(MetadataInvariantViolation):
        d.state.apply(index, encode(BrokerHeartbeat(1, 1)))
    assert not issubclass(MetadataInvariantViolation, MetadataError)


def test_versions(d: Driver) -> None:
    v, layout = d.state.version, d.state.layout_version
    d.run(BrokerHeartbeat(1, 2_000))
    d.run(AllocateProducerIds(1))
    assert (d.state.version, d.state.layout_version) == (v + 2, layout)
    d.run(create())
    d.run(UpdateLeader(1000, 1, 1))
    assert (d.state.version, d.state.layout_version) == (v + 4, layout + 1)
    d.run(SetReplicas(1000, (1,)))
    d.run(DeleteTopic("orders"))
    assert (d.state.version, d.state.layout_version) == (v + 6, layout + 3)


def test_read_views_are_read_only(d: Driver) -> None:
    with pytest.raises(TypeError):
        d.state.brokers[5] = d.state.brokers[1]  # type: ignore[index]
    with pytest.raises(TypeError):
        d.state.topics["x"] = None  # type: ignore[index]


# -- snapshots ---------------------------------------------------------------------------------


def test_snapshot_round_trip(d: Driver) -> None:
    d.run(create(config={"cleanup.policy": "compact"}))
    d.run(create("__consumer_offsets", partitions=2, rf=3, config={"internal": "true"}))
    d.run(UpdateLeader(1001, 2, 7))
    d.run(AllocateProducerIds(50))
    data = d.state.snapshot()
    restored = MetadataState.restore(data)
    assert restored.snapshot() == data
    assert restored.topics == d.state.topics
    assert restored.brokers == d.state.brokers
    assert restored.assignment(1001) == d.state.assignment(1001)
    assert (restored.applied_index, restored.version, restored.layout_version) == (
        d.state.applied_index,
        d.state.version,
        d.state.layout_version,
    )
    # the restored state keeps going exactly like the original
    for state in (restored, d.state):
        Driver(state).run(create("later", partitions=2, rf=2))
        assert Driver(state).run(AllocateProducerIds(1)) == 51
    assert restored.snapshot() == d.state.snapshot()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"[]",
        b'{"v": 2}',
        b'{"v": 1}',
        json.dumps(
            {
                "v": 1,
                "applied_index": 1,
                "version": 1,
                "layout_version": 1,
                "next_topic_id": 1,
                "next_group_id": 1000,
                "next_producer_id": 1,
                "brokers": [[1, "h", "a", "r", 0, "late"]],
                "topics": [],
            }
        ).encode(),
    ],
)
def test_restore_rejects_garbage(data: bytes) -> None:
    with pytest.raises(MalformedSnapshot):
        MetadataState.restore(data)


def test_restore_rejects_inconsistent_topics(d: Driver) -> None:
    d.run(create())
    body = json.loads(d.state.snapshot())
    body["topics"][0]["partitions"] = 4
    with pytest.raises(MalformedSnapshot, match="4 partitions but 3"):
        MetadataState.restore(json.dumps(body).encode())
    body["topics"][0]["partitions"] = 3
    body["topics"][0]["assignments"][1][0] = 1000
    with pytest.raises(MalformedSnapshot, match="assigned twice"):
        MetadataState.restore(json.dumps(body).encode())


# -- determinism (hypothesis) ------------------------------------------------------------------

node_ids = st.integers(min_value=0, max_value=6)
topic_names = st.sampled_from(["a", "b", "c", "__i", "bad name"])
configs = st.sampled_from(
    [{}, {"internal": "true"}, {"retention.ms": "-1"}, {"cleanup.policy": "nope"}]
)
random_commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(
        RegisterBroker,
        node_ids,
        st.sampled_from(["h:1", "h:2", ""]),
        st.sampled_from(["dc1", "dc2", "dc3"]),
        st.sampled_from(["r1", "r2"]),
        st.integers(0, 10_000),
    ),
    st.builds(BrokerHeartbeat, node_ids, st.integers(0, 10_000)),
    st.builds(
        CreateTopic,
        topic_names,
        st.integers(0, 6),
        st.integers(0, 4),
        configs,
        st.integers(0, 10_000),
        st.lists(node_ids, max_size=6).map(tuple),
    ),
    st.builds(DeleteTopic, topic_names),
    st.builds(UpdateLeader, st.integers(998, 1012), node_ids, st.integers(-1, 5)),
    st.builds(AllocateProducerIds, st.integers(-1, 100)),
    st.builds(SetReplicas, st.integers(998, 1012), st.lists(node_ids, max_size=4).map(tuple)),
)


def apply_all(state: MetadataState, commands: Sequence[Command], first_index: int) -> list[str]:
    outcomes = []
    for i, cmd in enumerate(commands):
        try:
            outcomes.append(repr(state.apply(first_index + i, encode(cmd))))
        except MetadataError as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
    return outcomes


@settings(max_examples=150, deadline=None)
@given(st.lists(random_commands, max_size=40), st.data())
def test_apply_is_deterministic_and_snapshots_resume(
    commands: list[Command], data: st.DataObject
) -> None:
    one, two = MetadataState(), MetadataState()
    outcomes_one = apply_all(one, commands, 1)
    outcomes_two = apply_all(two, commands, 1)
    assert outcomes_one == outcomes_two
    assert one.snapshot() == two.snapshot()

    # A replica that installs a snapshot midway and applies the rest ends identical.
    cut = data.draw(st.integers(0, len(commands)))
    prefix = MetadataState()
    apply_all(prefix, commands[:cut], 1)
    resumed = MetadataState.restore(prefix.snapshot())
    assert apply_all(resumed, commands[cut:], cut + 1) == outcomes_one[cut:]
    assert resumed.snapshot() == one.snapshot()

    # Invariants of the resulting state.
    groups = [a.group_id for t in one.topics.values() for a in t.assignments]
    assert len(groups) == len(set(groups))
    assert all(g >= 1000 and g < one.next_group_id for g in groups)
    for topic in one.topics.values():
        assert len(topic.assignments) == topic.partitions
        for a in topic.assignments:
            assert a.topic == topic.name
            assert len(set(a.replicas)) == len(a.replicas) > 0
            assert set(a.replicas) <= set(one.brokers)
