"""The client side of the ``replog`` command: cluster, topic, produce and consume.

Contract:
- ``main(argv) -> int`` is the whole entry point (server/cli.py dispatches every subcommand
  except ``server`` and ``dev`` here). It never raises: a ``ReplogError`` prints one line to
  stderr (``replog: error: CODE: message (hint: ...)``) and returns 1; a usage error returns 2.
- ``--bootstrap HOST:PORT[,...]`` (or env REPLOG_BOOTSTRAP; default 127.0.0.1:9400) is accepted
  before or after the subcommand. Humans get rich tables; ``--json`` prints machine JSON whose
  shapes are part of the interface (tests and scripts rely on them, see docs/).
- ``produce`` reads stdin in chunks on a worker thread (so the producer's sender keeps running
  while stdin waits) and sends one record per line; it exits 1, saying how many records were
  acknowledged, if any record failed.
- ``consume`` starts at the end of each partition (like Kafka) unless --from-beginning or
  --offset; ``--timeout S`` ends after S seconds without a new record.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from client.admin import AdminClient
from client.config import AdminConfig, ConsumerConfig, ProducerConfig
from client.connection import DEFAULT_BOOTSTRAP, parse_bootstrap
from client.consumer import Consumer
from client.errors import ReplogError, UnknownPartition
from client.producer import Producer, RecordMetadata

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
_STDIN_CHUNK_BYTES = 64 * 1024
# A person at a terminal should hear about an unreachable cluster in seconds, not minutes.
CLI_ADMIN_CONFIG = AdminConfig(request_timeout_ms=10_000, operation_timeout_ms=10_000)

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


# ---------------------------------------------------------------------- output helpers


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, sort_keys=False) + "\n")
    sys.stdout.flush()


def _console() -> Any:
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("-" if v is None else str(v) for v in row))
    _console().print(table)


def _text_or_base64(value: bytes | None) -> tuple[str | None, bool]:
    if value is None:
        return None, False
    try:
        return value.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii"), True


def _bootstrap(args: argparse.Namespace) -> str:
    return getattr(args, "bootstrap", None) or DEFAULT_BOOTSTRAP


def _wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


# ---------------------------------------------------------------------- cluster / topic


async def cmd_cluster_status(args: argparse.Namespace) -> int:
    async with AdminClient(_bootstrap(args), CLI_ADMIN_CONFIG) as admin:
        cluster = await admin.describe_cluster()
    if _wants_json(args):
        _print_json(
            {
                "brokers": [
                    {"id": b.id, "address": b.address, "dc": b.dc, "rack": b.rack, "alive": b.alive}
                    for b in cluster.brokers
                ],
                "metadata": {
                    "leader": cluster.metadata_leader,
                    "term": cluster.metadata_term,
                    "voters": list(cluster.metadata_voters),
                },
                "cluster_id": cluster.cluster_id,
            }
        )
        return EXIT_OK
    _table(
        f"cluster {cluster.cluster_id}",
        ["id", "address", "dc", "rack", "alive", "role"],
        [
            [
                b.id,
                b.address,
                b.dc,
                b.rack,
                "yes" if b.alive else "NO",
                "metadata leader"
                if b.id == cluster.metadata_leader
                else ("voter" if b.id in cluster.metadata_voters else ""),
            ]
            for b in cluster.brokers
        ],
    )
    sys.stdout.write(
        f"metadata leader {cluster.metadata_leader or 'unknown'}, term {cluster.metadata_term}, "
        f"voters {list(cluster.metadata_voters)}\n"
    )
    return EXIT_OK


async def cmd_topic_create(args: argparse.Namespace) -> int:
    async with AdminClient(_bootstrap(args), CLI_ADMIN_CONFIG) as admin:
        info = await admin.create_topic(args.name, args.partitions, args.replicas, args.config)
    if _wants_json(args):
        _print_json(
            {
                "name": info.name,
                "partitions": info.partitions,
                "replication_factor": info.replication_factor,
            }
        )
    else:
        sys.stdout.write(
            f"created topic {info.name}: {info.partitions} partitions, "
            f"replication factor {info.replication_factor}\n"
        )
    return EXIT_OK


async def cmd_topic_list(args: argparse.Namespace) -> int:
    async with AdminClient(_bootstrap(args), CLI_ADMIN_CONFIG) as admin:
        topics = await admin.list_topics()
    if _wants_json(args):
        _print_json(
            [
                {
                    "name": t.name,
                    "partitions": t.partitions,
                    "replication_factor": t.replication_factor,
                }
                for t in topics
            ]
        )
        return EXIT_OK
    _table(
        "topics",
        ["name", "partitions", "replication factor"],
        [[t.name, t.partitions, t.replication_factor] for t in topics],
    )
    return EXIT_OK


async def cmd_topic_delete(args: argparse.Namespace) -> int:
    async with AdminClient(_bootstrap(args), CLI_ADMIN_CONFIG) as admin:
        await admin.delete_topic(args.name)
    if _wants_json(args):
        _print_json({"deleted": args.name})
    else:
        sys.stdout.write(f"deleted topic {args.name}\n")
    return EXIT_OK


async def cmd_partition_verify(args: argparse.Namespace) -> int:
    """Exit 0: every replica pair equal over what all hold; 1: a difference, or a replica
    that could not be asked (then equality is unknown)."""
    async with AdminClient(_bootstrap(args), CLI_ADMIN_CONFIG) as admin:
        results = await admin.verify_partitions(args.topic, args.partition)
    ok = all(r.equal is True for r in results)
    if _wants_json(args):
        _print_json(
            {"topic": args.topic, "equal": ok, "partitions": [r.to_json() for r in results]}
        )
        return EXIT_OK if ok else EXIT_ERROR
    rows = []
    for r in results:
        verdict = {True: "equal", False: "DIFFERENT", None: "unknown"}[r.equal]
        where = f"at offset {r.first_difference}" if r.first_difference is not None else ""
        rows.append(
            [
                r.partition,
                verdict + (f" {where}" if where else ""),
                f"[{r.compared_from}, {r.compared_to})",
                r.batches,
                r.records,
                " ".join(
                    f"{v.node_id}:{v.error or f'{v.role.lower()} hw={v.high_watermark}'}"
                    for v in r.replicas
                ),
            ]
        )
    _table(
        f"topic {args.topic}: replicas compared at equal offsets",
        ["partition", "result", "offsets compared", "batches", "records", "replicas"],
        rows,
    )
    for r in results:
        for node, held in sorted(r.difference.items()):
            sys.stdout.write(f"  partition {r.partition} node {node}: {held}\n")
    return EXIT_OK if ok else EXIT_ERROR


async def cmd_topic_describe(args: argparse.Namespace) -> int:
    async with AdminClient(_bootstrap(args), CLI_ADMIN_CONFIG) as admin:
        topic = await admin.describe_topic(args.name)
    if _wants_json(args):
        _print_json(
            {
                "name": topic.name,
                "partitions": [
                    {
                        "partition": p.partition,
                        "leader": p.leader,
                        "replicas": list(p.replicas),
                        "log_start_offset": p.log_start_offset,
                        "high_watermark": p.high_watermark,
                    }
                    for p in topic.partitions
                ],
            }
        )
        return EXIT_OK
    config = ", ".join(f"{k}={v}" for k, v in sorted(topic.config.items())) or "defaults"
    _table(
        f"topic {topic.name} (replication factor {topic.replication_factor}; config {config})",
        ["partition", "leader", "replicas", "log start", "high watermark"],
        [
            [
                p.partition,
                p.leader or "none",
                ",".join(str(r) for r in p.replicas),
                p.log_start_offset,
                p.high_watermark,
            ]
            for p in topic.partitions
        ],
    )
    return EXIT_OK


async def cmd_topic_transfer_leader(args: argparse.Namespace) -> int:
    async with AdminClient(_bootstrap(args), CLI_ADMIN_CONFIG) as admin:
        leader = await admin.transfer_leadership(args.name, args.partition, args.to)
    if _wants_json(args):
        _print_json({"topic": args.name, "partition": args.partition, "leader": leader})
    else:
        sys.stdout.write(f"leader of {args.name}/{args.partition} is now node {leader}\n")
    return EXIT_OK


# ---------------------------------------------------------------------- produce


def _read_chunk() -> bytes:
    """Up to 64 KiB of stdin, returning as soon as some bytes are available (b"" at EOF)."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream (tests substitute io.StringIO)
        text: str = sys.stdin.read(_STDIN_CHUNK_BYTES)
        return text.encode("utf-8")
    read1 = getattr(stream, "read1", None)
    data: bytes = (
        read1(_STDIN_CHUNK_BYTES) if read1 is not None else stream.read(_STDIN_CHUNK_BYTES)
    )
    return data


