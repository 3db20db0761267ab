"""Membership changes, one node at a time (thesis §4.1, §4.2).

Contract: pure functions over ``ConfState``; they return a new value and never mutate the live
configuration (the tracker swaps it in). No I/O.

The choice, and why it is safe:

* One change at a time (add learner, add/promote voter, remove node). Any two majorities of
  configurations that differ by one voter overlap (thesis §4.1), so no joint consensus.
* A change takes effect when its entry COMMITS (on every node, as it learns the commit index),
  not when it is appended as the thesis suggests. Commit-time application needs no rollback
  when an uncommitted entry is truncated, and matches etcd-raft's "apply" timing.
* The leader refuses a new change while an earlier one is uncommitted, and a new leader
  refuses changes until everything up to its first own entry (the no-op) has committed. That
  closes the single-server-change bug Ongaro described on raft-dev (2015): a leader must
  commit an entry in its own term before it may start a change.
* Learners receive entries but never vote and never count toward a quorum; promotion is an
  ADD_VOTER of an existing learner, done once it has caught up (the runtime decides when).
* A leader that removes itself keeps leading until the change commits, then steps down
  (thesis §4.2.2).
* Joining nodes. The bootstrap membership lives in the storage's ConfState, not in the log,
  so a node created with empty storage cannot replay the CONF_CHANGE entries it receives
  (it does not know what they modify; replaying "ADD_VOTER 4" over nothing would make node 4
  a one-voter group that elects itself). A node with no known voters is *uninitialized*: it
  never campaigns, ignores CONF_CHANGE replay at restart, and answers APP / HEARTBEAT with a
  NEED_SNAPSHOT rejection. The leader then sends ``storage.snapshot()`` -- possibly the
  index-0 bootstrap snapshot, which carries the bootstrap ConfState -- and the node adopts
  that membership plus the changes in its own log after it (``Raft.adopt_membership``). A
  driver that skips persisting an index-0 snapshot only makes the node ask again after a
  restart.
"""

from __future__ import annotations

from raft.types import ConfChange, ConfChangeType, ConfState


def validate_conf_change(cs: ConfState, cc: ConfChange) -> str | None:
    """None if ``cc`` applies cleanly to ``cs``, else the reason it does not."""
    if cc.node_id <= 0:
        return f"node id {cc.node_id} is not a valid node id"
    if cc.type == ConfChangeType.ADD_LEARNER:
        if cc.node_id in cs.voters:
            return f"node {cc.node_id} is a voter; demoting a voter to learner is not supported"
        if cc.node_id in cs.learners:
            return f"node {cc.node_id} is already a learner"
        return None
    if cc.type == ConfChangeType.ADD_VOTER:
        if cc.node_id in cs.voters:
            return f"node {cc.node_id} is already a voter"
        return None
    if cc.type == ConfChangeType.REMOVE_NODE:
        if cc.node_id not in cs.voters and cc.node_id not in cs.learners:
            return f"node {cc.node_id} is not a member"
        if cs.voters == frozenset({cc.node_id}):
            return f"node {cc.node_id} is the last voter; removing it would leave no quorum"
        return None
    return f"unknown conf change type {cc.type!r}"


def apply_conf_change(cs: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after ``cc``. Raises ValueError when it does not apply."""
    reason = validate_conf_change(cs, cc)
    if reason is not None:
        raise ValueError(reason)
    node = cc.node_id
    if cc.type == ConfChangeType.ADD_LEARNER:
        return ConfState(voters=cs.voters, learners=cs.learners | {node})
    if cc.type == ConfChangeType.ADD_VOTER:
        return ConfState(voters=cs.voters | {node}, learners=cs.learners - {node})
    return ConfState(voters=cs.voters - {node}, learners=cs.learners - {node})
