"""server/cli.py, server/dev.py (pure layout) and server/logsetup.py — no processes started."""

from __future__ import annotations

import io
import json
import logging
import sys
import types
from pathlib import Path

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from server import cli, dev
from server.config import ConfigError, load_config
from server.logsetup import configure_logging, get_logger

VOTERS = "1=127.0.0.1:9400,2=127.0.0.1:9401,3=127.0.0.1:9402"
BASE = [
    "--node-id", "2",
    "--listen", "127.0.0.1:9401",
    "--data-dir", "/tmp/replog-node-2",
    "--dc", "dc2",
    "--voters", VOTERS,
]  # fmt: skip


# ---------------------------------------------------------------- replog server


def test_server_flags_build_the_config() -> None:
    argv = [*BASE, "--rack", "r1", "--peer-address", "1=127.0.0.1:19400",
            "--peer-address", "3=127.0.0.1:19402", "--log-level", "debug"]  # fmt: skip
    cfg = cli.server_config_from_argv(argv, env={})
    assert cfg.node.node_id == 2
    assert cfg.node.listen == cfg.node.advertised_address == "127.0.0.1:9401"
    assert cfg.node.data_dir == "/tmp/replog-node-2"
    assert (cfg.node.dc, cfg.node.rack) == ("dc2", "r1")
    assert cfg.node.voters == {1: "127.0.0.1:9400", 2: "127.0.0.1:9401", 3: "127.0.0.1:9402"}
    assert cfg.node.peer_addresses == {1: "127.0.0.1:19400", 3: "127.0.0.1:19402"}
    assert cfg.server.log_level == "debug"


def test_set_and_env_sit_below_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[node]\ndc = "from-file"\n[storage]\nfsync = "never"\n')
    argv = [*BASE, "--config", str(path), "--set", "raft.tick_ms=25",
            "--set", "node.dc=from-set", "--set", "server.log_level=error"]  # fmt: skip
    env = {"REPLOG_RAFT__ELECTION_TICKS": "11", "REPLOG_SERVER__LOG_LEVEL": "warning"}
    cfg = cli.server_config_from_argv(argv, env=env)
    assert cfg.storage.fsync == "never"  # file
    assert cfg.raft.election_ticks == 11  # env
    assert cfg.raft.tick_ms == 25  # --set
    assert cfg.server.log_level == "error"  # --set over env
    assert cfg.node.dc == "dc2"  # flag over --set over file


def test_peer_address_flags_replace_lower_layers() -> None:
    argv = [*BASE, "--set", "node.peer_addresses=1=a:1,3=a:3", "--peer-address", "3=b:3"]
    assert cli.server_config_from_argv(argv, env={}).node.peer_addresses == {3: "b:3"}
    argv = [*BASE, "--set", "node.peer_addresses=1=a:1,3=a:3"]
    assert cli.server_config_from_argv(argv, env={}).node.peer_addresses == {1: "a:1", 3: "a:3"}


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--peer-address", "3=b:3", "--peer-address", "3=c:3"], "given twice"),
        (["--peer-address", "1=a:1,3=b:3"], "takes one"),
        (["--peer-address", "3"], "ID=HOST:PORT"),
    ],
)
def test_bad_peer_address(extra: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        cli.server_config_from_argv([*BASE, *extra], env={})
    assert info.value.field == "node.peer_addresses"
    assert fragment in info.value.hint


def test_print_config_output_round_trips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLOG_RAFT__TICK_MS", "30")
    argv = ["server", *BASE, "--peer-address", "1=127.0.0.1:19400",
            "--set", "storage.segment_bytes=8192", "--print-config"]  # fmt: skip
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "[raft]\ntick_ms = 30\n" in text
    path = tmp_path / "printed.toml"
    path.write_text(text)
    from_file = load_config(config_file=str(path), env={}, sets=[], overrides={})
    expected = cli.server_config_from_argv(
        [*BASE, "--peer-address", "1=127.0.0.1:19400", "--set", "storage.segment_bytes=8192"],
        env={"REPLOG_RAFT__TICK_MS": "30"},
    )
    assert from_file == expected
    assert from_file.storage.segment_bytes == 8192


def test_config_error_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["server", *BASE, "--set", "raft.election_ticks=1", "--print-config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("replog: config error: raft.election_ticks=1:")


def test_missing_node_id_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["server", "--data-dir", "/tmp/x", "--print-config"]) == 2
    assert "node.node_id" in capsys.readouterr().err


def test_malformed_command_line_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["server", "--node-id", "two"]) == 2
    assert "invalid int value" in capsys.readouterr().err
    assert cli.main(["server", "--no-such-flag"]) == 2


