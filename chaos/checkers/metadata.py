"""Metadata convergence: after the heal every broker lists the same topics, and those are what
the acknowledged creates and deletes imply.

Input (the metadata workload): ``create`` / ``delete`` with the topic name as value; ``list``
with ok value = the list of topic names; the lists taken after the final heal carry
``"final": true`` and ``"node"`` (the broker asked; the process when absent).

Expected state per topic touched by a create or delete. Topic operations are linearizable
(they go through the metadata Raft group), so the final state is the kind of the operation
that took effect last. Candidates for "last": an ok operation that completed at or after the
latest invocation among the ok operations on that topic (anything completing earlier is
certainly followed by that one), and every ``info`` operation (it may take effect at any time,
or never). With no ok operation, "never existed" is a candidate too. All candidates of one kind
fix the expectation; mixed kinds accept either state. Failed operations took no effect.

- **metadata-divergence**: a topic some final lists have and others lack.
- **metadata-mismatch**: a topic whose expected state is fixed and some final list disagrees.

Topics nobody created or deleted (other workloads' topics) count for divergence only. Without
any final list the verdict is "unknown".
"""

from __future__ import annotations

from collections.abc import Sequence

from chaos.checkers.result import Anomalies, CheckResult
from chaos.history import Pair

__all__ = ["check_metadata", "expected_topics"]

PRESENT, ABSENT, EITHER = "present", "absent", "either"


def expected_topics(pairs: Sequence[Pair]) -> dict[str, str]:
    """Topic -> ``present`` | ``absent`` | ``either`` from the creates and deletes."""
    ops: dict[str, list[Pair]] = {}
    for p in pairs:
        if p.invoke.f in ("create", "delete") and p.type != "fail":
            if not isinstance(p.invoke.value, str):
                continue
            ops.setdefault(p.invoke.value, []).append(p)
    out: dict[str, str] = {}
    for topic, ps in ops.items():
        oks = [p for p in ps if p.type == "ok"]
        latest_invoke = max((p.invoke.time for p in oks), default=None)
        kinds = set()
        if latest_invoke is None:
            kinds.add(ABSENT)
        for p in ps:
            if p.type == "info" or p.complete_time >= latest_invoke:  # type: ignore[operator]
                kinds.add(PRESENT if p.invoke.f == "create" else ABSENT)
        out[topic] = kinds.pop() if len(kinds) == 1 else EITHER
    return out


def check_metadata(pairs: Sequence[Pair]) -> CheckResult:
    finals: dict[object, set[str]] = {}
    for p in pairs:
        c = p.completion
        if (
            p.invoke.f == "list"
            and c is not None
            and c.type == "ok"
            and (c.final or p.invoke.final)
        ):
            node = (
                c.node
                if c.node is not None
                else (p.invoke.node if p.invoke.node is not None else p.invoke.process)
            )
            # A later final list of the same broker replaces an earlier one.
            finals[node] = {t for t in (c.value or []) if isinstance(t, str)}
    expected = expected_topics(pairs)
    an = Anomalies()
    stats = {
        "brokers_listed": len(finals),
        "topics_touched": len(expected),
        "uncertain_topics": sum(1 for v in expected.values() if v == EITHER),
    }
    if not finals:
        return an.result("metadata", stats, unknown=True)
    nodes = sorted(finals, key=str)
    for topic in sorted(set().union(*finals.values())):
        have = [n for n in nodes if topic in finals[n]]
        if len(have) != len(nodes):
            an.add(
                "metadata-divergence",
                {
                    "topic": topic,
                    "present_on": have,
                    "absent_on": [n for n in nodes if n not in have],
                },
            )
    for topic, want in sorted(expected.items()):
        if want == EITHER:
            continue
        wrong = [n for n in nodes if (topic in finals[n]) != (want == PRESENT)]
        if wrong:
            an.add("metadata-mismatch", {"topic": topic, "expected": want, "nodes": wrong})
    return an.result("metadata", stats)
