"""The leader's check of a produced RecordBatch: everything before it may enter the log.

:func:`validate` checks the header, exact length and CRC32C *and walks every record* (#12
defect 15: a batch with a correct CRC and garbage records stopped every consumer of its
partition for good): record framing, field lengths within each record, offset deltas exactly
0..recordCount-1, nothing left over, maxTimestamp equal to the newest record's, and timestamps
within Kafka's ``message.timestamp.before/after.max.ms`` of the leader's clock when it passes
one. Compressed sections are decompressed within a bound first. Pure, no I/O; the codec itself
lives in wire/batch.py.
"""

from __future__ import annotations

from wire.batch import (
    _ATTR_COMPRESSION_MASK,
    _ATTR_LOG_APPEND_TIME,
    _CODEC_NAMES,
    _MIN_RECORD_BYTES,
    _UNCOMPRESSED_BYTES_FLOOR,
    BATCH_OVERHEAD,
    DECOMPRESSION_RATIO_LIMIT,
    MAX_DECOMPRESSED_BYTES,
    BatchHeader,
    InvalidBatch,
    InvalidTimestamp,
    UnsupportedCompression,
    _decompress,
    _read_varint,
    read_header,
    verify_crc,
)

__all__ = ["check_records", "validate"]


def validate(
    buf: bytes | bytearray | memoryview,
    *,
    max_bytes: int,
    now_ms: int | None = None,
    timestamp_before_max_ms: int = -1,
    timestamp_after_max_ms: int = 3_600_000,
) -> BatchHeader:
    """Everything the broker checks before accepting a produced batch: header, magic, exact
    length (``buf`` is exactly one batch), size limit, CRC, codec, producer fields, no
    control bit, and every record (see :func:`check_records`). With ``now_ms`` (the leader's
    clock), every record timestamp must lie within ``timestamp_before_max_ms`` before it
    (-1: unlimited, Kafka's default) and ``timestamp_after_max_ms`` after it (-1: unlimited;
    default one hour, Kafka 4.0's default), so a far-future maxTimestamp cannot stop time
    retention. Raises InvalidBatch (InvalidTimestamp, UnsupportedCompression) only."""
    h = read_header(buf)
    size = h.size
    if len(buf) != size:
        what = "trailing bytes after the batch" if len(buf) > size else "truncated batch"
        raise InvalidBatch(
            what, "send exactly one batch per entry", expected=f"{size} bytes", actual=len(buf)
        )
    if size > max_bytes:
        raise InvalidBatch(
            "batch too large",
            "lower the producer's batch size (max_batch_bytes)",
            expected=f"<= {max_bytes} bytes",
            actual=size,
        )
    verify_crc(buf, h)
    codec = h.attributes & _ATTR_COMPRESSION_MASK
    if codec == 2 or codec > 4:
        raise UnsupportedCompression(_CODEC_NAMES[codec])
    if h.is_control:
        raise InvalidBatch("clients may not write control batches", "clear attribute bit 5")
    if h.record_count < 1 or h.record_count != h.last_offset_delta + 1:
        raise InvalidBatch(
            "record count does not match lastOffsetDelta + 1 (or is zero)",
            "a producer writes consecutive offset deltas 0..n-1",
            expected=h.last_offset_delta + 1,
            actual=h.record_count,
        )
    if codec == 0 and h.record_count * _MIN_RECORD_BYTES > size - BATCH_OVERHEAD:
        raise InvalidBatch(
            "record count cannot fit in the records section",
            "the batch is damaged",
            expected=f"<= {(size - BATCH_OVERHEAD) // _MIN_RECORD_BYTES}",
            actual=h.record_count,
        )
    if h.first_timestamp < -1 or h.max_timestamp < h.first_timestamp:
        raise InvalidBatch(
            "timestamps out of order",
            "maxTimestamp must be >= baseTimestamp >= -1",
            expected=f">= {h.first_timestamp}",
            actual=h.max_timestamp,
        )
    if h.producer_id < -1 or (h.producer_id >= 0 and (h.producer_epoch < 0 or h.base_sequence < 0)):
        raise InvalidBatch(
            "producer fields are inconsistent",
            "an idempotent batch needs producerId >= 0, epoch >= 0 and baseSequence >= 0",
            actual=(h.producer_id, h.producer_epoch, h.base_sequence),
            expected="(-1, any, any) or all >= 0",
        )
    limit = min(
        MAX_DECOMPRESSED_BYTES,
        max(_UNCOMPRESSED_BYTES_FLOOR, DECOMPRESSION_RATIO_LIMIT * max_bytes),
    )
    section = memoryview(buf)[BATCH_OVERHEAD:size]
    data = bytes(section) if codec == 0 else _decompress(codec, section, limit)
    min_ts, max_ts = check_records(data, h)
    if now_ms is not None:
        if timestamp_after_max_ms >= 0 and max_ts - now_ms > timestamp_after_max_ms:
            raise InvalidTimestamp(max_ts, now_ms, timestamp_after_max_ms, future=True)
        if timestamp_before_max_ms >= 0 and now_ms - min_ts > timestamp_before_max_ms:
            raise InvalidTimestamp(min_ts, now_ms, timestamp_before_max_ms, future=False)
    return h


