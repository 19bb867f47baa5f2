"""Property tests (Hypothesis) for the record-batch and frame codecs, the parts of odradek
that read bytes from the network or the disk.

What holds for every input Hypothesis makes: a built batch parses back to the same
fields and records; every truncation or flipped byte of a valid batch is refused with
InvalidRecordError (a CRC mismatch is caught) or decoded consistently; no record
length, count or compressed payload makes the decoder read past the bytes present or
allocate more than they can describe. Requests and responses of every (api key,
version) in ROUTES survive encode -> decode unchanged.

Derandomized and without an example database, so every run tries the same inputs.
"""

from __future__ import annotations

import gzip
import io
import struct
import subprocess
import sys
import tracemalloc
import zlib
from functools import cache
from typing import Any

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio._kio_native import read_signed_varint
from kio.schema.errors import ErrorCode
from kio.serial.writers import write_signed_varint
from kio.static.primitive import Records

from odradek.protocol.bounds import uvarint_bytes
from odradek.protocol.compression import compress, decompress
from odradek.protocol.framing import (
    API_VERSIONS_KEY,
    FrameError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    peek_header,
    request_type,
    response_type,
)
from odradek.protocol.record_errors import InvalidRecordError
from odradek.protocol.records import (
    BATCH_HEADER_SIZE,
    CONTROL_BIT,
    CRC_START,
    TRANSACTIONAL_BIT,
    BatchHeader,
    DecodedBatch,
    Record,
    control_type,
    decode_batch,
    encode_batch,
    encode_control_batch,
    iter_batches,
    parse_batches,
    read_header,
    scan_batches,
)
from odradek.server.handlers import ROUTES

# Records (a produce request's record set) is bytes to kio; it has no strategy of its own.
st.register_type_strategy(Records, st.binary(max_size=64))

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CODECS = [0, 1, 2, 3, 4]
# Outside the CRC (Kafka's DefaultRecordBatch): baseOffset, partitionLeaderEpoch.
UNCHECKED = set(range(8)) | set(range(12, 16))

keys = st.none() | st.binary(max_size=40)
values = st.none() | st.binary(max_size=200)
headers = st.lists(st.tuples(st.text(max_size=12), st.none() | st.binary(max_size=20)), max_size=3).map(tuple)
record_tuples = st.lists(st.tuples(keys, values, headers), min_size=1, max_size=12)


@st.composite
def batches(draw: Any, codecs: list[int] = CODECS) -> tuple[bytes, dict[str, Any], list[Any]]:
    """A valid v2 batch, the header fields it was built with, and its records."""
    records = draw(record_tuples)
    fields = {
        "base_offset": draw(st.integers(0, 2**62)),
        "timestamp_ms": draw(st.integers(0, 2**42)),
        "compression": draw(st.sampled_from(codecs)),
        "attributes": draw(st.sampled_from([0, TRANSACTIONAL_BIT])),
        "producer_id": draw(st.integers(-1, 2**62)),
        "producer_epoch": draw(st.integers(-1, 2**15 - 1)),
        "base_sequence": draw(st.integers(-1, 2**30)),
        "partition_leader_epoch": draw(st.integers(-1, 2**31 - 1)),
    }
    return encode_batch(records, **fields), fields, records


def assert_consistent(batch: DecodedBatch, data: bytes) -> None:
    """What a decoded batch promises whatever its bytes: as many records as its header
    says, and no key, value or header larger than the batch could hold after decompression."""
    assert len(batch.records) == batch.header.record_count
    for r in batch.records:
        assert r.key is None or isinstance(r.key, bytes)
        assert r.value is None or isinstance(r.value, bytes)
        for hk, hv in r.headers:
            assert isinstance(hk, str) and (hv is None or isinstance(hv, bytes))
    if batch.header.compression == 0:
        payload = sum(len(r.key or b"") + len(r.value or b"") for r in batch.records)
        assert payload <= len(data)


