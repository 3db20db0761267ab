"""Reconcile: what this broker should do with its partition replicas, given the metadata state.

A pure function of (applied metadata state, local replicas, whether the metadata replica has
caught up), so it is tested without a broker and runs unchanged in the system simulation.

The rule that #12 defect 1 broke: a restarted broker replays its metadata log only up to the
commit index it last wrote, which lags. Its state can be *older* than the groups on its disk.
"Not in my state" therefore never means "deleted". A local group is deleted only when
  - its id is below the state's ``next_group_id`` (the state has seen the group's creation;
    ids are never reused), and
  - no assignment in the state names it any more (the committed delete was applied: the state
    only ever holds committed, applied entries), and
  - this replica has caught up with the metadata leader since it started (a barrier or a
    proposal of its own applied here), so a decision never rests on a stale replay alone.
A replica that is not on disk is created only after catching up too: a stale replay can still
list a group whose delete it has not reached, and whose directory this broker already removed;
recreating it empty would bring back a zombie replica with no memory of its votes (two
leaders in one term: found by the system simulation, seed 5 of the crashy profile). Replicas
already on disk are opened at start-up from their own description, before any catch-up.
Anything else is kept, and opened or updated as the state says. A replica the state moved to
other brokers is closed but its data kept (Raft membership, not reconcile, retires it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from metadata.state import MetadataState, PartitionAssignment


@dataclass(frozen=True)
class Plan:
    open: list[PartitionAssignment] = field(default_factory=list)
    update_replicas: list[PartitionAssignment] = field(default_factory=list)
    delete: list[int] = field(default_factory=list)


def plan(
    state: MetadataState,
    node_id: int,
    local: Mapping[int, tuple[int, ...]],
    opening: set[int],
    caught_up: bool,
) -> Plan:
    """``local`` maps each hosted group id to the replica tuple it was opened with."""
    wanted = {a.group_id: a for a in state.assignments_for(node_id)}
    known = {a.group_id for a in state.all_assignments()}
    out = Plan()
    for group_id, a in sorted(wanted.items()):
        replicas = local.get(group_id)
        if replicas is None:
            if group_id not in opening and caught_up:
                out.open.append(a)
        elif replicas != a.replicas:
            out.update_replicas.append(a)
    for group_id in sorted(local):
        if group_id in wanted:
            continue
        if group_id not in known and caught_up and group_id < state.next_group_id:
            out.delete.append(group_id)
        # else: created after what this replica has applied so far; keep it
    return out