def test_server_runs_the_broker_with_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    async def run_broker(config: object) -> int:
        seen.append(config)
        return 3

    fake = types.ModuleType("server.broker")
    fake.run_broker = run_broker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "server.broker", fake)
    configured: list[tuple[str, int]] = []
    monkeypatch.setattr(
        "server.logsetup.configure_logging",
        lambda level, node_id: configured.append((level, node_id)),
    )
    assert cli.main(["server", *BASE, "--log-level", "warning"]) == 3
    assert configured == [("warning", 2)]
    assert len(seen) == 1 and seen[0] == cli.server_config_from_argv(
        [*BASE, "--log-level", "warning"], env={}
    )


# ---------------------------------------------------------------- top level


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("server", "dev", "cluster", "topic", "produce", "consume"):
        assert f"    {command}" in out


def test_no_arguments_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "server" in capsys.readouterr().err


def test_server_help_shows_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["server", "--help"]) == 0
    out = capsys.readouterr().out
    flags = "--node-id --listen --data-dir --dc --rack --voters --peer-address --config --set"
    for flag in [*flags.split(), "--log-level", "--print-config"]:
        assert flag in out


def test_other_commands_go_to_the_client_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def client_main(argv: list[str]) -> int:
        calls.append(list(argv))
        return 4

    fake = types.ModuleType("client.cli")
    fake.main = client_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "client.cli", fake)
    assert cli.main(["topic", "describe", "demo", "--json"]) == 4
    assert cli.main(["--bootstrap", "h:1", "cluster"]) == 4
    assert calls == [["topic", "describe", "demo", "--json"], ["--bootstrap", "h:1", "cluster"]]


def test_dev_is_dispatched_to_server_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(dev, "main", lambda argv: calls.append(list(argv)) or 0)
    assert cli.main(["dev", "--nodes", "5"]) == 0
    assert calls == [["--nodes", "5"]]


# ---------------------------------------------------------------- replog dev layout


def test_three_node_layout() -> None:
    plan = dev.plan_nodes(3, 1, ".replog", 9400)
    assert [n.address for n in plan] == ["127.0.0.1:9400", "127.0.0.1:9401", "127.0.0.1:9402"]
    assert [n.dc for n in plan] == ["dc1"] * 3
    assert all(n.voter for n in plan)
    assert plan[1].data_dir == str(Path(".replog") / "node-2")
    assert plan[1].log_file == str(Path(".replog") / "node-2.log")
    assert dev.voters_flag(plan) == VOTERS
    assert dev.bootstrap_of(plan) == "127.0.0.1:9400,127.0.0.1:9401,127.0.0.1:9402"


def test_dcs_round_robin_and_voter_counts() -> None:
    plan = dev.plan_nodes(7, 3, "/d", 10000)
    assert [n.dc for n in plan] == ["dc1", "dc2", "dc3", "dc1", "dc2", "dc3", "dc1"]
    assert [n.node_id for n in plan if n.voter] == [1, 2, 3, 4, 5]
    assert [dev.voter_count(n) for n in range(1, 8)] == [1, 1, 3, 3, 5, 5, 5]


@given(nodes=st.integers(1, 12), data=st.data())
def test_layout_properties(nodes: int, data: st.DataObject) -> None:
    dcs = data.draw(st.integers(1, nodes))
    port = data.draw(st.integers(1, 65536 - nodes))
    plan = dev.plan_nodes(nodes, dcs, "/d", port)
    assert [n.node_id for n in plan] == list(range(1, nodes + 1))
    assert len({n.address for n in plan}) == nodes
    assert {n.dc for n in plan} == {f"dc{i}" for i in range(1, dcs + 1)}
    counts = [sum(n.dc == f"dc{i}" for n in plan) for i in range(1, dcs + 1)]
    assert max(counts) - min(counts) <= 1
    voters = [n for n in plan if n.voter]
    assert len(voters) in (1, 3, 5) and voters == plan[: len(voters)]
    # every broker's command line yields a valid config naming the same voters
    cfg = cli.server_config_from_argv(dev.server_argv(plan[-1], plan, fsync="never")[4:], env={})
    assert cfg.node.voters == {n.node_id: n.address for n in voters}
    assert cfg.node.listen == plan[-1].address and cfg.storage.fsync == "never"


@pytest.mark.parametrize(
    ("nodes", "dcs", "port"), [(0, 1, 9400), (3, 0, 9400), (3, 4, 9400), (3, 1, 65534)]
)
def test_impossible_layouts(nodes: int, dcs: int, port: int) -> None:
    with pytest.raises(ValueError):
        dev.plan_nodes(nodes, dcs, "/d", port)


