"""server/config.py: layering, parsing, validation messages, TOML round trip, generated docs."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft.config import RaftConfig
from server import config as cfgmod
from server.config import (
    ConfigError,
    NodeConfig,
    PartitionDefaults,
    RaftSection,
    ServerConfig,
    ServerSection,
    StorageConfig,
    config_to_toml,
    describe_fields,
    load_config,
    parse_address,
    parse_id_map,
    render_markdown,
)

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"node.node_id": 1, "node.data_dir": "/var/lib/replog"}


def load(*, config_file: str | None = None, env=None, sets=(), overrides=None) -> ServerConfig:
    return load_config(
        config_file=config_file,
        env=env or {},
        sets=list(sets),
        overrides={**REQUIRED, **(overrides or {})},
    )


def error_of(**kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(**kwargs)
    return info.value


# ---------------------------------------------------------------- defaults


def test_defaults_match_the_documented_values() -> None:
    cfg = load()
    assert cfg.node.listen == "127.0.0.1:9400"
    assert cfg.node.advertised_address == "127.0.0.1:9400"  # empty means "same as listen"
    assert cfg.node.voters == {1: "127.0.0.1:9400"}  # empty means "this node alone"
    assert cfg.node.dc == "dc1" and cfg.node.rack == "" and cfg.node.cluster_id == "replog"
    assert cfg.node.peer_addresses == {}
    assert cfg.raft == RaftSection(
        tick_ms=100,
        election_ticks=5,  # raft.config.RaftConfig's (see the test below)
        heartbeat_ticks=1,
        max_size_per_msg=1 << 20,
        max_inflight_msgs=256,
        max_inflight_bytes=32 << 20,
        max_uncommitted_bytes=64 << 20,
        pre_vote=True,
        check_quorum=True,
    )
    assert cfg.storage == StorageConfig(
        fsync="always", segment_bytes=64 << 20, snapshot_interval_entries=10_000
    )
    assert cfg.partition == PartitionDefaults(
        retention_ms=604_800_000,
        retention_bytes=-1,
        max_batch_bytes=4 << 20,
        retention_check_ms=5_000,
    )
    assert cfg.server.produce_timeout_ms == 10_000
    assert cfg.server.fetch_max_wait_ms == 500
    assert cfg.server.broker_session_timeout_ms == 6_000
    assert cfg.server.outbox_max_messages == 10_000
    assert (cfg.server.reconnect_backoff_ms, cfg.server.reconnect_backoff_max_ms) == (50, 2000)
    assert cfg.server.grpc_max_message_bytes == 64 << 20
    assert cfg.server.outbox_max_bytes == 128 << 20
    assert cfg.server.max_peer_batch_bytes == 16 << 20
    assert cfg.server.snapshot_chunk_bytes == 4 << 20
    assert cfg.server.snapshot_reassembly_max_bytes == 512 << 20
    assert cfg.server.max_fetch_streams == 1_000
    assert cfg.server.max_fetch_streams_per_client == 100
    assert cfg.server.log_level == "info"


def test_raft_section_defaults_are_raft_configs() -> None:
    """One Raft config source (#12): every [raft] key that RaftConfig has defaults to
    RaftConfig's value, and every RaftConfig knob but the per-node ones is a [raft] key."""
    raft_fields = {f.name: f for f in dataclasses.fields(RaftConfig)}
    section_fields = {f.name: f for f in dataclasses.fields(RaftSection)}
    runtime_only = {"tick_ms", "quiesce"}
    # chosen per group by the broker: who it is, its priority, and (by the group's kind)
    # how followers learn the commit index
    per_group = {"node_id", "priority", "broadcast_commit"}
    assert set(section_fields) - runtime_only == set(raft_fields) - per_group
    for name in set(section_fields) - runtime_only:
        assert section_fields[name].default == raft_fields[name].default, name
    built = RaftSection().to_raft_config(node_id=3, priority=2)
    assert built == RaftConfig(node_id=3, priority=2)


def test_to_raft_config_carries_every_value() -> None:
    section = RaftSection(
        election_ticks=7,
        heartbeat_ticks=2,
        max_size_per_msg=1000,
        max_inflight_msgs=5,
        max_inflight_bytes=9000,
        max_uncommitted_bytes=12345,
        pre_vote=False,
        check_quorum=False,
    )
    built = section.to_raft_config(node_id=4)
    for f in dataclasses.fields(RaftConfig):
        expected = {"node_id": 4, "priority": 0, "broadcast_commit": True}.get(f.name)
        if expected is None:
            expected = getattr(section, f.name)
        assert getattr(built, f.name) == expected, f.name
    assert not section.to_raft_config(node_id=4, broadcast_commit=False).broadcast_commit


def test_sections_are_frozen() -> None:
    cfg = load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.raft.tick_ms = 5  # type: ignore[misc]


def test_every_field_is_documented() -> None:
    rows = describe_fields()
    assert len(rows) == sum(len(dataclasses.fields(c)) for c in cfgmod.SECTIONS.values())
    for section, key, _type, _default, doc in rows:
        assert len(doc) > 20, f"{section}.{key} has no real documentation"
    by_key = {(s, k): d for s, k, _t, d, _doc in rows}
    assert by_key[("node", "node_id")] == "(required)"
    assert by_key[("raft", "tick_ms")] == "100"
    assert by_key[("storage", "fsync")] == '"always"'
    assert by_key[("raft", "pre_vote")] == "true"


# ---------------------------------------------------------------- layering


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "replog.toml"
    path.write_text(text)
    return str(path)


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        "[raft]\ntick_ms = 20\nelection_ticks = 8\nheartbeat_ticks = 2\nmax_inflight_msgs = 7\n",
    )
    env = {
        "REPLOG_RAFT__ELECTION_TICKS": "9",
        "REPLOG_RAFT__HEARTBEAT_TICKS": "3",
        "REPLOG_RAFT__MAX_INFLIGHT_MSGS": "8",
    }
    sets = ["raft.heartbeat_ticks=4", "raft.max_inflight_msgs=9"]
    cfg = load(config_file=path, env=env, sets=sets, overrides={"raft.max_inflight_msgs": 10})
    assert cfg.raft.tick_ms == 20  # file over default
    assert cfg.raft.election_ticks == 9  # env over file
    assert cfg.raft.heartbeat_ticks == 4  # --set over env
    assert cfg.raft.max_inflight_msgs == 10  # flag over --set
    assert cfg.raft.max_inflight_bytes == 32 << 20  # untouched default


