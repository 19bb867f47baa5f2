"""The pre-2.1 versions Kafka 4 dropped (KIP-896), byte for byte as Kafka 2.x wrote them.

protocol/legacy.py gives kio the schemas of ListOffsets v0, OffsetCommit v0-1, OffsetFetch
v0 and Produce v0-2; these tests build each frame by hand from the layouts in Kafka's
message JSON (the versions before "Version 1 removes MaxNumOffsets" etc.), decode it
through the broker's one decode path, and check the responses' bytes the same way.
Every length prefix is checked against the bytes present (bounds.py), so a short or
lying frame is refused before kio reads it.
"""

from __future__ import annotations

import io
import struct

import pytest
from kio.schema.errors import ErrorCode

from odradek.protocol import legacy
from odradek.protocol.build import build
from odradek.protocol.framing import (
    FrameError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    request_type,
    response_type,
)


def s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def frame(api_key: int, version: int, body: bytes, correlation_id: int = 7, client_id: str = "sarama") -> bytes:
    payload = struct.pack(">hhi", api_key, version, correlation_id) + s(client_id) + body
    return struct.pack(">i", len(payload)) + payload


def body_of(response_frame: bytes) -> bytes:
    """A response frame without its size and correlation id (header v0)."""
    (size,) = struct.unpack_from(">i", response_frame)
    assert size == len(response_frame) - 4
    return response_frame[8:]


LIST_OFFSETS_V0 = (
    struct.pack(">i", -1)  # replica_id: a consumer
    + struct.pack(">i", 1) + s("lagged")  # one topic
    + struct.pack(">i", 2)  # two partitions
    + struct.pack(">iqi", 0, -1, 1)  # partition 0: latest, one offset (Burrow's AddBlock)
    + struct.pack(">iqi", 1, -2, 3)  # partition 1: earliest, up to three
)


def test_list_offsets_v0_request_decodes_with_max_num_offsets() -> None:
    header, request = decode_request(frame(2, 0, LIST_OFFSETS_V0)[4:])
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == (2, 0, 7, "sarama")
    assert request.replica_id == -1
    (topic,) = request.topics
    assert topic.name == "lagged"
    assert [(p.partition_index, p.timestamp, p.max_num_offsets) for p in topic.partitions] == [(0, -1, 1), (1, -2, 3)]


def test_list_offsets_v0_response_is_an_array_of_old_style_offsets() -> None:
    response = build(response_type(2, 0), topics=[{"name": "lagged", "partitions": [
        {"partition_index": 0, "error_code": ErrorCode.none, "old_style_offsets": [10, 0]},
        {"partition_index": 1, "error_code": ErrorCode.not_leader_or_follower, "old_style_offsets": []},
    ]}])
    wire = encode_response(7, response)
    assert struct.unpack_from(">i", wire, 4) == (7,)
    assert body_of(wire) == (
        struct.pack(">i", 1) + s("lagged") + struct.pack(">i", 2)
        + struct.pack(">ihi", 0, 0, 2) + struct.pack(">qq", 10, 0)
        + struct.pack(">ihi", 1, 6, 0)
    )
    _, again = decode_response(wire[4:], 2, 0)
    assert again == response


def test_list_offsets_v0_request_round_trips_through_encode_request() -> None:
    body = build(request_type(2, 0), replica_id=-1, topics=[
        {"name": "lagged", "partitions": [{"partition_index": 0, "timestamp": -1, "max_num_offsets": 1},
                                          {"partition_index": 1, "timestamp": -2, "max_num_offsets": 3}]}])
    assert encode_request(2, 0, 7, body, client_id="sarama") == frame(2, 0, LIST_OFFSETS_V0)


def test_offset_commit_v0_has_no_generation_and_v1_a_timestamp_per_partition() -> None:
    v0 = s("group") + struct.pack(">i", 1) + s("lagged") + struct.pack(">i", 1) + struct.pack(">iq", 0, 42) + s("m")
    _, request = decode_request(frame(8, 0, v0)[4:])
    assert request.group_id == "group"
    ((partition,),) = [t.partitions for t in request.topics]
    assert (partition.partition_index, partition.committed_offset, partition.committed_metadata) == (0, 42, "m")
    assert not hasattr(request, "generation_id_or_member_epoch")

    v1 = (s("group") + struct.pack(">i", 3) + s("member-1") + struct.pack(">i", 1) + s("lagged")
          + struct.pack(">i", 1) + struct.pack(">iqq", 2, 43, -1) + struct.pack(">h", -1))  # null metadata
    _, request = decode_request(frame(8, 1, v1)[4:])
    assert (request.generation_id_or_member_epoch, request.member_id) == (3, "member-1")
    ((partition,),) = [t.partitions for t in request.topics]
    assert (partition.partition_index, partition.committed_offset, partition.commit_timestamp,
            partition.committed_metadata) == (2, 43, -1, None)