def _field_error(i: int, what: str) -> InvalidBatch:
    return InvalidBatch(
        f"record {i}: {what}",
        "the batch is damaged or was built by a broken client; the producer must rebuild it",
    )


def _check_headers(data: bytes, pos: int, rec_end: int, i: int) -> int:
    n_headers, pos = _read_varint(data, pos)
    if n_headers < 0 or n_headers > rec_end - pos:
        raise _field_error(i, f"header count {n_headers} does not fit in the record")
    for _h in range(n_headers):
        n, pos = _read_varint(data, pos)
        if n < 0 or pos + n > rec_end:
            raise _field_error(i, "a header key is null or runs past the record")
        try:
            data[pos : pos + n].decode()
        except UnicodeDecodeError:
            raise _field_error(i, "a header key is not UTF-8") from None
        pos += n
        n, pos = _read_varint(data, pos)
        if n < -1:
            raise _field_error(i, f"header value length {n} (only -1 means null)")
        if n > 0:
            pos += n
        if pos > rec_end:
            raise _field_error(i, "a header runs past the record's length")
    return pos


def _walk_records(data: bytes, count: int, end: int) -> tuple[int, int, int]:
    """The hot loop of :func:`check_records` (the leader walks every record it accepts).
    Varints of one and two bytes, by far the most common, are decoded inline; longer ones go
    through _read_varint. Reading past ``end`` raises IndexError (the caller reports it)."""
    read = _read_varint
    pos = 0
    lo_delta = hi_delta = 0
    for i in range(count):
        b = data[pos]
        if b < 0x80:
            length = (b >> 1) ^ -(b & 1)
            pos += 1
        else:
            c = data[pos + 1]
            if c < 0x80:
                v = (b & 0x7F) | (c << 7)
                length = (v >> 1) ^ -(v & 1)
                pos += 2
            else:
                length, pos = read(data, pos)
        rec_end = pos + length
        if length < _MIN_RECORD_BYTES - 1 or rec_end > end:
            raise _field_error(i, f"length {length} does not fit in the records section")
        # In bounds from here to rec_end - 1: a record is >= 6 bytes after its length.
        b = data[pos + 1]  # after the attributes byte (unused in v2)
        if b < 0x80:
            ts_delta = (b >> 1) ^ -(b & 1)
            pos += 2
        else:
            c = data[pos + 2]
            if c < 0x80:
                v = (b & 0x7F) | (c << 7)
                ts_delta = (v >> 1) ^ -(v & 1)
                pos += 3
            else:
                ts_delta, pos = read(data, pos + 1)
        b = data[pos]
        if b < 0x80:
            offset_delta = (b >> 1) ^ -(b & 1)
            pos += 1
        else:
            c = data[pos + 1]
            if c < 0x80:  # offset deltas 64..8191
                v = (b & 0x7F) | (c << 7)
                offset_delta = (v >> 1) ^ -(v & 1)
                pos += 2
            else:
                offset_delta, pos = read(data, pos)
        if offset_delta != i:
            raise InvalidBatch(
                f"record {i} has offset delta {offset_delta}",
                "offset deltas must be 0, 1, ..., recordCount - 1 in order",
                expected=i,
                actual=offset_delta,
            )
        if ts_delta < lo_delta:
            lo_delta = ts_delta
        elif ts_delta > hi_delta:
            hi_delta = ts_delta
        b = data[pos]
        if b == 1:  # null key (zigzag -1), the common case
            pos += 1
        else:
            if b < 0x80:
                n = (b >> 1) ^ -(b & 1)
                pos += 1
            else:
                n, pos = read(data, pos)
            if n < -1:
                raise _field_error(i, f"key length {n} (only -1 means null)")
            if n > 0:
                pos += n
            if pos >= rec_end:
                raise _field_error(i, "the key runs past the record's length")
        b = data[pos]
        if b < 0x80:
            n = (b >> 1) ^ -(b & 1)
            pos += 1
        else:
            c = data[pos + 1]
            if c < 0x80:
                v = (b & 0x7F) | (c << 7)
                n = (v >> 1) ^ -(v & 1)
                pos += 2
            else:
                n, pos = read(data, pos)
        if n > 0:
            pos += n
        elif n < -1:
            raise _field_error(i, f"value length {n} (only -1 means null)")
        if pos >= rec_end:
            raise _field_error(i, "the value runs past the record's length")
        if data[pos] == 0:  # no headers
            pos += 1
        else:
            pos = _check_headers(data, pos, rec_end, i)
        if pos != rec_end:
            raise _field_error(i, f"its fields take {pos - rec_end + length} bytes, not {length}")
    return pos, lo_delta, hi_delta


