"""wire.batch: the Kafka RecordBatch v2 codec against kafka-python's fixtures.

Exact re-encoding: with compression none (and, as it happens, lz4 and zstd with these
libraries' default frames) ``encode`` reproduces the fixture bytes exactly; gzip output
differs only in container bytes (mtime/OS/level), so for gzip we check the round trip.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wire.batch import (
    BATCH_OVERHEAD,
    InvalidBatch,
    Record,
    RecordBatchBuilder,
    UnsupportedCompression,
    decode,
    encode,
    estimated_record_size,
    iter_batches,
    read_header,
    verify_crc,
    with_base_offset,
)
from wire.validate import validate

FIXTURE_DIR = Path(__file__).parent.parent / "fixtures"
CASES = json.loads((FIXTURE_DIR / "batches.json").read_text())
HEADER_FIELDS = (
    "base_offset",
    "batch_length",
    "partition_leader_epoch",
    "magic",
    "crc",
    "attributes",
    "last_offset_delta",
    "first_timestamp",
    "max_timestamp",
    "producer_id",
    "producer_epoch",
    "base_sequence",
    "record_count",
)
EXACT_CODECS = {"none", "lz4", "zstd"}
MAX = 1 << 20


def _b64(v: str | None) -> bytes | None:
    return None if v is None else base64.b64decode(v)


def _raw(case: dict) -> bytes:
    return (FIXTURE_DIR / case["file"]).read_bytes()


def _encode_like(records: list[Record], case: dict) -> bytes:
    return encode(
        records,
        base_offset=case["base_offset"],
        compression=case["compression"],
        producer_id=case["producer_id"],
        producer_epoch=case["producer_epoch"],
        base_sequence=case["base_sequence"],
        is_transactional=case["is_transactional"],
        partition_leader_epoch=case["partition_leader_epoch"],
    )


def test_every_fixture_is_listed() -> None:
    files = {p.name for p in FIXTURE_DIR.glob("batch-*.bin")}
    assert files == {c["file"] for c in CASES}
    assert len(files) == 6


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["file"])
def test_fixture_decodes_to_listed_fields(case: dict) -> None:
    raw = _raw(case)
    header, records = decode(raw)
    for name in HEADER_FIELDS:
        assert getattr(header, name) == case[name], name
    assert header.compression == case["compression"]
    assert header.is_transactional == case["is_transactional"]
    assert header.size == case["size"] == len(raw)
    assert header.last_offset == case["base_offset"] + case["last_offset_delta"]
    assert header.next_offset == header.last_offset + 1
    assert not header.is_control
    assert len(records) == len(case["records"])
    for got, want in zip(records, case["records"], strict=True):
        assert got.offset == want["offset"]
        assert got.timestamp_ms == want["timestamp"]
        assert got.key == _b64(want["key"])
        assert got.value == _b64(want["value"])
        assert got.headers == tuple((k, _b64(v)) for k, v in want["headers"])
    assert validate(raw, max_bytes=MAX) == header
    assert read_header(raw) == header


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["file"])
def test_fixture_reencodes(case: dict) -> None:
    raw = _raw(case)
    header, records = decode(raw)
    again = _encode_like(records, case)
    h2, r2 = decode(again)
    assert r2 == records
    for name in HEADER_FIELDS:
        if name not in ("crc", "batch_length"):
            assert getattr(h2, name) == getattr(header, name), name
    if case["compression"] in EXACT_CODECS:
        assert again == raw  # byte-for-byte what kafka-python wrote


def test_base_offset_rewrite_keeps_crc() -> None:
    raw = _raw(CASES[0])
    stamped = with_base_offset(raw, 123_456_789)
    h = validate(stamped, max_bytes=MAX)
    assert h.base_offset == 123_456_789
    assert h.crc == read_header(raw).crc
    assert stamped[8:] == raw[8:]
    _, records = decode(stamped)
    assert [r.offset for r in records] == list(range(123_456_789, 123_456_789 + 6))


# --- corruption --------------------------------------------------------------------------


def _none() -> bytes:
    return _raw(next(c for c in CASES if c["file"] == "batch-none.bin"))


def test_corrupt_crc_detected_with_expected_and_actual() -> None:
    raw = bytearray(_none())
    raw[200] ^= 0x01
    with pytest.raises(InvalidBatch, match="CRC") as e:
        validate(bytes(raw), max_bytes=MAX)
    assert e.value.expected == read_header(raw).crc
    assert e.value.actual != e.value.expected
    with pytest.raises(InvalidBatch):
        decode(bytes(raw))
    with pytest.raises(InvalidBatch):
        verify_crc(bytes(raw), read_header(raw))


def test_crc_field_itself_corrupted() -> None:
    raw = bytearray(_none())
    raw[18] ^= 0xFF
    with pytest.raises(InvalidBatch, match="CRC"):
        validate(bytes(raw), max_bytes=MAX)


def test_wrong_magic() -> None:
    raw = bytearray(_none())
    raw[16] = 1
    with pytest.raises(InvalidBatch, match="magic") as e:
        validate(bytes(raw), max_bytes=MAX)
    assert (e.value.expected, e.value.actual) == (2, 1)


@pytest.mark.parametrize("cut", [0, 1, 12, 60, 61, 100, 1316])
def test_truncated(cut: int) -> None:
    with pytest.raises(InvalidBatch):
        validate(_none()[:cut], max_bytes=MAX)
    with pytest.raises(InvalidBatch):
        decode(_none()[:cut])


def test_trailing_bytes() -> None:
    with pytest.raises(InvalidBatch, match="trailing"):
        validate(_none() + b"\x00", max_bytes=MAX)
    with pytest.raises(InvalidBatch, match="trailing"):
        decode(_none() + b"\x00")


def test_too_large() -> None:
    with pytest.raises(InvalidBatch, match="too large"):
        validate(_none(), max_bytes=1316)
    assert validate(_none(), max_bytes=1317).size == 1317


def _restamp(raw: bytearray) -> bytes:
    import crc32c

    struct.pack_into(">I", raw, 17, crc32c.crc32c(bytes(raw[21:])))
    return bytes(raw)


def test_snappy_unsupported() -> None:
    raw = bytearray(_none())
    struct.pack_into(">h", raw, 21, 2)
    with pytest.raises(UnsupportedCompression, match="snappy"):
        validate(_restamp(raw), max_bytes=MAX)
    with pytest.raises(UnsupportedCompression):
        encode([Record(b"k", b"v", 0)], compression="snappy")
    with pytest.raises(UnsupportedCompression):
        RecordBatchBuilder("brotli")


def test_control_bit_rejected() -> None:
    raw = bytearray(_none())
    struct.pack_into(">h", raw, 21, 0x20)
    with pytest.raises(InvalidBatch, match="control"):
        validate(_restamp(raw), max_bytes=MAX)


def test_record_count_mismatch_rejected() -> None:
    raw = bytearray(_none())
    struct.pack_into(">i", raw, 57, 7)
    with pytest.raises(InvalidBatch, match="record count"):
        validate(_restamp(raw), max_bytes=MAX)
    with pytest.raises(InvalidBatch):
        decode(_restamp(raw))


def test_idempotent_fields_must_be_consistent() -> None:
    raw = bytearray(_none())
    struct.pack_into(">q", raw, 43, 5)  # producer id 5 with epoch -1, sequence -1
    with pytest.raises(InvalidBatch, match="producer"):
        validate(_restamp(raw), max_bytes=MAX)


def test_timestamps_out_of_order_rejected() -> None:
    raw = bytearray(_none())
    struct.pack_into(">q", raw, 35, 5)  # max timestamp below base timestamp
    with pytest.raises(InvalidBatch, match="timestamps"):
        validate(_restamp(raw), max_bytes=MAX)


# --- iter_batches, builder -----------------------------------------------------------------


def test_iter_batches_splits_and_detects_truncation() -> None:
    raws = [_raw(c) for c in CASES]
    joined = b"".join(raws)
    assert [bytes(v) for v in iter_batches(joined)] == raws
    assert list(iter_batches(b"")) == []
    with pytest.raises(InvalidBatch):
        list(iter_batches(joined[:-1]))
    with pytest.raises(InvalidBatch):
        list(iter_batches(joined + b"\x00" * 10))


def test_builder_sizes_and_overrides() -> None:
    b = RecordBatchBuilder("none", producer_id=9, producer_epoch=1, base_sequence=0)
    assert b.record_count == 0 and b.size_bytes == BATCH_OVERHEAD
    with pytest.raises(InvalidBatch):
        b.build()
    b.append(b"k", b"v" * 100, 1000, [("h", b"x")])
    b.append(None, None, 900)
    b.append(b"k2", b"", 1200)
    raw = b.build(base_offset=7, base_sequence=40)
    assert len(raw) == b.size_bytes
    h, records = decode(raw)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (9, 1, 40)
    assert (h.first_timestamp, h.max_timestamp) == (1000, 1200)
    assert [r.offset for r in records] == [7, 8, 9]
    assert records[1] == Record(None, None, 900, (), 8)
    assert records[2].value == b""
    for r in records:
        assert estimated_record_size(r.key, r.value, r.headers) >= 1
    assert validate(raw, max_bytes=MAX) == h


# --- properties --------------------------------------------------------------------------

_opt_bytes = st.none() | st.binary(max_size=300)
_records = st.lists(
    st.builds(
        Record,
        key=_opt_bytes,
        value=_opt_bytes,
        timestamp_ms=st.integers(min_value=0, max_value=(1 << 62)),
        headers=st.lists(st.tuples(st.text(max_size=10), _opt_bytes), max_size=3).map(tuple),
    ),
    min_size=1,
    max_size=20,
)


@pytest.mark.parametrize("codec", ["none", "gzip", "lz4", "zstd"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=_records,
    base_offset=st.integers(min_value=0, max_value=(1 << 62)),
    producer=st.one_of(
        st.just((-1, -1, -1)),
        st.tuples(
            st.integers(0, (1 << 62)), st.integers(0, (1 << 15) - 1), st.integers(0, (1 << 31) - 1)
        ),
    ),
    txn=st.booleans(),
)
def test_round_trip(
    codec: str,
    records: list[Record],
    base_offset: int,
    producer: tuple[int, int, int],
    txn: bool,
) -> None:
    first_ts = records[0].timestamp_ms
    raw = encode(
        records,
        base_offset=base_offset,
        compression=codec,
        producer_id=producer[0],
        producer_epoch=producer[1],
        base_sequence=producer[2],
        is_transactional=txn,
    )
    h, got = decode(raw)
    assert got == [
        Record(r.key, r.value, r.timestamp_ms, r.headers, base_offset + i)
        for i, r in enumerate(records)
    ]
    assert h.compression == codec and h.is_transactional == txn
    assert h.first_timestamp == first_ts
    assert h.max_timestamp == max(r.timestamp_ms for r in records)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == producer
    if h.max_timestamp >= h.first_timestamp:
        assert validate(raw, max_bytes=len(raw)) == h
    if codec == "none":
        assert all(estimated_record_size(r.key, r.value, r.headers) >= 1 for r in records)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_single_byte_corruption_is_caught(data: st.DataObject) -> None:
    raw = bytearray(_none())
    pos = data.draw(st.integers(min_value=8, max_value=len(raw) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    raw[pos] ^= flip
    if 12 <= pos < 16:  # partitionLeaderEpoch is outside the CRC, like baseOffset
        assert validate(bytes(raw), max_bytes=MAX).partition_leader_epoch != 0
        return
    with pytest.raises(InvalidBatch):
        validate(bytes(raw), max_bytes=MAX)


# --- records are validated on the leader (#12 defect 15) ------------------------------------


def _with_records(records_section: bytes, *, count: int, codec: int = 0, max_ts: int = 0) -> bytes:
    """A batch whose header is consistent (length, count, CRC) around ``records_section``."""
    out = bytearray(BATCH_OVERHEAD + len(records_section))
    struct.pack_into(
        ">qiibIhiqqqhii",
        out,
        0,
        0,
        len(out) - 12,
        0,
        2,
        0,
        codec,
        count - 1,
        0,
        max_ts,
        -1,
        -1,
        -1,
        count,
    )
    out[BATCH_OVERHEAD:] = records_section
    return _restamp(out)


def _section(raw: bytes) -> bytes:
    return raw[BATCH_OVERHEAD:]


def test_garbage_records_with_a_correct_crc_are_refused() -> None:
    """guards #12 defect 15: validate checked header and CRC only, so garbage records with a
    valid CRC were accepted and then stopped every consumer (decode failed for good)."""
    good = encode([Record(b"k", b"v", 0), Record(b"k2", b"v2", 0)])
    garbage = _with_records(b"\x7f" * len(_section(good)), count=2)
    with pytest.raises(InvalidBatch, match="record 0"):
        validate(garbage, max_bytes=MAX)
    with pytest.raises(InvalidBatch):
        decode(garbage)  # what a consumer would have hit


def test_offset_deltas_must_be_0_to_n_minus_1_in_order() -> None:
    """guards #12 defect 15: records with offset deltas [5, 5] passed validation."""
    b = RecordBatchBuilder()
    b.append(b"a", b"1", 0)
    b.append(b"b", b"2", 0)
    good = b.build()
    section = bytearray(_section(good))
    # record 0 = length, attributes, timestampDelta, offsetDelta: patch both offset deltas
    first_len = section[0] >> 1
    section[3] = 10  # zigzag(5)
    section[1 + first_len + 3] = 10
    bad = _with_records(bytes(section), count=2)
    with pytest.raises(InvalidBatch, match="offset delta 5") as e:
        validate(bad, max_bytes=MAX)
    assert (e.value.expected, e.value.actual) == (0, 5)


