"""`replog chaos run --bootstrap DIR/cluster.json` with faults, against a cluster the run did
not start: `replog chaos prepare` (a subprocess, the CLI's own code path) starts it, the run
attaches, injects kills and partitions, heals and leaves the cluster running; stopping prepare
then ends every process, also the brokers the run restarted (not children of prepare), and
leaves no mount. An address-list bootstrap still refuses faults, with a clear message.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.cli import main
from chaos.cluster import REPO, runs, wait_ready
from chaos.lazyfs import fuse_unavailable_reason
from tests.chaos.test_chaos_run import leftovers

pytestmark = pytest.mark.timeout(240)
PREPARE = ["chaos", "prepare", "--nodes", "3", "--dcs", "3", "--max-time", "400"]
RUN = "--workload queue --rate 80 --interval 4 --partitions 3 --workers 4 --quiet --seed 7"


class Prepared:
    def __init__(self, root: Path, *extra: str) -> None:
        self.root = root
        self.desc_path = root / "cluster.json"
        self.err = root.parent / "prepare.err"
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli", *PREPARE, "--dir", str(root), *extra],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 90
        while not self.desc_path.exists():
            assert self.proc.poll() is None, self.err.read_text()[-3000:]
            assert time.monotonic() < deadline, "prepare wrote no cluster.json in 90 s"
            time.sleep(0.2)

    def description(self) -> dict[str, Any]:
        return dict(json.loads(self.desc_path.read_text()))

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)  # then the test fails on leftovers
            return self.proc.wait(10)


@pytest.fixture
def prepare(tmp_path: Path) -> Iterator[Any]:
    started: list[Prepared] = []

    def start(*extra: str) -> Prepared:
        p = Prepared(tmp_path / "cluster", *extra)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def run_attached(
    desc: Path, out: Path, nemesis: str, time_s: int = 16
) -> tuple[int, dict[str, Any]]:
    args = ["--bootstrap", str(desc), "--nemesis", nemesis, "--time", str(time_s)]
    code = main(["run", *args, *RUN.split(), "--out", str(out)])
    return code, json.loads((out / "results.json").read_text())


def nemesis_events(out: Path) -> list[dict[str, Any]]:
    lines = (out / "history.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["process"] == "nemesis" and e["type"] == "info"]


def assert_cluster_up(desc: dict[str, Any]) -> None:
    """Every recorded pid runs its recorded broker command; the cluster answers, all alive."""
    assert desc["state"] == "running"
    for n in desc["nodes"]:
        assert runs(n["pid"], n["args"]), n
    overrides = {n["id"]: n["client_address"] for n in desc["nodes"]}
    ready = asyncio.run(wait_ready(desc["bootstrap"], {"broker_addresses": overrides}, 3, 60))
    assert ready


def test_prepared_cluster_under_kill_and_partition(tmp_path: Path, prepare: Any) -> None:
    p = prepare()
    before = {n["id"]: n["pid"] for n in p.description()["nodes"]}
    code, results = run_attached(p.desc_path, tmp_path / "out", "kill,partition,power-loss")
    assert results["valid"] is True, json.dumps(results["anomalies"])[:2000]
    assert code == 0
    assert results["recovery"]["ready"] is True
    assert all(x["equal"] is True for x in results["replicas"]["partitions"])
    assert results["run"]["bootstrap"] == str(p.desc_path) and results["run"]["nodes"] == 3
    # Faults really happened (and were undone), not just recorded as wished.
    events = nemesis_events(tmp_path / "out")
    kinds = {e["value"]["fault"] for e in events if e["f"] == "start"}
    assert any(k.startswith("kill-") for k in kinds), kinds
    assert any(k.startswith("partition-") for k in kinds), kinds
    assert {e["f"] for e in events} >= {"start", "stop", "heal", "skip"}
    assert sum(e["f"] == "start" for e in events) == sum(e["f"] == "stop" for e in events)
    # No LazyFS in this prepared cluster: power loss is a recorded skip, never a pass.
    assert "prepare --lazyfs" in results["skipped"]["power-loss"]
    # The run left the prepared cluster running and healthy, with the restarted pids recorded.
    after = p.description()
    assert_cluster_up(after)
    killed = {
        i
        for e in events
        if e["f"] == "start" and "kill" in e["value"]["fault"]
        for i in e["value"]["nodes"]
    }
    restarted = {n["id"] for n in after["nodes"] if n["pid"] != before[n["id"]]}
    assert killed and killed <= restarted, (killed, before, after["nodes"])
    assert p.proc.poll() is None  # the run never stops the prepare process
    # A second run on the same cluster starts without the first run's topics (their records
    # would read as anomalies) and is valid too.
    code, again = run_attached(p.desc_path, tmp_path / "again", "pause", time_s=8)
    assert again["valid"] is True and code == 0, json.dumps(again["anomalies"])[:2000]
    history = (tmp_path / "again" / "history.jsonl").read_text()
    assert '"f":"drop-old-topics"' in history and '"chaos-queue"' in history
    assert_cluster_up(p.description())
    # Stopping prepare ends everything, including the brokers the run restarted.
    assert p.stop() == 0
    assert not leftovers(tmp_path), leftovers(tmp_path)
    assert p.description()["state"] == "stopped"
    # A stopped cluster cannot be attached to (usage error, nothing started).
    assert main(["run", "--bootstrap", str(p.desc_path), "--nemesis", "kill"]) == 2


@pytest.mark.skipif(fuse_unavailable_reason() is not None, reason="needs FUSE (LazyFS)")
def test_prepared_lazyfs_cluster_offers_power_loss(tmp_path: Path, prepare: Any) -> None:
    p = prepare("--lazyfs")
    assert all(n["lazyfs"]["control"] for n in p.description()["nodes"])
    code, results = run_attached(p.root, tmp_path / "out", "power-loss", time_s=10)
    assert results["valid"] is True, json.dumps(results["anomalies"])[:2000]
    assert code == 0 and not results["skipped"]
    starts = [e for e in nemesis_events(tmp_path / "out") if e["f"] == "start"]
    assert starts and all(e["value"]["lost"] for e in starts), starts
    assert_cluster_up(p.description())
    assert p.stop() == 0
    assert not leftovers(tmp_path), leftovers(tmp_path)


def test_address_bootstrap_refuses_faults(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--bootstrap", "127.0.0.1:1,127.0.0.1:2", "--nemesis", "kill"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--nemesis none" in err and "replog chaos prepare" in err


def test_bootstrap_description_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--bootstrap", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "cluster.json").write_text("{}")
    assert main(["run", "--bootstrap", str(tmp_path)]) == 2
    assert "not a cluster description" in capsys.readouterr().err
