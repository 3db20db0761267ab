"""System simulation of the real broker and its real clients (issue 13).

The four seams of server/env.py, simulated, plus the harness that drives them:

- ``loop``: ``VirtualTimeLoop`` / ``run``: clock and timers (virtual time, never sleeps);
- ``network``: ``SimNetwork``: peer links, broker-to-broker stubs and the clients' stubs;
- ``fs``: ``SimDisk`` / ``SimFileSystem``: what is not fsynced is lost at a crash;
- ``executor``: ``SimExecutor``: blocking work as FIFO lanes in virtual time;
- ``cluster``, ``workload``, ``faults``, ``checkers``, ``history``, ``runner``: one seed of real
  ``BrokerNode``s and real Producer/Consumer/AdminClient objects under a nemesis, then checks.

Run with ``PYTHONHASHSEED=0`` (the CLI pins it): str hashing randomised per process would
change the iteration order of sets and so the schedule.
"""

from tests.system_sim.executor import SimExecutor
from tests.system_sim.fs import DiskCosts, SimDisk, SimFileSystem
from tests.system_sim.loop import (
    ForbiddenInSimulation,
    SimulationDeadlock,
    SimulationError,
    StepBudgetExceeded,
    VirtualTimeExceeded,
    VirtualTimeLoop,
)
from tests.system_sim.network import Faults, NodeHandlers, ServerError, SimNetwork

__all__ = [
    "DiskCosts",
    "Faults",
    "ForbiddenInSimulation",
    "NodeHandlers",
    "ServerError",
    "SimDisk",
    "SimExecutor",
    "SimFileSystem",
    "SimNetwork",
    "SimulationDeadlock",
    "SimulationError",
    "StepBudgetExceeded",
    "VirtualTimeExceeded",
    "VirtualTimeLoop",
]