def check_records(data: bytes, h: BatchHeader) -> tuple[int, int]:
    """Walk the (decompressed) records section of the batch ``h`` without building records:
    exactly ``recordCount`` records, each one's fields (varints, key, value, headers with
    UTF-8 keys) inside its own length, offset deltas 0, 1, ..., recordCount - 1 in order,
    nothing left over, and the newest record timestamp equal to maxTimestamp (CreateTime).
    Returns the oldest and newest record timestamps."""
    count = h.record_count
    end = len(data)
    if count * _MIN_RECORD_BYTES > end:
        raise InvalidBatch(
            "record count cannot fit in the records section",
            "the batch is damaged",
            expected=f"<= {end // _MIN_RECORD_BYTES} records",
            actual=count,
        )
    try:
        pos, lo_delta, hi_delta = _walk_records(data, count, end)
    except IndexError:
        # Every index the walk takes lies below a record end it checked against ``end``,
        # except the varint bytes it reads ahead: running off the section is truncation.
        raise InvalidBatch(
            "a record is truncated: the records section ends inside it",
            "the batch is damaged or was built by a broken client; the producer must rebuild it",
        ) from None
    if pos != end:
        raise InvalidBatch(
            f"{end - pos} bytes left over after recordCount={count} records",
            "recordCount must match the records present",
            expected=end,
            actual=pos,
        )
    first = h.first_timestamp
    if not h.attributes & _ATTR_LOG_APPEND_TIME and first + hi_delta != h.max_timestamp:
        raise InvalidBatch(
            "maxTimestamp is not the newest record's timestamp",
            "set maxTimestamp to the largest record timestamp",
            expected=first + hi_delta,
            actual=h.max_timestamp,
        )
    return first + lo_delta, max(first + hi_delta, h.max_timestamp)
