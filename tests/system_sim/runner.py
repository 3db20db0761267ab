"""One seed of the system simulation, start to verdict.

Contract: :func:`run_seed` is a pure function of its arguments: the same seed, broker count,
DC count, profile, budget and patches give the same run, the same history digest and the same
verdict (given a fixed ``PYTHONHASHSEED``; the CLI pins it). It never raises for a finding: it
returns a :class:`SeedResult` whose ``violations`` list what failed. It is callable in-process
(tests put a defect back with ``node_hook``/monkeypatching and assert a violation is found).

Phases of one seed, all in virtual time on a ``VirtualTimeLoop``:

1. start: every broker (``SimCluster.start``), then the initial topics (workload setup);
2. faults (``Budget.fault_s``): the workload runs (producers, consumers, admin) while the
   nemesis acts per profile; a broker may join (``Budget.join_share``);
3. heal: faults end, every broker is up again; the workload stops (producers flush);
4. liveness: every partition of every live topic must take and return a probe record within
   ``WorkloadConfig.liveness_bound_s``;
5. final reads: drain-read every partition;
6. settle: wait (up to ``Budget.settle_s``) until every group looks healthy, then at once
   collect statuses and committed logs, and run the checkers.

The broker's log goes to an in-memory ring (``Budget.log_tail`` last events, printed with a
failing seed when asked): structlog is reconfigured for the seed and restored afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from client.errors import ReplogError
from server.errors import BrokerError
from server.node import BrokerNode
from tests.system_sim import loop as simloop
from tests.system_sim.checkers import check_all, groups_healthy
from tests.system_sim.cluster import BrokerSettings, SimCluster, derive_rng
from tests.system_sim.faults import PROFILES, FaultProfile, Nemesis
from tests.system_sim.history import FinalState, History
from tests.system_sim.workload import Workload, WorkloadConfig

__all__ = ["Budget", "SeedResult", "first_violation", "replay_command", "run_seed"]


@dataclass(frozen=True)
class Budget:
    """How much one seed may do (virtual seconds unless said otherwise)."""

    fault_s: float = 10.0  # length of the fault phase
    settle_s: float = 15.0  # longest wait for groups to look healthy after the probes
    max_virtual_s: float = 300.0  # the whole seed; beyond it the seed is a violation
    max_steps: int = 2_000_000  # loop iterations for the whole seed
    observe_period_s: float = 0.05  # leader / metadata sampling period
    join_share: float = 0.3  # chance that a broker joins during the faults
    log_tail: int = 400  # broker log events kept for a failure report
    # CPU seconds of this process one seed may use (a guard, not a budget: a seed that gets
    # here has a pathology worth a look, e.g. a message storm). The only budget that is not
    # virtual, so the only one whose verdict may differ between machines. CPU time, not wall
    # time: a process that is paused (SIGSTOP) or starved by other load (a niced long run next
    # to benchmarks) uses none, and a wall-clock guard reported such seeds as failures.
    max_cpu_s: float = 120.0


@dataclass
class SeedResult:
    seed: int
    brokers: int
    dcs: int
    profile: str
    violations: list[str] = field(default_factory=list)
    steps: int = 0
    virtual_s: float = 0.0
    wall_s: float = 0.0
    digest: str = ""
    ops: int = 0
    acked: int = 0
    history: History | None = None
    log_tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        status = "ok" if self.ok else f"{len(self.violations)} violation(s)"
        return (
            f"seed={self.seed} brokers={self.brokers} dcs={self.dcs} profile={self.profile} "
            f"steps={self.steps} virtual={self.virtual_s:.1f}s wall={self.wall_s:.2f}s "
            f"ops={self.ops} acked={self.acked} {status}"
        )


def replay_command(seed: int, brokers: int, dcs: int, profile: str, extra: str = "") -> str:
    cmd = (
        f"python -m tests.system_sim --seeds {seed}:{seed + 1} --brokers {brokers} "
        f"--dcs {dcs} --profile {profile} --verbose"
    )
    return f"{cmd} {extra}".rstrip()


class _LogCapture:
    """A structlog processor: keeps the last events in a ring and feeds leader facts to the
    cluster; drops everything (nothing is printed while a seed runs)."""

    def __init__(self, tail: int) -> None:
        self.ring: collections.deque[str] = collections.deque(maxlen=max(1, tail))
        self.cluster: SimCluster | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def __call__(self, _logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        cluster = self.cluster
        if cluster is not None:
            cluster.on_log_event(event)
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:
            now = -1.0
        fields = " ".join(f"{k}={v}" for k, v in event.items() if k != "event")
        self.ring.append(f"{now:9.3f} {method:7s} {event.get('event')} {fields}")
        raise structlog.DropEvent


def run_seed(
    seed: int,
    brokers: int = 3,
    dcs: int = 1,
    profile: str | FaultProfile = "default",
    *,
    budget: Budget | None = None,
    settings: BrokerSettings | None = None,
    workload: WorkloadConfig | None = None,
    node_hook: Callable[[BrokerNode], None] | None = None,
    keep_history: bool = False,
) -> SeedResult:
    budget = budget or Budget()
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    wcfg = workload or WorkloadConfig()
    result = SeedResult(seed, brokers, dcs, prof.name)
    history = History()
    final = FinalState(liveness_bound_s=wcfg.liveness_bound_s)
    capture = _LogCapture(budget.log_tail)
    state: dict[str, Any] = {}

    def on_loop_error(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """A task that died with nobody to see it is a finding ("no task dies silently");
        a future nobody awaited (a waiter whose caller went away) is only noted in the log."""
        exc = context.get("exception")
        message = context.get("message", "")
        capture.ring.append(f"loop error: {message} {exc!r}")
        task = context.get("task") or context.get("future")
        if not isinstance(task, asyncio.Task):
            return
        if isinstance(exc, ReplogError | asyncio.CancelledError | BrokerError):
            return  # an expected error a client or broker task ended with
        final.errors.append(f"task {task.get_name()} died unseen: {message}: {exc!r}"[:500])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(on_loop_error)
        watchdog = _CpuWatchdog(budget.max_cpu_s, loop, state)
        watchdog.start()
        state["watchdog"] = watchdog
        cluster = SimCluster(seed, brokers, dcs, settings=settings, node_hook=node_hook)
        state["cluster"] = cluster
        capture.cluster = cluster
        observer = asyncio.get_running_loop().create_task(
            cluster.observe_loop(budget.observe_period_s), name="observer"
        )
        await cluster.start()
        wl = Workload(
            cluster, history, derive_rng(seed, "workload"), wcfg, replicas=min(3, brokers)
        )
        state["workload"] = wl
        nemesis = Nemesis(cluster, history, derive_rng(seed, "nemesis"), prof)
        await wl.setup()
        wl.start(budget.fault_s)
        join_rng = derive_rng(seed, "join")
        join_task = None
        if join_rng.random() < budget.join_share:
            join_task = asyncio.get_running_loop().create_task(
                _join_later(cluster, history, join_rng.uniform(0.1, 0.7) * budget.fault_s),
                name="join",
            )
        await nemesis.run(budget.fault_s)
        await nemesis.heal()
        if join_task is not None:
            await join_task
        await wl.stop()
        await wl.probe()
        final.reads = await wl.final_reads()
        final.retention_topics = {t.name for t in wl.topics.values() if t.retention}
        final.errors.extend(wl.errors)
        # Statuses are judged at one instant: the first healthy one within settle_s (nothing
        # awaits between the settle and the collection).
        await _settle(cluster, budget.settle_s)
        cluster.collect_final(final)
        await wl.close()
        observer.cancel()
        await cluster.stop_all()

    old_config = structlog.get_config()
    structlog.configure(
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(20),  # info
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    client_log = logging.getLogger("replog.client")
    old_level = client_log.level
    client_log.setLevel(logging.ERROR)  # the clients' own warnings (resets) would flood stderr
    started = time.perf_counter()
    stats: dict[str, Any] = {}
    aborted = ""
    try:
        simloop.run(
            main, max_virtual_s=budget.max_virtual_s, max_steps=budget.max_steps, stats=stats
        )
    except simloop.SimulationError as exc:
        aborted = f"[simulation] {type(exc).__name__}: {exc}"
        if state.get("cpu_budget_hit"):
            aborted = (
                f"[simulation] CPU guard: the seed used {budget.max_cpu_s:.0f} s of CPU time "
                f"({exc})"
            )
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        where = "; ".join(f"{f.filename.split('/')[-1]}:{f.lineno} {f.name}" for f in frames[-4:])
        aborted = f"[harness] {type(exc).__name__}: {exc} (at {where})"
    finally:
        if "watchdog" in state:
            state["watchdog"].cancel()
        structlog.configure(**old_config)
        client_log.setLevel(old_level)
    result.wall_s = time.perf_counter() - started
    result.steps = int(stats.get("steps", 0))
    result.virtual_s = float(stats.get("virtual_s", 0.0))
    if aborted:
        # The seed did not reach its end: report why, plus the safety properties that do not
        # need the final reads.
        result.violations.append(aborted)
        cluster = state.get("cluster")
        only = ["one_leader_per_term", "metadata_agrees"]
        if cluster is not None:
            final.leaders |= cluster.obs.leaders
            final.metadata_digests.extend(cluster.obs.metadata_digests)
            try:  # plain reads of the nodes' state: failed groups often say why it stopped
                final.statuses = [s for s in cluster.statuses() if s.failed]
                only.append("groups_healthy")
            except Exception:
                pass
        result.violations.extend(check_all(history, final, only=only))
    else:
        result.violations.extend(check_all(history, final))
    result.digest = history.digest()
    result.ops = len(history)
    result.acked = sum(1 for op in history if op.type == "ok" and op.f == "send")
    result.log_tail = list(capture.ring)
    if keep_history:
        result.history = history
    return result


def _stop_loop(loop: Any, state: dict[str, Any]) -> None:
    """From the watchdog thread: the next loop iteration raises StepBudgetExceeded."""
    state["cpu_budget_hit"] = True
    loop.max_steps = 0


class _CpuWatchdog(threading.Thread):
    """Ends the seed once this process has used ``limit_s`` CPU seconds since it started
    (checked every 0.5 s of real time); ``cancel()`` stops it."""

    def __init__(self, limit_s: float, loop: Any, state: dict[str, Any]) -> None:
        super().__init__(name="seed-cpu-guard", daemon=True)
        self._limit_s = limit_s
        self._loop = loop
        self._state = state
        self._done = threading.Event()
        self._start_cpu = time.process_time()

    def run(self) -> None:
        while not self._done.wait(0.5):
            if time.process_time() - self._start_cpu >= self._limit_s:
                _stop_loop(self._loop, self._state)
                return

    def cancel(self) -> None:
        self._done.set()


def first_violation(
    seeds: Iterable[int],
    brokers: int = 3,
    dcs: int = 1,
    profile: str | FaultProfile = "default",
    **kwargs: Any,
) -> SeedResult | None:
    """The first seed of ``seeds`` with a violation, or None: for tests that put a defect back
    (with ``node_hook=`` or a monkeypatch) and assert the simulation finds it within a bound.
    ``kwargs`` go to :func:`run_seed` (``budget``, ``settings``, ``workload``, ``node_hook``)."""
    for seed in seeds:
        result = run_seed(seed, brokers, dcs, profile, **kwargs)
        if not result.ok:
            return result
    return None


async def _join_later(cluster: SimCluster, history: History, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    history.info("nemesis", "fault", "broker joins", cluster.now())
    node_id = await cluster.add_broker()
    history.info("nemesis", "fault", f"broker {node_id} joined", cluster.now())


async def _settle(cluster: SimCluster, settle_s: float) -> None:
    """Waits until every live group has a leader and every replica caught up (or time out;
    the checkers then report what is stuck)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle_s
    probe = FinalState()
    while loop.time() < deadline:
        probe.statuses = cluster.statuses()
        probe.live_groups = cluster.live_groups()
        if not groups_healthy(History(), probe):
            return
        await asyncio.sleep(0.25)