def test_server_argv_follows_the_contract() -> None:
    plan = dev.plan_nodes(3, 3, "/d", 9400)
    argv = dev.server_argv(plan[2], plan, fsync="always", sets=["raft.tick_ms=20"], python="py")
    assert argv[:4] == ["py", "-m", "server.cli", "server"]
    cfg = cli.server_config_from_argv(argv[4:], env={})
    assert (cfg.node.node_id, cfg.node.dc, cfg.node.data_dir) == (3, "dc3", str(Path("/d/node-3")))
    assert cfg.raft.tick_ms == 20


def test_dev_args_defaults_and_bad_layout(capsys: pytest.CaptureFixture[str]) -> None:
    args = dev.parse_dev_args([])
    assert (args.nodes, args.dcs, args.data_dir, args.port) == (3, 1, ".replog", 9400)
    assert (args.demo, args.fsync, args.sets) == (False, "always", [])
    args = dev.parse_dev_args(["--nodes", "5", "--dcs", "3", "--demo", "--fsync", "never",
                               "--set", "raft.tick_ms=50"])  # fmt: skip
    assert (args.nodes, args.dcs, args.demo, args.fsync, args.sets) == (
        5,
        3,
        True,
        "never",
        ["raft.tick_ms=50"],
    )
    assert dev.main(["--nodes", "2", "--dcs", "3"]) == 2
    assert "--dcs" in capsys.readouterr().err


def test_print_nodes_table() -> None:
    cluster = dev.DevCluster(plan=dev.plan_nodes(3, 3, "/d", 9400))
    lines: list[str] = []
    dev.print_nodes(cluster, lines.append)
    assert lines[0].split() == ["id", "address", "dc", "voter", "pid", "log"]
    assert lines[3].split()[:3] == ["3", "127.0.0.1:9402", "dc3"]
    assert lines[-1] == "export REPLOG_BOOTSTRAP=127.0.0.1:9400,127.0.0.1:9401,127.0.0.1:9402"


# ---------------------------------------------------------------- logging


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_json_lines_with_node_id(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging("INFO", 7, stream=out)
    log = get_logger(group_id=12)
    log.debug("too_quiet")
    log.info("leader_elected", term=3, leader=2)
    log.bind(node_id=99).warning("overridden_node")
    logging.getLogger("grpc").warning("stdlib %s", "message")
    logging.getLogger("grpc").debug("stdlib_below_level")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["event"] for r in records] == ["leader_elected", "overridden_node", "stdlib message"]
    first = records[0]
    assert first["level"] == "info" and first["node_id"] == 7
    assert first["group_id"] == 12 and first["term"] == 3 and first["leader"] == 2
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    assert records[1]["node_id"] == 99
    assert records[2]["level"] == "warning" and records[2]["node_id"] == 7


