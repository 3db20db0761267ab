"""Kafka RecordBatch v2 (magic 2): encode, decode, header, CRC, re-stamp.

Contract: a shared leaf. Both the client (producer, consumer) and the broker (partition/)
import this module; it imports nothing of ours and does no I/O. The broker's hot path calls
``wire.validate.validate`` (the leader's full check of a produced batch, records included;
wire/validate.py) and :func:`with_base_offset`. Compressed sections are decompressed within a
bound (:data:`MAX_DECOMPRESSED_BYTES`, and :data:`DECOMPRESSION_RATIO_LIMIT` times the batch
limit on the broker), so "89 bytes claiming a million records" is refused instead of taking a
million offsets; consumers decode with the same bound.

Layout (Kafka protocol guide, "Record Batch"; big-endian, 61-byte header)::

    baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 (=2) | crc u32 |
    attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
    producerId i64 | producerEpoch i16 | baseSequence i32 | recordCount i32 | records...

``batchLength`` counts the bytes after itself (so a batch is ``12 + batchLength`` bytes).
The CRC32C covers ``attributes`` to the end: baseOffset and partitionLeaderEpoch sit before it
so the broker can stamp them without recomputing it. Attributes: bits 0-2 compression (0 none,
1 gzip, 2 snappy, 3 lz4, 4 zstd), bit 3 timestamp type, bit 4 transactional, bit 5 control.
Compression covers the records section only.

Each record: varint length, then attributes i8, varlong timestampDelta, varint offsetDelta,
varint keyLength (-1 = null), key, varint valueLength (-1 = null), value, varint headerCount,
headers (varint keyLength, utf-8 key, varint valueLength (-1 = null), value). Varints are
zigzag-encoded (protobuf style).

Speed: the producer encodes tens of thousands of records a second in Python, so the encoder
uses precompiled structs, a table of small varints and a single ``b"".join`` per record.
Snappy is not supported (no dependency for it): it raises :class:`UnsupportedCompression`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import crc32c as _crc32c
import lz4.frame as _lz4frame
import zstandard as _zstd

__all__ = [
    "BATCH_OVERHEAD",
    "COMPRESSION_CODES",
    "DECOMPRESSION_RATIO_LIMIT",
    "MAX_DECOMPRESSED_BYTES",
    "BatchHeader",
    "InvalidBatch",
    "InvalidTimestamp",
    "Record",
    "RecordBatchBuilder",
    "UnsupportedCompression",
    "decode",
    "encode",
    "estimated_record_size",
    "iter_batches",
    "read_header",
    "verify_crc",
    "with_base_offset",
]

BATCH_OVERHEAD = 61
"""Bytes of the v2 batch header, before the first record."""

MAGIC = 2
_HEADER = struct.Struct(">qiibIhiqqqhii")
_BASE_OFFSET = struct.Struct(">q")
_CRC = struct.Struct(">I")
_LENGTH_FIELD_END = 12  # baseOffset + batchLength: batch size = 12 + batchLength
_CRC_OFFSET = 17
_CRC_START = 21  # attributes .. end
_MIN_RECORD_BYTES = 7  # length, attrs, ts, offset, key len, value len, header count: 1 each

MAX_DECOMPRESSED_BYTES = 64 << 20
"""Hard cap on a batch's decompressed records section, for the broker and for consumers."""
DECOMPRESSION_RATIO_LIMIT = 32
"""On the broker, a records section may decompress to at most this many times the batch
size limit (a producer sizes batches by their uncompressed bytes, so real batches stay far
below; a compression bomb does not)."""
_UNCOMPRESSED_BYTES_FLOOR = 1 << 20

COMPRESSION_CODES: dict[str, int] = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
_CODEC_NAMES = ("none", "gzip", "snappy", "lz4", "zstd", "unknown-5", "unknown-6", "unknown-7")
_ATTR_COMPRESSION_MASK = 0x07
_ATTR_LOG_APPEND_TIME = 0x08
_ATTR_TRANSACTIONAL = 0x10
_ATTR_CONTROL = 0x20

assert _HEADER.size == BATCH_OVERHEAD


