"""The `replog` client commands, run in-process (main(argv)) against the fake cluster."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import pytest

from client.cli import main
from tests.client.fake_broker import FakeBroker, unique
from wire.batch import Record, encode


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBroker]:
    with FakeBroker(nodes=3) as fb:
        yield fb


def run(fake: FakeBroker, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--bootstrap", fake.bootstrap, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def json_out(fake: FakeBroker, capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    code, out, err = run(fake, capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_cluster_status_json_shape(fake: FakeBroker, capsys: pytest.CaptureFixture[str]) -> None:
    status = json_out(fake, capsys, "cluster", "status")
    assert isinstance(status, dict)
    assert set(status) == {"brokers", "metadata", "cluster_id"}  # cluster_id: an extension
    assert set(status["metadata"]) == {"leader", "term", "voters"}
    assert status["metadata"] == {"leader": 1, "term": 3, "voters": [1, 2, 3]}
    assert status["brokers"][0] == {
        "id": 1,
        "address": fake.address(1),
        "dc": "dc1",
        "rack": "r1",
        "alive": True,
    }
    assert [b["id"] for b in status["brokers"]] == [1, 2, 3]


def test_topic_create_list_describe_delete(
    fake: FakeBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = unique("cli")
    code, out, err = run(
        fake, capsys, "topic", "create", topic, "--partitions", "3", "--replicas", "2",
        "--config", "retention.ms=1000", "--config", "cleanup.policy=compact",
    )  # fmt: skip
    assert code == 0, err
    assert topic in out
    config = fake.run(lambda c: dict(c.topics[topic].config))
    assert config == {"retention.ms": "1000", "cleanup.policy": "compact"}

    listed = json_out(fake, capsys, "topic", "list")
    assert isinstance(listed, list)
    assert {"name": topic, "partitions": 3, "replication_factor": 2} in listed
    assert all(set(t) == {"name", "partitions", "replication_factor"} for t in listed)

    fake.run(lambda c: c.append_raw(topic, 1, encode([Record(None, b"x", 0)] * 4)))
    described = json_out(fake, capsys, "topic", "describe", topic)
    assert described == {
        "name": topic,
        "partitions": [
            {"partition": 0, "leader": 1, "replicas": [1, 2], "log_start_offset": 0,
             "high_watermark": 0},
            {"partition": 1, "leader": 2, "replicas": [2, 3], "log_start_offset": 0,
             "high_watermark": 4},
            {"partition": 2, "leader": 3, "replicas": [3, 1], "log_start_offset": 0,
             "high_watermark": 0},
        ],
    }  # fmt: skip

    code, out, _ = run(fake, capsys, "topic", "describe", topic)
    assert code == 0 and "high watermark" in out  # the human table

    code, _, err = run(fake, capsys, "topic", "delete", topic)
    assert code == 0, err
    assert topic not in [t["name"] for t in json_out(fake, capsys, "topic", "list")]  # type: ignore[index]


def test_describe_follows_not_leader_to_the_real_leader(
    fake: FakeBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = unique("cli")
    fake.create_topic(topic, partitions=1)
    fake.inject("ListOffsets", "NOT_LEADER", move_leader_to=3, topic=topic)
    described = json_out(fake, capsys, "topic", "describe", topic)
    assert described["partitions"][0]["leader"] == 3  # type: ignore[index]
    assert described["partitions"][0]["high_watermark"] == 0  # type: ignore[index]
    assert fake.run(lambda c: len(c.faults)) == 0


def test_errors_print_one_line_with_code_and_hint(
    fake: FakeBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(fake, capsys, "topic", "describe", "does-not-exist")
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("replog: error: UNKNOWN_TOPIC: ")
    assert "hint: fake hint" in lines[0]

    topic = unique("cli")
    fake.create_topic(topic, partitions=1)
    code, _, err = run(fake, capsys, "topic", "create", topic, "--partitions", "1",
                       "--replicas", "1")  # fmt: skip
    assert code == 1
    assert "TOPIC_EXISTS" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["topic"],
        ["topic", "create", "x"],
        ["topic", "create", "x", "--partitions", "0", "--replicas", "1"],
        ["topic", "create", "x", "--partitions", "1", "--replicas", "1", "--config", "novalue"],
        ["consume", "t", "--from-beginning", "--offset", "3"],
        ["no-such-command"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err


def test_bad_bootstrap_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--bootstrap", "nonsense", "topic", "list"]) == 2
    assert "not host:port" in capsys.readouterr().err


def test_bootstrap_from_environment(
    fake: FakeBroker, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLOG_BOOTSTRAP", fake.bootstrap)
    assert main(["topic", "list", "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)


def test_produce_then_consume_json(
    fake: FakeBroker, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = unique("cli")
    fake.create_topic(topic, partitions=2)
    monkeypatch.setattr("sys.stdin", io.StringIO("k1|one\nk2|two\nno separator\n|empty key\nlast"))
    code, _, err = run(fake, capsys, "produce", topic, "--key-separator", "|", "--partition", "1")
    assert code == 0, err
    assert "5 records acknowledged" in err
    binary = encode([Record(b"\xff\xfe", b"\x00\x9f", 42)])
    fake.run(lambda c: c.append_raw(topic, 1, binary))

    code, out, err = run(
        fake, capsys, "consume", topic, "--from-beginning", "--timeout", "0.3", "--json"
    )
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["partition"], x["offset"]) for x in lines] == [(1, i) for i in range(6)]
    assert [(x["key"], x["value"]) for x in lines[:5]] == [
        ("k1", "one"),
        ("k2", "two"),
        (None, "no separator"),
        ("", "empty key"),
        (None, "last"),
    ]
    assert set(lines[0]) == {"partition", "offset", "key", "value", "timestamp"}
    assert isinstance(lines[0]["timestamp"], int)
    assert lines[5] == {
        "partition": 1,
        "offset": 5,
        "key": base64.b64encode(b"\xff\xfe").decode(),
        "value": base64.b64encode(b"\x00\x9f").decode(),
        "timestamp": 42,
        "key_base64": True,
        "value_base64": True,
    }


def test_consume_offset_partition_and_max_records(
    fake: FakeBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = unique("cli")
    fake.create_topic(topic, partitions=2)
    for p in (0, 1):
        batch = encode([Record(None, b"p%d-%d" % (p, i), 0) for i in range(10)])
        fake.run(lambda c, p=p, batch=batch: c.append_raw(topic, p, batch))
    code, out, _ = run(fake, capsys, "consume", topic, "--partition", "1", "--offset", "4",
                       "--max-records", "3")  # fmt: skip
    assert code == 0
    assert out.splitlines() == ["p1-4", "p1-5", "p1-6"]
    # default: start at the end, so nothing old is printed before the timeout
    code, out, _ = run(fake, capsys, "consume", topic, "--timeout", "0.2")
    assert (code, out) == (0, "")
    code, _, err = run(fake, capsys, "consume", topic, "--partition", "7", "--timeout", "0.1")
    assert code == 1 and "UNKNOWN_PARTITION" in err


class LinePerRead(io.StringIO):
    """A text stdin that hands out one line per read, like a terminal or a slow pipe."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def read(self, size: int | None = -1) -> str:
        return self.lines.pop(0) if self.lines else ""


