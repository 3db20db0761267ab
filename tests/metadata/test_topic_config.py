"""Metadata validates a topic's config with the partition's own rules (#12 defect 13/14)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metadata.commands import CreateTopic, RegisterBroker, encode
from metadata.errors import InvalidTopicConfig
from metadata.state import KNOWN_TOPIC_CONFIG_KEYS, MetadataState, validate_topic_config
from partition import MAX_MESSAGE_BYTES_LIMIT, ConfigError, PartitionState, topic_config


def cluster() -> MetadataState:
    state = MetadataState()
    for n in (1, 2, 3):
        state.apply(n, encode(RegisterBroker(n, f"h{n}:9092", "dc", "r", 1_000)))
    return state


def create(state: MetadataState, config: dict[str, str]) -> object:
    cmd = CreateTopic("orders", 1, 3, config, 5_000, (1, 2, 3))
    return state.apply(state.applied_index + 1, encode(cmd))


def test_zero_retention_is_accepted_and_the_partition_opens_with_it() -> None:
    """guards #12 defect 13: metadata accepted retention.ms=0 / retention.bytes=0 and the
    partition refused them: a topic with no leader, and brokers that could not restart."""
    state = cluster()
    config = {"retention.ms": "0", "retention.bytes": "0"}
    topic = create(state, config)
    assert "orders" in state.topics
    PartitionState(topic_config(state.topics["orders"].config))  # what a broker opens
    assert topic is state.topics["orders"]


def test_an_oversized_max_message_bytes_is_refused_at_creation() -> None:
    """guards #12 defect 14: max.message.bytes had no upper bound, so a topic could accept
    batches that never fit a transport message."""
    state = cluster()
    with pytest.raises(InvalidTopicConfig) as e:
        create(state, {"max.message.bytes": str(MAX_MESSAGE_BYTES_LIMIT + 1)})
    assert e.value.key == "max.message.bytes"
    assert "8 MiB" in e.value.hint
    assert "orders" not in state.topics
    create(state, {"max.message.bytes": str(MAX_MESSAGE_BYTES_LIMIT)})
    assert "orders" in state.topics


values = st.one_of(
    st.integers(-3, 1 << 31).map(str),
    st.sampled_from(["", "x", "1.5", "-", "1_0", "true", "false", "delete", "compact"]),
)


@settings(max_examples=200, deadline=None)
@given(
    config=st.dictionaries(
        st.sampled_from([*KNOWN_TOPIC_CONFIG_KEYS, "retention.hours"]), values, max_size=4
    )
)
def test_metadata_accepts_exactly_what_a_partition_can_open(config: dict[str, str]) -> None:
    """guards #12 defect 13: one set of rules in both places."""
    try:
        topic_config(config)
    except ConfigError as e:
        with pytest.raises(InvalidTopicConfig) as info:
            validate_topic_config(config)
        assert (info.value.key, info.value.hint) == (e.field, e.hint)
    else:
        validate_topic_config(config)
