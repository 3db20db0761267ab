"""CI entry of the system simulation (issue 13): seeds of the real broker and clients under
faults must show no violation; a seed must replay exactly.

Budget: the default (not slow) tests stay within a few minutes on 2 cores; longer runs are
``@pytest.mark.slow`` (``pytest -m slow tests/system_sim``). A failing seed prints its replay
command (``python -m tests.system_sim --seeds S:S+1 ... --verbose``).

Put-back-defect tests call :func:`tests.system_sim.runner.first_violation` (or ``run_seed``)
in-process with a patch (``node_hook`` or monkeypatch) and assert that a violation is found
within a bound of seeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.system_sim.cluster import BrokerSettings
from tests.system_sim.runner import Budget, first_violation, run_seed

ROOT = Path(__file__).resolve().parents[2]

# (profile, brokers, dcs, seeds): a few hundred seeds in all, spread so xdist can share them.
CI_RUNS: list[tuple[str, int, int, range]] = [
    ("default", 3, 1, range(0, 30)),
    ("crashy", 3, 1, range(0, 30)),
    ("partitions", 3, 1, range(0, 20)),
    ("disk", 3, 1, range(0, 20)),
    ("default", 5, 3, range(0, 20)),
    ("partitions", 5, 3, range(0, 20)),
    ("crashy", 5, 3, range(0, 10)),
]
CHUNK = 10


def _chunks() -> list[tuple[str, int, int, int, int]]:
    out = []
    for profile, brokers, dcs, seeds in CI_RUNS:
        for lo in range(seeds.start, seeds.stop, CHUNK):
            out.append((profile, brokers, dcs, lo, min(lo + CHUNK, seeds.stop)))
    return out


def _cli(*args: str, timeout_s: float = 900) -> tuple[dict[str, int], str]:
    """Runs ``python -m tests.system_sim`` (which pins PYTHONHASHSEED=0, so every FAIL line
    it prints replays exactly); returns the summary and the whole output."""
    env = dict(os.environ)
    env.pop("PYTHONHASHSEED", None)  # the CLI pins it itself
    proc = subprocess.run(
        [sys.executable, "-m", "tests.system_sim", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    summary = json.loads(lines[-1])
    assert proc.returncode == (1 if summary["violations"] else 0), proc.stdout + proc.stderr
    return summary, proc.stdout


@pytest.mark.parametrize(("profile", "brokers", "dcs", "lo", "hi"), _chunks())
def test_seeds_have_no_violation(profile: str, brokers: int, dcs: int, lo: int, hi: int) -> None:
    summary, out = _cli(
        "--seeds", f"{lo}:{hi}", "--brokers", str(brokers), "--dcs", str(dcs), "--profile", profile
    )
    assert summary["seeds"] == hi - lo
    assert summary["violations"] == 0, out


def test_a_seed_replays_exactly() -> None:
    first = run_seed(3, 3, 1, "default")
    second = run_seed(3, 3, 1, "default")
    assert first.ops > 50, first.summary()
    assert (first.digest, first.steps, first.violations) == (
        second.digest,
        second.steps,
        second.violations,
    )


def test_seeds_differ() -> None:
    assert run_seed(1, 3, 1, "default").digest != run_seed(2, 3, 1, "default").digest


def test_the_workload_does_what_it_claims() -> None:
    """One seed of each profile sees acknowledged records, consumer reads, faults and probes
    (so "no violation" is not "nothing happened")."""
    for profile in ("default", "crashy"):
        result = run_seed(5, 3, 1, profile, keep_history=True)
        history = result.history
        assert history is not None
        fs = {op.f for op in history}
        assert {"send", "poll", "create_topic", "probe", "fault"} <= fs, fs
        assert result.acked > 20, result.summary()
        assert any(op.f == "poll" and op.type == "ok" and op.value for op in history)


def test_cli_prints_the_summary_line() -> None:
    summary, out = _cli("--seeds", "0:2", "--brokers", "3")
    assert summary["seeds"] == 2 and summary["steps"] > 0, out
    assert all(line.startswith("FAIL seed=") for line in out.strip().splitlines()[:-1]), out


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["default", "crashy", "partitions", "disk"])
@pytest.mark.parametrize(("brokers", "dcs"), [(3, 1), (5, 3)])
def test_long_run(profile: str, brokers: int, dcs: int) -> None:
    summary, out = _cli(
        "--seeds",
        "1000:1100",
        "--brokers",
        str(brokers),
        "--dcs",
        str(dcs),
        "--profile",
        profile,
        "--fault-s",
        "30",
        timeout_s=7200,
    )
    assert summary["violations"] == 0, out


def test_the_negative_control_is_caught() -> None:
    """``storage.fsync = "never"`` may lose acknowledged records when brokers crash together
    (docs/guarantees.md): the crashy profile must show it within 10 seeds."""
    found = first_violation(
        range(10),
        3,
        1,
        "crashy",
        settings=BrokerSettings(fsync="never"),
        budget=Budget(max_cpu_s=30.0),
    )
    assert found is not None, "fsync=never survived 10 crashy seeds: the simulation is blind"


def test_the_cpu_guard_ends_a_seed_that_uses_too_much_cpu() -> None:
    """The only non-virtual budget counts this process's CPU time (a paused or starved
    process uses none, so a long run next to other load reports no false failures)."""
    result = run_seed(1, 3, 1, "default", budget=Budget(max_cpu_s=0.3))
    assert any("CPU guard" in v for v in result.violations), result.violations