class InvalidBatch(ValueError):
    """A record batch is malformed. ``what`` says what is wrong, ``hint`` what to do;
    ``expected``/``actual`` carry the numbers when there are any (CRC, length, magic)."""

    def __init__(
        self, what: str, hint: str, *, expected: object = None, actual: object = None
    ) -> None:
        self.what = what
        self.hint = hint
        self.expected = expected
        self.actual = actual
        detail = "" if expected is None else f" (expected {expected}, got {actual})"
        super().__init__(f"invalid record batch: {what}{detail}; {hint}")


class InvalidTimestamp(InvalidBatch):
    """A record's timestamp is too far from the leader's clock (Kafka's
    ``message.timestamp.before.max.ms`` / ``message.timestamp.after.max.ms``)."""

    def __init__(self, timestamp_ms: int, now_ms: int, limit_ms: int, *, future: bool) -> None:
        self.timestamp_ms = timestamp_ms
        self.now_ms = now_ms
        self.limit_ms = limit_ms
        self.future = future
        way = "ahead of" if future else "behind"
        distance = timestamp_ms - now_ms if future else now_ms - timestamp_ms
        super().__init__(
            f"record timestamp {timestamp_ms} is {distance} ms {way} the broker's clock "
            f"({now_ms}); the limit is {limit_ms} ms",
            "fix the producer's clock or the timestamps it sets, or raise the topic's "
            + ("message.timestamp.after.max.ms" if future else "message.timestamp.before.max.ms"),
        )


