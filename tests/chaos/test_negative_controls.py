"""Negative controls on real brokers: ``replog chaos run`` against a cluster running
deliberately broken code must go red, and the same run on the real code must stay green
(issue 14: "A chaos suite that cannot go red proves nothing").

The broken code lives in the tests only (tests/chaos/broken/): ``PYTHONPATH`` gets that folder
and ``REPLOG_BROKEN_VARIANT`` names the variant; the chaos cluster passes both on to every
broker it starts, whose interpreter start (``sitecustomize``) patches the broker as it imports
it. Each broker says so in its log, which the tests check, so a red run is known to come from
the broken code and a green one from the real code.

One configuration for all three runs: 3 nodes, the ``log`` workload (appends, and
linearizable full-prefix reads during the run), 28 s with one 16 s fault of the ``partition``
nemesis. Three adjustments are made in this test process only (the chaos code has no option
for them yet):

1. the nemesis's partition shapes are restricted to ``isolate-partition-leader`` (the leader
   of a workload partition is cut off from the other brokers; clients still reach it), and it
   picks a partition led by node 1 (``_leaders_on_first_node``): node 1 is the first
   bootstrap address, so the readers' metadata comes from it;
2. the log workload's setup waits until every partition is led by its preferred replica
   (``_then_settle``), so the leaders the readers cache are the ones the nemesis sees;
3. the producers bootstrap from node 2 first (``_bootstrap_from_second_node``): with node 1
   isolated, a client that asks node 1 for metadata never finds the new leader of the
   partition node 1 led, so no append there would be acknowledged during the fault.

- ``ack-without-quorum``: the isolated leader acknowledges appends it alone holds; the
  majority elects a new leader, the rejoining old one is truncated: ``lost``.
- ``read-without-readindex``: the isolated (soon deposed) leader keeps answering the readers
  that still take it for the leader (offsets and records), while the new leader acknowledges
  appends: ``stale-read``.
- the real code: valid.

Each run starts and stops its own cluster; afterwards no process of the run and no mount is
left (checked, as in test_chaos_run.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import chaos.nemesis
import chaos.run
import chaos.workloads.log
import chaos.workloads.queue
from chaos.cli import main
from chaos.workloads.clients import admin
from tests.chaos.broken.replog_broken import ENV, MARKER, VARIANTS
from tests.chaos.test_chaos_run import leftovers

pytestmark = pytest.mark.timeout(180)

BROKEN = Path(__file__).resolve().parent / "broken"
SHAPE = "isolate-partition-leader"


def chaos_run(
    out: Path, monkeypatch: pytest.MonkeyPatch, variant: str | None, seed: int = 3
) -> tuple[int, dict[str, Any]]:
    """One run of the shared configuration with ``variant`` injected (None: the real code)."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(BROKEN) + (os.pathsep + path if path else ""))
    if variant is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, variant)
    monkeypatch.setattr(chaos.nemesis, "PARTITIONS", (SHAPE,))
    monkeypatch.setattr(chaos.run, "_leaders", _leaders_on_first_node(chaos.run._leaders))
    log_workload = chaos.workloads.log.LogWorkload
    monkeypatch.setattr(log_workload, "setup", _then_settle(log_workload.setup))
    queue = chaos.workloads.queue.QueueWorkload
    monkeypatch.setattr(queue, "_new_producer", _bootstrap_from_second_node(queue._new_producer))
    code = main(
        [
            "run",
            "--nodes",
            "3",
            "--dcs",
            "3",
            "--workload",
            "log",
            "--nemesis",
            "partition",
            "--time",
            "28",
            "--interval",
            "16",
            "--rate",
            "100",
            "--partitions",
            "3",
            "--workers",
            "4",
            "--seed",
            str(seed),
            "--quiet",
            "--out",
            str(out),
        ]
    )
    results = json.loads((out / "results.json").read_text())
    assert not leftovers(out), leftovers(out)
    # Every broker ran the code the test meant: patched (the marker in its log) or not.
    logs = sorted((out / "cluster").glob("node-*.log"))
    assert len(logs) == 3, logs
    for log in logs:
        text = log.read_text(errors="replace")
        if variant is None:
            assert MARKER not in text, log
        else:
            assert f"{MARKER} {variant} applied" in text, log
    faults = results["faults"]
    assert faults and all(k.startswith(f"partition-{SHAPE}-") for k in faults), faults
    # The fault cut node 1 off (it led a workload partition when the fault began).
    events = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    starts = [e["value"] for e in events if e["process"] == "nemesis" and e["f"] == "start"]
    groups = [v["groups"] for v in starts if "groups" in v]
    assert groups and all(g == [[1], [2, 3]] for g in groups), starts
    return code, results


def _leaders_on_first_node(leaders: Any) -> Any:
    """The nemesis's view of the partition leaders, narrowed to those on node 1 (when node 1
    leads a workload partition; else all of them). Every client of the run bootstraps from
    node 1's proxy first, so a fresh client (each read's consumer, a producer's metadata
    refresh) asks node 1 for metadata: isolating node 1 while it leads a partition makes the
    clients keep reading from it, which is what a broker answering without ReadIndex gets
    wrong."""

    async def narrowed(ctx: Any, workloads: Any) -> dict[str, int]:
        found: dict[str, int] = await leaders(ctx, workloads)
        first = min(ctx.node_addresses)
        mine = {k: v for k, v in found.items() if k != "metadata" and v == first}
        return mine or found

    return narrowed


