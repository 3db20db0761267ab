"""Command encoding: round trips, determinism, and loud rejection of anything malformed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metadata.commands import (
    COMMAND_VERSION,
    AllocateProducerIds,
    BrokerHeartbeat,
    Command,
    CreateTopic,
    DeleteTopic,
    RegisterBroker,
    SetBrokerFenced,
    SetReplicas,
    UpdateLeader,
    decode,
    encode,
)
from metadata.errors import MalformedCommand, MetadataError

ints = st.integers(min_value=-(2**63), max_value=2**63)
texts = st.text(max_size=20)
id_tuples = st.lists(ints, max_size=6).map(tuple)

commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(RegisterBroker, ints, texts, texts, texts, ints),
    st.builds(BrokerHeartbeat, ints, ints),
    st.builds(
        CreateTopic,
        texts,
        ints,
        ints,
        st.dictionaries(texts, texts, max_size=4),
        ints,
        id_tuples,
    ),
    st.builds(DeleteTopic, texts),
    st.builds(UpdateLeader, ints, ints, ints),
    st.builds(AllocateProducerIds, ints),
    st.builds(SetReplicas, ints, id_tuples),
    st.builds(SetBrokerFenced, ints, st.booleans()),
)


@given(commands)
def test_round_trip(cmd: Command) -> None:
    decoded = decode(encode(cmd))
    assert type(decoded) is type(cmd)
    assert decoded == cmd


@given(commands)
def test_encoding_is_canonical(cmd: Command) -> None:
    data = encode(cmd)
    assert encode(decode(data)) == data
    body = json.loads(data)
    assert body["v"] == COMMAND_VERSION


def test_config_order_does_not_change_bytes() -> None:
    a = CreateTopic("t", 1, 1, {"b": "1", "a": "2"}, 5, (1,))
    b = CreateTopic("t", 1, 1, {"a": "2", "b": "1"}, 5, (1,))
    assert encode(a) == encode(b)


@given(st.binary(max_size=64))
def test_garbage_raises_malformed(data: bytes) -> None:
    # Only MalformedCommand may escape (never KeyError, TypeError, ...); anything that does
    # decode must be a real command that survives a round trip.
    try:
        cmd = decode(data)
    except MalformedCommand as exc:
        assert exc.reason
    else:
        assert decode(encode(cmd)) == cmd


def _body(**overrides: object) -> bytes:
    body: dict[str, object] = {"v": 1, "type": "broker_heartbeat", "node_id": 1, "now_ms": 2}
    body.update(overrides)
    return json.dumps({k: v for k, v in body.items() if v is not _DROP}).encode()


_DROP = object()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\xff\xfe", "UTF-8 JSON"),
        (b"not json", "UTF-8 JSON"),
        (b"[1, 2]", "JSON object"),
        (_body(v=2), "version"),
        (_body(v=True), "version"),
        (_body(v=_DROP), "version"),
        (_body(type="launch_missiles"), "unknown command type"),
        (_body(type=7), "unknown command type"),
        (_body(node_id=True), "node_id must be an integer"),
        (_body(node_id="1"), "node_id must be an integer"),
        (_body(node_id=1.0), "node_id must be an integer"),
        (_body(now_ms=_DROP), "missing fields ['now_ms']"),
        (_body(extra=1), "unexpected fields ['extra']"),
    ],
)
def test_malformed_examples(data: bytes, fragment: str) -> None:
    with pytest.raises(MalformedCommand) as info:
        decode(data)
    assert fragment in str(info.value)
    assert isinstance(info.value, MetadataError)


def test_malformed_collections() -> None:
    base = json.loads(encode(CreateTopic("t", 1, 1, {"a": "b"}, 0, (1, 2))))
    for field, value, fragment in [
        ("live_brokers", [1, "2"], "live_brokers must be an integer"),
        ("live_brokers", {"1": 1}, "must be a list"),
        ("config", {"a": 1}, "config['a'] must be a string"),
        ("config", ["a"], "must be an object"),
    ]:
        body = dict(base, **{field: value})
        with pytest.raises(MalformedCommand, match=fragment.replace("[", r"\[")):
            decode(json.dumps(body).encode())


def test_encode_rejects_non_commands() -> None:
    with pytest.raises(TypeError):
        encode("register me")  # type: ignore[arg-type]


def test_decoded_tuples_are_tuples() -> None:
    cmd = decode(encode(SetReplicas(1000, (3, 1, 2))))
    assert isinstance(cmd, SetReplicas)
    assert cmd.replicas == (3, 1, 2)
    assert isinstance(cmd.replicas, tuple)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(
    st.sampled_from(
        [
            "register_broker",
            "broker_heartbeat",
            "create_topic",
            "delete_topic",
            "update_leader",
            "allocate_producer_ids",
            "set_replicas",
            "set_broker_fenced",
        ]
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "node_id",
                "address",
                "now_ms",
                "name",
                "partitions",
                "config",
                "live_brokers",
                "group_id",
                "leader",
                "term",
                "count",
                "replicas",
                "dc",
                "rack",
                "replication_factor",
                "fenced",
            ]
        ),
        json_values,
    ),
)
def test_json_shaped_garbage_raises_only_malformed(tag: str, fields: dict[str, object]) -> None:
    data = json.dumps({"v": 1, "type": tag, **fields}).encode()
    try:
        cmd = decode(data)
    except MalformedCommand:
        return
    assert decode(encode(cmd)) == cmd


def test_set_broker_fenced_needs_a_real_boolean() -> None:
    assert decode(encode(SetBrokerFenced(3, True))) == SetBrokerFenced(3, True)
    bad = json.dumps({"v": 1, "type": "set_broker_fenced", "node_id": 3, "fenced": 1}).encode()
    with pytest.raises(MalformedCommand, match="fenced must be true or false"):
        decode(bad)