def test_record_count_must_match_the_records_present() -> None:
    good = encode([Record(b"k", b"v", 0)] * 3)
    with pytest.raises(InvalidBatch, match="left over"):
        validate(_with_records(_section(good), count=2), max_bytes=MAX)
    with pytest.raises(InvalidBatch):
        validate(_with_records(_section(good), count=4), max_bytes=MAX)


def test_a_tiny_compressed_batch_claiming_a_million_records_is_refused() -> None:
    """guards #12 defect 15: 89 bytes claiming recordCount=1,000,000 took a million offsets."""
    import zstandard

    section = zstandard.ZstdCompressor().compress(b"\x00" * 40)
    raw = _with_records(section, count=1_000_000, codec=4)
    assert len(raw) < 120
    with pytest.raises(InvalidBatch, match="record count cannot fit"):
        validate(raw, max_bytes=MAX)


def test_a_compression_bomb_is_refused_by_the_broker_and_by_consumers() -> None:
    """guards #12 defect 15: consumers decompressed with no bound."""
    import zstandard

    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(b"\x00" * (70 << 20))
    raw = _with_records(bomb, count=1, codec=4)
    with pytest.raises(InvalidBatch, match="decompresses to more than"):
        validate(raw, max_bytes=MAX)
    with pytest.raises(InvalidBatch, match="decompresses to more than"):
        decode(raw)
    small = encode([Record(b"k", b"v" * 5000, 0)], compression="gzip")
    with pytest.raises(InvalidBatch, match="decompresses to more than 1000 bytes"):
        decode(small, max_decompressed_bytes=1000)
    lz4 = encode([Record(b"k", b"v" * 5000, 0)], compression="lz4")
    with pytest.raises(InvalidBatch, match="decompresses to more than"):
        decode(lz4, max_decompressed_bytes=1000)
    assert decode(lz4)[1][0].value == b"v" * 5000