def test_later_set_wins_and_none_override_is_ignored() -> None:
    cfg = load(sets=["raft.tick_ms=10", "raft.tick_ms=20"], overrides={"raft.tick_ms": None})
    assert cfg.raft.tick_ms == 20


def test_required_fields_can_come_from_the_environment() -> None:
    cfg = load_config(
        config_file=None,
        env={"REPLOG_NODE__NODE_ID": "7", "REPLOG_NODE__DATA_DIR": "/d"},
        sets=[],
        overrides={},
    )
    assert (cfg.node.node_id, cfg.node.data_dir) == (7, "/d")


def test_missing_required_field_says_how_to_supply_it() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config_file=None, env={}, sets=[], overrides={"node.node_id": 3})
    assert info.value.field == "node.data_dir"
    assert info.value.value is None
    assert "--data-dir" in info.value.hint and "REPLOG_NODE__DATA_DIR" in info.value.hint


def test_env_ignores_non_config_variables() -> None:
    cfg = load(env={"REPLOG_BOOTSTRAP": "x:1", "HOME": "/root", "REPLOG_RAFT__TICK_MS": "7"})
    assert cfg.raft.tick_ms == 7


def test_string_values_are_parsed_to_the_field_type() -> None:
    cfg = load(
        env={
            "REPLOG_RAFT__PRE_VOTE": "FALSE",
            "REPLOG_SERVER__GRPC_MAX_MESSAGE_BYTES": "8_388_608",
        },
        sets=[
            "node.voters=1=10.0.0.1:9400, 2=10.0.0.2:9400 ,3=10.0.0.3:9400",
            "node.peer_addresses=2=127.0.0.1:19402",
            "raft.check_quorum=true",
            "node.rack=r2",
        ],
    )
    assert cfg.raft.pre_vote is False and cfg.raft.check_quorum is True
    assert cfg.server.grpc_max_message_bytes == 8 << 20
    assert cfg.server.max_peer_batch_bytes == 2 << 20  # auto: a quarter of the gRPC limit
    assert cfg.server.snapshot_chunk_bytes == 512 << 10  # auto: a quarter of that
    assert cfg.node.voters == {1: "10.0.0.1:9400", 2: "10.0.0.2:9400", 3: "10.0.0.3:9400"}
    assert cfg.node.peer_addresses == {2: "127.0.0.1:19402"}
    assert cfg.node.dial_address(2, "10.0.0.2:9400") == "127.0.0.1:19402"
    assert cfg.node.dial_address(3, "10.0.0.3:9400") == "10.0.0.3:9400"
    assert cfg.node.rack == "r2"


