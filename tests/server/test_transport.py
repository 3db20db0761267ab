"""server/transport.py over a fake Network (no sockets): batching, bounds, losses, chunking."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from raft.types import (
    ConfState,
    Entry,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from server.config import NodeConfig, ServerConfig, ServerSection
from server.peer_inbox import PeerInbox
from server.transport import PeerTransport
from tests.server.test_transport_fakes import FakeNetwork, FakeRuntime, RecordingLog

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]
BATCH_BOUND = 16 * MiB


class Harness:
    def __init__(self, net: FakeNetwork, **kwargs: Any) -> None:
        self.net = net
        self.log = RecordingLog()
        self.unreachable: list[tuple[int, set[int]]] = []
        self.snapshot_status: list[tuple[int, int, bool]] = []
        params: dict[str, Any] = {
            "node_id": 1,
            "cluster_id": "c1",
            "network": net,
            "resolve_address": lambda peer: f"host{peer}:9400" if peer != 9 else None,
            "on_unreachable": lambda peer, groups: self.unreachable.append((peer, set(groups))),
            "on_snapshot_status": lambda peer, group, ok: self.snapshot_status.append(
                (peer, group, ok)
            ),
            "outbox_max_messages": 10_000,
            "outbox_max_bytes": 128 * MiB,
            "max_batch_bytes": BATCH_BOUND,
            "snapshot_chunk_bytes": 4 * MiB,
            "backoff_ms": 1,
            "backoff_max_ms": 4,
            "max_message_bytes": 64 * MiB,
            "log": self.log,
        }
        params.update(kwargs)
        self.transport = PeerTransport(**params)

    def unreachable_groups(self, peer: int = 2) -> set[int]:
        return {g for p, groups in self.unreachable if p == peer for g in groups}


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


def app(group_id: int, index: int, data: bytes = b"x", to: int = 2) -> Message:
    return Message(
        MessageType.APP,
        to=to,
        from_=1,
        term=3,
        log_term=3,
        index=index,
        entries=(Entry(index + 1, 3, data=data),),
        commit=index,
    )


def heartbeat(to: int = 2) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, from_=1, term=3)


def test_one_batch_per_peer_carries_every_group() -> None:
    async def body() -> None:
        net = FakeNetwork()
        h = Harness(net)
        for group_id in (10, 11, 12):
            h.transport.enqueue(group_id, heartbeat(to=2))
            h.transport.enqueue(group_id, heartbeat(to=3))
        h.transport.mark_quiesced(2, 13)
        h.transport.flush()
        await net.until(lambda: len(net.batches(2)) == 1 and len(net.batches(3)) == 1)
        (batch,) = net.batches(2)
        assert [m.group_id for m in batch.messages] == [10, 11, 12]
        assert list(batch.quiesced_groups) == [13]
        assert (batch.cluster_id, batch.protocol_version, batch.from_node, batch.to_node) == (
            "c1",
            1,
            1,
            2,
        )
        assert [link.address for link in net.links] == ["host2:9400", "host3:9400"]
        await h.transport.close()

    run(body)


def test_unknown_peer_address_reports_the_group_unreachable() -> None:
    async def body() -> None:
        h = Harness(FakeNetwork())
        h.transport.enqueue(7, heartbeat(to=9))
        assert h.unreachable == [(9, {7})]
        await h.transport.close()

    run(body)


def test_catch_up_of_two_groups_goes_out_in_bounded_batches() -> None:
    """guards #12 defect 14: two groups each catching up a follower with 32 MiB in one turn
    used to be merged into one 64+ MiB RaftBatch, which gRPC refuses (RESOURCE_EXHAUSTED): every
    message in it was lost, heartbeats of other groups included, and nobody was told."""

    async def body() -> None:
        net = FakeNetwork()  # refuses any batch over 64 MiB, as gRPC does
        h = Harness(net)
        entry = b"r" * (MiB - 64)
        for index in range(32):
            h.transport.enqueue(1, app(1, index, entry))
            h.transport.enqueue(2, app(2, index, entry))
        h.transport.enqueue(3, heartbeat())
        h.transport.flush()
        await net.until(lambda: sum(len(b.messages) for b in net.batches()) == 65)
        batches = net.batches()
        assert len(batches) >= 4
        assert all(b.ByteSize() <= BATCH_BOUND for b in batches), [b.ByteSize() for b in batches]
        for group_id in (1, 2):
            indexes = [m.index for b in batches for m in b.messages if m.group_id == group_id]
            assert indexes == list(range(32))  # all of them, in order
        assert any(m.group_id == 3 for b in batches for m in b.messages)
        assert h.unreachable == [] and h.transport.dropped_messages == 0
        assert len(net.links) == 1  # the link never broke
        await h.transport.close()

    run(body)


def test_queued_batches_merge_within_the_bound() -> None:
    """guards #12 defect 14: batches that queued up behind a slow write were merged without
    any bound."""

    async def body() -> None:
        net = FakeNetwork()
        gate = net.gates[2] = asyncio.Event()
        h = Harness(net)
        h.transport.enqueue(1, heartbeat())
        h.transport.flush()
        await net.until(lambda: len(net.blocked) == 1)  # the first write is in progress
        entry = b"q" * (3 * MiB)
        for turn in range(12):  # 12 turns of 3 MiB each queue up meanwhile
            h.transport.enqueue(1, app(1, turn, entry))
            h.transport.flush()
        del net.gates[2]
        gate.set()
        await net.until(lambda: sum(len(b.messages) for b in net.batches()) == 13)
        batches = net.batches()
        assert all(b.ByteSize() <= BATCH_BOUND for b in batches)
        assert 1 + 3 <= len(batches) < 13  # merged, but never past the bound
        await h.transport.close()

    run(body)


def test_outbox_is_bounded_in_bytes_and_drops_are_reported() -> None:
    """guards #12 defect 14: the outbox was bounded only in messages, so a few huge appends to
    a slow peer could queue without limit."""

    async def body() -> None:
        net = FakeNetwork()
        net.gates[2] = asyncio.Event()  # the peer never takes anything
        h = Harness(net, outbox_max_bytes=20 * MiB)
        h.transport.enqueue(5, heartbeat())
        h.transport.flush()
        await net.until(lambda: len(net.blocked) == 1)
        entry = b"o" * (4 * MiB)
        for turn in range(10):
            h.transport.enqueue(100 + turn, app(100 + turn, turn, entry))
            h.transport.flush()
            assert h.transport.outbox_bytes(2) <= 20 * MiB
        assert h.transport.dropped_messages > 0
        dropped = h.unreachable_groups()
        assert dropped and dropped <= {100 + t for t in range(10)}
        assert 100 not in dropped  # the first ones fit
        h.transport.abandon()

    run(body)


def test_a_failed_send_reports_every_group_of_the_lost_batches() -> None:
    """guards #12 defect 14: a failed call lost every message of its batch without
    report_unreachable."""

    async def body() -> None:
        net = FakeNetwork()
        gate = net.gates[2] = asyncio.Event()
        h = Harness(net)
        h.transport.enqueue(1, heartbeat())
        h.transport.enqueue(2, heartbeat())
        h.transport.flush()
        await net.until(lambda: len(net.blocked) == 1)
        h.transport.enqueue(3, heartbeat())  # queued behind the write in progress
        h.transport.enqueue(4, app(4, 1))
        h.transport.flush()
        net.fail[2] = True
        del net.gates[2]
        gate.set()
        await net.until(lambda: h.unreachable_groups() == {1, 2, 3, 4})
        await net.until(lambda: len(net.links) == 2)  # it redials after the back-off
        assert net.links[0].closed
        net.fail[2] = False
        h.transport.enqueue(5, heartbeat())
        h.transport.flush()
        await net.until(lambda: len(net.batches(2)) == 1)
        assert [m.group_id for m in net.batches(2)[0].messages] == [5]
        assert h.log.names().count("peer_connected") == 1
        await h.transport.close()

    run(body)


def test_a_message_larger_than_the_link_limit_is_dropped_and_reported() -> None:
    async def body() -> None:
        net = FakeNetwork(limit=1 * MiB)
        h = Harness(
            net, max_message_bytes=1 * MiB, max_batch_bytes=MiB // 2, snapshot_chunk_bytes=1000
        )
        h.transport.enqueue(8, app(8, 1, b"z" * (2 * MiB)))
        h.transport.enqueue(9, heartbeat())
        h.transport.flush()
        await net.until(lambda: len(net.batches()) == 1)
        assert [m.group_id for m in net.batches()[0].messages] == [9]
        assert h.unreachable == [(2, {8})]
        assert "peer_message_too_large" in h.log.names()
        assert len(net.links) == 1  # the link was never broken by it
        await h.transport.close()

    run(body)


def test_a_message_whose_bound_passes_the_limit_but_whose_size_fits_is_sent() -> None:
    """The transport bounds messages with server.codec.message_size_bound (up to ~30 bytes per
    entry above the real size); near the link's limit it measures exactly before refusing."""

    async def body() -> None:
        limit = 1 * MiB
        net = FakeNetwork(limit=limit)
        h = Harness(
            net, max_message_bytes=limit, max_batch_bytes=MiB // 2, snapshot_chunk_bytes=1000
        )
        # Many small entries: the bound's slack adds up past the limit, the real size does not.
        entries = tuple(Entry(i + 1, 3, data=b"e" * 500) for i in range(2000))
        msg = Message(MessageType.APP, to=2, from_=1, term=3, log_term=3, index=0, entries=entries)
        from server.codec import message_size_bound, message_to_proto

        exact = message_to_proto(5, msg).ByteSize()
        assert exact + 200 < limit < message_size_bound(msg)
        h.transport.enqueue(5, msg)
        h.transport.flush()
        await net.until(lambda: len(net.batches()) == 1)
        (sent,) = net.batches()[0].messages
        assert (sent.group_id, len(sent.entries)) == (5, 2000)
        assert h.unreachable == []
        await h.transport.close()

    run(body)