async def cmd_produce(args: argparse.Namespace) -> int:
    config = ProducerConfig(
        acks=args.acks,
        compression=args.compression,
        linger_ms=args.linger_ms,
        delivery_timeout_ms=args.delivery_timeout_ms,
    )
    separator = args.key_separator.encode("utf-8") if args.key_separator else None
    loop = asyncio.get_running_loop()
    tally = {"ok": 0, "failed": 0}
    first_error: list[BaseException] = []

    def on_done(future: asyncio.Future[RecordMetadata]) -> None:
        if future.cancelled():
            tally["failed"] += 1
        elif future.exception() is not None:
            tally["failed"] += 1
            if not first_error:
                first_error.append(future.exception())  # type: ignore[arg-type]
        else:
            tally["ok"] += 1

    sent = 0
    async with Producer(_bootstrap(args), config) as producer:

        async def send_line(line: bytes) -> None:
            if line.endswith(b"\r"):
                line = line[:-1]
            key: bytes | None = None
            if separator is not None:
                head, found, tail = line.partition(separator)
                if found:
                    key, line = head, tail
            future = await producer.send(args.topic, line, key=key, partition=args.partition)
            future.add_done_callback(on_done)

        rest = b""
        while True:
            chunk = await loop.run_in_executor(None, _read_chunk)
            if not chunk:
                break
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                await send_line(line)
                sent += 1
        if rest:
            await send_line(rest)
            sent += 1
        await producer.flush()
    await asyncio.sleep(0)  # let the last done-callbacks run
    if tally["failed"]:
        error = first_error[0] if first_error else None
        detail = error.describe() if isinstance(error, ReplogError) else repr(error)
        sys.stderr.write(
            f"replog: error: {tally['failed']} of {sent} records failed; "
            f"{tally['ok']} acknowledged; first error: {detail}\n"
        )
        return EXIT_ERROR
    sys.stderr.write(f"{tally['ok']} records acknowledged\n")
    return EXIT_OK