class UnsupportedCompression(InvalidBatch):
    """The batch uses a compression codec replog cannot read (snappy, or an unknown id)."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        super().__init__(
            f"compression {codec!r} is not supported",
            "use compression none, gzip, lz4 or zstd",
        )


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes | None], ...] = ()
    offset: int = -1


@dataclass(frozen=True, slots=True)
class BatchHeader:
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def compression(self) -> str:
        return _CODEC_NAMES[self.attributes & _ATTR_COMPRESSION_MASK]

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _ATTR_CONTROL)

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def size(self) -> int:
        """Bytes of the whole batch, header included."""
        return _LENGTH_FIELD_END + self.batch_length


# --- varints -----------------------------------------------------------------------------

_SMALL_VARINT_LIMIT = 1 << 14  # zigzag values below this are 1-2 bytes and come from a table


def _uvarint_slow(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


_UVARINT_TABLE: tuple[bytes, ...] = tuple(_uvarint_slow(v) for v in range(_SMALL_VARINT_LIMIT))


def _varint(n: int) -> bytes:
    """Zigzag varint of a signed int (int32 and int64 share the encoding)."""
    v = n << 1 if n >= 0 else ((-n) << 1) - 1
    if v < _SMALL_VARINT_LIMIT:
        return _UVARINT_TABLE[v]
    return _uvarint_slow(v)


_NULL_LEN = _varint(-1)
_ZERO = _varint(0)


def _read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode the zigzag varint at ``pos``; returns (value, next position)."""
    shift = 0
    v = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise InvalidBatch("a record is truncated inside a varint", "the batch is damaged")
        b = buf[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise InvalidBatch("a varint is longer than 10 bytes", "the batch is damaged")
    return (v >> 1) ^ -(v & 1), pos


# --- compression -------------------------------------------------------------------------


def _compress(codec: int, data: bytes) -> bytes:
    if codec == 0:
        return data
    if codec == 1:
        c = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31 = gzip container, as Kafka writes
        return c.compress(data) + c.flush()
    if codec == 3:
        return bytes(_lz4frame.compress(data))
    if codec == 4:
        return bytes(_zstd.ZstdCompressor(level=3).compress(data))
    raise UnsupportedCompression(_CODEC_NAMES[codec])


def _too_big(codec: int, limit: int) -> InvalidBatch:
    return InvalidBatch(
        f"the {_CODEC_NAMES[codec]} records section decompresses to more than {limit} bytes",
        "the batch is damaged or a compression bomb; producers send smaller batches",
        expected=f"<= {limit} bytes",
        actual="more",
    )


def _decompress(codec: int, data: bytes | memoryview, limit: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """The decompressed records section, never more than ``limit`` bytes of output."""
    try:
        if codec == 1:
            z = zlib.decompressobj(47)  # 47 = auto-detect gzip/zlib header
            out = z.decompress(data, limit + 1)
            if len(out) > limit:
                raise _too_big(codec, limit)
            if not z.eof:
                raise zlib.error("incomplete or truncated stream")
            return out
        if codec == 3:
            lz = _lz4frame.LZ4FrameDecompressor()
            out = lz.decompress(bytes(data), max_length=limit + 1)
            if len(out) > limit:
                raise _too_big(codec, limit)
            if not lz.eof:
                raise RuntimeError("incomplete or truncated frame")
            return bytes(out)
        if codec == 4:
            # Kafka writers may omit the frame's content size, so stream-decompress.
            parts: list[bytes] = []
            got = 0
            with _zstd.ZstdDecompressor().stream_reader(bytes(data)) as reader:
                while got <= limit:
                    chunk = reader.read(min(limit + 1 - got, 1 << 20))
                    if not chunk:
                        break
                    parts.append(chunk)
                    got += len(chunk)
            if got > limit:
                raise _too_big(codec, limit)
            return b"".join(parts)
    except (zlib.error, RuntimeError, _zstd.ZstdError) as e:
        raise InvalidBatch(
            f"the {_CODEC_NAMES[codec]} records section does not decompress ({e})",
            "the batch is damaged; the producer must re-send it",
        ) from e
    raise UnsupportedCompression(_CODEC_NAMES[codec])


def _codec_id(compression: str) -> int:
    try:
        codec = COMPRESSION_CODES[compression]
    except KeyError:
        raise UnsupportedCompression(compression) from None
    if codec == 2:
        raise UnsupportedCompression("snappy")
    return codec


# --- header / validation -----------------------------------------------------------------


def read_header(buf: bytes | bytearray | memoryview) -> BatchHeader:
    """Parse the 61-byte header. Checks only what the struct needs: enough bytes, magic 2,
    a batchLength that can hold a header. Does not check the CRC or the records."""
    if len(buf) < BATCH_OVERHEAD:
        raise InvalidBatch(
            "shorter than a batch header",
            "send whole RecordBatch v2 batches",
            expected=f">= {BATCH_OVERHEAD} bytes",
            actual=len(buf),
        )
    h = BatchHeader(*_HEADER.unpack_from(buf, 0))
    if h.magic != MAGIC:
        raise InvalidBatch(
            "unsupported magic byte",
            "only RecordBatch v2 (Kafka >= 0.11 clients) is accepted",
            expected=MAGIC,
            actual=h.magic,
        )
    if h.batch_length < BATCH_OVERHEAD - _LENGTH_FIELD_END:
        raise InvalidBatch(
            "batchLength is shorter than the header it must cover",
            "the batch is damaged",
            expected=f">= {BATCH_OVERHEAD - _LENGTH_FIELD_END}",
            actual=h.batch_length,
        )
    return h


def verify_crc(buf: bytes | bytearray | memoryview, header: BatchHeader) -> None:
    """Check the CRC32C over attributes..end of the batch described by ``header``."""
    end = header.size
    if len(buf) < end:
        raise InvalidBatch(
            "truncated batch",
            "the batch is damaged in transit; re-send it",
            expected=f"{end} bytes",
            actual=len(buf),
        )
    actual = _crc32c.crc32c(memoryview(buf)[_CRC_START:end])
    if actual != header.crc:
        raise InvalidBatch(
            "CRC mismatch",
            "the batch was damaged in transit or on disk; re-send it",
            expected=header.crc,
            actual=actual,
        )


def with_base_offset(buf: bytes | bytearray | memoryview, base_offset: int) -> bytes:
    """The same batch with its 8-byte baseOffset replaced (the CRC does not cover it)."""
    return b"".join((_BASE_OFFSET.pack(base_offset), memoryview(buf)[8:]))


def iter_batches(buf: bytes | bytearray | memoryview) -> Iterator[memoryview]:
    """Split a concatenation of whole batches (a fetch response) into one view per batch.
    Raises InvalidBatch if the last one is cut short. Does not check CRCs."""
    view = memoryview(buf)
    pos = 0
    end = len(view)
    while pos < end:
        if end - pos < BATCH_OVERHEAD:
            raise InvalidBatch(
                "truncated batch at the end of the buffer",
                "the response is damaged",
                expected=f">= {BATCH_OVERHEAD} bytes",
                actual=end - pos,
            )
        h = read_header(view[pos : pos + BATCH_OVERHEAD])
        size = h.size
        if pos + size > end:
            raise InvalidBatch(
                "truncated batch at the end of the buffer",
                "the response is damaged",
                expected=f"{size} bytes",
                actual=end - pos,
            )
        yield view[pos : pos + size]
        pos += size


# --- encode ------------------------------------------------------------------------------


def estimated_record_size(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]] = ()
) -> int:
    """An upper bound on the encoded (uncompressed) size of one record, for batch sizing."""
    size = 21 + (len(key) if key is not None else 0) + (len(value) if value is not None else 0)
    for hk, hv in headers:
        size += 10 + len(hk) * 4 + (len(hv) if hv is not None else 0)
    return size


