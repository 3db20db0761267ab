"""The fault schedule (nemesis) of one seed, per profile.

Contract: :class:`Nemesis` acts on a :class:`SimCluster` only through what a machine or an
operator could do (kill, power off, restart, partition the network, make messages drop,
duplicate, reorder or lag, make a disk slow or failing) and writes each action into the history
as an ``info`` op of process ``nemesis`` (so a failing seed's report shows what happened
when). Every choice comes from the ``rng`` given. Faults run from the start of the fault phase
until ``fault_s`` virtual seconds later; then :meth:`Nemesis.heal` undoes all of them: network
healed, message faults off, disk faults cleared, every down broker restarted, and every broker
that saw disk errors restarted too (an operator's answer to a failing disk; a group stopped by
a disk error stays stopped until then, which is the designed failure model).

Profiles (``PROFILES``):

- ``default``: a bit of everything: single-broker SIGKILLs, occasional minority or whole-cluster
  kills, partitions, light message faults.
- ``crashy``: frequent kills of one broker, a minority, or the whole cluster, and power losses
  (torn writes), with short down times.
- ``partitions``: symmetric halves, isolated brokers, one-way cuts, a whole DC cut off when
  there are 3 DCs, heavier message faults.
- ``disk``: slow fsyncs on one broker, EIO/ENOSPC on writes and syncs, plus crashes (a crash
  after a failed write is where torn-tail handling matters).
"""

from __future__ import annotations

import asyncio
import errno
import random
from dataclasses import dataclass, field

from tests.system_sim.cluster import SimCluster
from tests.system_sim.history import History
from tests.system_sim.network import Faults

__all__ = ["PROFILES", "FaultProfile", "Nemesis"]


@dataclass(frozen=True)
class FaultProfile:
    name: str
    mean_gap_s: float  # mean virtual time between two fault actions
    # action -> weight (see Nemesis._ACTIONS)
    weights: dict[str, float] = field(default_factory=dict)
    down_s: tuple[float, float] = (0.5, 4.0)  # how long a killed broker stays down
    partition_s: tuple[float, float] = (0.5, 5.0)  # how long a partition lasts
    max_drop: float = 0.05
    max_dup: float = 0.05
    max_reorder: float = 0.1
    max_delay_s: float = 0.02
    slow_sync_s: tuple[float, float] = (0.01, 0.3)
    disk_error_count: tuple[int, int] = (1, 4)


PROFILES: dict[str, FaultProfile] = {
    "default": FaultProfile(
        "default",
        mean_gap_s=1.5,
        weights={
            "kill_one": 4,
            "kill_minority": 1,
            "kill_all": 0.5,
            "power_loss_one": 1,
            "partition_halves": 1.5,
            "isolate_one": 1.5,
            "one_way": 1,
            "isolate_dc": 1,
            "message_faults": 1.5,
            "slow_disk": 0.5,
            "quiet": 1,
        },
    ),
    "crashy": FaultProfile(
        "crashy",
        mean_gap_s=1.0,
        weights={
            "kill_one": 4,
            "kill_minority": 2,
            "kill_all": 1.5,
            "power_loss_one": 1.5,
            "power_loss_all": 1,
            "message_faults": 0.5,
        },
        down_s=(0.2, 2.5),
    ),
    "partitions": FaultProfile(
        "partitions",
        mean_gap_s=1.2,
        weights={
            "partition_halves": 3,
            "isolate_one": 3,
            "one_way": 2,
            "isolate_dc": 2,
            "message_faults": 2,
            "kill_one": 0.5,
            "quiet": 1,
        },
        max_drop=0.2,
        max_dup=0.1,
        max_reorder=0.3,
        max_delay_s=0.05,
    ),
    "disk": FaultProfile(
        "disk",
        mean_gap_s=1.5,
        weights={
            "slow_disk": 2,
            "write_errors": 2,
            "sync_errors": 2,
            "kill_one": 2,
            "power_loss_one": 1,
            "quiet": 1,
        },
    ),
}