def decode_or_refuse(data: bytes, pos: int = 0, **kwargs: Any) -> DecodedBatch | None:
    try:
        batch = decode_batch(data, pos, **kwargs)
    except InvalidRecordError as exc:
        assert exc.error_code in (ErrorCode.corrupt_message, ErrorCode.message_too_large)
        return None
    assert_consistent(batch, data)
    return batch


def with_body(body: bytes, record_count: int, *, compression: int = 0) -> bytes:
    """A batch header (with a correct CRC) around any body: what a lying producer can send."""
    return framed(compress(compression, body), record_count, compression)


def framed(payload: bytes, record_count: int, attributes: int = 0) -> bytes:
    """A batch header with a correct CRC in front of a payload taken as it is."""
    tail = struct.pack(">hiqqqhii", attributes, max(record_count - 1, 0), 0, 0, -1, -1, -1,
                       record_count) + payload
    return struct.pack(">qiibI", 0, len(tail) + 9, -1, 2, crc32c.crc32c(tail)) + tail


# -- record batches: round trips -------------------------------------------------


@SETTINGS
@given(batches())
def test_built_batch_parses_to_its_fields_and_records(case: tuple[bytes, dict[str, Any], list[Any]]) -> None:
    data, f, records = case
    (h,) = parse_batches(data)
    assert (h.base_offset, h.partition_leader_epoch, h.magic, h.compression) == (
        f["base_offset"], f["partition_leader_epoch"], 2, f["compression"])
    assert h.is_transactional == bool(f["attributes"] & TRANSACTIONAL_BIT) and not h.is_control
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (
        f["producer_id"], f["producer_epoch"], f["base_sequence"])
    assert (h.record_count, h.last_offset_delta) == (len(records), len(records) - 1)
    assert h.base_timestamp == h.max_timestamp == f["timestamp_ms"]
    assert h.size == len(data) and h.next_offset == f["base_offset"] + len(records)
    assert read_header(data) == h
    assert scan_batches(data) == ([h], len(data))
    decoded = decode_batch(data, verify_crc=True)
    assert decoded.header == h
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in decoded.records] == [
        (f["base_offset"] + i, f["timestamp_ms"], k, v, hs) for i, (k, v, hs) in enumerate(records)]


@SETTINGS
@given(batches(), st.integers(-3, 3).filter(bool), st.sampled_from([b"", b"\0", b"\x02ab"]))
def test_a_batch_lying_about_its_record_count_is_refused_whole(
        case: tuple[bytes, dict[str, Any], list[Any]], lie: int, trailing: bytes) -> None:
    """Kafka's LogValidator reads every record: a produced batch claiming more or fewer records than
    it holds, or bytes after them, is INVALID_RECORD as there (it took offsets it did not fill, and
    the Java consumer, which reads exactly record_count records, failed on it)."""
    data, f, records = case
    body = decompress(f["compression"], data[BATCH_HEADER_SIZE:])
    count = len(records) + lie
    liars = [with_body(body + trailing, len(records), compression=f["compression"])] if trailing else []
    if count >= 1:
        liars.append(with_body(body, count, compression=f["compression"]))
    assert parse_batches(with_body(body, len(records), compression=f["compression"]))[0].record_count == len(records)
    for liar in liars:
        with pytest.raises(InvalidRecordError) as refused:
            parse_batches(liar)
        assert refused.value.error_code == ErrorCode.invalid_record


def test_a_claim_of_2_to_the_31_records_in_one_is_refused_at_once() -> None:
    one = encode_batch([(None, b"v" * 100, ())])
    with pytest.raises(InvalidRecordError, match="does not fit"):
        parse_batches(with_body(one[BATCH_HEADER_SIZE:], 2**31 - 1))
    same_size = encode_batch([(None, b"v" * 100, ())] * 50)  # one stride: checked by byte columns
    assert parse_batches(same_size)[0].record_count == 50
    with pytest.raises(InvalidRecordError):
        parse_batches(with_body(same_size[BATCH_HEADER_SIZE:], 49))


