"""Each checker on tiny hand-written histories: one that holds, one that is violated."""

from __future__ import annotations

from tests.system_sim.checkers import (
    acked_records_survive,
    check_all,
    consumers_saw_only_durable,
    groups_healthy,
    linearizable_offsets,
    liveness,
    metadata_agrees,
    no_duplicates,
    one_leader_per_term,
    producer_order,
    replicas_agree,
    topics_survive,
)
from tests.system_sim.history import (
    Ack,
    FinalState,
    GroupStatus,
    History,
    Observation,
    PartitionRead,
    Send,
)

T = "t0"


def send(
    h: History,
    process: str,
    seq: int,
    value: bytes,
    acks: str = "all",
    t: float = 0.0,
    partition: int = 0,
    offset: int | None = None,
    idempotent: bool = True,
) -> Send:
    s = Send(T, partition, value, acks, idempotent, seq)
    h.invoke(process, "send", s, t)
    if offset is not None:
        h.ok(process, "send", (s, Ack(T, partition, offset)), t + 0.01)
    return s


def final_with(
    *records: tuple[int, bytes], log_start: int = 0, partition: int = 0, retention: bool = False
) -> FinalState:
    hw = (max(o for o, _ in records) + 1) if records else log_start
    read = PartitionRead(T, partition, log_start, hw, tuple(records))
    return FinalState(reads={(T, partition): read}, retention_topics={T} if retention else set())


def poll(h: History, process: str, *obs: tuple[int, bytes], t: float = 1.0) -> None:
    h.invoke(process, "poll", None, t)
    h.ok(process, "poll", tuple(Observation(T, 0, o, v) for o, v in obs), t + 0.01)


# (a) -------------------------------------------------------------------------------------


def test_acked_record_reads_back() -> None:
    h = History()
    send(h, "p1", 0, b"p1:0", offset=3)
    assert acked_records_survive(h, final_with((3, b"p1:0"))) == []


def test_acked_record_lost_or_replaced() -> None:
    h = History()
    send(h, "p1", 0, b"p1:0", offset=3)
    assert "lost" in acked_records_survive(h, final_with((2, b"x")))[0]
    h2 = History()
    send(h2, "p1", 0, b"p1:0", offset=3)
    send(h2, "p2", 0, b"p2:0")
    assert "replaced" in acked_records_survive(h2, final_with((3, b"p2:0")))[0]


def test_acked_record_exemptions() -> None:
    h = History()
    send(h, "p1", 0, b"p1:0", offset=3)
    send(h, "p1", 1, b"p1:1", acks="leader", offset=4)
    # Below the log start of a retention topic: cut by retention; acks=leader: not required.
    assert acked_records_survive(h, final_with((5, b"y"), log_start=4, retention=True)) == []
    assert acked_records_survive(h, final_with((5, b"y"), log_start=4)) != []
    h.invoke("admin", "delete_topic", T, 2.0)
    assert acked_records_survive(h, FinalState()) == []


# (b) -------------------------------------------------------------------------------------


def test_no_duplicates() -> None:
    h = History()
    send(h, "p1", 0, b"p1:0", offset=0)
    send(h, "p1", 1, b"p1:1", offset=1)
    assert no_duplicates(h, final_with((0, b"p1:0"), (1, b"p1:1"))) == []


def test_duplicate_and_unexpected_records() -> None:
    h = History()
    send(h, "p1", 0, b"p1:0", offset=0)
    found = no_duplicates(h, final_with((0, b"p1:0"), (1, b"p1:0")))
    assert len(found) == 1 and "duplicate" in found[0]
    found = no_duplicates(h, final_with((0, b"p1:0"), (1, b"ghost")))
    assert len(found) == 1 and "unexpected" in found[0]
    # Without idempotence a retry may duplicate.
    h2 = History()
    send(h2, "p1", 0, b"p1:0", offset=0, idempotent=False)
    assert no_duplicates(h2, final_with((0, b"p1:0"), (1, b"p1:0"))) == []


# (c) -------------------------------------------------------------------------------------


def test_producer_order_holds() -> None:
    h = History()
    send(h, "p1", 0, b"p1:0", offset=0)
    send(h, "p1", 1, b"p1:1")  # never acknowledged, but it landed after its predecessor
    send(h, "p1", 2, b"p1:2", offset=5)
    assert producer_order(h, final_with((0, b"p1:0"), (2, b"p1:1"), (5, b"p1:2"))) == []


def test_producer_order_violated() -> None:
    h = History()
    send(h, "p1", 0, b"p1:0", offset=4)
    send(h, "p1", 1, b"p1:1", offset=2)
    found = producer_order(h, final_with((2, b"p1:1"), (4, b"p1:0")))
    assert any("acknowledged at offsets 4 and 2" in v for v in found)
    assert any("holds them at offsets" in v for v in found)