def test_a_message_protobuf_cannot_carry_is_dropped_without_ending_the_link() -> None:
    """Messages are built into the batch in the link's task: one that fails to encode (here an
    entry index past uint64, a sender bug) is dropped and reported, half-built parts removed,
    and the batch's other messages and every later batch still go out."""

    async def body() -> None:
        net = FakeNetwork()
        h = Harness(net)
        bad = Message(
            MessageType.APP,
            to=2,
            from_=1,
            term=3,
            index=1,
            entries=(Entry(2, 3, data=b"a"), Entry(2**64, 3, data=b"b")),
        )
        h.transport.enqueue(7, heartbeat())
        h.transport.enqueue(8, bad)
        h.transport.enqueue(9, heartbeat())
        h.transport.flush()
        await net.until(lambda: len(net.batches()) == 1)
        assert [m.group_id for m in net.batches()[0].messages] == [7, 9]
        assert h.unreachable == [(2, {8})]
        assert "peer_message_unencodable" in h.log.names()
        h.transport.enqueue(10, heartbeat())
        h.transport.flush()
        await net.until(lambda: len(net.batches()) == 2)
        assert [m.group_id for m in net.batches()[1].messages] == [10]
        assert len(net.links) == 1
        await h.transport.close()

    run(body)


def test_a_message_that_cannot_be_encoded_stops_its_group_through_the_callback() -> None:
    """With ``on_message_failed`` wired (the broker wires it to ``Runtime.fail_group``) the group
    whose message cannot be encoded is stopped, not told "unreachable" (which would make Raft
    resend the same message forever); the message counts once as dropped."""

    async def body() -> None:
        net = FakeNetwork()
        failed: list[tuple[int, str]] = []
        h = Harness(
            net, on_message_failed=lambda gid, exc: failed.append((gid, type(exc).__name__))
        )
        bad = Message(MessageType.APP, to=2, from_=1, term=3, index=-1)
        h.transport.enqueue(8, bad)
        h.transport.enqueue(9, heartbeat())
        h.transport.flush()
        await net.until(lambda: len(net.batches()) == 1)
        assert [m.group_id for m in net.batches()[0].messages] == [9]
        assert failed == [(8, "ValueError")]
        assert h.unreachable == []
        assert h.transport.dropped_messages == 1
        await h.transport.close()

    run(body)