def test_toml_tables_and_strings_both_work_for_maps(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        '[node]\nvoters = { 1 = "h:1", 2 = "h:2", 3 = "h:3" }\npeer_addresses = "2=p:2"\n',
    )
    cfg = load(config_file=path)
    assert cfg.node.voters == {1: "h:1", 2: "h:2", 3: "h:3"}
    assert cfg.node.peer_addresses == {2: "p:2"}


def test_a_higher_layer_replaces_a_map_whole(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[node]\npeer_addresses = { 2 = "a:2", 3 = "a:3" }\n')
    cfg = load(config_file=path, sets=["node.peer_addresses=3=b:3"])
    assert cfg.node.peer_addresses == {3: "b:3"}


# ---------------------------------------------------------------- errors


def test_unknown_key_names_it_and_lists_the_valid_ones() -> None:
    err = error_of(sets=["raft.tick=5"])
    assert err.field == "raft.tick"
    assert "--set raft.tick=5" in err.hint
    assert "tick_ms" in err.hint and "election_ticks" in err.hint


def test_unknown_env_section_names_the_variable() -> None:
    err = error_of(env={"REPLOG_RAFTT__TICK_MS": "5"})
    assert err.field == "raftt"
    assert "$REPLOG_RAFTT__TICK_MS" in err.hint
    assert "node, raft, storage, partition, server" in err.hint


def test_unknown_section_and_key_in_the_file(tmp_path: Path) -> None:
    err = error_of(config_file=write_toml(tmp_path, "[nodes]\nnode_id = 1\n"))
    assert err.field == "nodes" and "valid sections" in err.hint
    err = error_of(config_file=write_toml(tmp_path, "[storage]\nfsync_policy = 'never'\n"))
    assert err.field == "storage.fsync_policy" and "fsync" in err.hint


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    err = error_of(config_file=str(tmp_path / "absent.toml"))
    assert err.field == "config_file" and "cannot read" in err.hint
    err = error_of(config_file=write_toml(tmp_path, "[raft\n"))
    assert err.field == "config_file" and "not valid TOML" in err.hint


def test_wrong_types_are_refused(tmp_path: Path) -> None:
    err = error_of(config_file=write_toml(tmp_path, '[raft]\ntick_ms = "fast"\n'))
    assert err.field == "raft.tick_ms" and "integer" in err.hint
    err = error_of(config_file=write_toml(tmp_path, "[raft]\ntick_ms = true\n"))
    assert err.field == "raft.tick_ms" and "expected int" in err.hint
    err = error_of(config_file=write_toml(tmp_path, "[raft]\npre_vote = 1\n"))
    assert err.field == "raft.pre_vote" and "expected bool" in err.hint
    err = error_of(sets=["raft.pre_vote=yes"])
    assert err.field == "raft.pre_vote" and "true or false" in err.hint


@pytest.mark.parametrize(
    ("sets", "field", "fragment"),
    [
        (["raft.heartbeat_ticks=10"], "raft.election_ticks", "greater than raft.heartbeat_ticks"),
        (["raft.tick_ms=0"], "raft.tick_ms", "[1, 10000]"),
        (["raft.tick_ms=10001"], "raft.tick_ms", "[1, 10000]"),
        (["raft.max_inflight_msgs=0"], "raft.max_inflight_msgs", ">= 1"),
        (["storage.fsync=sometimes"], "storage.fsync", "always, never"),
        (["storage.segment_bytes=4095"], "storage.segment_bytes", ">= 4096"),
        (["storage.snapshot_interval_entries=0"], "storage.snapshot_interval_entries", ">= 1"),
        (["partition.retention_ms=0"], "partition.retention_ms", "-1 (no limit)"),
        (["partition.retention_bytes=-2"], "partition.retention_bytes", "-1 (no limit)"),
        (
            ["server.broker_session_timeout_ms=1000"],
            "server.broker_session_timeout_ms",
            "heartbeat",
        ),
        (["server.reconnect_backoff_max_ms=10"], "server.reconnect_backoff_max_ms", ">= server."),
        (["server.log_level=verbose"], "server.log_level", "debug, info"),
        (["server.grpc_max_message_bytes=1000"], "server.grpc_max_message_bytes", ">= 65536"),
        (["partition.max_batch_bytes=70000000"], "partition.max_batch_bytes", "(8 MiB)"),
        (["raft.max_size_per_msg=70000000"], "raft.max_size_per_msg", "grpc_max"),
        (["raft.max_uncommitted_bytes=0"], "raft.max_uncommitted_bytes", ">= 1"),
        (
            ["server.max_peer_batch_bytes=70000000"],
            "server.max_peer_batch_bytes",
            "(server.grpc_max_message_bytes)",
        ),
        (
            [
                "server.grpc_max_message_bytes=10000000",
                "partition.max_batch_bytes=8000000",
                "raft.max_size_per_msg=4000000",
            ],
            "server.grpc_max_message_bytes",
            "one append message",
        ),
        (
            ["server.snapshot_chunk_bytes=9000000"],
            "server.snapshot_chunk_bytes",
            "half of server.max_peer_batch_bytes",
        ),
        (["server.outbox_max_bytes=1000"], "server.outbox_max_bytes", ">= server.max_peer"),
        (
            ["server.snapshot_reassembly_max_bytes=10"],
            "server.snapshot_reassembly_max_bytes",
            ">= server.snapshot_chunk_bytes",
        ),
        (["server.max_fetch_streams=0"], "server.max_fetch_streams", ">= 1"),
        (
            ["server.max_fetch_streams_per_client=1001"],
            "server.max_fetch_streams_per_client",
            "[1, 1000]",
        ),
        (["node.voters=1=a:1,2=a:2"], "node.voters", "1, 3 or 5"),
        (["node.voters=0=a:1"], "node.voters", ">= 1"),
        (["node.voters=1=a"], "node.voters[1]", "HOST:PORT"),
        (["node.voters=x=a:1"], "node.voters", "not a number"),
        (["node.voters=1=a:1,1=a:2,3=a:3"], "node.voters", "twice"),
        (["node.peer_addresses=2=h:99999"], "node.peer_addresses[2]", "65535"),
        (["node.listen=localhost"], "node.listen", "HOST:PORT"),
        (["node.advertised_address=:9400"], "node.advertised_address", "HOST:PORT"),
        (["node.cluster_id=my cluster"], "node.cluster_id", "letters"),
        (["node.dc="], "node.dc", "empty"),
        (["node.node_id=0"], "node.node_id", ">= 1"),
    ],
)
def test_validation_names_the_field(sets: list[str], field: str, fragment: str) -> None:
    overrides = {k: v for k, v in REQUIRED.items() if not any(s.startswith(k) for s in sets)}
    with pytest.raises(ConfigError) as info:
        load_config(config_file=None, env={}, sets=sets, overrides=overrides)
    assert info.value.field == field
    assert fragment in info.value.hint
    assert str(info.value).startswith(f"{field}=")


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError) as info:
        RaftSection(tick_ms="100")  # type: ignore[arg-type]
    assert info.value.field == "raft.tick_ms"
    with pytest.raises(ConfigError):
        NodeConfig(node_id=1, data_dir="")
    with pytest.raises(ConfigError) as info:
        ServerConfig(node=NodeConfig(node_id=1, data_dir="/d"), raft="fast")  # type: ignore[arg-type]
    assert info.value.field == "raft"