@SETTINGS
@given(st.lists(st.tuples(st.integers(1, 60), st.integers(0, 3)), min_size=1, max_size=12),
       st.integers(-2, 2).filter(bool))
def test_records_in_runs_of_one_size_are_counted_exactly(runs: list[tuple[int, int]], lie: int) -> None:
    """check_records takes runs of same-size records by byte columns, first trying a run to the
    batch's end and again after size changes (the offset delta's varint grows at 64 records): a
    batch whose sizes change anywhere is accepted with its own count and refused with any other."""
    records = [(None, b"v" * (10 + 37 * size), ()) for length, size in runs for _ in range(length)]
    _, liars = counted_and_liars(records, lie)
    for liar in liars:
        with pytest.raises(InvalidRecordError):
            parse_batches(liar)


def counted_and_liars(records: list[tuple[None, bytes, tuple[()]]], lie: int) -> tuple[bytes, list[bytes]]:
    """The records' batch is accepted with their own count; (its body, the same body with a byte
    after the records, and with the count off by `lie`, when that count is at least 1)."""
    data = encode_batch(records)
    assert parse_batches(data)[0].record_count == len(records)
    body = data[BATCH_HEADER_SIZE:]
    liars = [with_body(body + b"\0", len(records))]
    if len(records) + lie >= 1:
        liars.append(with_body(body, len(records) + lie))
    return body, liars


@SETTINGS
@given(st.lists(st.integers(0, 300), min_size=1, max_size=700), st.integers(-2, 2).filter(bool),
       st.integers(0, 10**6), st.integers(-5, 5))
def test_records_of_varied_sizes_are_counted_exactly(sizes: list[int], lie: int, at: int, short: int) -> None:
    """Records whose sizes change at every record are walked a chunk at a time (VARIED_CHUNK,
    after VARIED_AFTER changes in a row), mixed with runs of one size: a batch is accepted with
    its own count and refused with any other, with a byte after its records, or with one record
    shorter than the smallest record's fields."""
    records = [(None, b"v" * size, ()) for size in sizes]
    body, liars = counted_and_liars(records, lie)
    p = 0  # one record replaced by a length of `short` (-5..5) and as many bytes: it still fills the batch
    for _ in range(at % len(records)):
        length, size = read_signed_varint(body, p)
        p += size + length
    length, size = read_signed_varint(body, p)
    liars.append(with_body(body[:p] + uvarint_bytes((short << 1) ^ (short >> 63)) + b"\0" * max(short, 0)
                           + body[p + size + length:], len(records)))
    for liar in liars:
        with pytest.raises(InvalidRecordError):
            parse_batches(liar)


@st.composite
def own_records(draw: Any) -> list[Record]:
    """Records with their own offsets (gaps, as compaction leaves) and timestamps (any order)."""
    n = draw(st.integers(1, 10))
    first = draw(st.integers(0, 2**40))
    gaps = draw(st.lists(st.integers(1, 2**20), min_size=n, max_size=n))
    base_ts = draw(st.integers(0, 2**41))
    out = []
    offset = first
    for i in range(n):
        out.append(Record(offset, base_ts + draw(st.integers(-(2**40), 2**40)) if i else base_ts,
                          draw(keys), draw(values), draw(headers), draw(st.integers(0, 255))))
        offset += gaps[i]
    return out


@SETTINGS
@given(own_records(), st.sampled_from(CODECS))
def test_records_keep_their_offsets_timestamps_and_attributes(records: list[Record], codec: int) -> None:
    data = encode_batch(records, compression=codec)
    h = read_header(data)
    assert h.base_offset == records[0].offset and h.last_offset == records[-1].offset
    assert h.max_timestamp == max(r.timestamp for r in records)
    assert decode_batch(data, verify_crc=True).records == records