class RecordBatchBuilder:
    """Builds one batch incrementally: ``append`` encodes each record at once (so the
    producer knows ``size_bytes``), ``build`` joins, compresses and writes the header."""

    __slots__ = (
        "_base_sequence",
        "_codec",
        "_count",
        "_first_ts",
        "_is_transactional",
        "_max_ts",
        "_parts",
        "_producer_epoch",
        "_producer_id",
        "_size",
    )

    def __init__(
        self,
        compression: str = "none",
        *,
        producer_id: int = -1,
        producer_epoch: int = -1,
        base_sequence: int = -1,
        is_transactional: bool = False,
    ) -> None:
        self._codec = _codec_id(compression)
        self._producer_id = producer_id
        self._producer_epoch = producer_epoch
        self._base_sequence = base_sequence
        self._is_transactional = is_transactional
        self._parts: list[bytes] = []
        self._count = 0
        self._size = BATCH_OVERHEAD
        self._first_ts = 0
        self._max_ts = 0

    @property
    def record_count(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        """Bytes of the batch built now, before compression (an upper bound after it)."""
        return self._size

    def append(
        self,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int,
        headers: Sequence[tuple[str, bytes | None]] = (),
    ) -> None:
        count = self._count
        if count == 0:
            self._first_ts = self._max_ts = timestamp_ms
        elif timestamp_ms > self._max_ts:
            self._max_ts = timestamp_ms
        parts = [b"\x00", _varint(timestamp_ms - self._first_ts), _varint(count)]
        if key is None:
            parts.append(_NULL_LEN)
        else:
            parts.append(_varint(len(key)))
            parts.append(key)
        if value is None:
            parts.append(_NULL_LEN)
        else:
            parts.append(_varint(len(value)))
            parts.append(value)
        if headers:
            parts.append(_varint(len(headers)))
            for hk, hv in headers:
                kb = hk.encode()
                parts.append(_varint(len(kb)))
                parts.append(kb)
                if hv is None:
                    parts.append(_NULL_LEN)
                else:
                    parts.append(_varint(len(hv)))
                    parts.append(hv)
        else:
            parts.append(_ZERO)
        body = b"".join(parts)
        length = _varint(len(body))
        self._parts.append(length)
        self._parts.append(body)
        self._size += len(length) + len(body)
        self._count = count + 1

    def build(
        self,
        *,
        base_offset: int = 0,
        partition_leader_epoch: int = 0,
        producer_id: int | None = None,
        producer_epoch: int | None = None,
        base_sequence: int | None = None,
    ) -> bytes:
        """The encoded batch. Producer fields given here override the constructor's (the
        producer assigns sequences when it drains a batch, not when it opens it)."""
        if self._count == 0:
            raise InvalidBatch("a batch needs at least one record", "append a record first")
        records = _compress(self._codec, b"".join(self._parts))
        attributes = self._codec | (_ATTR_TRANSACTIONAL if self._is_transactional else 0)
        out = bytearray(BATCH_OVERHEAD + len(records))
        _HEADER.pack_into(
            out,
            0,
            base_offset,
            len(out) - _LENGTH_FIELD_END,
            partition_leader_epoch,
            MAGIC,
            0,
            attributes,
            self._count - 1,
            self._first_ts,
            self._max_ts,
            self._producer_id if producer_id is None else producer_id,
            self._producer_epoch if producer_epoch is None else producer_epoch,
            self._base_sequence if base_sequence is None else base_sequence,
            self._count,
        )
        out[BATCH_OVERHEAD:] = records
        _CRC.pack_into(out, _CRC_OFFSET, _crc32c.crc32c(memoryview(out)[_CRC_START:]))
        return bytes(out)


def encode(
    records: Sequence[Record],
    *,
    base_offset: int = 0,
    compression: str = "none",
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    is_transactional: bool = False,
    partition_leader_epoch: int = 0,
) -> bytes:
    """Encode ``records`` as one batch; offset deltas are their positions (``Record.offset``
    is ignored), the base timestamp is the first record's."""
    builder = RecordBatchBuilder(
        compression,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        is_transactional=is_transactional,
    )
    for r in records:
        builder.append(r.key, r.value, r.timestamp_ms, r.headers)
    return builder.build(base_offset=base_offset, partition_leader_epoch=partition_leader_epoch)


# --- decode ------------------------------------------------------------------------------


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    n, pos = _read_varint(buf, pos)
    if n < 0:
        if n != -1:
            raise InvalidBatch("negative length other than -1", "the batch is damaged")
        return None, pos
    end = pos + n
    if end > len(buf):
        raise InvalidBatch("a record field runs past the end", "the batch is damaged")
    return buf[pos:end], end


def decode(
    buf: bytes | bytearray | memoryview, *, max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES
) -> tuple[BatchHeader, list[Record]]:
    """Decode exactly one batch (CRC checked); records carry absolute offsets. A compressed
    records section is decompressed to at most ``max_decompressed_bytes`` (InvalidBatch
    beyond), so a consumer never inflates a compression bomb."""
    h = read_header(buf)
    if len(buf) != h.size:
        what = "trailing bytes after the batch" if len(buf) > h.size else "truncated batch"
        raise InvalidBatch(what, "pass exactly one batch", expected=h.size, actual=len(buf))
    verify_crc(buf, h)
    codec = h.attributes & _ATTR_COMPRESSION_MASK
    section = memoryview(buf)[BATCH_OVERHEAD:]
    data = bytes(section) if codec == 0 else _decompress(codec, section, max_decompressed_bytes)
    records: list[Record] = []
    pos = 0
    end = len(data)
    base_offset = h.base_offset
    first_ts = h.first_timestamp
    for _ in range(h.record_count):
        length, pos = _read_varint(data, pos)
        rec_end = pos + length
        if length < 0 or rec_end > end:
            raise InvalidBatch("a record runs past the records section", "the batch is damaged")
        pos += 1  # record attributes (unused in v2)
        ts_delta, pos = _read_varint(data, pos)
        offset_delta, pos = _read_varint(data, pos)
        key, pos = _read_bytes(data, pos)
        value, pos = _read_bytes(data, pos)
        n_headers, pos = _read_varint(data, pos)
        if n_headers < 0:
            raise InvalidBatch("negative header count", "the batch is damaged")
        headers: list[tuple[str, bytes | None]] = []
        for _h in range(n_headers):
            hk, pos = _read_bytes(data, pos)
            if hk is None:
                raise InvalidBatch("a header key is null", "header keys must be strings")
            hv, pos = _read_bytes(data, pos)
            try:
                headers.append((hk.decode(), hv))
            except UnicodeDecodeError as e:
                raise InvalidBatch("a header key is not utf-8", "the batch is damaged") from e
        if pos != rec_end:
            raise InvalidBatch(
                "a record's length does not match its fields",
                "the batch is damaged",
                expected=rec_end,
                actual=pos,
            )
        records.append(
            Record(key, value, first_ts + ts_delta, tuple(headers), base_offset + offset_delta)
        )
    if pos != end:
        raise InvalidBatch(
            "bytes left over after the last record",
            "recordCount does not match the records section",
            expected=end,
            actual=pos,
        )
    return h, records