def test_log_level_is_case_insensitive() -> None:
    assert ServerSection(log_level="DEBUG").log_level == "debug"


def test_set_needs_section_dot_key() -> None:
    for bad in ("tick_ms=5", "raft.tick_ms", ".x=1"):
        with pytest.raises(ConfigError) as info:
            load(sets=[bad])
        assert "section.key=value" in info.value.hint


def test_parse_helpers() -> None:
    assert parse_address("x", "[::1]:9400") == ("::1", 9400)
    assert parse_address("x", "0.0.0.0:0", allow_port_zero=True) == ("0.0.0.0", 0)
    with pytest.raises(ConfigError):
        parse_address("x", "h:0")
    assert parse_id_map("x", "") == {}
    assert parse_id_map("x", "1=a:1,") == {1: "a:1"}
    with pytest.raises(ConfigError):
        parse_id_map("x", "1:a:1")


# ---------------------------------------------------------------- TOML output


def test_print_config_round_trips(tmp_path: Path) -> None:
    cfg = load(
        sets=[
            "node.voters=1=127.0.0.1:9400,2=127.0.0.1:9401,3=127.0.0.1:9402",
            "node.peer_addresses=2=127.0.0.1:19401",
            'node.rack=rack "a"\\b',
            "raft.pre_vote=false",
            "storage.fsync=never",
        ]
    )
    text = config_to_toml(cfg)
    parsed = tomllib.loads(text)
    assert parsed["storage"]["fsync"] == "never"
    assert parsed["node"]["rack"] == 'rack "a"\\b'
    path = write_toml(tmp_path, text)
    again = load_config(config_file=path, env={}, sets=[], overrides={})
    assert again == cfg