# ---------------------------------------------------------------------- consume


async def cmd_consume(args: argparse.Namespace) -> int:
    reset = "error" if args.offset is not None else "earliest"
    # An --offset above the end is retried for 2 s (long enough for a new leader's high
    # watermark to catch up after a failover), then reported; below the start at once.
    config = ConsumerConfig(
        auto_offset_reset=reset, request_timeout_ms=10_000, out_of_range_retry_ms=2_000
    )
    consumer = Consumer(_bootstrap(args), config)
    as_json = _wants_json(args)
    printed = 0
    try:
        count = await consumer.partitions_for(args.topic)
        if args.partition is not None and args.partition >= count:
            raise UnknownPartition(
                f"topic {args.topic!r} has {count} partitions; "
                f"partition {args.partition} does not exist"
            )
        partitions = [args.partition] if args.partition is not None else list(range(count))
        consumer.assign([(args.topic, p) for p in partitions])
        if args.from_beginning:
            consumer.seek_to_beginning()
        elif args.offset is not None:
            for p in partitions:
                consumer.seek(args.topic, p, args.offset)
        else:
            consumer.seek_to_end()
        wait_s = args.timeout if args.timeout is not None else 3600.0
        while args.max_records is None or printed < args.max_records:
            records = await consumer.poll(wait_s)
            if not records:
                if args.timeout is not None:
                    break
                continue
            out: list[str] = []
            for r in records:
                if args.max_records is not None and printed >= args.max_records:
                    break
                printed += 1
                if as_json:
                    key, key_b64 = _text_or_base64(r.key)
                    value, value_b64 = _text_or_base64(r.value)
                    line: dict[str, Any] = {
                        "partition": r.partition,
                        "offset": r.offset,
                        "key": key,
                        "value": value,
                        "timestamp": r.timestamp_ms,
                    }
                    if key_b64:
                        line["key_base64"] = True
                    if value_b64:
                        line["value_base64"] = True
                    out.append(json.dumps(line))
                else:
                    value_text = r.value.decode("utf-8", "replace") if r.value is not None else ""
                    out.append(value_text)
            sys.stdout.write("\n".join(out) + "\n")
            sys.stdout.flush()
    finally:
        await consumer.close()
    return EXIT_OK


# ---------------------------------------------------------------------- parser


