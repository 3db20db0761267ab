"""Reconcile's delete rule, against every prefix of a committed metadata log.

Guards #12 defect 1: after a SIGKILL the metadata replica replays only up to the commit index it
last wrote, so its state can predate groups already on disk; reconcile used to take "not in my
state" for "deleted" and rmtree'd acknowledged data.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from metadata.commands import Command, CreateTopic, DeleteTopic, RegisterBroker, encode
from metadata.state import MetadataState
from server.reconcile import plan

NODE = 1


def replay(commands: list[Command]) -> MetadataState:
    state = MetadataState()
    for i, cmd in enumerate(commands, start=1):
        try:
            state.apply(i, encode(cmd))
        except Exception:
            pass  # a rejected command still advances the applied index, as in the replica
    return state


def cluster() -> list[Command]:
    return [RegisterBroker(n, f"h{n}:1", "dc", "r", 0) for n in (1, 2, 3)]


def create(name: str, partitions: int = 2) -> CreateTopic:
    return CreateTopic(name, partitions, 3, {}, 0, (1, 2, 3))


def local_groups(state: MetadataState) -> dict[int, tuple[int, ...]]:
    return {a.group_id: a.replicas for a in state.assignments_for(NODE)}


def test_a_stale_replay_never_deletes_groups_it_has_not_seen_created() -> None:
    full = [*cluster(), create("a"), create("b")]
    on_disk = local_groups(replay(full))
    stale = replay(full[:4])  # restarted; only topic "a" replayed so far
    for caught_up in (False, True):
        decided = plan(stale, NODE, on_disk, set(), caught_up)
        assert decided.delete == [], decided
    b_groups = {a.group_id for a in replay(full).topics["b"].assignments}
    assert b_groups <= set(on_disk)


def test_a_committed_delete_is_acted_on_only_after_catching_up() -> None:
    full = [*cluster(), create("a"), create("b"), DeleteTopic("b")]
    on_disk = local_groups(replay(full[:5]))
    state = replay(full)
    b_groups = sorted(set(on_disk) - set(local_groups(state)))
    assert b_groups
    assert plan(state, NODE, on_disk, set(), caught_up=False).delete == []
    assert plan(state, NODE, on_disk, set(), caught_up=True).delete == b_groups


ops = st.lists(
    st.tuples(st.sampled_from(["create", "delete"]), st.sampled_from(["t0", "t1", "t2", "t3"])),
    min_size=1,
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(ops, st.data())
def test_no_prefix_of_the_log_deletes_a_group_alive_at_its_end(
    script: list[tuple[str, str]], data: st.DataObject
) -> None:
    commands: list[Command] = cluster()
    for op, name in script:
        commands.append(create(name, 2) if op == "create" else DeleteTopic(name))
    final = replay(commands)
    alive = set(local_groups(final))
    # Disk: every group ever created on this node whose delete has not been replayed yet.
    ever: dict[int, tuple[int, ...]] = {}
    for cut in range(len(commands) + 1):
        ever.update(local_groups(replay(commands[:cut])))
    on_disk = ever
    cut = data.draw(st.integers(min_value=0, max_value=len(commands)))
    stale = replay(commands[:cut])
    decided = plan(stale, NODE, on_disk, set(), caught_up=data.draw(st.booleans()))
    assert not set(decided.delete) & alive, (cut, decided.delete, alive)


def test_a_replica_missing_from_disk_is_created_only_after_catching_up() -> None:
    """A stale replay may still list a deleted group whose directory is gone: recreating it
    empty would resurrect a replica that forgot its votes (two leaders in one term; found by
    tests/system_sim, crashy profile, seed 5)."""
    full = [*cluster(), create("a"), DeleteTopic("a")]
    stale = replay(full[:4])  # sees "a" alive; its directory was already removed here
    assert plan(stale, NODE, {}, set(), caught_up=False).open == []
    assert plan(replay(full), NODE, {}, set(), caught_up=True).open == []
    fresh = replay([*cluster(), create("b")])
    assert [a.topic for a in plan(fresh, NODE, {}, set(), caught_up=True).open] == ["b", "b"]
