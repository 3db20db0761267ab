"""Placement against brute force: spread over DCs then racks, balanced load, balanced leaders.

The naive twins enumerate every replica set (and, for load, every sequence of replica sets by
dynamic programming over load vectors; for leaders, every choice of leader per partition), so
the inputs are kept small.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metadata.errors import InvalidPartitionCount, InvalidReplicationFactor, NotEnoughBrokers
from metadata.placement import place
from metadata.state import Broker

# -- naive twins -------------------------------------------------------------------------------


def naive_water_fill(capacities: Sequence[int], count: int) -> tuple[int, ...]:
    """The most even split, found by trying every split (not by filling)."""
    best: tuple[int, ...] | None = None
    for split in itertools.product(*(range(c + 1) for c in capacities)):
        if sum(split) != count:
            continue
        vector = tuple(sorted((x for x in split if x), reverse=True))
        # most even = lexicographically smallest sorted-descending vector
        if best is None or vector < best:
            best = vector
    assert best is not None
    return best


def best_spread_sets(brokers: Sequence[Broker], rf: int) -> set[frozenset[int]]:
    """Every replica set whose DC split, and rack split inside each DC, is the most even."""
    dc_sizes = Counter(b.dc for b in brokers)
    dc_target = naive_water_fill(list(dc_sizes.values()), rf)
    out: set[frozenset[int]] = set()
    for combo in itertools.combinations(brokers, rf):
        per_dc = Counter(b.dc for b in combo)
        if tuple(sorted(per_dc.values(), reverse=True)) != dc_target:
            continue
        ok = True
        for dc, k in per_dc.items():
            rack_sizes = Counter(b.rack for b in brokers if b.dc == dc)
            per_rack = Counter(b.rack for b in combo if b.dc == dc)
            if tuple(sorted(per_rack.values(), reverse=True)) != naive_water_fill(
                list(rack_sizes.values()), k
            ):
                ok = False
        if ok:
            out.add(frozenset(b.node_id for b in combo))
    return out


def best_load_spread(brokers: Sequence[Broker], rf: int, partitions: int) -> int:
    """Smallest max-min replica count reachable with best-spread replica sets (empty cluster)."""
    ids = sorted(b.node_id for b in brokers)
    position = {n: i for i, n in enumerate(ids)}
    choices = [sorted(position[n] for n in s) for s in best_spread_sets(brokers, rf)]
    states = {tuple(0 for _ in ids)}
    for _ in range(partitions):
        nxt = set()
        for state in states:
            for choice in choices:
                loads = list(state)
                for i in choice:
                    loads[i] += 1
                nxt.add(tuple(loads))
        states = nxt
    return min(max(s) - min(s) for s in states)


def best_leader_spread(replica_sets: Sequence[Sequence[int]], node_ids: Sequence[int]) -> int:
    best = None
    for leaders in itertools.product(*replica_sets):
        counts = Counter(leaders)
        spread = max(counts.values()) - min(counts.get(n, 0) for n in node_ids)
        best = spread if best is None else min(best, spread)
    assert best is not None
    return best


# -- strategies --------------------------------------------------------------------------------


@st.composite
def clusters(draw: st.DrawFn, max_brokers: int = 6) -> list[Broker]:
    n = draw(st.integers(min_value=1, max_value=max_brokers))
    dcs = draw(st.lists(st.sampled_from(["dc-a", "dc-b", "dc-c"]), min_size=n, max_size=n))
    racks = draw(st.lists(st.sampled_from(["r1", "r2"]), min_size=n, max_size=n))
    ids = draw(st.permutations(range(1, 10)))[:n]
    return [Broker(i, f"h{i}:9092", d, r, 0, 0) for i, d, r in zip(ids, dcs, racks)]


def loads_of(result: Sequence[Sequence[int]], brokers: Sequence[Broker]) -> dict[int, int]:
    counts = Counter(n for replicas in result for n in replicas)
    return {b.node_id: counts.get(b.node_id, 0) for b in brokers}


def spread(values: dict[int, int]) -> int:
    return max(values.values()) - min(values.values())


# -- properties --------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(clusters(), st.data())
def test_every_partition_has_rf_distinct_brokers_with_best_spread(
    brokers: list[Broker], data: st.DataObject
) -> None:
    rf = data.draw(st.integers(min_value=1, max_value=len(brokers)))
    partitions = data.draw(st.integers(min_value=1, max_value=6))
    start = data.draw(st.integers(min_value=0, max_value=20))
    load = data.draw(
        st.dictionaries(st.sampled_from([b.node_id for b in brokers]), st.integers(0, 5))
    )
    result = place(brokers, partitions, rf, load, start=start)
    allowed = best_spread_sets(brokers, rf)
    dc_of = {b.node_id: b.dc for b in brokers}
    dcs_with_brokers = len(set(dc_of.values()))
    assert len(result) == partitions
    for replicas in result:
        assert len(replicas) == rf
        assert len(set(replicas)) == rf
        assert set(replicas) <= set(dc_of)
        assert len({dc_of[n] for n in replicas}) == min(rf, dcs_with_brokers)
        assert frozenset(replicas) in allowed, (replicas, sorted(map(sorted, allowed)))


@settings(max_examples=150, deadline=None)
@given(clusters(), st.data())
def test_load_on_an_empty_cluster_matches_brute_force(
    brokers: list[Broker], data: st.DataObject
) -> None:
    rf = data.draw(st.integers(min_value=1, max_value=len(brokers)))
    partitions = data.draw(st.integers(min_value=1, max_value=4))
    result = place(brokers, partitions, rf, {}, start=data.draw(st.integers(0, 9)))
    assert spread(loads_of(result, brokers)) <= max(1, best_load_spread(brokers, rf, partitions))


@settings(max_examples=150, deadline=None)
@given(clusters(max_brokers=8), st.data())
def test_load_on_larger_clusters_matches_brute_force(
    brokers: list[Broker], data: st.DataObject
) -> None:
    rf = data.draw(st.integers(min_value=1, max_value=min(3, len(brokers))))
    partitions = data.draw(st.integers(min_value=1, max_value=4))
    result = place(brokers, partitions, rf, {}, start=data.draw(st.integers(0, 9)))
    assert spread(loads_of(result, brokers)) <= max(1, best_load_spread(brokers, rf, partitions))


def test_repair_fixes_what_greed_leaves() -> None:
    # Found by the property above before the repair pass existed: greed used up dc-b's two
    # brokers in one partition, leaving the last partition no choice but a loaded one.
    layout = [(1, "A", "x"), (2, "A", "y"), (3, "B", "x"), (4, "C", "y"), (5, "A", "x")]
    layout += [(6, "B", "y"), (7, "C", "y"), (8, "A", "y")]
    brokers = [Broker(n, "h", dc, rack, 0, 0) for n, dc, rack in layout]
    assert best_load_spread(brokers, 2, 4) == 0
    for start in range(8):  # greed alone fails for starts 1, 2, 3 and 5
        assert spread(loads_of(place(brokers, 4, 2, {}, start=start), brokers)) == 0


@settings(max_examples=150, deadline=None)
@given(clusters(max_brokers=5), st.data())
def test_leaders_match_brute_force(brokers: list[Broker], data: st.DataObject) -> None:
    rf = data.draw(st.integers(min_value=1, max_value=min(3, len(brokers))))
    partitions = data.draw(st.integers(min_value=1, max_value=5))
    load = data.draw(
        st.dictionaries(st.sampled_from([b.node_id for b in brokers]), st.integers(0, 3))
    )
    result = place(brokers, partitions, rf, load, start=data.draw(st.integers(0, 9)))
    ids = [b.node_id for b in brokers]
    leaders = Counter(replicas[0] for replicas in result)
    ours = max(leaders.values()) - min(leaders.get(n, 0) for n in ids)
    assert ours == best_leader_spread(result, ids)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=3),  # DCs
    st.integers(min_value=1, max_value=3),  # racks per DC
    st.integers(min_value=1, max_value=3),  # brokers per rack
    st.data(),
)
def test_uniform_topology_balances_load_and_leaders(
    dcs: int, racks: int, per_rack: int, data: st.DataObject
) -> None:
    brokers = [
        Broker(i + 1, "h", f"dc{d}", f"r{r}", 0, 0)
        for i, (d, r, _) in enumerate(itertools.product(range(dcs), range(racks), range(per_rack)))
    ]
    n = len(brokers)
    rf = data.draw(st.integers(min_value=1, max_value=min(5, n)))
    multiple = data.draw(st.integers(min_value=1, max_value=4))
    result = place(brokers, n * multiple, rf, {}, start=data.draw(st.integers(0, 9)))
    assert spread(loads_of(result, brokers)) <= 1
    leaders = Counter(replicas[0] for replicas in result)
    # partitions is a multiple of brokers: every broker leads exactly `multiple` partitions
    assert all(leaders[b.node_id] == multiple for b in brokers), leaders


@settings(max_examples=60, deadline=None)
@given(clusters(max_brokers=8), st.data())
def test_independent_of_broker_order(brokers: list[Broker], data: st.DataObject) -> None:
    rf = data.draw(st.integers(min_value=1, max_value=len(brokers)))
    partitions = data.draw(st.integers(min_value=1, max_value=12))
    shuffled = list(brokers)
    random.Random(data.draw(st.integers())).shuffle(shuffled)
    load = {b.node_id: b.node_id % 3 for b in brokers}
    assert place(brokers, partitions, rf, load, start=4) == place(
        shuffled, partitions, rf, dict(reversed(load.items())), start=4
    )


# -- examples ----------------------------------------------------------------------------------


def three_dcs() -> list[Broker]:
    return [
        Broker(n, f"h{n}", f"dc{(n - 1) % 3}", f"r{(n - 1) // 3 % 2}", 0, 0) for n in range(1, 10)
    ]


def test_three_dcs_rf3_puts_one_replica_in_each_dc() -> None:
    brokers = three_dcs()
    dc_of = {b.node_id: b.dc for b in brokers}
    for replicas in place(brokers, 30, 3, {}):
        assert sorted(dc_of[n] for n in replicas) == ["dc0", "dc1", "dc2"]


def test_two_dcs_rf3_never_puts_three_in_one_dc() -> None:
    brokers = [b for b in three_dcs() if b.dc != "dc2"]
    dc_of = {b.node_id: b.dc for b in brokers}
    for replicas in place(brokers, 12, 3, {}):
        assert sorted(Counter(dc_of[n] for n in replicas).values()) == [1, 2]


def test_racks_spread_inside_a_dc() -> None:
    # one DC, two racks of two brokers: rf=2 always takes one broker per rack
    brokers = [Broker(n, "h", "dc", "r1" if n <= 2 else "r2", 0, 0) for n in range(1, 5)]
    for replicas in place(brokers, 8, 2, {}):
        assert sorted(n <= 2 for n in replicas) == [False, True]


def test_existing_load_is_avoided() -> None:
    brokers = [Broker(n, "h", "dc", "r", 0, 0) for n in range(1, 5)]
    result = place(brokers, 2, 2, {1: 100, 2: 100})
    assert all(set(replicas) == {3, 4} for replicas in result)


def test_single_broker_dc_takes_a_replica_of_every_partition() -> None:
    # Spread beats load: the lone broker of dc-b is in every partition.
    brokers = [Broker(1, "h", "dc-b", "r", 0, 0)] + [
        Broker(n, "h", "dc-a", "r", 0, 0) for n in range(2, 6)
    ]
    result = place(brokers, 8, 2, {})
    assert all(1 in replicas for replicas in result)
    leaders = Counter(replicas[0] for replicas in result)
    assert max(leaders.values()) - min(leaders[n] for n in range(1, 6)) <= 1


def test_start_rotates_the_first_leader() -> None:
    brokers = [Broker(n, "h", "dc", "r", 0, 0) for n in range(1, 4)]
    firsts = {place(brokers, 1, 1, {}, start=s)[0][0] for s in range(3)}
    assert firsts == {1, 2, 3}


def test_errors() -> None:
    brokers = [Broker(n, "h", "dc", "r", 0, 0) for n in range(1, 3)]
    with pytest.raises(NotEnoughBrokers) as info:
        place(brokers, 1, 3, {})
    assert (info.value.needed, info.value.available) == (3, 2)
    with pytest.raises(NotEnoughBrokers):
        place([], 1, 1, {})
    with pytest.raises(InvalidPartitionCount):
        place(brokers, 0, 1, {})
    with pytest.raises(InvalidReplicationFactor):
        place(brokers, 1, 0, {})
    with pytest.raises(ValueError, match="same node id"):
        place([brokers[0], brokers[0]], 1, 1, {})


def test_naive_water_fill_agrees_with_examples() -> None:
    # sanity of the twin itself
    assert naive_water_fill([1, 5], 3) == (2, 1)
    assert naive_water_fill([3, 3, 3], 3) == (1, 1, 1)
    assert naive_water_fill([2, 2], 3) == (2, 1)


@pytest.mark.slow
def test_large_topic_is_balanced_and_fast_enough() -> None:
    brokers = [Broker(n, "h", f"dc{n % 3}", f"r{n % 4}", 0, 0) for n in range(1, 61)]
    result = place(brokers, 3000, 3, {})
    assert spread(loads_of(result, brokers)) <= 1
    leaders = Counter(replicas[0] for replicas in result)
    assert max(leaders.values()) - min(leaders.values()) == 0
