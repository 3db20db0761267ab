"""Liveness in the metadata state: the leader's replicated verdict, no clock (#12 defect 19)."""

from __future__ import annotations

import json

import pytest

from metadata.commands import (
    BrokerHeartbeat,
    Command,
    CreateTopic,
    RegisterBroker,
    SetBrokerFenced,
    encode,
)
from metadata.errors import NotEnoughBrokers, UnknownBroker
from metadata.state import Broker, MetadataState

NOW = 1_700_000_000_000
HOUR_MS = 3_600_000


def run(state: MetadataState, cmd: Command) -> object:
    return state.apply(state.applied_index + 1, encode(cmd))


def three_brokers() -> MetadataState:
    state = MetadataState()
    for n in (1, 2, 3):
        run(state, RegisterBroker(n, f"h{n}:9092", f"dc{n}", "r", NOW))
    return state


def test_a_clock_an_hour_ahead_does_not_keep_a_dead_broker_alive() -> None:
    """guards #12 defect 19: last_heartbeat_ms = max(old, cmd.now_ms) took the proposer's
    clock, so a broker an hour ahead stayed live an hour after dying. Now the heartbeat's time
    is display only; the metadata leader fences the broker and every replica agrees."""
    state = three_brokers()
    run(state, BrokerHeartbeat(3, NOW + HOUR_MS))  # broker 3's clock runs an hour ahead
    assert state.live_brokers() == [1, 2, 3]
    # broker 3 dies; the leader's BrokerLiveness (server/liveness.py) sees its session
    # expire on the leader's monotonic clock and proposes:
    fenced = run(state, SetBrokerFenced(3, True))
    assert isinstance(fenced, Broker) and fenced.fenced
    assert state.live_brokers() == [1, 2]
    # whatever time anyone passes, the old cross-clock comparison cannot revive it
    assert 3 not in state.live_brokers(NOW + HOUR_MS, 6_000)
    # and a proposer whose clock runs ahead does not see the others as dead
    assert state.live_brokers() == [1, 2]


def test_fencing_is_idempotent_and_registration_unfences() -> None:
    state = three_brokers()
    version = state.version
    run(state, SetBrokerFenced(2, False))  # already unfenced: no change
    assert state.version == version
    run(state, SetBrokerFenced(2, True))
    assert state.version == version + 1 and state.layout_version == 3
    run(state, RegisterBroker(2, "h2:9092", "dc2", "r", NOW))  # a restart: a sign of life
    assert not state.brokers[2].fenced
    with pytest.raises(UnknownBroker):
        run(state, SetBrokerFenced(9, True))


def test_new_topics_are_never_placed_on_fenced_brokers() -> None:
    state = three_brokers()
    run(state, SetBrokerFenced(3, True))
    topic = run(state, CreateTopic("t", 4, 2, {}, NOW, (1, 2, 3)))  # a stale view names 3
    assert all(3 not in a.replicas for a in topic.assignments)  # type: ignore[attr-defined]
    with pytest.raises(NotEnoughBrokers):
        run(state, CreateTopic("u", 1, 3, {}, NOW, (1, 2, 3)))


def test_fenced_flag_survives_snapshots_and_old_snapshots_still_restore() -> None:
    state = three_brokers()
    run(state, SetBrokerFenced(1, True))
    again = MetadataState.restore(state.snapshot())
    assert again.brokers == state.brokers and again.live_brokers() == [2, 3]
    body = json.loads(state.snapshot())
    body["v"] = 1
    body["brokers"] = [row[:6] for row in body["brokers"]]  # written before the flag existed
    old = MetadataState.restore(json.dumps(body).encode())
    assert old.live_brokers() == [1, 2, 3]
