"""BrokerLiveness: the metadata leader's own monotonic clock decides, never a broker's."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.liveness import BrokerLiveness

HOUR_S = 3600.0


def test_a_broker_whose_clock_runs_an_hour_ahead_is_seen_dead_once_it_stops() -> None:
    """guards #12 defect 19: liveness took the proposer's wall clock (max(old, now_ms)), so a
    broker an hour ahead stayed alive for an hour after it died. Its clock never enters now."""
    leader = BrokerLiveness(session_timeout_s=6.0)
    leader.on_became_leader(100.0, [1, 2, 3])
    ahead_wall_ms = 1_700_000_000_000 + 3_600_000  # what broker 3 would have sent
    del ahead_wall_ms  # ... and nothing here accepts it: only the leader's monotonic time
    for t in (101.0, 103.0, 105.0):
        for node in (1, 2, 3):
            leader.on_heartbeat(node, t)
    for t in (107.0, 109.0, 111.0):  # broker 3 died at 105
        leader.on_heartbeat(1, t)
        leader.on_heartbeat(2, t)
    assert leader.live(111.0) == {1, 2, 3}  # 6 s after its last heartbeat: still within
    assert leader.changes(111.0) == []
    assert leader.live(111.5) == {1, 2}
    assert leader.changes(111.5) == [(3, False)]
    assert leader.changes(112.0) == []  # reported once


def test_a_new_leader_gives_everyone_one_session_of_grace() -> None:
    live = BrokerLiveness(session_timeout_s=5.0)
    live.on_became_leader(1_000.0, [1, 2, 3], fenced=[3])
    assert live.live(1_004.0) == {1, 2}
    assert live.changes(1_004.0) == []  # 3 was fenced already: nothing flipped
    live.on_heartbeat(1, 1_004.0)
    assert live.changes(1_005.5) == [(2, False)]  # 2 never heartbeat within the grace
    live.on_heartbeat(3, 1_006.0)  # the fenced broker comes back
    assert live.changes(1_006.0) == [(3, True)]
    assert live.changes(1_009.5) == [(1, False)]


def test_heartbeats_never_move_back_and_retry_reports_again() -> None:
    live = BrokerLiveness(session_timeout_s=2.0)
    live.on_became_leader(0.0, [1])
    live.on_heartbeat(1, 10.0)
    live.on_heartbeat(1, 5.0)  # late delivery of an older heartbeat
    assert live.is_alive(1, 12.0)
    assert live.changes(12.5) == [(1, False)]
    live.retry(1)  # the SetBrokerFenced was dropped
    assert live.changes(12.6) == [(1, False)]
    live.forget(1)
    assert live.changes(20.0) == []
    with pytest.raises(ValueError):
        BrokerLiveness(0)


@given(
    beats=st.lists(st.tuples(st.integers(1, 4), st.floats(0, 100)), max_size=40),
    checks=st.lists(st.floats(0, 120), min_size=1, max_size=10),
)
def test_changes_accumulate_to_live(beats: list[tuple[int, float]], checks: list[float]) -> None:
    """Replaying every reported flip reproduces ``live``, whatever the call order."""
    live = BrokerLiveness(session_timeout_s=7.0)
    live.on_became_leader(0.0, [1, 2])
    view = {1: True, 2: True}
    beats.sort(key=lambda b: b[1])
    for now in sorted(checks):
        for node, t in [b for b in beats if b[1] <= now]:
            live.on_heartbeat(node, t)
        for node, alive in live.changes(now):
            assert view.get(node) != alive
            view[node] = alive
        assert {n for n, alive in view.items() if alive} == live.live(now)


def test_a_fence_committed_after_the_election_is_undone_when_the_broker_is_heard() -> None:
    """A new leader judged from its state at election; a previous leader's SetBrokerFenced
    committed afterwards fenced broker 1 although this leader had it as alive, and no flip was
    reported again: broker 1 stayed fenced for good and no topic of replication factor 3 could
    be created (system simulation, default seed 10043). The committed flags are synced first."""
    leader = BrokerLiveness(session_timeout_s=6.0)
    leader.on_became_leader(100.0, [1, 2, 3])  # all unfenced at election
    for n in (1, 2, 3):
        leader.on_heartbeat(n, 101.0)
    assert leader.changes(101.0) == []
    leader.sync_committed({1: False, 2: True, 3: True})  # the old leader's fence committed now
    assert leader.changes(102.0) == [(1, True)]  # heard within the session: unfence it
    leader.sync_committed({1: True, 2: True, 3: True})
    assert leader.changes(103.0) == []
