"""Pure protocol pieces: record batch views and codecs, framing, the response builder."""

from __future__ import annotations

import struct

import crc32c
import pytest
from kio.schema.errors import ErrorCode

from odradek.protocol import framing
from odradek.protocol.build import build
from odradek.protocol.record_errors import InvalidRecordError
from odradek.protocol.records import (
    decode_batch,
    encode_batch,
    parse_batches,
    scan_batches,
    set_log_append_time,
)

RECORDS = [(b"k%d" % i, b"value-%d" % i, (("h", b"%d" % i),)) for i in range(20)]


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4])
def test_encode_decode_round_trip_every_codec(codec: int) -> None:
    data = encode_batch(RECORDS, base_offset=100, timestamp_ms=1_700_000_000_123, compression=codec)
    (header,) = parse_batches(data)
    assert header.compression == codec and header.record_count == 20 and header.base_offset == 100
    batch = decode_batch(data)
    assert [(r.offset, r.key, r.value, r.headers, r.timestamp) for r in batch.records] == [
        (100 + i, k, v, h, 1_700_000_000_123) for i, (k, v, h) in enumerate(RECORDS)
    ]


def test_flipped_byte_fails_the_crc() -> None:
    data = bytearray(encode_batch(RECORDS))
    data[70] ^= 1
    with pytest.raises(InvalidRecordError) as info:
        parse_batches(bytes(data))
    assert info.value.error_code == ErrorCode.corrupt_message


def test_base_offset_and_leader_epoch_are_outside_the_crc() -> None:
    data = bytearray(encode_batch(RECORDS))
    struct.pack_into(">qii", data, 0, 12345, struct.unpack_from(">i", data, 8)[0], 7)
    (h,) = parse_batches(bytes(data))
    assert h.base_offset == 12345 and h.partition_leader_epoch == 7


@pytest.mark.parametrize(
    "mangle, code",
    [
        (lambda d: d[:-1], ErrorCode.corrupt_message),  # truncated
        (lambda d: d + b"\0" * 10, ErrorCode.corrupt_message),  # trailing garbage
        (lambda d: d[:16] + b"\x01" + d[17:], ErrorCode.corrupt_message),  # magic 1
    ],
    ids=["truncated", "trailing", "magic"],
)
def test_malformed_batches_are_refused(mangle, code) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRecordError) as info:
        parse_batches(mangle(encode_batch(RECORDS)))
    assert info.value.error_code == code


def test_batch_larger_than_max_message_bytes() -> None:
    with pytest.raises(InvalidRecordError) as info:
        parse_batches(encode_batch([(None, b"x" * 5000, ())]), max_batch_bytes=1000)
    assert info.value.error_code == ErrorCode.message_too_large


def test_scan_batches_stops_at_a_torn_tail() -> None:
    one = encode_batch(RECORDS)
    data = one + one + one[:30]
    headers, valid = scan_batches(data)
    assert len(headers) == 2 and valid == 2 * len(one)


def test_log_append_time_rewrites_the_crc() -> None:
    data = bytearray(encode_batch(RECORDS, timestamp_ms=5))
    set_log_append_time(data, 1_800_000_000_000)
    (h,) = parse_batches(bytes(data))
    assert h.timestamp_type == 1 and h.max_timestamp == 1_800_000_000_000
    assert crc32c.crc32c(bytes(data[21:])) == h.crc


def test_request_framing_round_trip_and_truncation() -> None:
    body = build(framing.request_type(3, 12), topics=[{"name": "t"}], allow_auto_topic_creation=True)
    frame = framing.encode_request(3, 12, 99, body)
    header, parsed = framing.decode_request(frame[4:])
    assert header.correlation_id == 99 and parsed.topics[0].name == "t"
    with pytest.raises(framing.FrameError):
        framing.decode_request(frame[4:14])


def test_response_builder_fills_defaults_and_drops_unknown_fields() -> None:
    resp = build(framing.response_type(0, 3), responses=[{"name": "t", "partition_responses": [
        {"index": 0, "error_code": 0, "base_offset": 5, "record_errors": [], "not_in_v3": 1}]}])
    cid, back = framing.decode_response(framing.encode_response(1, resp)[4:], 0, 3)
    part = back.responses[0].partition_responses[0]
    assert cid == 1 and part.base_offset == 5 and part.error_code == ErrorCode.none
