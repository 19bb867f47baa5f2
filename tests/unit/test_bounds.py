"""Length bombs in every field kind and header version never reach kio's allocator.

A frame whose length prefix is larger than the bytes present must raise FrameError
(the broker closes the connection); before the checks, these frames made kio's
native reader ask for gigabytes and abort the test process itself.
"""

from __future__ import annotations

import dataclasses
import datetime
import struct

import pytest

from odradek.protocol.bounds import BoundsError, check_entity, read_uvarint, uvarint_bytes
from odradek.protocol.build import build
from odradek.protocol.framing import FrameError, decode_request, encode_request, request_type
from odradek.protocol.writer import encode

uvarint = uvarint_bytes


def header(api_key: int, version: int, *, flexible: bool, client_id: bytes = b"c") -> bytes:
    head = struct.pack(">hhih", api_key, version, 1, len(client_id)) + client_id
    return head + (b"\0" if flexible else b"")


def refused(frame: bytes, fragment: str = "") -> str:
    with pytest.raises(FrameError) as info:
        decode_request(frame)
    assert fragment in str(info.value)
    return str(info.value)


def test_the_29_byte_metadata_v12_frame_is_refused_not_allocated() -> None:
    frame = header(3, 12, flexible=True) + uvarint(0xFFFFFFF0 >> 4) + b"\x01\0\0"
    assert "array of" in refused(frame)


def test_legacy_array_count_larger_than_the_frame() -> None:
    frame = header(3, 1, flexible=False) + struct.pack(">i", 2**31 - 1)
    refused(frame, "array of 2147483647 elements")


def test_legacy_array_count_below_minus_one() -> None:
    refused(header(3, 1, flexible=False) + struct.pack(">i", -2), "array length -2")


def test_compact_array_in_a_nested_struct() -> None:
    # Produce v9: transactional_id null, acks, timeout, one topic "t" whose partition array lies.
    body = b"\0" + struct.pack(">hi", 1, 1000) + uvarint(2) + uvarint(2) + b"t" + uvarint(2**32 - 1)
    refused(header(0, 9, flexible=True) + body, "array of")


def test_legacy_string_longer_than_the_frame() -> None:
    # CreateTopics v2: one topic whose name claims 32767 bytes.
    body = struct.pack(">i", 1) + struct.pack(">h", 32767) + b"abc" + b"\0" * 20
    refused(header(19, 2, flexible=False) + body, "past the end")


def test_compact_string_longer_than_the_frame() -> None:
    body = uvarint(2) + b"\0" * 16 + uvarint(2**31) + b"x"  # topic id, then name
    refused(header(3, 12, flexible=True) + body, "past the end")


def test_legacy_records_longer_than_the_frame() -> None:
    body = struct.pack(">hhi", -1, 1, 1000) + struct.pack(">i", 1) + struct.pack(">h", 1) + b"t"
    body += struct.pack(">i", 1) + struct.pack(">i", 0) + struct.pack(">i", 2**31 - 1) + b"\0" * 8
    refused(header(0, 3, flexible=False) + body, "past the end")


def test_compact_records_longer_than_the_frame() -> None:
    body = b"\0" + struct.pack(">hi", 1, 1000) + uvarint(2) + uvarint(2) + b"t"
    body += uvarint(2) + struct.pack(">i", 0) + uvarint(2**32 - 1) + b"\0\0"
    refused(header(0, 9, flexible=True) + body, "past the end")


def test_client_id_of_the_header_in_both_header_versions() -> None:
    for api_key, version, flexible in ((3, 1, False), (3, 12, True)):
        frame = struct.pack(">hhih", api_key, version, 1, 30000) + b"abc"
        refused(frame, "past the end")


def test_the_client_id_as_the_header_carries_it() -> None:
    # the usual header is read on a short path (framing._plain_header): it must give what kio's
    # reader gives, and leave whatever it does not read to the generic path and its errors
    heartbeat = build(request_type(12, 4), group_id="g", generation_id=1, member_id="m", group_instance_id=None)
    body = encode(heartbeat)
    for client_id, expected in ((b"c", "c"), (b"", ""), ("d\u00e9j\u00e0".encode(), "d\u00e9j\u00e0")):
        got, request = decode_request(header(12, 4, flexible=True, client_id=client_id) + body)
        assert (got.client_id, got.correlation_id, request.member_id) == (expected, 1, "m")
    null = struct.pack(">hhih", 12, 4, 7, -1) + b"\0" + body
    assert decode_request(null)[0].client_id is None
    tagged = struct.pack(">hhih", 12, 4, 7, 1) + b"c" + uvarint(1) + uvarint(3) + uvarint(1) + b"h" + body
    assert decode_request(tagged)[0].client_id == "c"
    refused(header(12, 4, flexible=True, client_id=b"\xff\xfe") + body, "cannot parse")
    refused(struct.pack(">hhih", 12, 4, 7, -2) + b"\0" + body, "string length -2")
    refused(struct.pack(">hhi", 12, 4, 7) + b"\0", "past the end")


def test_tagged_fields_of_the_v2_header() -> None:
    frame = struct.pack(">hhih", 3, 12, 1, 1) + b"c" + uvarint(2**28)  # count
    refused(frame, "tagged fields")
    frame = struct.pack(">hhih", 3, 12, 1, 1) + b"c" + uvarint(1) + uvarint(5) + uvarint(2**30) + b"xx"
    refused(frame, "past the end")