@SETTINGS
@given(st.lists(batches(), min_size=1, max_size=4))
def test_concatenated_batches_parse_one_by_one(cases: list[tuple[bytes, dict[str, Any], list[Any]]]) -> None:
    data = b"".join(c[0] for c in cases)
    headers = parse_batches(data)
    assert [h.size for h in headers] == [len(c[0]) for c in cases]
    assert [len(b.records) for b in iter_batches(data)] == [len(c[2]) for c in cases]


@SETTINGS
@given(st.booleans(), st.integers(0, 2**62), st.integers(0, 2**15 - 1), st.integers(0, 2**31 - 1))
def test_control_batch_says_commit_or_abort(committed: bool, pid: int, epoch: int, coordinator_epoch: int) -> None:
    data = encode_control_batch(committed, pid, epoch, coordinator_epoch, 1_700_000_000_000)
    (h,) = parse_batches(data)
    assert h.is_control and h.is_transactional and (h.producer_id, h.producer_epoch) == (pid, epoch)
    assert control_type(data) == int(committed)


@SETTINGS
@given(st.sampled_from(CODECS), st.binary(max_size=5000))
def test_compression_round_trips(codec: int, data: bytes) -> None:
    assert decompress(codec, compress(codec, data)) == data


# -- record batches: hostile bytes ----------------------------------------------


@SETTINGS
@given(batches())
def test_every_truncation_is_refused(case: tuple[bytes, dict[str, Any], list[Any]]) -> None:
    data = case[0]
    for cut in range(len(data)):
        part = data[:cut]
        if cut:  # no bytes at all are no batches
            with pytest.raises(InvalidRecordError):
                parse_batches(part)
        assert scan_batches(part) == ([], 0)
        with pytest.raises(InvalidRecordError):
            decode_batch(part)
        assert control_type(part) == -1


@SETTINGS
@given(batches(), st.data())
def test_a_flipped_byte_fails_the_crc_or_changes_only_an_unchecked_field(
    case: tuple[bytes, dict[str, Any], list[Any]], data: st.DataObject
) -> None:
    good = case[0]
    i = data.draw(st.integers(0, len(good) - 1), label="index")
    bad = bytearray(good)
    bad[i] ^= data.draw(st.integers(1, 255), label="mask")
    bad_bytes = bytes(bad)
    if i in UNCHECKED:  # baseOffset and partitionLeaderEpoch: the broker rewrites them
        (h,) = parse_batches(bad_bytes)
        assert (h.crc, h.record_count) == (read_header(good).crc, read_header(good).record_count)
        assert decode_batch(bad_bytes, verify_crc=True).header == h
        return
    with pytest.raises(InvalidRecordError) as info:
        parse_batches(bad_bytes)
    assert info.value.error_code == ErrorCode.corrupt_message
    with pytest.raises(InvalidRecordError):
        decode_batch(bad_bytes, verify_crc=True)
    assert scan_batches(bad_bytes) == ([], 0)
    # Without the CRC (compaction, tools) the same bytes decode consistently or are refused.
    decode_or_refuse(bad_bytes)
    control_type(bad_bytes)


@SETTINGS
@given(batches(), st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=8))
def test_flipped_bytes_behind_a_fixed_crc_decode_consistently_or_are_refused(
    case: tuple[bytes, dict[str, Any], list[Any]], flips: list[tuple[int, int]]
) -> None:
    """A lying producer computes the CRC over its own garbage: the CRC cannot save us there."""
    bad = bytearray(case[0])
    for i, mask in flips:
        bad[CRC_START + i % (len(bad) - CRC_START)] ^= mask
    struct.pack_into(">I", bad, 17, crc32c.crc32c(memoryview(bad)[CRC_START:]))
    data = bytes(bad)
    try:
        headers = parse_batches(data)
    except InvalidRecordError:
        headers = []
    batch = decode_or_refuse(data)
    if batch is not None:
        assert batch.header.size == len(data)
    assert all(h.size == len(data) for h in headers)
    control_type(data)


def varint(value: int) -> bytes:
    buf = io.BytesIO()
    write_signed_varint(buf, value)
    return buf.getvalue()


