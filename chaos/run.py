"""One chaos run: start a cluster behind proxies, run workloads at a rate while the nemesis
injects faults on a seeded schedule, heal, wait for recovery, read the final state, check the
history and write history.jsonl, results.json and report.html.

Contract: every wait is bounded; the cluster (brokers, Toxiproxy, LazyFS mounts) is stopped in
a ``finally``, also on Ctrl-C. With ``--bootstrap DIR/cluster.json`` the run attaches to a
cluster ``replog chaos prepare`` started (``AttachedCluster``): the same faults, and in the
``finally`` every fault is healed and the cluster is left running (killed brokers started
again), never stopped. With ``--bootstrap ADDRS`` only workloads run (``--nemesis none``).
``finish`` turns a history into results and is shared with ``replog chaos check``, so both give
the same verdict for the same history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.checkers import check_all
from chaos.cluster import AttachedCluster, ChaosCluster, description_path, wait_ready
from chaos.history import HistoryWriter, Op, read_history
from chaos.nemesis import Nemesis
from chaos.report import fault_stats, write_report
from chaos.workloads import Context, Workload, make_workload
from chaos.workloads.clients import admin
from client.errors import ReplogError, UnknownTopic

RECOVERY_S = 90.0
VERIFY_S = 60.0  # bound on asking replicas that are still restarting again
NEMESIS_OP_S = 120.0  # bound on injecting or undoing one fault (a crash-after-create writes)
DROP_TOPICS_S = 60.0  # bound on deleting an earlier run's topics from a bootstrapped cluster
OWN_TOPICS = "chaos-"  # every topic the workloads and nemeses create starts with this


@dataclass
class Options:
    nodes: int = 5
    dcs: int = 3
    workloads: list[str] = field(default_factory=lambda: ["queue"])
    nemeses: list[str] = field(default_factory=lambda: ["partition"])
    time_s: float = 120.0
    rate: float = 500.0
    seed: int | None = None
    out: Path = Path("chaos-out")
    settings: list[str] = field(default_factory=list)
    bootstrap: str | None = None
    interval_s: float | None = None  # fault length; quiet time between faults is half of it
    partitions: int = 4
    workers: int = 8
    quiet: bool = False


def _interval(opts: Options) -> float:
    if opts.interval_s:
        return opts.interval_s
    if "mix" in opts.nemeses:
        return 30.0
    return max(3.0, min(15.0, opts.time_s / 4))


def _say(opts: Options, text: str) -> None:
    if not opts.quiet:
        print(text, file=sys.stderr, flush=True)


def _wants_fuse(nemeses: list[str]) -> bool:
    return any(n in ("power-loss", "power-loss-all", "mix") for n in nemeses)


async def _wait_ready(ctx: Context, timeout_s: float) -> bool:
    """The metadata group has a leader and every broker is alive (bounded)."""
    return await wait_ready(ctx.bootstrap, ctx.client_kwargs, len(ctx.node_addresses), timeout_s)


def _record(history: HistoryWriter, f: str, value: dict[str, Any]) -> None:
    inv = history.invoke("runner", f, None)
    history.complete(inv, "info", value)


async def run(opts: Options) -> dict[str, Any]:
    opts.out.mkdir(parents=True, exist_ok=True)
    hist_path = opts.out / "history.jsonl"
    hist_path.unlink(missing_ok=True)
    seed = opts.seed if opts.seed is not None else random.randrange(1 << 31)
    rng = random.Random(seed)
    described = description_path(opts.bootstrap)
    if opts.bootstrap and described is None and opts.nemeses != ["none"]:
        raise ValueError(
            "--bootstrap with addresses runs workloads against an existing cluster; "
            "only --nemesis none is supported there (faults need a cluster the suite started "
            "or one prepared with `replog chaos prepare`: --bootstrap DIR/cluster.json)"
        )
    # Why power loss cannot run here (recorded as skip), or None.
    power_reason = None
    if _wants_fuse(opts.nemeses) and described is None:
        from chaos.lazyfs import fuse_unavailable_reason

        fuse_reason = fuse_unavailable_reason()
        if fuse_reason:
            power_reason = f"FUSE unavailable: {fuse_reason}"
            _say(opts, f"chaos: FUSE unavailable, power-loss nemesis skipped: {fuse_reason}")
    cluster: ChaosCluster | None = None
    run_info: dict[str, Any] = {
        "nodes": opts.nodes,
        "dcs": opts.dcs,
        "workloads": opts.workloads,
        "nemeses": opts.nemeses,
        "time_s": opts.time_s,
        "rate": opts.rate,
        "seed": seed,
        "settings": opts.settings,
    }
    with HistoryWriter(hist_path) as history:
        try:
            if described is not None:
                _say(opts, f"chaos: attaching to the prepared cluster {described} (seed {seed})")
                cluster = AttachedCluster(described)
                await asyncio.to_thread(cluster.start)
                addrs, bootstrap = dict(cluster.client_addresses), cluster.bootstrap
                kwargs = cluster.client_kwargs()
                run_info.update(
                    nodes=cluster.n,
                    dcs=len(cluster.dc_names()),
                    settings=cluster.settings,
                    bootstrap=str(described),
                )
                if _wants_fuse(opts.nemeses):
                    power_reason = cluster.power_loss_unavailable()
                    if power_reason:
                        _say(opts, f"chaos: power-loss nemesis skipped: {power_reason}")
            elif opts.bootstrap:
                addrs = dict(enumerate(opts.bootstrap.split(","), 1))
                bootstrap, kwargs = opts.bootstrap, {}
            else:
                _say(opts, f"chaos: starting {opts.nodes} brokers in {opts.dcs} DCs (seed {seed})")
                cluster = ChaosCluster(
                    opts.out / "cluster",
                    opts.nodes,
                    opts.dcs,
                    opts.settings,
                    lazyfs=_wants_fuse(opts.nemeses) and power_reason is None,
                )
                await asyncio.to_thread(cluster.start)
                addrs, bootstrap = dict(cluster.client_addresses), cluster.bootstrap
                kwargs = cluster.client_kwargs()
            ctx = Context(history, bootstrap, kwargs, addrs, min(3, len(addrs)), opts.rate, rng)
            if not await _wait_ready(ctx, 60):
                raise RuntimeError(
                    "cluster not ready in 60 s" + (f"\n{cluster.log_tail()}" if cluster else "")
                )
            if opts.bootstrap:
                await _drop_old_topics(opts, ctx, history)
            results = await _run_phases(opts, ctx, cluster, history, rng, power_reason)
        finally:
            if cluster is not None:
                if isinstance(cluster, AttachedCluster):
                    _say(opts, "chaos: detaching; the prepared cluster keeps running, healed")
                else:
                    _say(opts, "chaos: stopping the cluster")
                await asyncio.to_thread(cluster.stop)
    results = finish(opts.out, extra=results)
    results["run"] = run_info
    (opts.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    return results


async def _run_phases(
    opts: Options,
    ctx: Context,
    cluster: ChaosCluster | None,
    history: HistoryWriter,
    rng: random.Random,
    power_reason: str | None,
) -> dict[str, Any]:
    workloads = [make_workload(w, ctx, opts.partitions, opts.workers) for w in opts.workloads]
    for w in workloads:
        await asyncio.wait_for(w.setup(), 120)
    queue = next((w for w in workloads if w.name == "queue"), None)
    nemesis = None
    if cluster is not None:
        nemesis = Nemesis(
            cluster,
            history,
            rng,
            lambda: _leaders(ctx, workloads),
            _fresh_topic_writer(queue) if queue else None,
            power_reason,
        )
        if power_reason:
            for n in ("power-loss", "power-loss-all", "mix"):
                if n in opts.nemeses:
                    nemesis.skip(n if n != "mix" else "power-loss", power_reason)
    tasks = [asyncio.create_task(w.run()) for w in workloads]
    start = time.monotonic()
    try:
        await _schedule(opts, ctx, nemesis, start)
    finally:
        ctx.stop.set()
        if nemesis is not None:
            _say(opts, "chaos: healing every fault")
            await asyncio.wait_for(nemesis.heal(), NEMESIS_OP_S)
        _done, pending = await asyncio.wait(tasks, timeout=ctx.op_timeout_s * 3)
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    _say(opts, "chaos: waiting for recovery")
    t_heal = time.monotonic()
    ready = await _wait_ready(ctx, RECOVERY_S)
    probes = {w.name: await w.probe(t_heal + RECOVERY_S) for w in workloads}
    recovery = {"ready": ready, "seconds": round(time.monotonic() - t_heal, 2), "probes": probes}
    _record(history, "recovery", recovery)
    _say(opts, f"chaos: final reads (recovered: {ready}, {recovery['seconds']} s)")
    for w in workloads:
        await asyncio.wait_for(w.final(), 600)
        await w.close()
    _say(opts, "chaos: comparing replicas (replog partition verify)")
    _record(history, "verify", await _verify_replicas(ctx, time.monotonic() + VERIFY_S))
    return {"skipped": nemesis.skipped if nemesis else {}}


async def _drop_old_topics(opts: Options, ctx: Context, history: HistoryWriter) -> None:
    """A cluster the run did not start may hold an earlier run's ``chaos-*`` topics; their
    records (same values, other producers) would read as anomalies of this run. Delete them
    and wait (bounded) until no broker lists them; recorded as the runner's
    ``drop-old-topics``. Other topics are left alone."""
    deadline = time.monotonic() + DROP_TOPICS_S
    async with admin(ctx, 30) as a:
        old = sorted(t.name for t in await a.list_topics() if t.name.startswith(OWN_TOPICS))
        if old:
            _say(opts, f"chaos: deleting topics of an earlier run: {', '.join(old)}")
        for name in old:
            with contextlib.suppress(UnknownTopic):
                await asyncio.wait_for(a.delete_topic(name), 30)
        left = list(old)
        while left and time.monotonic() < deadline:
            names = {t.name for t in await asyncio.wait_for(a.list_topics(), 10)}
            left = [n for n in old if n in names]
            if left:
                await asyncio.sleep(0.5)
    if left:
        raise RuntimeError(f"topics of an earlier run still listed after {DROP_TOPICS_S} s: {left}")
    _record(history, "drop-old-topics", {"deleted": old})


async def _verify_replicas(ctx: Context, deadline: float) -> dict[str, Any]:
    """After the heal: every partition's replicas hold the same committed data at equal
    offsets (``replog partition verify``). A partition whose replicas could not all be asked
    is asked again until ``deadline``; what is still unknown then stays unknown."""
    out: dict[str, Any] = {}
    try:
        async with admin(ctx, 30) as a:
            topics = [t.name for t in await a.list_topics()]
            for topic in topics:
                while True:
                    try:
                        results = await a.verify_partitions(topic)
                    except ReplogError as exc:  # e.g. deleted meanwhile by topic churn
                        out[topic] = {"error": str(exc)}
                        break
                    out[topic] = [r.to_json() for r in results]
                    if all(r.equal is not None for r in results) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(1.0)  # a replica still restarting: ask again
    except ReplogError as exc:
        out["error"] = str(exc)
    return out


async def _schedule(opts: Options, ctx: Context, nemesis: Nemesis | None, start: float) -> None:
    """Quiet, fault, quiet, fault... until --time; progress every 10 s."""
    fault_s = _interval(opts)
    end = start + opts.time_s
    # A class skipped up front (power loss without LazyFS) takes no turn in the rotation.
    skipped = nemesis.skipped if nemesis is not None else {}
    rotation = [n for n in opts.nemeses if n != "none" and n not in skipped]
    k = 0
    current = None
    next_progress = start
    on = False
    next_switch = start + fault_s / 2
    while (now := time.monotonic()) < end:
        if now >= next_progress:
            _say(opts, f"chaos: {now - start:5.0f}s  {ctx.ops} ops  fault: {current or '-'}")
            next_progress += 10
        if nemesis is not None and rotation and now >= next_switch:
            if on:
                await asyncio.wait_for(nemesis.stop_fault(), NEMESIS_OP_S)
                current, on = None, False
                next_switch = time.monotonic() + fault_s / 2
            else:
                name = rotation[k % len(rotation)]
                current = await asyncio.wait_for(nemesis.start_fault(name), NEMESIS_OP_S)
                k += 1
                on = True
                next_switch = time.monotonic() + fault_s
        await asyncio.sleep(min(0.5, max(0.0, end - time.monotonic())))


async def _leaders(ctx: Context, workloads: list[Workload]) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(Exception):
        async with admin(ctx, 5) as a:
            out["metadata"] = (await asyncio.wait_for(a.describe_cluster(), 5)).metadata_leader
            for w in workloads:
                for topic, _ in w.topics[:1]:
                    d = await asyncio.wait_for(a.describe_topic(topic), 5)
                    out.update({f"{topic}/{p.partition}": p.leader for p in d.partitions})
    return out


def _fresh_topic_writer(queue: Any) -> Any:
    async def write(topic: str) -> int:
        await queue.add_topic(topic, 2)
        sends = [queue.send_one(queue.ctx.new_process(), topic, 20_000 + k) for k in range(20)]
        return sum(await asyncio.gather(*sends))

    return write


def finish(out: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check ``out/history.jsonl``; add fault stats, recovery (liveness) and skipped nemeses."""
    ops = read_history(out / "history.jsonl")
    results = check_all(ops)
    extra = extra or {}
    recovery = next(
        (
            op.value
            for op in reversed(ops)
            if op.process == "runner" and op.f == "recovery" and op.type == "info"
        ),
        None,
    )
    skipped = dict(extra.get("skipped") or {})
    for op in ops:
        if op.process == "nemesis" and op.f == "skip" and op.type == "info":
            skipped[op.value["fault"]] = op.value["reason"]
    verify = next(
        (
            op.value
            for op in reversed(ops)
            if op.process == "runner" and op.f == "verify" and op.type == "info"
        ),
        None,
    )
    results["faults"] = fault_stats(ops)
    results["recovery"] = recovery
    results["replicas"] = _replica_verdicts(verify)
    differ = [p for p in results["replicas"]["partitions"] if p["equal"] is False]
    if differ:
        results["anomalies"]["replicas-differ"] = {"count": len(differ), "examples": differ[:5]}
        results["valid"] = False
    elif results["replicas"]["unknown"] and results["valid"] is True:
        results["valid"] = "unknown"
    results["skipped"] = skipped
    if recovery is not None and not (
        recovery["ready"] and all(p.get("ok") for p in recovery["probes"].values())
    ):
        # Liveness: after the heal every partition must accept a record in bounded time.
        results["anomalies"]["not-live-after-heal"] = {"count": 1, "examples": [recovery]}
        results["valid"] = False
    write_report(out / "report.html", results, ops)
    return results


def _replica_verdicts(verify: dict[str, Any] | None) -> dict[str, Any]:
    """Per partition: equal / different / unknown, from the runner's ``verify`` op (absent
    in histories recorded before the suite compared replicas: then nothing is claimed)."""
    parts: list[dict[str, Any]] = []
    for topic, found in (verify or {}).items():
        if isinstance(found, list):
            for p in found:
                parts.append(
                    {
                        "topic": topic,
                        "partition": p["partition"],
                        "equal": p["equal"],
                        "compared": [p["compared_from"], p["compared_to"]],
                        "first_difference": p["first_difference"],
                        "difference": p["difference"],
                    }
                )
    unknown = [f"{p['topic']}/{p['partition']}" for p in parts if p["equal"] is None]
    return {"checked": verify is not None, "partitions": parts, "unknown": unknown}


def summary(results: dict[str, Any]) -> str:
    an = {k: v["count"] for k, v in results.get("anomalies", {}).items()}
    ops = results.get("stats", {}).get("operations")
    return f"valid={json.dumps(results.get('valid'))} operations={ops} anomalies={an}" + (
        f" skipped={results['skipped']}" if results.get("skipped") else ""
    )


__all__ = ["Op", "Options", "finish", "run", "summary"]
