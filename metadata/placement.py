"""Replica placement: which brokers host each partition of a new topic, and which one leads.

Contract: ``place`` is a pure, deterministic function of its arguments (no randomness, no
clock, no dict-order dependence): the metadata state machine calls it inside ``apply`` on every
replica, and every replica must compute the same answer.

Strategy, in priority order, for each partition's ``replication_factor`` replicas:

1. **Data centers.** Replicas are picked one at a time; each pick goes to a DC holding the fewest
   replicas of this partition so far among DCs that still have an unused broker. That is
   water-filling: every DC gets a floor/ceil share of the replicas unless it runs out of
   brokers, and no DC gets a second replica while another DC with a free broker has none. So
   the number of distinct DCs is ``min(rf, number of DCs)`` -- with three DCs and rf=3 a
   partition survives the loss of a whole DC.
2. **Racks**, water-filled the same way *within* each DC (a rack is ``(dc, rack)``; racks of
   different DCs are never compared, so the choice of which DC takes an extra replica is left
   to load).
3. **Load**: among equally spread candidates, the broker with the fewest replicas
   (``existing_load`` plus what this call placed so far), then the least-loaded DC and rack per
   broker (a look-ahead: do not drain a small DC early).
4. Ties break on a broker order rotated by ``start``, so topics created one after another on
   an idle cluster do not all start on the lowest node id.

Greed can still strand load on uneven topologies, so a repair pass follows: cost-reducing
chains of single-replica moves that keep every partition's spread best (``_repair_load``).
The tests compare the result against a brute force over all placements on small clusters.
Where the topology is lopsided (a DC or rack with a single broker must take a replica of
every partition) spread deliberately wins over equal load.

Preferred leaders (the first replica of each tuple) are then balanced as a *semi-matching*:
each partition picks one of its replicas, and we search for cost-reducing paths (Harvey, Ladner,
Lovasz, Tamir, "Semi-matchings for bipartite graphs and load balancing", 2006): a chain of
leadership moves from a broker leading ``k`` partitions to one leading ``<= k - 2``. When no such
path exists the leader counts are optimal for these replica sets: the spread between the most
and least leaders is as small as any choice of leaders allows (checked against brute force).
On a uniform topology with a partition count that is a multiple of the broker count, every
broker leads the same number.

Cost: O(partitions x rf x brokers) for the greedy pass; the repair and leader searches are
breadth-first walks that only run while something is out of balance. 3,000 partitions on 60
brokers take under a second.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Protocol

from metadata.errors import (
    InvalidPartitionCount,
    InvalidReplicationFactor,
    NotEnoughBrokers,
)


class Located(Protocol):
    """What placement needs to know of a broker (``state.Broker`` satisfies it)."""

    @property
    def node_id(self) -> int: ...

    @property
    def dc(self) -> str: ...

    @property
    def rack(self) -> str: ...


def place(
    brokers: Sequence[Located],
    partitions: int,
    replication_factor: int,
    existing_load: Mapping[int, int],
    start: int = 0,
) -> list[tuple[int, ...]]:
    """For each partition, the tuple of its replicas' node ids, preferred leader first.

    ``brokers`` are the live brokers to place on (order does not matter; duplicates by node id
    are a caller bug). ``existing_load`` counts replicas each broker already hosts (missing =
    0). ``start`` rotates tie-breaking (the state machine passes the new topic's id).
    """
    if partitions < 1:
        raise InvalidPartitionCount(partitions)
    if replication_factor < 1:
        raise InvalidReplicationFactor(replication_factor)
    by_id = {b.node_id: b for b in brokers}
    if len(by_id) != len(brokers):
        raise ValueError("place() got the same node id twice in brokers")
    if replication_factor > len(by_id):
        raise NotEnoughBrokers(replication_factor, len(by_id))

    ordered = sorted(by_id)
    shift = start % len(ordered)
    rank = {node_id: (i - shift) % len(ordered) for i, node_id in enumerate(ordered)}
    spread = _Spread({n: by_id[n].dc for n in ordered}, {n: by_id[n].rack for n in ordered})
    load = {n: existing_load.get(n, 0) for n in ordered}

    replica_sets = [
        _pick_replicas(ordered, replication_factor, spread, load, rank) for _ in range(partitions)
    ]
    _repair_load(replica_sets, ordered, spread, load, rank)
    leaders = _balance_leaders(replica_sets, ordered, rank)
    return [
        (leader, *(n for n in replicas if n != leader))
        for leader, replicas in zip(leaders, replica_sets, strict=True)
    ]


def _water_fill(capacities: Sequence[int], count: int) -> tuple[int, ...]:
    """The most even split of ``count`` items over bins of these capacities, sorted descending
    (the split every other split majorizes)."""
    filled = [0] * len(capacities)
    for _ in range(count):
        open_bins = [i for i, cap in enumerate(capacities) if filled[i] < cap]
        filled[min(open_bins, key=lambda i: filled[i])] += 1
    return tuple(sorted(filled, reverse=True))


class _Spread:
    """The failure-domain layout of the live brokers and the target spread of one partition."""

    def __init__(self, dc_of: Mapping[int, str], rack_of: Mapping[int, str]) -> None:
        self.dc_of = dict(dc_of)
        self.rack_of = {n: (dc_of[n], rack_of[n]) for n in dc_of}
        self.dc_size = Counter(self.dc_of.values())
        self.rack_size = Counter(self.rack_of.values())
        self._targets: dict[tuple[str | None, int], tuple[int, ...]] = {}
        self._best: dict[tuple[tuple[str, str], ...], bool] = {}

    def _target(self, dc: str | None, count: int) -> tuple[int, ...]:
        key = (dc, count)
        if key not in self._targets:
            if dc is None:
                caps = [self.dc_size[d] for d in sorted(self.dc_size)]
            else:
                caps = [size for (d, _), size in sorted(self.rack_size.items()) if d == dc]
            self._targets[key] = _water_fill(caps, count)
        return self._targets[key]

    def is_best(self, replicas: Sequence[int]) -> bool:
        """Whether ``replicas`` spreads over DCs, and over racks within each DC, as evenly as
        any replica set of this size can."""
        key = tuple(sorted(self.rack_of[n] for n in replicas))
        known = self._best.get(key)
        if known is None:
            known = self._best[key] = self._is_best(replicas)
        return known

    def _is_best(self, replicas: Sequence[int]) -> bool:
        per_dc = Counter(self.dc_of[n] for n in replicas)
        if tuple(sorted(per_dc.values(), reverse=True)) != _pad(self._target(None, len(replicas))):
            return False
        for dc, count in per_dc.items():
            per_rack = Counter(self.rack_of[n] for n in replicas if self.dc_of[n] == dc)
            if tuple(sorted(per_rack.values(), reverse=True)) != _pad(self._target(dc, count)):
                return False
        return True


def _pad(target: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x for x in target if x)


def _pick_replicas(
    ordered: Sequence[int],
    replication_factor: int,
    spread: _Spread,
    load: dict[int, int],
    rank: Mapping[int, int],
) -> list[int]:
    """Greedy: one replica at a time, emptiest DC first, then emptiest rack of that DC, then
    least-loaded broker (then least-loaded DC and rack, as a look-ahead), then rank."""
    dc_of, rack_of = spread.dc_of, spread.rack_of
    dc_load: Counter[str] = Counter()
    rack_load: Counter[tuple[str, str]] = Counter()
    for n in ordered:
        dc_load[dc_of[n]] += load[n]
        rack_load[rack_of[n]] += load[n]
    chosen: list[int] = []
    in_dc: Counter[str] = Counter()
    in_rack: Counter[tuple[str, str]] = Counter()
    for _ in range(replication_factor):
        free = [n for n in ordered if n not in chosen]
        # The emptiest rack with a free broker, per DC: a pick from a fuller rack of the same
        # DC would break the rack spread. Racks of different DCs are not compared.
        emptiest: dict[str, int] = {}
        for n in free:
            used = in_rack[rack_of[n]]
            emptiest[dc_of[n]] = min(used, emptiest.get(dc_of[n], used))
        dc_share = {d: Fraction(dc_load[d], size) for d, size in spread.dc_size.items()}
        rack_share = {r: Fraction(rack_load[r], size) for r, size in spread.rack_size.items()}
        best = min(
            free,
            key=lambda n: (
                in_dc[dc_of[n]],
                in_rack[rack_of[n]] - emptiest[dc_of[n]],
                load[n],
                dc_share[dc_of[n]],
                rack_share[rack_of[n]],
                rank[n],
            ),
        )
        chosen.append(best)
        in_dc[dc_of[best]] += 1
        in_rack[rack_of[best]] += 1
        load[best] += 1
        dc_load[dc_of[best]] += 1
        rack_load[rack_of[best]] += 1
    return chosen


def _repair_load(
    replica_sets: list[list[int]],
    ordered: Sequence[int],
    spread: _Spread,
    load: dict[int, int],
    rank: Mapping[int, int],
) -> None:
    """Local search after the greedy pass. A *move* replaces broker ``a`` by broker ``b`` in one
    partition that keeps its best spread; a *cost-reducing path* is a chain of moves (in
    distinct partitions) from a broker hosting ``k`` replicas to one hosting ``<= k - 2``: the
    ends change by one, the brokers between are unchanged. Each path lowers the sum of squared
    loads, so the search ends. It repairs what greed leaves on uneven topologies (e.g. a DC
    whose brokers were all used up early); it is not proven globally optimal, but it matches a
    brute force on every small topology the tests try."""
    if max(load.values()) - min(load.values()) <= 1:
        return  # the usual case: nothing to repair, and no search cost
    hosting: dict[int, list[int]] = {n: [] for n in ordered}
    for p, replicas in enumerate(replica_sets):
        for n in replicas:
            hosting[n].append(p)
    improved = True
    while improved:
        improved = False
        for source in sorted(ordered, key=lambda n: (-load[n], rank[n])):
            if load[source] - min(load.values()) <= 1:
                break
            path = _load_path(source, replica_sets, hosting, ordered, spread, load)
            if path is None:
                continue
            for p, old, new in path:
                replica_sets[p] = [new if n == old else n for n in replica_sets[p]]
                hosting[old].remove(p)
                hosting[new].append(p)
                hosting[new].sort()
            load[path[0][1]] -= 1
            load[path[-1][2]] += 1
            improved = True
            break


def _load_path(
    source: int,
    replica_sets: Sequence[Sequence[int]],
    hosting: Mapping[int, Sequence[int]],
    ordered: Sequence[int],
    spread: _Spread,
    load: Mapping[int, int],
) -> list[tuple[int, int, int]] | None:
    """A BFS chain of (partition, from, to) replica moves, or None (see ``_repair_load``)."""
    parent: dict[int, tuple[int, int]] = {}
    seen = {source}
    queue = deque([source])
    while queue:
        here = queue.popleft()
        for p in hosting[here]:
            replicas = replica_sets[p]
            for there in ordered:
                if there in seen or there in replicas:
                    continue
                if not spread.is_best([there if n == here else n for n in replicas]):
                    continue
                seen.add(there)
                parent[there] = (p, here)
                if load[there] <= load[source] - 2:
                    path: list[tuple[int, int, int]] = []
                    node = there
                    while node != source:
                        p_step, prev = parent[node]
                        path.append((p_step, prev, node))
                        node = prev
                    path.reverse()
                    # BFS paths are shortest, so a partition appears at most once unless two
                    # steps share one; then the moves would interfere: give up on this path.
                    if len({step[0] for step in path}) != len(path):
                        return None
                    return path
                queue.append(there)
    return None


def _balance_leaders(
    replica_sets: Sequence[Sequence[int]], ordered: Sequence[int], rank: Mapping[int, int]
) -> list[int]:
    """One leader per replica set, with leader counts per broker as even as the sets allow."""
    count = {n: 0 for n in ordered}
    leaders: list[int] = []
    # Greedy start: fewest leaders so far, then the rotated order. Usually already optimal;
    # the path search below only repairs what greed got wrong.
    for replicas in replica_sets:
        leader = min(replicas, key=lambda n: (count[n], rank[n]))
        leaders.append(leader)
        count[leader] += 1
    led_by: dict[int, list[int]] = {n: [] for n in ordered}
    for p, leader in enumerate(leaders):
        led_by[leader].append(p)

    improved = True
    while improved:
        improved = False
        for source in sorted(ordered, key=lambda n: (-count[n], rank[n])):
            path = _cost_reducing_path(source, replica_sets, led_by, count)
            if path is None:
                continue
            # Each step hands partition p from broker `old` to broker `new`: the source loses
            # one leadership, the sink gains one, the brokers in between are unchanged.
            for p, old, new in path:
                leaders[p] = new
                led_by[old].remove(p)
                led_by[new].append(p)
                led_by[new].sort()
            count[path[0][1]] -= 1
            count[path[-1][2]] += 1
            improved = True
            break
    return leaders


def _cost_reducing_path(
    source: int,
    replica_sets: Sequence[Sequence[int]],
    led_by: Mapping[int, Sequence[int]],
    count: Mapping[int, int],
) -> list[tuple[int, int, int]] | None:
    """A BFS chain of (partition, from, to) moves from ``source`` to a broker leading at least
    two fewer partitions, or None. Deterministic: neighbours are visited in sorted order."""
    parent: dict[int, tuple[int, int]] = {}  # broker -> (partition, previous broker)
    seen = {source}
    queue = deque([source])
    while queue:
        here = queue.popleft()
        for p in led_by[here]:
            for there in sorted(replica_sets[p]):
                if there in seen:
                    continue
                seen.add(there)
                parent[there] = (p, here)
                if count[there] <= count[source] - 2:
                    path: list[tuple[int, int, int]] = []
                    node = there
                    while node != source:
                        p_step, prev = parent[node]
                        path.append((p_step, prev, node))
                        node = prev
                    path.reverse()
                    return path
                queue.append(there)
    return None