# Pieces a hostile record body is made of: varints that lie about lengths and counts
# (huge, negative, just past the end), and raw bytes.
lying_ints = st.one_of(
    st.integers(-2, 300),
    st.integers(-(2**31), 2**31 - 1),
    st.sampled_from([2**31 - 1, -(2**31), 2**30, 10**9, 65536]),
)
pieces = st.one_of(lying_ints.map(varint), st.binary(max_size=12))


@SETTINGS
@given(st.lists(pieces, max_size=40).map(b"".join), lying_ints, st.sampled_from(CODECS))
def test_record_lengths_and_counts_are_bounded_by_the_bytes_present(body: bytes, count: int, codec: int) -> None:
    data = with_body(body, count, compression=codec)
    tracemalloc.start()
    try:
        batch = decode_or_refuse(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024 + 20 * len(body)  # gzip keeps a 128 KiB read buffer
    if batch is not None:
        assert 0 <= batch.header.record_count <= len(body)


@SETTINGS
@given(st.lists(st.tuples(keys, values, headers), min_size=1, max_size=4), lying_ints)
def test_a_record_count_that_lies_is_refused(records: list[Any], count: int) -> None:
    """Real records behind a header whose record count is not theirs (Kafka: "Incorrect
    declared batch size" when records remain, a buffer underflow when they run out)."""
    body = encode_batch(records)[BATCH_HEADER_SIZE:]
    if count == len(records):
        count = len(records) + 1
    with pytest.raises(InvalidRecordError):
        decode_batch(with_body(body, count))


@pytest.mark.parametrize(
    "field", ["record length", "key length", "value length", "header count", "header key", "header value"]
)
@pytest.mark.parametrize("value", [2**31 - 1, 10**9, 65536, 7, -(2**31), -2])
def test_each_length_inside_a_record_that_exceeds_the_bytes_left_is_refused(field: str, value: int) -> None:
    """One record (key b"k", value b"v", header ("h", b"x")) with one of its lengths replaced."""
    parts = {"record length": None, "key length": 1, "value length": 1, "header count": 1,
             "header key": 1, "header value": 1}
    parts[field] = value

    def bytes_field(n: int | None, payload: bytes) -> bytes:
        return varint(n) + (payload if n is not None and n >= 0 else b"")

    inner = (b"\0" + varint(0) + varint(0) + bytes_field(parts["key length"], b"k")
             + bytes_field(parts["value length"], b"v") + varint(parts["header count"] or 0)
             + bytes_field(parts["header key"], b"h") + bytes_field(parts["header value"], b"x"))
    length = parts["record length"]
    record = varint(len(inner) if length is None else length) + inner
    tracemalloc.start()
    try:
        batch = decode_or_refuse(with_body(record, 1))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    if value < 0 and field in ("key length", "value length", "header value"):
        # Any negative length of a key, value or header value is null (Kafka's DefaultRecord).
        assert batch is not None and None in (batch.records[0].key, batch.records[0].value,
                                              batch.records[0].headers[0][1])
    else:
        assert batch is None


@SETTINGS
@given(st.sampled_from([1, 2, 3, 4]), st.binary(max_size=300))
def test_any_bytes_claimed_compressed_decompress_or_are_refused(codec: int, junk: bytes) -> None:
    try:
        decompress(codec, junk)
    except InvalidRecordError as exc:
        assert exc.error_code == ErrorCode.corrupt_message
    decode_or_refuse(framed(junk, 1, codec))


@SETTINGS
@given(st.sampled_from([1, 2, 3, 4]), st.binary(min_size=1, max_size=2000), st.data())
def test_truncated_compressed_payloads_are_refused_or_shorter(codec: int, raw: bytes, data: st.DataObject) -> None:
    packed = compress(codec, raw)
    cut = data.draw(st.integers(0, len(packed) - 1), label="cut")
    try:
        out = decompress(codec, packed[:cut])
    except InvalidRecordError:
        return
    # zstd's stream reader ends quietly at a cut: what it gives is a prefix, and the
    # record decoder refuses the missing records.
    assert raw.startswith(out) and len(out) < len(raw)


def xerial(raw: bytes, chunk: int = 1000) -> bytes:
    """The Java client's snappy framing: magic, version, compat, then [length][block] chunks."""
    import snappy

    out = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    for i in range(0, len(raw), chunk):
        block = snappy.compress(raw[i:i + chunk])
        out += struct.pack(">i", len(block)) + block
    return out


@SETTINGS
@given(st.binary(max_size=3000), st.data())
def test_xerial_snappy_decodes_and_its_truncations_or_lies_are_refused(raw: bytes, data: st.DataObject) -> None:
    framed = xerial(raw)
    assert decompress(2, framed) == raw
    cut = data.draw(st.integers(0, len(framed) - 1), label="cut")
    try:
        assert raw.startswith(decompress(2, framed[:cut]))
    except InvalidRecordError:
        pass
    if len(framed) > 16:
        lie = bytearray(framed)
        struct.pack_into(">i", lie, 16, data.draw(lying_ints, label="chunk length"))
        try:
            decompress(2, bytes(lie))
        except InvalidRecordError:
            pass


ZEROS = 8 * 1024 * 1024


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_a_compression_bomb_is_refused_without_inflating_it(codec: int) -> None:
    """8 MiB of zeros compress to a few KiB; a decoder held to 1 MiB must stop near 1 MiB."""
    bomb = xerial(bytes(ZEROS), 65536) if codec == 2 else compress(codec, bytes(ZEROS))
    tracemalloc.start()
    try:
        with pytest.raises(InvalidRecordError) as info:
            decode_batch(framed(bomb, 1, codec), max_decompressed_bytes=1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.error_code == ErrorCode.corrupt_message
    assert peak < 4 * 1024 * 1024


def test_concatenated_gzip_members_decode_as_one() -> None:
    assert decompress(1, gzip.compress(b"ab") + gzip.compress(b"cd")) == b"abcd"


def test_gzip_with_a_corrupt_deflate_stream_is_refused() -> None:
    packed = bytearray(gzip.compress(b"hello" * 100))
    packed[12] ^= 0xFF
    with pytest.raises(InvalidRecordError):
        decompress(1, bytes(packed))
    with pytest.raises(InvalidRecordError):
        decompress(1, zlib.compress(b"not gzip"))


@SETTINGS
@given(st.binary(max_size=BATCH_HEADER_SIZE - 1), st.integers(0, 100))
def test_a_short_header_is_refused(data: bytes, pos: int) -> None:
    with pytest.raises(InvalidRecordError):
        read_header(data, pos)
    with pytest.raises(InvalidRecordError):
        decode_batch(data, pos)


@SETTINGS
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_break_the_batch_readers(data: bytes) -> None:
    try:
        parse_batches(data)
    except InvalidRecordError:
        pass
    headers, end = scan_batches(data)
    assert 0 <= end <= len(data) and all(isinstance(h, BatchHeader) for h in headers)
    decode_or_refuse(data)
    assert isinstance(control_type(data), int)


@SETTINGS
@given(st.binary(min_size=4, max_size=4), st.binary(max_size=20))
def test_control_type_of_any_control_record_is_an_int(key: bytes, value: bytes) -> None:
    data = encode_batch([(key, value, ())], attributes=CONTROL_BIT | TRANSACTIONAL_BIT)
    assert control_type(data) == struct.unpack(">hh", key)[1]


# -- frames ------------------------------------------------------------------------

PAIRS = [(k, v) for k, r in sorted(ROUTES.items()) for v in range(r.min_version, r.max_version + 1)]


def requests() -> st.SearchStrategy[tuple[int, int, Any]]:
    return st.sampled_from(PAIRS).flatmap(
        lambda p: st.tuples(st.just(p[0]), st.just(p[1]), st.from_type(request_type(*p))))


client_ids = st.none() | st.text(max_size=20)
correlation_ids = st.integers(-(2**31), 2**31 - 1)


@settings(SETTINGS, max_examples=200)
@given(requests(), correlation_ids, client_ids)
def test_every_request_round_trips(req: tuple[int, int, Any], correlation_id: int, client_id: str | None) -> None:
    api_key, version, body = req
    frame = encode_request(api_key, version, correlation_id, body, client_id=client_id)
    (size,) = struct.unpack_from(">i", frame)
    assert size == len(frame) - 4
    assert peek_header(frame[4:]) == (api_key, version, correlation_id)
    header, decoded = decode_request(frame[4:])
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == (
        api_key, version, correlation_id, client_id)
    assert decoded == body


@settings(SETTINGS, max_examples=200)
@given(st.sampled_from(PAIRS).flatmap(
    lambda p: st.tuples(st.just(p[0]), st.just(p[1]), st.from_type(response_type(*p)))), correlation_ids)
def test_every_response_round_trips(resp: tuple[int, int, Any], correlation_id: int) -> None:
    api_key, version, body = resp
    frame = encode_response(correlation_id, body, header_v0=api_key == API_VERSIONS_KEY)
    assert struct.unpack_from(">i", frame)[0] == len(frame) - 4
    assert decode_response(frame[4:], api_key, version) == (correlation_id, body)


def check_decoded_or_refused(frame: bytes) -> None:
    try:
        header, body = decode_request(frame)
    except FrameError:
        return
    assert (header.api_key, header.api_version, header.correlation_id) == peek_header(frame)
    assert type(body) is request_type(header.api_key, header.api_version)


@settings(SETTINGS, max_examples=60)
@given(requests(), st.data())
def test_every_truncated_request_is_refused_or_parsed(req: tuple[int, int, Any], data: st.DataObject) -> None:
    """Cutting a frame short only shrinks what is left, never a length prefix: always safe to try."""
    frame = encode_request(*req[:2], 1, req[2])[4:]
    for cut in sorted(set(data.draw(st.lists(st.integers(0, len(frame) - 1), max_size=20), label="cuts"))):
        check_decoded_or_refused(frame[:cut])


# A Metadata v12 request whose topics array claims ~33e9 entries (issue 13's 29-byte frame).
LENGTH_BOMB = (struct.pack(">hhih", 3, 12, 1, 3) + b"bad" + b"\x00"
               + b"\xff\xff\xff\xff\x7f" + b"\x00\x00\x00")


@cache
def length_bounds_checked() -> bool:
    """Whether decode_request survives a length bomb; before the bounds check in protocol/
    it aborts the process (kio's native reader), so this asks a child process."""
    code = ("import sys; from odradek.protocol.framing import decode_request, FrameError\n"
            "try: decode_request(bytes.fromhex(sys.argv[1]))\nexcept FrameError: pass\n")
    done = subprocess.run([sys.executable, "-c", code, LENGTH_BOMB.hex()], check=False, capture_output=True,
                          timeout=60)
    return done.returncode == 0


@settings(SETTINGS, max_examples=100)
@given(requests(), st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4))
def test_a_request_with_flipped_bytes_is_refused_or_parsed(req: tuple[int, int, Any],
                                                          flips: list[tuple[int, int]]) -> None:
    if not length_bounds_checked():
        pytest.skip("decode_request has no length-bounds check yet: a lying length aborts the process")
    frame = bytearray(encode_request(*req[:2], 1, req[2])[4:])
    for i, mask in flips:
        if len(frame) > 4:
            frame[4 + i % (len(frame) - 4)] ^= mask  # api key and version stay: a supported pair
    check_decoded_or_refused(bytes(frame))


def test_the_length_bomb_is_refused() -> None:
    if not length_bounds_checked():
        pytest.skip("decode_request has no length-bounds check yet: a lying length aborts the process")
    with pytest.raises(FrameError):
        decode_request(LENGTH_BOMB)
