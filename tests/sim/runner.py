"""The fault schedule and one seed's run: faults for a phase, then heal, then liveness.

Contract: :func:`run_seed` is a pure function of its arguments (seed, node count, steps,
profile, patch): same inputs, same run, same result. It never raises for a property failure;
it returns a :class:`SeedResult` whose ``violation`` says what failed (with the seed, for a
replay). An exception escaping the core is reported as a violation too (kind
``core exception``), since a crashing core is a bug the simulation found.

Phases:

1. *faults* (``steps`` steps): clients propose at whatever node claims leadership;
   nodes crash (losing un-fsynced writes) and restart -- with the ``vote-crash`` profile,
   right after handing out a Ready that grants a vote, before its fsync (a crash also checks
   that no vote the node announced is lost: ``vote durability``); the network drops, duplicates and
   reorders; partitions come and go (random halves, isolated leader, one-way cuts);
   membership changes (add learner -> promote -> remove a voter) and leadership transfers
   happen mid-run.
2. *heal*: every link restored, every crashed node restarted, no more drops.
3. *liveness*: within ``liveness_steps`` a leader must exist, ``heal_proposals`` fresh
   proposals must be acknowledged and every member must have applied every acknowledged
   proposal (which the invariants already guarantee are the same everywhere).
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raft.errors import InvariantViolation, RaftError
from raft.rawnode import RawNode
from raft.types import ConfChange, ConfChangeType
from tests.sim.cluster import SimCluster, SimNode, SimOptions
from tests.sim.invariants import Violation


@dataclass(frozen=True)
class FaultProfile:
    """Per-step probabilities of each fault during the fault phase."""

    name: str = "default"
    crash_rate: float = 0.01
    min_down_steps: int = 3
    max_down_steps: int = 40
    partition_rate: float = 0.012
    net_change_rate: float = 0.01
    transfer_rate: float = 0.004
    membership_rate: float = 0.006
    propose_rate: float = 0.35
    max_drop_rate: float = 0.2
    max_dup_rate: float = 0.1
    max_fsync_steps: int = 3
    max_size_per_msg: int = 4096
    # Probability that a newly elected leader is crashed 1..kill_new_leader_max_steps later:
    # leaders that die mid-replication leave the Figure 8 shape (old-term entries on a
    # majority, the new term's entry not yet), the case commit-by-counting gets wrong.
    kill_new_leader_rate: float = 0.0
    kill_new_leader_max_steps: int = 6
    # Probability that a leader is crashed right after its commit index advances (before
    # the next step delivers anything): a leader dying just after committing.
    kill_after_commit_rate: float = 0.0
    # Probability that a newly elected leader is cut off from everyone at once (its first
    # appends die on the wire while it keeps taking proposals: conflicting tails).
    isolate_new_leader_rate: float = 0.0
    lose_outbox_rate: float = 0.3  # chance a crash also loses the node's in-flight messages
    # Probability that a node is crashed right after it handed out a Ready whose hard state
    # grants a vote, once that Ready's messages were sent and before its fsync completed: the
    # finer "forget vote" fault. It loses exactly what was not yet persisted (that vote), so a
    # core that lets a grant leave before its vote is durable double-votes (#12 defect 3).
    crash_after_vote_rate: float = 0.0
    pre_vote: bool = True
    check_quorum: bool = True


PROFILES: dict[str, FaultProfile] = {
    "default": FaultProfile(),
    # Many crashes, slow fsyncs: finds durability and vote-persistence bugs.
    "crashy": FaultProfile(
        name="crashy",
        crash_rate=0.05,
        min_down_steps=1,
        max_down_steps=15,
        partition_rate=0.02,
        membership_rate=0.0,
        transfer_rate=0.0,
        max_fsync_steps=8,
    ),
    # Nodes die between handing out a vote and persisting it; no PreVote, so terms move
    # without votes and grants at a node's current term are common.
    "vote-crash": FaultProfile(
        name="vote-crash",
        crash_rate=0.01,
        min_down_steps=1,
        max_down_steps=6,
        partition_rate=0.05,
        membership_rate=0.0,
        transfer_rate=0.0,
        max_fsync_steps=6,
        crash_after_vote_rate=0.7,
        lose_outbox_rate=0.0,
        pre_vote=False,
    ),
    # Leaders come and go fast while proposals keep flowing: the Figure 8 shape.
    "churn": FaultProfile(
        name="churn",
        crash_rate=0.03,
        min_down_steps=1,
        max_down_steps=25,
        partition_rate=0.05,
        membership_rate=0.0,
        transfer_rate=0.0,
        propose_rate=0.6,
        max_drop_rate=0.3,
        max_size_per_msg=1,  # one entry per append: old-term entries travel alone
    ),
    # Figure 8 (Raft paper §5.4.2): kill new leaders quickly, one entry per append.
    "figure8": FaultProfile(
        name="figure8",
        crash_rate=0.01,
        min_down_steps=1,
        max_down_steps=20,
        partition_rate=0.05,
        membership_rate=0.0,
        transfer_rate=0.0,
        propose_rate=0.6,
        max_drop_rate=0.3,
        max_size_per_msg=1,
        isolate_new_leader_rate=0.6,
        kill_new_leader_rate=0.3,
        kill_new_leader_max_steps=8,
        kill_after_commit_rate=0.5,
        lose_outbox_rate=0.9,
    ),
}


@dataclass
class SeedResult:
    seed: int
    steps: int
    violation: Violation | None = None
    proposed: int = 0
    acked: int = 0
    elections: int = 0
    wall_s: float = 0.0
    log: list[str] = field(default_factory=list)

    def summary(self) -> str:
        status = "ok"
        if self.violation is not None:
            status = "VIOLATION " + " ".join(str(self.violation).split())
        return (
            f"seed={self.seed} steps={self.steps} elections={self.elections} "
            f"proposed={self.proposed} acked={self.acked} {status}"
        )


def run_seed(
    seed: int,
    nodes: int = 3,
    steps: int = 400,
    profile: FaultProfile | str = "default",
    liveness_steps: int = 400,
    heal_proposals: int = 3,
    patch_node: Callable[[RawNode], None] | None = None,
    forget_vote_on_restart: bool = False,
    verbose: bool = False,
    logger: Callable[..., None] | None = None,
) -> SeedResult:
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    opts = SimOptions(
        nodes=nodes,
        max_fsync_steps=prof.max_fsync_steps,
        max_size_per_msg=prof.max_size_per_msg,
        forget_vote_on_restart=forget_vote_on_restart,
        patch_node=patch_node,
        pre_vote=prof.pre_vote,
        check_quorum=prof.check_quorum,
        crash_after_vote_rate=prof.crash_after_vote_rate,
        # Both ways a leader tells followers its commit index, half the seeds each: even
        # seeds broadcast it at once (the metadata group), odd ones leave it to the next
        # append or heartbeat (the partitions).
        broadcast_commit=seed % 2 == 0,
    )
    if verbose and logger is None:

        def logger(event: str, **fields: Any) -> None:
            print(event, " ".join(f"{k}={v}" for k, v in fields.items()))

    started = time.perf_counter()
    cluster = SimCluster(seed, opts, logger)
    result = SeedResult(seed=seed, steps=0)
    try:
        _run(cluster, prof, steps, liveness_steps, heal_proposals)
    except Violation as v:
        result.violation = v
    except Exception as exc:  # a crashing core is a finding, not a harness error
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{frame.filename.split('/')[-1]}:{frame.lineno} in {frame.name}"
        # The core's own assertions (InvariantViolation) are findings of a broken property;
        # anything else escaping it is a crash.
        kind = "core invariant" if isinstance(exc, InvariantViolation) else "core exception"
        result.violation = Violation(
            seed, cluster.now, kind, f"{type(exc).__name__}: {exc} (at {where})"
        )
        result.log.append(traceback.format_exc())
        if verbose:
            print(result.log[-1])
    if result.violation is not None:
        result.violation.replay = (
            f"python -m tests.sim --seeds {seed}:{seed + 1} --nodes {nodes} --steps {steps} "
            f"--profile {prof.name} --verbose"
            + (" (plus the injected bug)" if patch_node or forget_vote_on_restart else "")
        )
    result.steps = cluster.now
    result.proposed = cluster.proposed
    result.acked = len(cluster.acked)
    result.elections = len(cluster.inv.elections)
    result.wall_s = time.perf_counter() - started
    return result


def _run(
    cluster: SimCluster,
    prof: FaultProfile,
    steps: int,
    liveness_steps: int,
    heal_proposals: int,
) -> None:
    rng = cluster.rng
    for _ in range(steps):
        inject_faults(cluster, prof, rng)
        client_step(cluster, prof, rng)
        cluster.step()
    cluster.heal_all()
    heal_step = cluster.now
    check_liveness(cluster, heal_step, liveness_steps, heal_proposals)
    check_acked_everywhere(cluster)


def inject_faults(cluster: SimCluster, prof: FaultProfile, rng: random.Random) -> None:
    if prof.kill_new_leader_rate > 0 or prof.isolate_new_leader_rate > 0:
        target_new_leaders(cluster, prof, rng)
    for node in list(cluster.nodes.values()):
        down = node.raw is None and node.crashed_until is not None and not node.removed
        if down and node.crashed_until is not None and cluster.now >= node.crashed_until:
            cluster.restart(node.node_id)
    live = cluster.live()
    if live and rng.random() < prof.crash_rate:
        victim = rng.choice(live)
        cluster.crash(
            victim.node_id,
            rng.randint(prof.min_down_steps, prof.max_down_steps),
            lose_outbox=rng.random() < prof.lose_outbox_rate,
        )
    if rng.random() < prof.partition_rate:
        change_partition(cluster, rng)
    if rng.random() < prof.net_change_rate:
        f = cluster.net.faults
        f.drop_rate = rng.choice([0.0, 0.0, 0.02, prof.max_drop_rate])
        f.dup_rate = rng.choice([0.0, 0.02, prof.max_dup_rate])
        f.max_delay_steps = rng.choice([2, 3, 6])
        f.reorder = rng.random() < 0.5
    if rng.random() < prof.transfer_rate:
        leader = cluster.leader()
        if leader is not None and leader.raw is not None:
            voters = sorted(leader.conf_history[-1][1].voters)
            target = rng.choice(voters)
            cluster._log("sim_transfer", node_id=leader.node_id, to=target)
            try:
                leader.raw.transfer_leadership(target)
            except RaftError:
                pass
    if rng.random() < prof.membership_rate:
        change_membership(cluster, rng)


def target_new_leaders(cluster: SimCluster, prof: FaultProfile, rng: random.Random) -> None:
    for node_id in cluster.leader_commits:
        if rng.random() < prof.kill_after_commit_rate:
            cluster.crash(
                node_id,
                rng.randint(prof.min_down_steps, prof.max_down_steps),
                lose_outbox=rng.random() < prof.lose_outbox_rate,
            )
    cluster.leader_commits.clear()
    seen = cluster.scratch.setdefault("elections_seen", 0)
    kills: dict[int, int] = cluster.scratch.setdefault("kills", {})
    terms = sorted(cluster.inv.elections)
    for term in terms[seen:] if isinstance(seen, int) else []:
        if rng.random() < prof.isolate_new_leader_rate:
            leader_id = cluster.inv.elections[term]
            others = {n.node_id for n in cluster.members()} - {leader_id}
            cluster.net.heal()
            cluster.net.isolate(leader_id, others)
            cluster._log("sim_partition", kind="isolate_new_leader", node_id=leader_id)
        elif rng.random() < prof.kill_new_leader_rate:
            at = cluster.now + rng.randint(1, prof.kill_new_leader_max_steps)
            kills[cluster.inv.elections[term]] = at
    cluster.scratch["elections_seen"] = len(terms)
    for node_id, at in list(kills.items()):
        if cluster.now >= at:
            del kills[node_id]
            cluster.crash(
                node_id,
                rng.randint(prof.min_down_steps, prof.max_down_steps),
                lose_outbox=rng.random() < prof.lose_outbox_rate,
            )


def change_partition(cluster: SimCluster, rng: random.Random) -> None:
    ids = sorted(n.node_id for n in cluster.members())
    kind = rng.choice(["halves", "isolate_leader", "one_way", "heal", "heal"])
    net = cluster.net
    if kind == "halves":
        rng.shuffle(ids)
        cut = rng.randint(1, max(1, len(ids) - 1))
        net.partition(set(ids[:cut]), set(ids[cut:]))
    elif kind == "isolate_leader":
        leader = cluster.leader()
        if leader is not None:
            net.heal()
            net.isolate(leader.node_id, set(ids) - {leader.node_id})
    elif kind == "one_way":
        src = rng.choice(ids)
        net.cut_one_way(src, set(ids) - {src})
    else:
        net.heal()
    cluster._log("sim_partition", kind=kind, blocked=len(net.blocked))


def change_membership(cluster: SimCluster, rng: random.Random) -> None:
    """One step of add learner -> promote -> remove a voter, proposed at the leader."""
    leader = cluster.leader()
    if leader is None:
        return
    conf = leader.conf_history[-1][1]
    if conf.learners:
        cc = ConfChange(ConfChangeType.ADD_VOTER, min(conf.learners))
    elif len(conf.voters) > cluster.options.nodes:
        cc = ConfChange(ConfChangeType.REMOVE_NODE, rng.choice(sorted(conf.voters)))
    else:
        joining = [
            n.node_id
            for n in cluster.members()
            if n.node_id not in conf.voters and n.node_id > cluster.options.nodes
        ]
        node_id = joining[0] if joining else cluster.add_learner_node()
        cc = ConfChange(ConfChangeType.ADD_LEARNER, node_id)
    cluster.propose_conf_change(leader, cc)


def client_step(cluster: SimCluster, prof: FaultProfile, rng: random.Random) -> None:
    if rng.random() >= prof.propose_rate:
        return
    leaders = cluster.leaders()  # stale leaders too: their proposals must not be acked
    if not leaders:
        return
    node = rng.choice(leaders)
    count = 1 if rng.random() < 0.7 else rng.randint(2, 5)
    cluster.propose(node, count)


def member_nodes(cluster: SimCluster, leader: SimNode) -> list[SimNode]:
    conf = leader.conf_history[-1][1]
    ids = conf.voters | conf.learners
    return [cluster.nodes[i] for i in sorted(ids) if i in cluster.nodes]


def check_liveness(
    cluster: SimCluster, heal_step: int, liveness_steps: int, heal_proposals: int
) -> None:
    want: set[bytes] = set()
    last_propose = -(10**9)
    for _ in range(liveness_steps):
        cluster.step()
        leader = cluster.leader()
        if leader is None:
            continue
        acked_now = [d for d in want if d in cluster.acked]
        if len(acked_now) < heal_proposals and cluster.now - last_propose > 20:
            # Retry like a client would: a proposal lost to a leader change never acks.
            before = cluster.value_seq
            if cluster.propose(leader, heal_proposals - len(acked_now)):
                want.update(
                    f"s{cluster.seed}-v{i}".encode()
                    for i in range(before + 1, cluster.value_seq + 1)
                )
            last_propose = cluster.now
            continue
        if len(acked_now) < heal_proposals:
            continue
        target = max(cluster.acked.values(), default=0)
        members = member_nodes(cluster, leader)
        if all(n.raw is not None and n.applied >= target for n in members):
            return
    leader = cluster.leader()
    detail = (
        f"{liveness_steps} steps after healing (step {heal_step}): "
        f"leader={leader.node_id if leader else None}, "
        f"acked heal proposals={sum(1 for d in want if d in cluster.acked)}/{heal_proposals}; "
        + ", ".join(
            f"n{n.node_id}:{'up' if n.raw else 'down'} applied={n.applied} "
            f"role={n.raw.status().role.name if n.raw else '-'} "
            f"term={n.raw.status().term if n.raw else '-'}"
            for n in cluster.members()
        )
    )
    raise cluster.inv.fail("liveness", detail)


def check_acked_everywhere(cluster: SimCluster) -> None:
    leader = cluster.leader()
    assert leader is not None
    for data, index in sorted(cluster.acked.items(), key=lambda kv: kv[1]):
        seen = cluster.inv.applied_data.get(index)
        if seen != data:
            raise cluster.inv.fail(
                "lost acknowledged proposal",
                f"{data!r} was acknowledged at index {index}, but index {index} holds {seen!r}",
            )
        for n in member_nodes(cluster, leader):
            if n.applied < index:
                raise cluster.inv.fail(
                    "lost acknowledged proposal",
                    f"{data!r} acknowledged at index {index} is not applied on node "
                    f"{n.node_id} (applied {n.applied})",
                )