class Nemesis:
    def __init__(
        self, cluster: SimCluster, history: History, rng: random.Random, profile: FaultProfile
    ) -> None:
        self.cluster = cluster
        self.history = history
        self.rng = rng
        self.profile = profile
        self._tasks: dict[asyncio.Task[None], None] = {}  # sleeping (insertion order)
        self._acting: dict[asyncio.Task[None], None] = {}  # not finished (insertion order)
        self._healed = False
        self.actions = 0

    # ---------------------------------------------------------------- plumbing

    def note(self, what: str) -> None:
        self.history.info("nemesis", "fault", what, self.cluster.now())

    def _later(self, delay_s: float, coro_fn: object, *args: object) -> None:
        """Runs ``coro_fn(*args)`` after ``delay_s`` unless the heal came first. Only the
        sleep is cancelled at the heal, never the action (a restart cut short would leave a
        broker half started)."""

        async def run() -> None:
            await asyncio.sleep(delay_s)
            self._tasks.pop(task, None)
            if not self._healed:
                await coro_fn(*args)  # type: ignore[operator]

        task = asyncio.get_running_loop().create_task(run(), name="nemesis-later")
        self._tasks[task] = None
        self._acting[task] = None
        task.add_done_callback(lambda t: self._acting.pop(t, None))

    async def run(self, fault_s: float) -> None:
        """Acts until ``fault_s`` virtual seconds have passed."""
        loop = asyncio.get_running_loop()
        end = loop.time() + fault_s
        names = sorted(self.profile.weights)
        weights = [self.profile.weights[n] for n in names]
        while True:
            await asyncio.sleep(self.rng.expovariate(1 / self.profile.mean_gap_s))
            if loop.time() >= end:
                return
            action = self.rng.choices(names, weights)[0]
            self.actions += 1
            await getattr(self, f"_do_{action}")()

    # ---------------------------------------------------------------- processes

    async def _restart(self, node_id: int) -> None:
        self.note(f"restart {node_id}")
        ok = await self.cluster.restart(node_id)
        if not ok:
            self.note(f"restart {node_id} failed")

    def _kill(self, node_ids: list[int], torn: bool, down_s: float | None = None) -> None:
        if not node_ids:
            return  # every broker is down already
        what = "power loss" if torn else "kill -9"
        self.note(f"{what} {sorted(node_ids)}")
        for node_id in node_ids:
            self.cluster.crash(node_id, torn=torn)
        for node_id in node_ids:
            delay = down_s if down_s is not None else self.rng.uniform(*self.profile.down_s)
            self._later(delay, self._restart, node_id)

    def _pick_up(self, k: int) -> list[int]:
        up = self.cluster.up_ids()
        return self.rng.sample(up, k=min(k, len(up)))

    def _minority(self) -> int:
        return max(1, (len(self.cluster.brokers) - 1) // 2)

    async def _do_kill_one(self) -> None:
        self._kill(self._pick_up(1), torn=False)

    async def _do_kill_minority(self) -> None:
        self._kill(self._pick_up(self._minority()), torn=False)

    async def _do_kill_all(self) -> None:
        # Whole-cluster crash: everything unsynced is lost on every disk at once.
        self._kill(self.cluster.up_ids(), torn=False, down_s=self.rng.uniform(0.1, 1.0))

    async def _do_power_loss_one(self) -> None:
        self._kill(self._pick_up(1), torn=True)

    async def _do_power_loss_all(self) -> None:
        self._kill(self.cluster.up_ids(), torn=True, down_s=self.rng.uniform(0.1, 1.0))

    # ---------------------------------------------------------------- network

    def _mode(self) -> str:
        # "drop": silent (messages vanish, RPCs time out); "refuse": connections refused.
        return self.rng.choice(["drop", "drop", "refuse"])

    def _heal_net_later(self) -> None:
        async def heal() -> None:
            self.note("network healed")
            self.cluster.net.heal()

        self._later(self.rng.uniform(*self.profile.partition_s), heal)

    async def _do_partition_halves(self) -> None:
        ids = self.cluster.broker_ids()
        self.rng.shuffle(ids)
        cut = self.rng.randint(1, len(ids) - 1)
        groups = [sorted(ids[:cut]), sorted(ids[cut:])]
        self.note(f"partition {groups}")
        self.cluster.net.partition(groups, mode=self._mode())
        self._heal_net_later()

    async def _do_isolate_one(self) -> None:
        node_id = self.rng.choice(self.cluster.broker_ids())
        self.note(f"isolate {node_id}")
        self.cluster.net.isolate(node_id, mode=self._mode())
        self._heal_net_later()

    async def _do_one_way(self) -> None:
        a, b = self.rng.sample(self.cluster.broker_ids(), 2)
        self.note(f"one-way cut {a} -> {b}")
        self.cluster.net.cut(a, b, mode=self._mode())
        self._heal_net_later()

    async def _do_isolate_dc(self) -> None:
        if self.cluster.dcs < 2:
            await self._do_isolate_one()
            return
        dc = f"dc{self.rng.randint(1, self.cluster.dcs)}"
        inside = [i for i in self.cluster.broker_ids() if self.cluster.dc_of(i) == dc]
        outside = [i for i in self.cluster.broker_ids() if self.cluster.dc_of(i) != dc]
        if not inside or not outside:
            return
        self.note(f"isolate {dc} {inside}")
        self.cluster.net.partition([inside, outside], mode=self._mode())
        self._heal_net_later()

    async def _do_message_faults(self) -> None:
        p = self.profile
        drop = self.rng.uniform(0, p.max_drop)
        dup = self.rng.uniform(0, p.max_dup)
        reorder = self.rng.uniform(0, p.max_reorder)
        delay = self.rng.uniform(0, p.max_delay_s)
        self.note(
            f"message faults drop={drop:.3f} dup={dup:.3f} reorder={reorder:.3f} delay={delay:.3f}s"
        )
        set_message_faults(self.cluster, drop=drop, dup=dup, reorder=reorder, delay_s=delay)

        async def clear() -> None:
            self.note("message faults off")
            set_message_faults(self.cluster, drop=0.0, dup=0.0, reorder=0.0, delay_s=0.0)

        self._later(self.rng.uniform(*self.profile.partition_s), clear)

    async def _do_quiet(self) -> None:
        return

    # ---------------------------------------------------------------- disks

    async def _do_slow_disk(self) -> None:
        node_id = self.rng.choice(self.cluster.broker_ids())
        seconds = self.rng.uniform(*self.profile.slow_sync_s)
        disk = self.cluster.brokers[node_id].disk
        self.note(f"slow disk {node_id} {seconds:.3f}s per sync")
        disk.slow("/", seconds)

        async def fast() -> None:
            self.note(f"disk {node_id} fast again")
            disk.slow("/", 0.0)

        self._later(self.rng.uniform(1.0, 6.0), fast)

    def _disk_errors(self, kind: str) -> None:
        node_id = self.rng.choice(self.cluster.broker_ids())
        slot = self.cluster.brokers[node_id]
        err = self.rng.choice([errno.EIO, errno.ENOSPC])
        count = self.rng.randint(*self.profile.disk_error_count)
        self.note(f"{kind} errors on {node_id}: {errno.errorcode[err]} x{count}")
        slot.disk_faulted = True
        if kind == "write":
            slot.disk.fail_writes(err, count=count)
        else:
            slot.disk.fail_syncs(err, count=count)

    async def _do_write_errors(self) -> None:
        self._disk_errors("write")

    async def _do_sync_errors(self) -> None:
        self._disk_errors("sync")

    # ---------------------------------------------------------------- heal

    async def heal(self) -> None:
        """Ends every fault (see the module contract)."""
        self._healed = True
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        acting = list(self._acting)
        if acting:
            await asyncio.wait(acting)  # restarts in progress finish
        self.note("heal")
        self.cluster.net.heal()
        set_message_faults(self.cluster, drop=0.0, dup=0.0, reorder=0.0, delay_s=0.0)
        for slot in self.cluster.brokers.values():
            slot.disk.clear_faults()
        for node_id, slot in sorted(self.cluster.brokers.items()):
            if slot.disk_faulted and slot.up:
                self.note(f"restart {node_id} after disk errors")
                self.cluster.crash(node_id)
            slot.disk_faulted = False
        for node_id in self.cluster.down_ids():
            await self._restart(node_id)


def set_message_faults(
    cluster: SimCluster, *, drop: float, dup: float, reorder: float, delay_s: float
) -> None:
    """Message faults on every link (peer and client traffic alike): raft batches dropped,
    duplicated, reordered; each leg of an RPC dropped at half the rate; latency up to
    ``delay_s`` more."""
    cluster.net.set_faults(
        Faults(
            delay_s=(0.0002, 0.002 + delay_s),
            drop_probability=drop,
            duplicate_probability=dup,
            reorder_probability=reorder,
            rpc_drop_probability=drop / 2,
        )
    )