def test_keepalive_only_on_idle_links() -> None:
    async def body() -> None:
        net = FakeNetwork()
        h = Harness(net)
        h.transport.enqueue(1, heartbeat())
        h.transport.flush()
        h.transport.keepalive()  # the link sent something this tick: no keepalive
        await net.until(lambda: len(net.batches()) == 1)
        h.transport.keepalive()  # idle for a whole tick now
        await net.until(lambda: len(net.batches()) == 2)
        assert len(net.batches()[1].messages) == 0
        await h.transport.close()

    run(body)


def snapshot_message(size: int, group_id: int = 4) -> tuple[Message, bytes]:
    data = bytes(range(256)) * (size // 256) + b"!" * (size % 256)
    snap = Snapshot(SnapshotMetadata(500, 7, ConfState(frozenset({1, 2, 3}))), data)
    return Message(MessageType.SNAPSHOT, to=2, from_=1, term=7, snapshot=snap), data


def test_a_50_mib_snapshot_arrives_whole_in_chunks() -> None:
    """guards #12 defect 14: snapshots travelled as one message, and one past the gRPC limit
    could never be sent."""

    async def body() -> None:
        net = FakeNetwork()
        runtime = FakeRuntime()
        inbox = PeerInbox(2, "c1", runtime, RecordingLog(), clock=lambda: 1.0)
        net.deliver = inbox.handle_batch
        h = Harness(net)
        msg, data = snapshot_message(50 * MiB + 123)
        h.transport.enqueue(4, msg)
        h.transport.enqueue(6, heartbeat())
        h.transport.flush()
        await net.until(lambda: any(m.type == MessageType.SNAPSHOT for _g, m in runtime.stepped))
        assert all(b.ByteSize() <= BATCH_BOUND for b in net.batches())
        chunks = [m for b in net.batches() for m in b.messages if m.group_id == 4]
        assert len(chunks) == 13  # 50 MiB in 4 MiB chunks
        (got,) = [(g, m) for g, m in runtime.stepped if m.type == MessageType.SNAPSHOT]
        assert got[0] == 4
        assert got[1].snapshot == msg.snapshot and got[1].snapshot.data == data
        assert h.snapshot_status == [(2, 4, True)]
        assert inbox.reassembly_bytes == 0 and inbox.snapshots_reassembled == 1
        await h.transport.close()

    run(body)


def test_a_lost_snapshot_chunk_reports_the_snapshot_failed() -> None:
    async def body() -> None:
        net = FakeNetwork()
        gate = net.gates[2] = asyncio.Event()
        h = Harness(net)
        msg, _data = snapshot_message(20 * MiB)
        h.transport.enqueue(4, msg)
        h.transport.flush()
        await net.until(lambda: len(net.blocked) == 1)
        net.fail[2] = True
        del net.gates[2]
        gate.set()
        await net.until(lambda: h.snapshot_status != [])
        assert h.snapshot_status == [(2, 4, False)]  # once, though several batches were lost
        assert 4 in h.unreachable_groups()
        h.transport.abandon()

    run(body)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_batch_bytes": 65 * MiB}, "max_batch_bytes"),
        ({"snapshot_chunk_bytes": 16 * MiB}, "snapshot_chunk_bytes"),
    ],
)
def test_inconsistent_bounds_are_refused(kwargs: dict[str, int], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        Harness(FakeNetwork(), **kwargs)


def test_from_config_takes_every_limit_from_the_server_section() -> None:
    async def body() -> None:
        cfg = ServerConfig(
            node=NodeConfig(node_id=4, data_dir="/nonexistent", cluster_id="blue"),
            server=ServerSection(
                outbox_max_messages=77,
                outbox_max_bytes=40 * MiB,
                max_peer_batch_bytes=8 * MiB,
                snapshot_chunk_bytes=1 * MiB,
                reconnect_backoff_ms=3,
                reconnect_backoff_max_ms=9,
            ),
        )
        t = PeerTransport.from_config(
            cfg,
            network=FakeNetwork(),
            resolve_address=lambda peer: None,
            on_unreachable=lambda peer, groups: None,
            log=RecordingLog(),
        )
        assert (t.node_id, t.cluster_id) == (4, "blue")
        assert (t._outbox_max_messages, t._outbox_max_bytes) == (77, 40 * MiB)
        assert (t._max_batch_bytes, t._chunk_bytes) == (8 * MiB, 1 * MiB)
        assert (t._backoff_s, t._backoff_max_s) == (0.003, 0.009)
        assert t._max_message_bytes == 64 * MiB
        inbox = PeerInbox.from_config(cfg, FakeRuntime(), RecordingLog())
        assert (inbox.node_id, inbox.cluster_id) == (4, "blue")
        assert inbox._reassembly_max_bytes == 512 * MiB

    run(body)


def test_the_transport_imports_without_grpc() -> None:
    """The transport is seam-independent: all gRPC lives in server/grpc_links.py."""
    code = (
        "import sys\n"
        "sys.modules['grpc'] = None\n"  # any `import grpc` now raises ImportError
        "import server.transport\n"
        "assert 'server.grpc_links' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def test_a_peer_that_moved_gets_a_new_link_and_its_unsent_messages_are_reported() -> None:
    async def body() -> None:
        net = FakeNetwork()
        net.gates[2] = asyncio.Event()
        h = Harness(net)
        addresses = {2: "old:1"}
        h.transport._resolve = addresses.get
        h.transport.enqueue(1, heartbeat())
        h.transport.flush()
        await net.until(lambda: len(net.blocked) == 1)
        h.transport.enqueue(2, heartbeat())  # queued for the old address
        h.transport.flush()
        h.transport.enqueue(3, heartbeat())  # pending, not flushed yet
        addresses[2] = "new:1"
        del net.gates[2]
        h.transport.enqueue(4, heartbeat())  # resolves the new address
        h.transport.flush()
        assert h.unreachable_groups() == {2, 3}
        await net.until(lambda: len(net.batches(2)) == 1)
        # 1 was being written when the old link stopped: reported too.
        await net.until(lambda: h.unreachable_groups() == {1, 2, 3})
        assert [
            (link.address, [m.group_id for b in link.sent for m in b.messages])
            for link in net.links
        ] == [
            ("old:1", []),
            ("new:1", [4]),
        ]
        await h.transport.close()

    run(body)


def test_a_snapshot_for_an_unknown_peer_is_reported_failed() -> None:
    async def body() -> None:
        h = Harness(FakeNetwork())
        msg, _data = snapshot_message(10)
        h.transport.enqueue(
            4, Message(MessageType.SNAPSHOT, to=9, from_=1, term=7, snapshot=msg.snapshot)
        )
        assert h.snapshot_status == [(9, 4, False)] and h.unreachable == [(9, {4})]
        await h.transport.close()

    run(body)