# (d) -------------------------------------------------------------------------------------


def test_consumer_saw_durable_records_in_order() -> None:
    h = History()
    for i in range(3):
        send(h, "p1", i, b"p1:%d" % i, offset=i * 2)
    poll(h, "c1", (0, b"p1:0"), (2, b"p1:1"))
    poll(h, "c1", (4, b"p1:2"))
    h.invoke("c1", "seek", (T, 0, 2), 2.0)
    h.ok("c1", "seek", (T, 0, 2), 2.0)
    poll(h, "c1", (2, b"p1:1"), t=3.0)
    final = final_with((0, b"p1:0"), (2, b"p1:1"), (4, b"p1:2"))
    assert consumers_saw_only_durable(h, final) == []


def test_consumer_saw_a_record_later_absent() -> None:
    h = History()
    send(h, "p1", 0, b"p1:0", acks="leader", offset=0)
    poll(h, "c1", (0, b"p1:0"))
    found = consumers_saw_only_durable(h, final_with((0, b"other")))
    assert len(found) == 1 and "later different" in found[0]


def test_consumer_skipped_or_went_back() -> None:
    final = final_with((0, b"a"), (1, b"b"), (2, b"c"))
    h = History()
    poll(h, "c1", (0, b"a"), (2, b"c"))
    assert "skipped" in consumers_saw_only_durable(h, final)[0]
    h2 = History()
    poll(h2, "c1", (1, b"b"))
    poll(h2, "c1", (0, b"a"), t=2.0)
    assert "backwards" in consumers_saw_only_durable(h2, final)[0]


# (e)-(g) ---------------------------------------------------------------------------------


def test_replicas_agree() -> None:
    same = FinalState(committed_logs={7: {1: [(1, 1, b"a"), (2, 1, b"b")], 2: [(2, 1, b"b")]}})
    assert replicas_agree(History(), same) == []
    differ = FinalState(committed_logs={7: {1: [(1, 1, b"a")], 2: [(1, 2, b"z")]}})
    assert "group 7 index 1" in replicas_agree(History(), differ)[0]


def test_one_leader_per_term() -> None:
    ok = FinalState(leaders={(1, 2, 1), (1, 3, 2), (2, 2, 3)})
    assert one_leader_per_term(History(), ok) == []
    bad = FinalState(leaders={(1, 2, 1), (1, 2, 2)})
    assert "group 1 term 2" in one_leader_per_term(History(), bad)[0]


def test_metadata_agrees() -> None:
    ok = FinalState(metadata_digests=[(1, 5, b"x"), (2, 5, b"x"), (3, 6, b"y")])
    assert metadata_agrees(History(), ok) == []
    bad = FinalState(metadata_digests=[(1, 5, b"x"), (2, 5, b"q")])
    assert "applied index 5" in metadata_agrees(History(), bad)[0]


# (h), (i) --------------------------------------------------------------------------------


def status(
    node: int,
    role: str,
    commit: int = 5,
    applied: int = 5,
    last: int = 5,
    failed: str = "",
    term: int = 2,
) -> GroupStatus:
    return GroupStatus(node, 9, role, term, 1, commit, applied, failed, last)


def test_groups_healthy() -> None:
    ok = FinalState(statuses=[status(1, "leader"), status(2, "follower")], live_groups={9})
    assert groups_healthy(History(), ok) == []


def test_groups_failed_or_stuck() -> None:
    failed = FinalState(
        statuses=[status(1, "leader"), status(2, "follower", failed="EIO")], live_groups={9}
    )
    assert "failed" in groups_healthy(History(), failed)[0]
    leaderless = FinalState(statuses=[status(1, "follower")], live_groups={9})
    assert "no leader" in groups_healthy(History(), leaderless)[0]
    behind = FinalState(
        statuses=[status(1, "leader"), status(2, "follower", last=3)], live_groups={9}
    )
    assert "holds up to index 3" in groups_healthy(History(), behind)[0]
    # holds every entry but never learned the last commit (a group that went quiet early)
    unaware = FinalState(
        statuses=[status(1, "leader"), status(2, "follower", commit=4, applied=4)],
        live_groups={9},
    )
    assert "knows commit 4" in groups_healthy(History(), unaware)[0]
    unapplied = FinalState(statuses=[status(1, "leader", applied=4)], live_groups={9})
    assert "applied 4" in groups_healthy(History(), unapplied)[0]
    missing = FinalState(live_groups={9})
    assert "no replica" in groups_healthy(History(), missing)[0]


