"""Deliberately broken variants of the broker, for the chaos suite's negative controls
(tests/chaos/test_negative_controls.py). Test code only: the product has no switch for them.

A variant is chosen with the environment variable ``REPLOG_BROKEN_VARIANT`` and applied by
``sitecustomize.py`` next to this file (``PYTHONPATH=tests/chaos/broken``), in every Python
process started with that environment, the moment the process imports the module the variant
patches (an import hook: processes that never import the broker, such as the bundled Toxiproxy
server or a LazyFS mount, are untouched). Each patch replaces as little as possible and says
in its docstring what it breaks. A patched process writes one line to stderr (a broker's goes
to its log, ``DIR/cluster/node-N.log``)::

    replog-broken-variant: <name> applied in pid <pid> (<module>)

so a run can prove its brokers ran the broken code. An unknown variant name is an error:
the process prints why and exits with status 2 (a typo must never yield a correct broker
that "passes" a negative control).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

ENV = "REPLOG_BROKEN_VARIANT"
MARKER = "replog-broken-variant:"


def ack_without_quorum(module: ModuleType) -> None:
    """``ack-without-quorum``: a produce with ``acks=all`` is acknowledged as soon as the batch
    is durable on the leader's own disk, before a majority of the replicas has it.

    It reuses the broker's own ``acks=leader`` path: ``PartitionReplica.produce`` is called
    with ``acks_leader=True`` whatever the request asked, so ``_propose`` parks the answer in
    ``_leader_waiters``, which ``on_persisted`` resolves when the leader's local append is
    fsynced. Everything else is unchanged: duplicates are answered as before, a batch the
    leader would reject still waits for apply (``produce`` clears ``acks_leader`` itself), and
    a leader that steps down still fails its pending answers. An isolated leader therefore
    acknowledges records that the majority's new leader never had; they are truncated when
    it rejoins: acknowledged records are lost."""
    replica = module.PartitionReplica
    original = replica.produce

    async def produce(self: Any, batch: bytes, *, acks_leader: bool, timeout_s: float) -> Any:
        return await original(self, batch, acks_leader=True, timeout_s=timeout_s)

    produce.__doc__ = ack_without_quorum.__doc__
    replica.produce = produce


def read_without_readindex(module: ModuleType) -> None:
    """``read-without-readindex``: a broker answers partition reads (``ListOffsets``, with
    ``linearizable`` set too, and ``Fetch``) from its own replica's applied state, whether it
    is the leader or not, and without the ReadIndex round.

    ``PartitionReplica.read_barrier`` becomes a no-op (no leadership confirmation by a
    majority, no wait for the confirmed index to be applied) and ``ensure_readable`` keeps only
    its check that the replica is running: the NOT_LEADER / LEADER_NOT_AVAILABLE answers of
    reads are gone. Produce (``ensure_leader``), retention and the replica digest are
    unchanged. A deposed leader that has not noticed yet, or one cut off from its followers,
    keeps serving its high watermark and records to the clients that still think it leads:
    reads miss records acknowledged elsewhere before they began (stale reads).

    Its metadata is also as it was before ``57c73ea``: a broker names the last reported
    leader of a partition even when its own replica knows that leader is stale (since then
    it says "unknown", so clients ask another broker and never reach the stale replica).
    Without this a client would find the real leader and the variant would answer no stale
    read: the two fixes together are what this control takes away."""
    replica = module.PartitionReplica
    original_init = replica.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        _name_stale_leaders()

    replica.__init__ = init

    async def read_barrier(self: Any, timeout_s: float) -> None:
        if self.stopped is not None:
            raise self._not_leader()

    def ensure_readable(self: Any) -> None:
        if self.stopped is not None:
            raise self._not_leader()

    read_barrier.__doc__ = read_without_readindex.__doc__
    ensure_readable.__doc__ = read_without_readindex.__doc__
    replica.read_barrier = read_barrier
    replica.ensure_readable = ensure_readable


def _name_stale_leaders() -> None:
    """``ReplogService._topic_msg`` names the assignment's last reported leader wherever it
    now answers "unknown" (once per process; the service module is loaded by then)."""
    service = sys.modules.get("server.service")
    if service is None or getattr(service, "BROKEN_METADATA", False):
        return
    original = service.ReplogService._topic_msg

    def _topic_msg(self: Any, t: Any) -> Any:
        msg = original(self, t)
        for part, a in zip(msg.partitions, t.assignments, strict=True):
            if part.leader == 0 and a.leader:
                part.leader, part.leader_term = a.leader, a.leader_term
        return msg

    service.ReplogService._topic_msg = _topic_msg
    service.BROKEN_METADATA = True


# name -> (the module it patches, the patch, called with that module once it is executed)
VARIANTS: dict[str, tuple[str, Callable[[ModuleType], None]]] = {
    "ack-without-quorum": ("server.partition_replica", ack_without_quorum),
    "read-without-readindex": ("server.partition_replica", read_without_readindex),
}


def apply(name: str, module: ModuleType) -> None:
    """Apply variant ``name`` to ``module`` (its target) and say so on stderr."""
    target, patch = VARIANTS[name]
    assert module.__name__ == target, (module.__name__, target)
    patch(module)
    module.BROKEN_VARIANT = name  # type: ignore[attr-defined]
    print(f"{MARKER} {name} applied in pid {os.getpid()} ({target})", file=sys.stderr, flush=True)