def test_exceptions_are_rendered(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging("debug", 1, stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger().exception("apply_failed", obj=object())
    record = json.loads(out.getvalue())
    assert record["event"] == "apply_failed" and record["level"] == "error"
    assert "RuntimeError: boom" in record["exception"]
    assert record["obj"].startswith("<object")


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="verbose"):
        configure_logging("verbose", 1, stream=io.StringIO())


# ---------------------------------------------------------------- demo checks (pure)


def consumed_ok(n: int, partitions: int = 3) -> tuple[list[dev.Consumed], dict]:
    """Records 0..n-1 laid out as a correct broker would: keyed, per-partition offsets."""
    next_offset = [0] * partitions
    records, acked = [], {}
    for i in range(n):
        key, value = dev.demo_record(i)
        p = int(key.split(b"-")[1]) % partitions
        records.append(dev.Consumed(p, next_offset[p], key, value))
        acked[value] = (p, next_offset[p])
        next_offset[p] += 1
    return records, acked


def test_check_consumed_accepts_a_correct_read() -> None:
    records, acked = consumed_ok(100)
    expected = {r.value for r in records}
    assert dev.check_consumed(records, expected, acked) == []
    # partitions interleave arbitrarily; only per-partition order matters
    by_partition = sorted(records, key=lambda r: (r.partition, r.offset))
    assert dev.check_consumed(by_partition, expected, acked) == []


def test_check_consumed_finds_each_kind_of_anomaly() -> None:
    records, acked = consumed_ok(60)
    expected = {r.value for r in records}
    lost = dev.check_consumed(records[:-1], expected, acked)
    assert len(lost) == 1 and "1 record(s) lost" in lost[0]
    dup = dev.check_consumed([*records, records[5]], expected, acked)
    assert any("1 duplicate" in p for p in dup) and any("offset" in p for p in dup)
    extra = dev.Consumed(0, 999, b"x", b"zzz")
    assert any("unexpected" in p for p in dev.check_consumed([*records, extra], expected))
    swapped = list(records)
    i, j = 0, 3  # both key-0 records of partition 0, at offsets 0 and 1
    assert swapped[i].partition == swapped[j].partition
    swapped[i], swapped[j] = swapped[j], swapped[i]
    problems = dev.check_consumed(swapped, expected)
    assert any("partition 0: offset 0 after 1" in p for p in problems)
    moved = dict(acked)
    moved[records[0].value] = (2, 7)
    assert any("acknowledged at (2, 7)" in p for p in dev.check_consumed(records, expected, moved))


def test_check_consumed_detects_per_key_reordering() -> None:
    a = dev.Consumed(0, 0, b"k", b"5")
    b = dev.Consumed(0, 1, b"k", b"4")
    problems = dev.check_consumed([a, b], {b"4", b"5"})
    assert problems == ["key b'k': value 4 after 5"]


class _FakeProc:
    def __init__(self, code: int | None = None) -> None:
        self.pid, self.code = 4242, code

    def poll(self) -> int | None:
        return self.code


def _fake_admin(monkeypatch: pytest.MonkeyPatch, answers: list[object]) -> list[int]:
    """Install a fake client.admin.AdminClient whose describe_cluster yields ``answers``."""
    calls: list[int] = []

    class FakeAdmin:
        def __init__(self, bootstrap: str, config: object = None) -> None:
            assert bootstrap.startswith("127.0.0.1:")

        async def __aenter__(self) -> FakeAdmin:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        async def describe_cluster(self) -> object:
            calls.append(1)
            answer = answers[min(len(calls), len(answers)) - 1]
            if isinstance(answer, Exception):
                raise answer
            return answer

    monkeypatch.setattr("client.admin.AdminClient", FakeAdmin)
    return calls


def _described(leader: int, alive: list[int]) -> object:
    brokers = tuple(types.SimpleNamespace(id=i, alive=True) for i in alive)
    return types.SimpleNamespace(brokers=brokers, metadata_leader=leader)


def test_wait_ready_waits_for_leader_and_every_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    calls = _fake_admin(
        monkeypatch,
        [ConnectionError("refused"), _described(0, [1, 2, 3]), _described(2, [1, 2, 3])],
    )
    cluster = dev.DevCluster(plan=dev.plan_nodes(3, 1, "/d", 9400))
    cluster.procs = {i: _FakeProc() for i in (1, 2, 3)}  # type: ignore[misc]
    ready, seen = asyncio.run(dev.wait_ready(cluster, timeout_s=10))
    assert ready and len(calls) == 3
    assert seen == "metadata leader 2, alive brokers [1, 2, 3]"


def test_wait_ready_reports_what_it_saw(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    _fake_admin(monkeypatch, [_described(1, [1, 2])])
    cluster = dev.DevCluster(plan=dev.plan_nodes(3, 1, "/d", 9400))
    cluster.procs = {i: _FakeProc() for i in (1, 2, 3)}  # type: ignore[misc]
    ready, seen = asyncio.run(dev.wait_ready(cluster, timeout_s=0.5))
    assert not ready and seen == "metadata leader 1, alive brokers [1, 2]"
    cluster.procs[3] = _FakeProc(code=1)  # type: ignore[assignment]
    ready, seen = asyncio.run(dev.wait_ready(cluster, timeout_s=5))
    assert not ready and "exited during startup" in seen and "{3: 1}" in seen


# ---------------------------------------------------------------- the demo against fakes


class _FakeBrokerState:
    """An in-memory 'cluster': three partition logs, a leader per partition."""

    def __init__(self, duplicate_after_kill: bool = False) -> None:
        self.logs: list[list[tuple[bytes | None, bytes | None]]] = [[], [], []]
        self.leaders = [1, 2, 3]
        self.killed: list[int] = []
        self.started: list[int] = []
        self.duplicate_after_kill = duplicate_after_kill


def _install_fake_clients(monkeypatch: pytest.MonkeyPatch, state: _FakeBrokerState) -> None:
    import asyncio

    class Admin:
        def __init__(self, bootstrap: str, config: object = None) -> None: ...

        async def __aenter__(self) -> Admin:
            return self

        async def __aexit__(self, *exc: object) -> None: ...

        async def create_topic(self, name: str, partitions: int, replicas: int, config: dict):
            assert (name, partitions, replicas, config) == ("demo", 3, 3, {})

        async def describe_topic(self, name: str) -> object:
            parts = [types.SimpleNamespace(leader=leader) for leader in state.leaders]
            return types.SimpleNamespace(partitions=parts)

        async def describe_cluster(self) -> object:
            return _described(state.leaders[0], [1, 2, 3])

    class Producer:
        def __init__(self, bootstrap: str, config: object = None) -> None: ...

        async def __aenter__(self) -> Producer:
            return self

        async def __aexit__(self, *exc: object) -> None: ...

        async def send(self, topic: str, value: bytes, key: bytes | None = None,
                       partition: int | None = None) -> asyncio.Future:  # fmt: skip
            if partition is None:
                partition = int(key.split(b"-")[1]) % 3 if key else 0
            log = state.logs[partition]
            log.append((key, value))
            if state.duplicate_after_kill and state.killed and value == b"1500":
                log.append((key, value))
            future = asyncio.get_running_loop().create_future()
            future.set_result(types.SimpleNamespace(partition=partition, offset=len(log) - 1))
            return future

        async def send_and_wait(self, topic: str, value: bytes, key: bytes, partition: int):
            return await (await self.send(topic, value, key=key, partition=partition))

        async def flush(self) -> None: ...

    class Consumer:
        def __init__(self, bootstrap: str, config: object = None) -> None:
            self.done = False

        async def __aenter__(self) -> Consumer:
            return self

        async def __aexit__(self, *exc: object) -> None: ...

        def assign(self, partitions: list[tuple[str, int]]) -> None:
            assert partitions == [("demo", 0), ("demo", 1), ("demo", 2)]

        def seek_to_beginning(self) -> None: ...

        async def poll(self, timeout_s: float) -> list[object]:
            if self.done:
                return []
            self.done = True
            return [
                types.SimpleNamespace(partition=p, offset=o, key=k, value=v)
                for p, log in enumerate(state.logs)
                for o, (k, v) in enumerate(log)
            ]

    monkeypatch.setattr("client.admin.AdminClient", Admin)
    monkeypatch.setattr("client.producer.Producer", Producer)
    monkeypatch.setattr("client.consumer.Consumer", Consumer)

    def fake_run(argv: list[str], **kwargs: object) -> object:
        assert argv[-3:] == ["topic", "describe", "demo"]
        assert kwargs["env"]["REPLOG_BOOTSTRAP"].startswith("127.0.0.1:")  # type: ignore[index]
        return types.SimpleNamespace(returncode=0, stdout="TABLE", stderr="")

    monkeypatch.setattr(dev.subprocess, "run", fake_run)


class _FakeCluster(dev.DevCluster):
    def __init__(self, state: _FakeBrokerState) -> None:
        super().__init__(plan=dev.plan_nodes(3, 1, "/d", 9400))
        self.state = state
        self.procs = {i: _FakeProc() for i in (1, 2, 3)}  # type: ignore[dict-item]

    def kill(self, node_id: int) -> None:
        self.state.killed.append(node_id)
        self.state.leaders = [2 if leader == node_id else leader for leader in self.state.leaders]

    def start(self, node_id: int) -> None:
        self.state.started.append(node_id)


def test_demo_passes_against_a_correct_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    state = _FakeBrokerState()
    _install_fake_clients(monkeypatch, state)
    lines: list[str] = []
    demo = dev._Demo(_FakeCluster(state), out=lines.append)
    assert asyncio.run(demo.run()) == 0, "\n".join(lines)
    assert state.killed == [1] and state.started == [1]  # partition 0's leader, restarted
    assert sum(len(log) for log in state.logs) == 2001
    assert [line.split()[0] for line in lines if line.split()[:1] in (["PASS"], ["FAIL"])] == [
        "PASS"
    ] * 9
    assert "TABLE" in lines and lines[-1].strip() == "== demo PASS"


def test_demo_fails_when_a_record_is_duplicated(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    state = _FakeBrokerState(duplicate_after_kill=True)
    _install_fake_clients(monkeypatch, state)
    lines: list[str] = []
    demo = dev._Demo(_FakeCluster(state), out=lines.append)
    assert asyncio.run(demo.run()) == 1
    failed = [line for line in lines if line.startswith("FAIL")]
    assert len(failed) == 1 and "1 duplicate record(s)" in failed[0]
    assert lines[-1].strip() == "== demo FAIL (1 check(s) failed)"