addresses = st.builds(
    lambda host, port: f"{host}:{port}",
    st.sampled_from(["127.0.0.1", "10.1.2.3", "broker-a.example", "::1"]),
    st.integers(1, 65535),
)


@settings(max_examples=60, deadline=None)
@given(
    node_id=st.integers(1, 10_000),
    voters=st.sampled_from([1, 3, 5]).flatmap(
        lambda n: st.dictionaries(st.integers(1, 99), addresses, min_size=n, max_size=n)
    ),
    peers=st.dictionaries(st.integers(1, 99), addresses, max_size=4),
    tick_ms=st.integers(1, 10_000),
    heartbeat_ticks=st.integers(1, 5),
    extra_election=st.integers(1, 20),
    pre_vote=st.booleans(),
    fsync=st.sampled_from(["always", "never"]),
    retention_ms=st.one_of(st.just(-1), st.integers(1, 2**40)),
    rack=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=10),
    level=st.sampled_from(["debug", "info", "warning", "error", "critical"]),
)
def test_toml_round_trip_property(
    node_id,
    voters,
    peers,
    tick_ms,
    heartbeat_ticks,
    extra_election,
    pre_vote,
    fsync,
    retention_ms,
    rack,
    level,
) -> None:
    cfg = ServerConfig(
        node=NodeConfig(
            node_id=node_id, data_dir="/d/x", voters=voters, peer_addresses=peers, rack=rack
        ),
        raft=RaftSection(
            tick_ms=tick_ms,
            heartbeat_ticks=heartbeat_ticks,
            election_ticks=heartbeat_ticks + extra_election,
            pre_vote=pre_vote,
        ),
        storage=StorageConfig(fsync=fsync),
        partition=PartitionDefaults(retention_ms=retention_ms),
        server=ServerSection(log_level=level),
    )
    parsed = tomllib.loads(config_to_toml(cfg))
    layers = {f"{s}.{k}": v for s, table in parsed.items() for k, v in table.items()}
    again = load_config(config_file=None, env={}, sets=[], overrides=layers)
    assert again == cfg


# ---------------------------------------------------------------- generated docs


def test_configuration_doc_is_up_to_date() -> None:
    doc = ROOT / "docs" / "configuration.md"
    assert doc.read_text() == render_markdown(), (
        "docs/configuration.md is stale: run `python -m server.config --markdown "
        "> docs/configuration.md`"
    )


def test_markdown_lists_every_key() -> None:
    text = render_markdown()
    for section, key, _t, _d, _doc in describe_fields():
        assert f"## [{section}]" in text
        assert f"| `{key}` |" in text


def test_markdown_script_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert cfgmod.main(["--markdown"]) == 0
    assert capsys.readouterr().out == render_markdown()
    assert cfgmod.main([]) == 2