def _then_settle(setup: Any) -> Any:
    """The workload's setup, then a wait (at most 15 s) until every partition is led by its
    preferred replica. A new topic's first leaders hand over to the preferred replicas within
    about a second; a reader that cached a leader before the hand-over keeps asking that
    broker when it answers reads as a follower (the broken variant never says NOT_LEADER), so
    the nemesis (which isolates a leader it sees) would miss the broker the readers ask."""

    async def settled(self: Any) -> None:
        await setup(self)
        deadline = time.monotonic() + 15
        async with admin(self.ctx) as a:
            while time.monotonic() < deadline:
                try:
                    d = await a.describe_topic(self.topic)
                    if all(p.replicas and p.leader == p.replicas[0] for p in d.partitions):
                        return
                except Exception:
                    pass
                await asyncio.sleep(0.2)

    return settled


def _bootstrap_from_second_node(new_producer: Any) -> Any:
    """Producers bootstrap from node 2's proxy first (readers keep node 1 first). A client
    keeps asking the first broker of its bootstrap list for metadata as long as that broker
    answers, and an isolated node 1 answers with the leaders it knew: producers that ask it
    never find the new leader of the partitions it led (no acknowledged append there for the
    whole fault, on the real code too). Producers that ask node 2 do, so appends are
    acknowledged by the majority's new leader while the readers still ask node 1."""

    def rotated(self: Any) -> Any:
        ctx = self.ctx
        saved = ctx.bootstrap
        first, *rest = saved.split(",")
        ctx.bootstrap = ",".join([*rest, first])
        try:
            return new_producer(self)  # synchronous: no other task sees the swap
        finally:
            ctx.bootstrap = saved

    return rotated


def counts(results: dict[str, Any]) -> dict[str, int]:
    return {k: v["count"] for k, v in results["anomalies"].items()}


def test_real_code_is_valid_in_the_negative_controls_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The positive companion of both controls below: same configuration, real code."""
    code, results = chaos_run(tmp_path / "out", monkeypatch, None)
    assert results["valid"] is True, json.dumps(results["anomalies"])[:2000]
    assert code == 0
    log = results["stats"]["workloads"]["log"]["by_f"]
    assert log["append"]["ok"] > 200 and log["read"]["ok"] > 10, log


def test_ack_without_quorum_loses_acknowledged_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, results = chaos_run(tmp_path / "out", monkeypatch, "ack-without-quorum")
    assert results["valid"] is False, counts(results)
    assert code == 1
    assert counts(results).get("lost", 0) > 0, counts(results)


def test_read_without_readindex_serves_stale_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, results = chaos_run(tmp_path / "out", monkeypatch, "read-without-readindex")
    assert results["valid"] is False, counts(results)
    assert code == 1
    assert counts(results).get("stale-read", 0) > 0, counts(results)


def test_the_hook_patches_only_the_named_variant_and_chains(tmp_path: Path) -> None:
    """Without a cluster: the interpreter-start hook patches the broker exactly when a variant
    is named, refuses an unknown name, and still runs a ``sitecustomize`` it shadows."""
    shadowed = tmp_path / "site"
    shadowed.mkdir()
    (shadowed / "sitecustomize.py").write_text("import sys\nsys.stderr.write('chained\\n')\n")
    probe = (
        "import server.partition_replica as m; R = m.PartitionReplica; "
        "print(getattr(m, 'BROKEN_VARIANT', None), R.produce.__qualname__, "
        "R.read_barrier.__qualname__, R.ensure_readable.__qualname__)"
    )

    def python(variant: str | None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != ENV}
        env["PYTHONPATH"] = os.pathsep.join([str(BROKEN), str(shadowed)])
        if variant is not None:
            env[ENV] = variant
        return subprocess.run(
            [sys.executable, "-c", probe],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    real = python(None)
    assert real.returncode == 0, real.stderr
    assert real.stdout.split() == [
        "None",
        "PartitionReplica.produce",
        "PartitionReplica.read_barrier",
        "PartitionReplica.ensure_readable",
    ]
    assert "chained" in real.stderr and MARKER not in real.stderr
    for variant, patched in (
        ("ack-without-quorum", {1}),
        ("read-without-readindex", {2, 3}),
    ):
        r = python(variant)
        assert r.returncode == 0, r.stderr
        words = r.stdout.split()
        assert words[0] == variant
        assert {i for i in (1, 2, 3) if not words[i].startswith("PartitionReplica.")} == patched
        assert f"{MARKER} {variant} applied" in r.stderr and "chained" in r.stderr
    bad = python("no-such-variant")
    assert bad.returncode == 2 and "unknown variant" in bad.stderr
    assert set(VARIANTS) == {"ack-without-quorum", "read-without-readindex"}