def test_produce_reports_how_many_were_acknowledged_when_some_fail(
    fake: FakeBroker, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = unique("cli")
    fake.create_topic(topic, partitions=1)
    fake.inject("Produce", "INVALID_BATCH", topic=topic)  # the first batch is rejected
    monkeypatch.setattr("sys.stdin", LinePerRead([f"line{i}\n" for i in range(20)]))
    code, _, err = run(fake, capsys, "produce", topic, "--linger-ms", "0")
    stored = len(fake.records(topic, 0))
    assert code == 1
    assert 0 < stored < 20
    assert f"of 20 records failed; {stored} acknowledged" in err
    assert "INVALID_BATCH" in err


def test_produce_to_missing_topic_fails_cleanly(
    fake: FakeBroker, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a\n"))
    code, _, err = run(fake, capsys, "produce", "missing-topic")
    assert code == 1
    assert err.strip().startswith("replog: error: UNKNOWN_TOPIC")


def test_transfer_leader(fake: FakeBroker, capsys: pytest.CaptureFixture[str]) -> None:
    topic = unique("cli")
    fake.create_topic(topic, partitions=1, replicas=3)
    result = json_out(fake, capsys, "topic", "transfer-leader", topic, "--partition", "0",
                      "--to", "2")  # fmt: skip
    assert result == {"topic": topic, "partition": 0, "leader": 2}
    assert fake.leader(topic, 0) == 2