def test_offset_commit_v0_and_v1_answer_in_the_v2_layout() -> None:
    for version in (0, 1):
        response = build(response_type(8, version), topics=[
            {"name": "lagged", "partitions": [{"partition_index": 0, "error_code": ErrorCode.none}]}])
        assert body_of(encode_response(7, response)) == (
            struct.pack(">i", 1) + s("lagged") + struct.pack(">i", 1) + struct.pack(">ih", 0, 0))


def test_offset_fetch_v0_is_v1s_layout() -> None:
    v0 = s("group") + struct.pack(">i", 1) + s("lagged") + struct.pack(">iii", 2, 0, 1)
    _, request = decode_request(frame(9, 0, v0)[4:])
    assert request.group_id == "group"
    assert [(t.name, list(t.partition_indexes)) for t in request.topics] == [("lagged", [0, 1])]
    response = build(response_type(9, 0), topics=[{"name": "lagged", "partitions": [
        {"partition_index": 0, "committed_offset": 4, "metadata": "", "error_code": ErrorCode.none}]}])
    assert body_of(encode_response(7, response)) == (
        struct.pack(">i", 1) + s("lagged") + struct.pack(">i", 1) + struct.pack(">iq", 0, 4) + s("")
        + struct.pack(">h", 0))


@pytest.mark.parametrize("version", [0, 1, 2])
def test_produce_v0_to_v2_parse_and_are_refused_per_partition(version: int) -> None:
    records = b"\0" * 26  # a message set v0/v1 is never read: only its length matters
    body = (struct.pack(">hi", 1, 1500) + struct.pack(">i", 1) + s("t") + struct.pack(">i", 1)
            + struct.pack(">i", 0) + struct.pack(">i", len(records)) + records)
    _, request = decode_request(frame(0, version, body)[4:])
    assert (request.acks, request.timeout_ms) == (1, 1500)
    wire = encode_response(7, legacy.refused_produce_response(version, request))
    expected = struct.pack(">i", 1) + s("t") + struct.pack(">i", 1) + struct.pack(">ihq", 0, 35, -1)
    if version == 2:
        expected += struct.pack(">q", -1)  # log_append_time
    if version >= 1:
        expected += struct.pack(">i", 0)  # throttle_time_ms
    assert body_of(wire) == expected


@pytest.mark.parametrize(
    ("api_key", "version", "body"),
    [
        # topic count 1,000,000 in a frame of a few bytes
        (2, 0, struct.pack(">i", -1) + struct.pack(">i", 1_000_000)),
        # a topic name longer than the frame
        (2, 0, struct.pack(">i", -1) + struct.pack(">i", 1) + struct.pack(">h", 300) + b"abc"),
        # a partition cut in the middle of its timestamp
        (2, 0, struct.pack(">i", -1) + struct.pack(">i", 1) + s("t") + struct.pack(">i", 1) + struct.pack(">ih", 0, 0)),
        # null group id (not nullable)
        (8, 0, struct.pack(">h", -1) + struct.pack(">i", 0)),
        # metadata length -2
        (8, 1, s("g") + struct.pack(">i", 1) + s("m") + struct.pack(">i", 1) + s("t") + struct.pack(">i", 1)
         + struct.pack(">iqq", 0, 1, -1) + struct.pack(">h", -2)),
        # partition index array claiming 2^31-1 entries
        (9, 0, s("g") + struct.pack(">i", 1) + s("t") + struct.pack(">i", 2**31 - 1)),
        # Produce v0 records length beyond the frame
        (0, 0, struct.pack(">hi", 1, 0) + struct.pack(">i", 1) + s("t") + struct.pack(">i", 1)
         + struct.pack(">ii", 0, 1 << 30)),
    ],
    ids=["topic-count", "string-length", "truncated-partition", "null-group", "negative-length", "huge-array",
         "records-length"],
)
def test_lying_lengths_are_refused_before_kio_reads(api_key: int, version: int, body: bytes) -> None:
    with pytest.raises(FrameError):
        decode_request(frame(api_key, version, body)[4:])


def test_every_legacy_schema_round_trips_through_kio() -> None:
    from kio.serial import entity_reader, entity_writer

    for (api_key, version), (req, resp) in legacy.SCHEMAS.items():
        for cls in (req, resp):
            value = build(cls, {})
            buf = io.BytesIO()
            entity_writer(cls)(buf, value)
            decoded, end = entity_reader(cls)(buf.getvalue(), 0)
            assert decoded == value and end == len(buf.getvalue()), (api_key, version, cls.__name__)
        assert request_type(api_key, version) is req
        assert response_type(api_key, version) is resp