def test_max_timestamp_must_be_the_newest_record() -> None:
    raw = encode([Record(b"k", b"v", 1_000), Record(b"k", b"v", 2_000)])
    forged = bytearray(raw)
    struct.pack_into(">q", forged, 35, 10**15)  # a far-future maxTimestamp
    with pytest.raises(InvalidBatch, match="maxTimestamp is not the newest"):
        validate(_restamp(forged), max_bytes=MAX)


def test_timestamps_are_bounded_by_the_leaders_clock() -> None:
    """guards #12 defect 15: a far-future maxTimestamp stopped time retention for good."""
    from wire.batch import InvalidTimestamp

    now = 1_700_000_000_000
    hour = 3_600_000
    future = encode([Record(b"k", b"v", now), Record(b"k", b"v", now + hour + 1)])
    validate(future, max_bytes=MAX)  # no clock given: no bound
    with pytest.raises(InvalidTimestamp, match="ahead of") as e:
        validate(future, max_bytes=MAX, now_ms=now)
    assert (e.value.timestamp_ms, e.value.limit_ms, e.value.future) == (now + hour + 1, hour, True)
    assert "message.timestamp.after.max.ms" in str(e.value)
    validate(future, max_bytes=MAX, now_ms=now + 1)  # exactly one hour ahead: accepted
    validate(future, max_bytes=MAX, now_ms=now, timestamp_after_max_ms=-1)
    old = encode([Record(b"k", b"v", 0)])
    validate(old, max_bytes=MAX, now_ms=now)  # before: unlimited by default, like Kafka
    with pytest.raises(InvalidTimestamp, match="behind"):
        validate(old, max_bytes=MAX, now_ms=now, timestamp_before_max_ms=7 * 24 * hour)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["file"])