def _config_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    # --bootstrap/--json work before or after the subcommand: SUPPRESS keeps a later default
    # from overwriting an earlier value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--bootstrap",
        default=argparse.SUPPRESS,
        help="HOST:PORT[,HOST:PORT...] of any brokers (env REPLOG_BOOTSTRAP; "
        f"default {DEFAULT_BOOTSTRAP})",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable JSON"
    )

    parser = argparse.ArgumentParser(
        prog="replog", description="replog client commands", parents=[common]
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    cluster = commands.add_parser("cluster", help="cluster state")
    cluster_cmds = cluster.add_subparsers(dest="cluster_command", metavar="COMMAND")
    status = cluster_cmds.add_parser("status", parents=[common], help="brokers and metadata group")
    status.set_defaults(handler=cmd_cluster_status)

    topic = commands.add_parser("topic", help="create, list, describe, delete topics")
    topic_cmds = topic.add_subparsers(dest="topic_command", metavar="COMMAND")
    create = topic_cmds.add_parser("create", parents=[common], help="create a topic")
    create.add_argument("name")
    create.add_argument("--partitions", type=_positive_int, required=True)
    create.add_argument("--replicas", type=_positive_int, required=True)
    create.add_argument(
        "--config", type=_config_pair, action="append", default=[], metavar="KEY=VALUE"
    )
    create.set_defaults(handler=cmd_topic_create)
    lst = topic_cmds.add_parser("list", parents=[common], help="list topics")
    lst.set_defaults(handler=cmd_topic_list)
    delete = topic_cmds.add_parser("delete", parents=[common], help="delete a topic")
    delete.add_argument("name")
    delete.set_defaults(handler=cmd_topic_delete)
    describe = topic_cmds.add_parser(
        "describe", parents=[common], help="partitions, leaders, replicas, offsets"
    )
    describe.add_argument("name")
    describe.set_defaults(handler=cmd_topic_describe)
    transfer = topic_cmds.add_parser(
        "transfer-leader", parents=[common], help="move a partition's leadership"
    )
    transfer.add_argument("name")
    transfer.add_argument("--partition", type=_non_negative_int, required=True)
    transfer.add_argument(
        "--to", type=_non_negative_int, default=0, help="node id (default: any caught-up voter)"
    )
    transfer.set_defaults(handler=cmd_topic_transfer_leader)

    partition = commands.add_parser("partition", help="check a partition's replicas")
    partition_cmds = partition.add_subparsers(dest="partition_command", metavar="COMMAND")
    verify = partition_cmds.add_parser(
        "verify",
        parents=[common],
        help="compare every replica's committed data at equal offsets (first difference)",
    )
    verify.add_argument("topic")
    verify.add_argument("partition", nargs="?", type=_non_negative_int, default=None)
    verify.set_defaults(handler=cmd_partition_verify)

    produce = commands.add_parser(
        "produce", parents=[common], help="send one record per stdin line"
    )
    produce.add_argument("topic")
    produce.add_argument("--partition", type=_non_negative_int, default=None)
    produce.add_argument(
        "--key-separator", default=None, metavar="SEP", help="the key is what precedes SEP"
    )
    produce.add_argument("--acks", choices=["all", "leader"], default="all")
    produce.add_argument("--compression", choices=["none", "gzip", "lz4", "zstd"], default="none")
    produce.add_argument("--linger-ms", type=float, default=5.0)
    produce.add_argument("--delivery-timeout-ms", type=float, default=120_000.0)
    produce.set_defaults(handler=cmd_produce)

    consume = commands.add_parser("consume", parents=[common], help="print a topic's records")
    consume.add_argument("topic")
    consume.add_argument("--partition", type=_non_negative_int, default=None)
    start = consume.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true")
    start.add_argument("--offset", type=_non_negative_int, default=None)
    consume.add_argument("--max-records", type=_positive_int, default=None)
    consume.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="stop after S s without a record"
    )
    consume.set_defaults(handler=cmd_consume)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write("replog: error: a command is required (see replog --help)\n")
        return EXIT_USAGE
    if getattr(args, "config", None) is not None and isinstance(args.config, list):
        args.config = dict(args.config)
    args.bootstrap = getattr(args, "bootstrap", None) or os.environ.get("REPLOG_BOOTSTRAP")
    try:
        parse_bootstrap(args.bootstrap)
    except ReplogError as error:
        sys.stderr.write(f"replog: error: {error.describe()}\n")
        return EXIT_USAGE
    try:
        return asyncio.run(handler(args))
    except ReplogError as error:
        sys.stderr.write(f"replog: error: {error.describe()}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("replog: interrupted\n")
        return 130