def test_liveness() -> None:
    h = History()
    probe = Send(T, 0, b"probe:0", "all", True, 0)
    h.invoke("probe", "probe", probe, 10.0)
    h.ok("probe", "probe", (probe, Ack(T, 0, 0)), 12.0)
    final = final_with((0, b"probe:0"))
    final.liveness_bound_s = 5.0
    assert liveness(h, final) == []
    final.liveness_bound_s = 1.0
    assert "took 2.000s" in liveness(h, final)[0]
    h2 = History()
    h2.invoke("probe", "probe", probe, 10.0)
    h2.fail("probe", "probe", (probe, "NOT_LEADER"), 20.0)
    assert "failed" in liveness(h2, final)[0]
    h3 = History()
    h3.invoke("probe", "probe", probe, 10.0)
    assert "never completed" in liveness(h3, final)[0]
    broken = FinalState(reads={(T, 0): PartitionRead(T, 0, 0, 0, (), False, "timeout")})
    assert "did not finish" in liveness(History(), broken)[0]


def test_check_all_prefixes_and_digest() -> None:
    h = History()
    send(h, "p1", 0, b"p1:0", offset=3)
    found = check_all(h, final_with((2, b"x")))
    assert found and all(v.startswith("[") for v in found)
    h2 = History()
    send(h2, "p1", 0, b"p1:0", offset=3)
    assert h.digest() == h2.digest()
    send(h2, "p1", 1, b"p1:1")
    assert h.digest() != h2.digest()


def test_concurrent_probes_pair_by_their_send() -> None:
    h = History()
    a = Send(T, 0, b"probe:0", "all", True, 0)
    b = Send(T, 1, b"probe:1", "all", True, 1)
    h.invoke("probe", "probe", a, 1.0)
    h.invoke("probe", "probe", b, 1.0)
    h.ok("probe", "probe", (b, Ack(T, 1, 0)), 2.0)
    h.ok("probe", "probe", (a, Ack(T, 0, 0)), 3.0)
    pairs = h.pairs("probe")
    assert [(i.value, d.value[0] if d else None) for i, d in pairs] == [(a, a), (b, b)]


def test_liveness_needs_a_topic_created_after_the_heal() -> None:
    h = History()
    h.invoke("probe", "create_topic", ("t9", 1, 3, ()), 10.0)
    h.ok("probe", "create_topic", ("t9", 1, 3, ()), 11.0)
    assert liveness(h, FinalState()) == []
    h2 = History()
    h2.invoke("probe", "create_topic", ("t9", 1, 3, ()), 10.0)
    h2.info("probe", "create_topic", (("t9", 1, 3, ()), "NotEnoughBrokers"), 40.0)
    assert "no topic could be created" in liveness(h2, FinalState())[0]


def test_acknowledged_topics_survive() -> None:
    h = History()
    h.invoke("admin", "create_topic", (T, 1, 3, ()), 1.0)
    h.ok("admin", "create_topic", (T, 1, 3, ()), 2.0)
    assert topics_survive(h, final_with((0, b"a"))) == []
    lost = FinalState(reads={(T, 0): PartitionRead(T, 0, 0, 0, (), False, "UnknownTopic: gone")})
    assert "acknowledged topic lost" in topics_survive(h, lost)[0]
    h.invoke("admin", "delete_topic", T, 3.0)
    assert topics_survive(h, lost) == []


# (k) -------------------------------------------------------------------------------------


def offsets_read(h: History, t: float, hw: int, partition: int = 0) -> None:
    h.invoke("offsets-reader", "offsets", (T, partition), t)
    h.ok("offsets-reader", "offsets", hw, t + 0.01)


def test_a_linearizable_read_covers_what_was_acknowledged_before_it() -> None:
    h = History()
    send(h, "p1", 0, b"p1:0", t=0.0, offset=4)  # acknowledged at t=0.01
    offsets_read(h, 0.5, 5)
    send(h, "p1", 1, b"p1:1", t=0.6, offset=7)  # after the read began: not required
    offsets_read(h, 0.6, 5)  # concurrent with p1:1's acknowledgement
    send(h, "p2", 0, b"p2:0", acks="leader", t=0.7, offset=9)  # acks=leader: not held to it
    offsets_read(h, 1.0, 8)
    assert linearizable_offsets(h, FinalState()) == []


def test_a_stale_linearizable_read_is_reported() -> None:
    h = History()
    send(h, "p1", 0, b"p1:0", t=0.0, offset=4)
    send(h, "p1", 1, b"p1:1", t=0.1, offset=6)
    offsets_read(h, 1.0, 6)  # hw 6 misses offset 6, acknowledged at t=0.11
    offsets_read(h, 1.0, 9, partition=1)  # another partition: nothing acknowledged there
    found = linearizable_offsets(h, FinalState())
    assert len(found) == 1 and "offset 6" in found[0] and "high watermark 6" in found[0], found


def test_a_deleted_topic_is_exempt_from_linearizable_reads() -> None:
    h = History()
    send(h, "p1", 0, b"p1:0", t=0.0, offset=4)
    h.invoke("admin", "delete_topic", T, 0.2)
    offsets_read(h, 1.0, 1)
    assert linearizable_offsets(h, FinalState()) == []