def test_kafka_fixtures_pass_the_record_checks(case: dict) -> None:
    raw = _raw(case)
    h = validate(raw, max_bytes=MAX, now_ms=case["max_timestamp"])
    assert h.record_count == len(case["records"])


def _mutate(raw: bytes, data: st.DataObject) -> bytes:
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "count"]))
        if kind == "flip" and len(buf) > BATCH_OVERHEAD:
            pos = data.draw(st.integers(BATCH_OVERHEAD, len(buf) - 1))
            buf[pos] = data.draw(st.integers(0, 255))
        elif kind == "cut" and len(buf) > BATCH_OVERHEAD:
            pos = data.draw(st.integers(BATCH_OVERHEAD, len(buf) - 1))
            del buf[pos : pos + data.draw(st.integers(1, 8))]
        elif kind == "insert":
            pos = data.draw(st.integers(BATCH_OVERHEAD, len(buf)))
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            n = data.draw(st.integers(-2, 1 << 31 - 1))
            struct.pack_into(">i", buf, 57, n)
            struct.pack_into(">i", buf, 23, n - 1)
    struct.pack_into(">i", buf, 8, len(buf) - 12)
    return _restamp(buf)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), codec=st.sampled_from(["none", "gzip", "lz4", "zstd"]))
def test_validate_raises_only_invalid_batch_and_what_it_accepts_decodes(
    data: st.DataObject, codec: str
) -> None:
    """guards #12 defect 15: fuzzed batches (with a correct CRC and length) either fail
    validation with InvalidBatch, or validate and then decode for every consumer."""
    records = data.draw(
        st.lists(
            st.builds(
                Record,
                st.none() | st.binary(max_size=20),
                st.none() | st.binary(max_size=40),
                st.integers(0, 10**6),
                st.lists(
                    st.tuples(st.text(max_size=5), st.none() | st.binary(max_size=5)), max_size=2
                ).map(tuple),
            ),
            min_size=1,
            max_size=5,
        )
    )
    raw = encode(records, compression=codec)
    if codec == "none":
        raw = _mutate(raw, data)
    else:  # mutate the decompressed records, then compress them again
        h, _ = decode(raw)
        plain = _mutate(encode(records), data)
        section = plain[BATCH_OVERHEAD:]
        raw = _with_records(
            bytes(zstandard_or_codec(codec, section)),
            count=struct.unpack_from(">i", plain, 57)[0],
            codec={"gzip": 1, "lz4": 3, "zstd": 4}[codec],
            max_ts=h.max_timestamp,
        )
    try:
        h = validate(raw, max_bytes=MAX)
    except InvalidBatch:
        return
    _, got = decode(raw)
    assert len(got) == h.record_count
    assert [r.offset for r in got] == list(range(h.record_count))
    assert max(r.timestamp_ms for r in got) == h.max_timestamp


def zstandard_or_codec(codec: str, section: bytes) -> bytes:
    import zlib

    import lz4.frame
    import zstandard

    if codec == "gzip":
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        return c.compress(section) + c.flush()
    if codec == "lz4":
        return bytes(lz4.frame.compress(section))
    return zstandard.ZstdCompressor().compress(section)