def test_unknown_tagged_fields_are_skipped_when_they_fit() -> None:
    # KIP-482: a newer client's tags are ignored. Metadata v12 with one topic whose struct
    # carries unknown tag 7, null topics' sibling fields, and unknown tags 9 and 11 in the
    # body and 3 in the header.
    head = struct.pack(">hhih", 3, 12, 1, 1) + b"c" + uvarint(1) + uvarint(3) + uvarint(1) + b"h"
    topic = b"\0" * 16 + uvarint(2) + b"t" + uvarint(1) + uvarint(7) + uvarint(2) + b"zz"
    tags = uvarint(2) + uvarint(9) + uvarint(3) + b"abc" + uvarint(11) + uvarint(0)
    header_out, body = decode_request(head + uvarint(2) + topic + b"\x01\0" + tags)
    assert header_out.client_id == "c"
    assert [t.name for t in body.topics] == ["t"]
    assert body.allow_auto_topic_creation is True
    bad = header(3, 12, flexible=True) + b"\0" + b"\x01\0" + uvarint(1) + uvarint(9) + uvarint(4000) + b"abc"
    refused(bad, "past the end")


def test_null_in_a_non_nullable_array_is_refused() -> None:
    body = struct.pack(">hhi", -1, 1, 1000) + struct.pack(">i", -1)  # Produce v3 topic_data null
    refused(header(0, 3, flexible=False) + body, "non-nullable array")


def test_varint_longer_than_five_bytes() -> None:
    with pytest.raises(BoundsError):
        read_uvarint(b"\x80\x80\x80\x80\x80\x01", 0, 6)
    assert read_uvarint(b"\xff\xff\xff\xff\x0f", 0, 5) == (2**32 - 1, 5)


def test_every_truncation_of_a_real_request_is_refused_or_parsed() -> None:
    cls = request_type(0, 9)
    body = build(cls, acks=1, timeout=1000, topic_data=[
        {"name": "t", "partition_data": [{"index": 0, "records": b"x" * 40}]},
    ])
    frame = encode_request(0, 9, 5, body)[4:]
    assert decode_request(frame)[1] == body
    for cut in range(8, len(frame)):
        with pytest.raises(FrameError):
            decode_request(frame[:cut])


def test_every_routed_request_type_has_a_walker() -> None:
    from odradek.server.handlers import ROUTES

    for api_key, route in ROUTES.items():
        for version in range(route.min_version, route.max_version + 1):
            cls = request_type(api_key, version)
            if not dataclasses.fields(cls):
                continue  # ApiVersions v0-2 and ListGroups v0-2 have no fields
            with pytest.raises(BoundsError):
                check_entity(cls, b"", 0)  # every request has at least one field


def test_a_request_with_more_array_elements_than_the_bound_is_refused() -> None:
    # OffsetFetch v1: one group, one topic with 200,001 partitions (4 bytes each): the
    # event loop would serve nobody else while a handler walked them.
    from odradek.protocol.bounds import MAX_REQUEST_ELEMENTS

    n = MAX_REQUEST_ELEMENTS + 1
    body = struct.pack(">h", 1) + b"g" + struct.pack(">i", 1) + struct.pack(">h", 1) + b"t"
    body += struct.pack(">i", n) + struct.pack(">i", 0) * n
    refused(header(9, 1, flexible=False) + body, f"more than {MAX_REQUEST_ELEMENTS} array elements")
    ok = struct.pack(">h", 1) + b"g" + struct.pack(">i", 1) + struct.pack(">h", 1) + b"t"
    ok += struct.pack(">i", 1000) + struct.pack(">i", 0) * 1000
    assert len(decode_request(header(9, 1, flexible=False) + ok)[1].topics[0].partition_indexes) == 1000


def test_an_int64_retention_time_beyond_timedelta_is_clamped_not_refused() -> None:
    # OffsetCommit v2's retention_time: Kafka takes any int64; kio's timedelta stops at
    # an int64 of microseconds, and the frame used to close the connection.
    from odradek.protocol.bounds import MAX_TIMEDELTA_MS

    body = struct.pack(">h", 1) + b"g" + struct.pack(">ih", -1, 0) + struct.pack(">q", 2**63 - 1)
    body += struct.pack(">i", 1) + struct.pack(">h", 1) + b"t" + struct.pack(">i", 1)
    body += struct.pack(">iqh", 0, 5, 0)
    _, request = decode_request(header(8, 2, flexible=False) + body)
    assert request.retention_time // datetime.timedelta(milliseconds=1) == MAX_TIMEDELTA_MS


def test_a_minus_one_timestamp_in_a_response_reads_as_the_epoch() -> None:
    # Kafka answers DescribeTransactions with transaction_start_time -1 for a transaction not
    # in progress; kio's datetime refused it, and `odradek txn describe` failed on real Kafka.
    from odradek.protocol.framing import decode_response, encode_response, response_type

    cls = response_type(65, 0)
    sentinel = datetime.datetime.fromtimestamp(123456789.012, tz=datetime.UTC)
    body = build(cls, throttle_time=0, transaction_states=[{
        "error_code": 0, "transactional_id": "t", "transaction_state": "Empty", "transaction_timeout": 60000,
        "transaction_start_time": sentinel, "producer_id": 5, "producer_epoch": 0, "topics": []}])
    frame = encode_response(9, body)[4:]
    frame = frame.replace(struct.pack(">q", 123456789012), struct.pack(">q", -1))
    _, decoded = decode_response(frame, 65, 0)
    start = decoded.transaction_states[0].transaction_start_time
    assert start == datetime.datetime.fromtimestamp(0, tz=datetime.UTC)
