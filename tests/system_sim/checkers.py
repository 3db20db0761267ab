"""Checkers: what must hold of one seed's history and final state.

Contract: pure functions of a :class:`History` and a :class:`FinalState`; each returns a list
of violation strings (empty when the property holds), each string self-contained enough to
start debugging from (the values, offsets, nodes and virtual times involved). Nothing here
drives the cluster or reads randomness. ``check_all`` runs every checker.

The properties (issue 13, "Checked after every step, or at the end of each seed"):

(a) ``acked_records_survive``: a record acknowledged with acks=all reads back at its
    acknowledged (partition, offset) with the same bytes. acks=leader records are not
    required to survive a failover.
(b) ``no_duplicates``: with idempotence, no produced value sits at two offsets (final reads
    and consumer observations alike); every value read was produced by someone.
(c) ``producer_order``: per producer per partition, records keep send order: offsets of
    acks=all acknowledgements increase with send order, and in the final log a producer's
    records appear in send order (acknowledged or not).
(d) ``consumers_saw_only_durable``: every record a consumer was handed is in the final read at
    that offset with those bytes; and a consumer never skips a record or goes backwards
    without a seek (Part 1 defect 7: a reset to "latest" across a failover).
(e) ``replicas_agree``: replicas of a group hold identical committed entries where their
    logs overlap.
(f) ``one_leader_per_term``: at most one leader per (group, term).
(g) ``metadata_agrees``: metadata state identical across brokers at equal applied index.
(h) ``groups_healthy``: at the end no group is failed, every live group has a leader, every
    replica applied what it committed and holds what its leader committed.
(i) ``liveness``: after the heal a new topic can be created, every partition accepted and
    returned a probe record within the bound, and every final drain read completed.
(j) ``topics_survive``: a topic whose creation was acknowledged (and not deleted) still exists.
(k) ``linearizable_offsets``: a linearizable ``ListOffsets`` (ReadIndex) answers a high
    watermark above every acks=all record of that partition acknowledged before it was asked.

Exemptions, all explicit: records of a topic that had a ``delete_topic`` invoked are exempt
from (a), (c)-final and (d) (the topic may be gone); records below the final log start of a
topic configured with retention are exempt from (a) and (d) (retention cut them).
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable

from tests.system_sim.history import (
    Ack,
    FinalState,
    GroupStatus,
    History,
    Observation,
    Op,
    PartitionRead,
    Send,
)

__all__ = [
    "CHECKERS",
    "acked_records_survive",
    "check_all",
    "consumers_saw_only_durable",
    "groups_healthy",
    "harness_errors",
    "linearizable_offsets",
    "liveness",
    "metadata_agrees",
    "no_duplicates",
    "one_leader_per_term",
    "producer_order",
    "replicas_agree",
    "topics_survive",
]

MAX_REPORTED = 5  # violations reported per checker (the first ones tell the story)


# ---------------------------------------------------------------------------- helpers


def deleted_topics(history: History) -> set[str]:
    """Topics with a delete invoked (it may have happened even if the call failed)."""
    return {op.value for op in history if op.f == "delete_topic" and op.type == "invoke"}


def sends(history: History) -> dict[bytes, tuple[str, Send]]:
    """value -> (process, Send) for every record handed to a producer (probes included)."""
    out: dict[bytes, tuple[str, Send]] = {}
    for op in history:
        if op.type == "invoke" and op.f in ("send", "probe") and isinstance(op.value, Send):
            out[op.value.value] = (op.process, op.value)
    return out


def acks(history: History) -> list[tuple[Op, Send, Ack]]:
    """Every acknowledged send (and probe): (completion op, Send, Ack)."""
    out: list[tuple[Op, Send, Ack]] = []
    for op in history:
        if op.type == "ok" and op.f in ("send", "probe"):
            send, ack = op.value
            out.append((op, send, ack))
    return out


def observations(history: History) -> list[tuple[Op, Observation]]:
    out: list[tuple[Op, Observation]] = []
    for op in history:
        if op.type == "ok" and op.f == "poll":
            out.extend((op, obs) for obs in op.value)
    return out


def _exempt(read: PartitionRead, offset: int, final: FinalState) -> bool:
    return read.topic in final.retention_topics and offset < read.log_start


def _short(value: bytes) -> str:
    """A produced value without its padding: b'producer-1:374:'+120 bytes."""
    head, sep, _ = value.partition(b":")
    num, sep2, rest = _.partition(b":") if sep else (b"", b"", b"")
    if sep and sep2 and len(rest) > 8:
        return f"{(head + b':' + num + b':')!r}+{len(rest)}B"
    return repr(value if len(value) <= 40 else value[:40] + b"...")


def _capped(found: list[str], name: str) -> list[str]:
    if len(found) <= MAX_REPORTED:
        return found
    return [*found[:MAX_REPORTED], f"{name}: ... and {len(found) - MAX_REPORTED} more"]


def _final_index(final: FinalState) -> dict[tuple[str, int], dict[int, bytes]]:
    return {key: dict(read.records) for key, read in final.reads.items()}


# ---------------------------------------------------------------------------- (a)


def acked_records_survive(history: History, final: FinalState) -> list[str]:
    deleted = deleted_topics(history)
    index = _final_index(final)
    found: list[str] = []
    for op, send, ack in acks(history):
        if send.acks != "all" or send.topic in deleted:
            continue
        key = (ack.topic, ack.partition)
        read = final.reads.get(key)
        if read is None:
            found.append(
                f"acked record {_short(send.value)} ({op.process}, t={op.time_s:.3f}): "
                f"no final read of {ack.topic}/{ack.partition}"
            )
            continue
        if not read.complete or _exempt(read, ack.offset, final):
            continue  # an incomplete read is a liveness violation of its own
        got = index[key].get(ack.offset)
        if got == send.value:
            continue
        where = ""
        for offset, value in read.records:
            if value == send.value:
                where = f"; the value sits at offset {offset}"
                break
        if got is None:
            found.append(
                f"acked record lost: {_short(send.value)} acknowledged at {ack.topic}/"
                f"{ack.partition}@{ack.offset} ({op.process}, t={op.time_s:.3f}) is absent "
                f"from the final read [{read.log_start}, {read.high_watermark}){where}"
            )
        else:
            found.append(
                f"acked record replaced: {_short(send.value)} acknowledged at {ack.topic}/"
                f"{ack.partition}@{ack.offset} ({op.process}, t={op.time_s:.3f}) reads back as "
                f"{_short(got)}{where}"
            )
    return _capped(found, "acked_records_survive")


# ---------------------------------------------------------------------------- (b)


def no_duplicates(history: History, final: FinalState) -> list[str]:
    produced = sends(history)
    found: list[str] = []
    seen_at: dict[bytes, set[tuple[str, int, int]]] = defaultdict(set)
    for read in final.reads.values():
        for offset, value in read.records:
            seen_at[value].add((read.topic, read.partition, offset))
    for _op, obs in observations(history):
        seen_at[obs.value].add((obs.topic, obs.partition, obs.offset))
    for value, places in seen_at.items():
        origin = produced.get(value)
        if origin is None:
            where = ", ".join(f"{t}/{p}@{o}" for t, p, o in sorted(places))
            found.append(f"unexpected record {_short(value)} at {where}: no producer sent it")
            continue
        if len(places) > 1 and origin[1].idempotent:
            where = ", ".join(f"{t}/{p}@{o}" for t, p, o in sorted(places))
            found.append(f"duplicate under idempotence: {_short(value)} ({origin[0]}) at {where}")
    return _capped(found, "no_duplicates")


# ---------------------------------------------------------------------------- (c)


def producer_order(history: History, final: FinalState) -> list[str]:
    found: list[str] = []
    # Acknowledgements (acks=all) of one producer on one partition, in send order.
    acked: dict[tuple[str, str, int], list[tuple[int, int, bytes]]] = defaultdict(list)
    for op, send, ack in acks(history):
        if send.acks == "all":
            acked[(op.process, ack.topic, ack.partition)].append((send.seq, ack.offset, send.value))
    for (process, topic, partition), items in sorted(acked.items()):
        items.sort()
        for (_s1, o1, v1), (_s2, o2, v2) in itertools.pairwise(items):
            if o2 <= o1:
                found.append(
                    f"producer order: {process} sent {_short(v1)} before {_short(v2)} to {topic}/"
                    f"{partition} but they were acknowledged at offsets {o1} and {o2}"
                )
                break
    # The final log: a producer's records in send order, acknowledged or not.
    deleted = deleted_topics(history)
    produced = sends(history)
    for read in final.reads.values():
        if read.topic in deleted:
            continue
        last: dict[str, tuple[int, int, bytes]] = {}
        for offset, value in read.records:
            origin = produced.get(value)
            if origin is None:
                continue
            process, send = origin
            prev = last.get(process)
            if prev is not None and send.seq < prev[0]:
                found.append(
                    f"producer order: {process} sent {_short(value)} before {_short(prev[2])} but "
                    f"{read.topic}/{read.partition} holds them at offsets {offset} > {prev[1]}"
                )
            last[process] = (send.seq, offset, value)
    return _capped(found, "producer_order")


# ---------------------------------------------------------------------------- (d)


def consumers_saw_only_durable(history: History, final: FinalState) -> list[str]:
    deleted = deleted_topics(history)
    index = _final_index(final)
    found: list[str] = []
    # What a consumer saw must be in the final log, at that offset, with those bytes.
    for op, obs in observations(history):
        if obs.topic in deleted:
            continue
        key = (obs.topic, obs.partition)
        read = final.reads.get(key)
        if read is None or not read.complete or _exempt(read, obs.offset, final):
            continue
        got = index[key].get(obs.offset)
        if got != obs.value:
            now = "absent" if got is None else f"{_short(got)}"
            found.append(
                f"consumer saw a record that is later {'absent' if got is None else 'different'}: "
                f"{op.process} got {_short(obs.value)} at {obs.topic}/{obs.partition}@{obs.offset} "
                f"(t={op.time_s:.3f}); the final read has {now}"
            )
    # No skips, no re-reads between seeks.
    offsets_of = {
        key: [o for o, _ in read.records] for key, read in final.reads.items() if read.complete
    }
    last: dict[tuple[str, str, int], int | None] = {}
    for op in history:
        if op.type != "ok":
            continue
        if op.f == "seek":
            topic, partition, offset = op.value
            last[(op.process, topic, partition)] = None if offset is None else offset - 1
            continue
        if op.f != "poll":
            continue
        for obs in op.value:
            seen = (op.process, obs.topic, obs.partition)
            prev = last.get(seen)
            last[seen] = obs.offset
            if prev is None or obs.topic in deleted:
                continue
            if obs.offset <= prev:
                found.append(
                    f"consumer went backwards without a seek: {op.process} got "
                    f"{obs.topic}/{obs.partition}@{obs.offset} after offset {prev} "
                    f"(t={op.time_s:.3f})"
                )
                continue
            offsets = offsets_of.get((obs.topic, obs.partition))
            if offsets is None:
                continue
            skipped = offsets[
                bisect.bisect_right(offsets, prev) : bisect.bisect_left(offsets, obs.offset)
            ]
            if skipped:
                found.append(
                    f"consumer skipped records: {op.process} went from "
                    f"{obs.topic}/{obs.partition}@{prev} to {obs.offset} (t={op.time_s:.3f}) "
                    f"but the log holds records at {skipped[:5]}"
                )
    return _capped(found, "consumers_saw_only_durable")


# ---------------------------------------------------------------------------- (e)-(g)


def replicas_agree(history: History, final: FinalState) -> list[str]:
    found: list[str] = []
    for group_id, by_node in sorted(final.committed_logs.items()):
        first: dict[int, tuple[int, bytes, int]] = {}
        for node_id, entries in sorted(by_node.items()):
            for index, term, digest in entries:
                seen = first.get(index)
                if seen is None:
                    first[index] = (term, digest, node_id)
                elif (seen[0], seen[1]) != (term, digest):
                    found.append(
                        f"replicas disagree: group {group_id} index {index}: node {seen[2]} "
                        f"committed term {seen[0]} data {seen[1].hex()[:16]}, node {node_id} "
                        f"term {term} data {digest.hex()[:16]}"
                    )
                    break
    return _capped(found, "replicas_agree")


def one_leader_per_term(history: History, final: FinalState) -> list[str]:
    leaders: dict[tuple[int, int], set[int]] = defaultdict(set)
    for group_id, term, node_id in final.leaders:
        leaders[(group_id, term)].add(node_id)
    deleted = deleted_topics(history)
    found = []
    for (group_id, term), nodes in sorted(leaders.items()):
        if len(nodes) < 2:
            continue
        topic = final.group_topics.get(group_id)
        what = f" (topic {topic}{', deleted' if topic in deleted else ''})" if topic else ""
        found.append(
            f"two leaders in one term: group {group_id}{what} term {term} led by nodes "
            f"{sorted(nodes)}"
        )
    return _capped(found, "one_leader_per_term")


def metadata_agrees(history: History, final: FinalState) -> list[str]:
    at: dict[int, tuple[bytes, int]] = {}
    found: list[str] = []
    for node_id, applied, digest in final.metadata_digests:
        seen = at.get(applied)
        if seen is None:
            at[applied] = (digest, node_id)
        elif seen[0] != digest:
            found.append(
                f"metadata diverged: at applied index {applied} node {seen[1]} has state "
                f"{seen[0].hex()[:16]}, node {node_id} has {digest.hex()[:16]}"
            )
            at[applied] = (digest, node_id)  # report each divergence once
    return _capped(found, "metadata_agrees")


# ---------------------------------------------------------------------------- (h), (i)


def groups_healthy(history: History, final: FinalState) -> list[str]:
    found: list[str] = []
    by_group: dict[int, list[GroupStatus]] = defaultdict(list)
    for status in final.statuses:
        if status.failed:
            found.append(
                f"group failed: group {status.group_id} on node {status.node_id}: {status.failed}"
            )
        by_group[status.group_id].append(status)
    for group_id in sorted(final.live_groups):
        replicas = by_group.get(group_id, [])
        if not replicas:
            found.append(f"group stuck: group {group_id} has no replica at the end")
            continue
        top = max(r.term for r in replicas)
        leaders = [r for r in replicas if r.role == "leader" and r.term == top]
        if not leaders:
            roles = ", ".join(
                f"node {r.node_id} {r.role} term {r.term}"
                for r in sorted(replicas, key=lambda r: r.node_id)
            )
            found.append(f"group stuck: group {group_id} has no leader at the end ({roles})")
            continue
        leader = leaders[0]
        for r in sorted(replicas, key=lambda r: r.node_id):
            if r.applied < r.commit:
                found.append(
                    f"group stuck: group {group_id} node {r.node_id} applied {r.applied} of "
                    f"commit {r.commit}"
                )
            elif r.last_index < leader.commit:
                found.append(
                    f"group stuck: group {group_id} node {r.node_id} ({r.role}) holds up to "
                    f"index {r.last_index}; leader {leader.node_id} committed {leader.commit}"
                )
            elif r.commit < leader.commit:
                # Holds the entries but never learned they are committed: partitions leave
                # the commit index to the next append or heartbeat (RaftConfig
                # broadcast_commit), so a group that went quiet too early would stay so.
                found.append(
                    f"group stuck: group {group_id} node {r.node_id} ({r.role}) knows commit "
                    f"{r.commit}; leader {leader.node_id} committed {leader.commit}"
                )
    return _capped(found, "groups_healthy")


def liveness(history: History, final: FinalState) -> list[str]:
    bound_s = final.liveness_bound_s
    found: list[str] = []
    for invoke, done in history.pairs("probe"):
        send: Send = invoke.value
        where = f"{send.topic}/{send.partition}"
        if done is None:
            found.append(f"liveness: probe of {where} at t={invoke.time_s:.3f} never completed")
        elif done.type != "ok":
            found.append(
                f"liveness: probe of {where} at t={invoke.time_s:.3f} failed at "
                f"t={done.time_s:.3f}: {done.value[1]}"
            )
        elif done.time_s - invoke.time_s > bound_s:
            found.append(
                f"liveness: probe of {where} took {done.time_s - invoke.time_s:.3f}s "
                f"(bound {bound_s}s)"
            )
    for invoke, done in history.pairs("create_topic"):
        if invoke.process != "probe":
            continue
        if done is None or done.type != "ok":
            why = "" if done is None else f" (tried until t={done.time_s:.3f}): {done.value[1]}"
            found.append(
                f"liveness: no topic could be created after the heal, from t={invoke.time_s:.3f}"
                f"{why}"
            )
    for read in sorted(final.reads.values(), key=lambda r: (r.topic, r.partition)):
        if not read.complete:
            found.append(
                f"liveness: final read of {read.topic}/{read.partition} did not "
                f"finish: {read.error}"
            )
    return _capped(found, "liveness")


def topics_survive(history: History, final: FinalState) -> list[str]:
    """A topic whose creation was acknowledged, and that nobody asked to delete, exists at the
    end (its final reads do not answer UNKNOWN_TOPIC)."""
    deleted = deleted_topics(history)
    found: list[str] = []
    for invoke, done in history.pairs("create_topic"):
        name = invoke.value[0]
        if done is None or done.type != "ok" or name in deleted:
            continue
        for (topic, partition), read in sorted(final.reads.items()):
            if topic == name and "UnknownTopic" in read.error:
                found.append(
                    f"acknowledged topic lost: {name} (created t={done.time_s:.3f}, "
                    f"{invoke.process}) does not exist at the end ({topic}/{partition}: "
                    f"{read.error[:120]})"
                )
                break
    return _capped(found, "topics_survive")


def harness_errors(history: History, final: FinalState) -> list[str]:
    return _capped(list(final.errors), "harness")


# ---------------------------------------------------------------------------- (k)


def linearizable_offsets(history: History, final: FinalState) -> list[str]:
    """Each ok ``offsets`` read (invoked at t, answered hw) against the acks=all records of its
    partition acknowledged before t: every one must lie below hw. O(n log n): per partition,
    the running maximum acknowledged offset by acknowledgement time."""
    deleted = deleted_topics(history)
    acked: dict[tuple[str, int], list[tuple[float, int, str]]] = defaultdict(list)
    for op, send, ack in acks(history):
        if send.acks == "all" and send.topic not in deleted:
            acked[(send.topic, send.partition)].append((op.time_s, ack.offset, _short(send.value)))
    prefix: dict[tuple[str, int], tuple[list[float], list[tuple[int, str]]]] = {}
    for key, rows in acked.items():
        rows.sort()
        times, best, top = [], [], (-1, "")
        for t, offset, value in rows:
            if offset > top[0]:
                top = (offset, value)
            times.append(t)
            best.append(top)
        prefix[key] = (times, best)
    found: list[str] = []
    for inv, done in history.pairs("offsets"):
        if done is None or done.type != "ok" or inv.value[0] in deleted:
            continue
        key, hw = tuple(inv.value), done.value
        times, best = prefix.get(key, ([], []))
        i = bisect.bisect_left(times, inv.time_s)  # acknowledged strictly before the invoke
        if i and best[i - 1][0] >= hw:
            offset, value = best[i - 1]
            found.append(
                f"{key[0]}/{key[1]}: linearizable ListOffsets invoked at t={inv.time_s:.3f} "
                f"answered high watermark {hw} at t={done.time_s:.3f}, but {value} was "
                f"acknowledged at offset {offset} before it was asked (a stale read)"
            )
    return _capped(found, "linearizable_offsets")


Checker = Callable[[History, FinalState], list[str]]

CHECKERS: dict[str, Checker] = {
    "acked_records_survive": acked_records_survive,
    "topics_survive": topics_survive,
    "no_duplicates": no_duplicates,
    "producer_order": producer_order,
    "consumers_saw_only_durable": consumers_saw_only_durable,
    "replicas_agree": replicas_agree,
    "one_leader_per_term": one_leader_per_term,
    "metadata_agrees": metadata_agrees,
    "groups_healthy": groups_healthy,
    "liveness": liveness,
    "linearizable_offsets": linearizable_offsets,
    "harness": harness_errors,
}


def check_all(history: History, final: FinalState, only: Iterable[str] | None = None) -> list[str]:
    """Every checker's violations, each prefixed with the checker's name."""
    names = list(CHECKERS) if only is None else list(only)
    out: list[str] = []
    for name in names:
        out.extend(f"[{name}] {v}" for v in CHECKERS[name](history, final))
    return out
