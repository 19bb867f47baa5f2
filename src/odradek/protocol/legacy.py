"""Schemas of the pre-2.1 versions Kafka 4 dropped (KIP-896) and kio therefore lacks, sans I/O.

Sarama-based tools (Burrow, kafka_exporter, ...) still send them: Burrow 1.2.1 asks every
broker for its log end offsets with ListOffsets v0. They are written here in kio's own
shape (a frozen dataclass per struct, each field's Kafka type in its metadata), so the
one decode path serves them: bounds.check_entity checks every length against the bytes
present, kio's reader and writer do the rest, and `build` fills the responses. A
version whose layout equals a version kio has maps to kio's class.

ListOffsets v0 (the offsets before a time, up to max_num_offsets of them), OffsetCommit
v0-1, OffsetFetch v0 are served. Kafka before 4 kept v0 commits in ZooKeeper; odradek
keeps every commit in __consumer_offsets, so v0 and v1+ commits and fetches see each other. Produce v0-2 only parse, to be answered with
UNSUPPORTED_VERSION as Kafka 4 does (KAFKA-18659): their records are message format
v0/v1, which odradek does not store.
"""

# No `from __future__ import annotations`: kio reads the field types at runtime.

from dataclasses import dataclass, field
from typing import Any

from kio.schema.errors import ErrorCode
from kio.schema.offset_commit.v2.response import OffsetCommitResponse as OffsetCommitResponseV2
from kio.schema.offset_fetch.v1.request import OffsetFetchRequest as OffsetFetchRequestV1
from kio.schema.offset_fetch.v1.response import OffsetFetchResponse as OffsetFetchResponseV1
from kio.schema.request_header.v1.header import RequestHeader
from kio.schema.response_header.v0.header import ResponseHeader
from kio.static.constants import EntityType
from kio.static.primitive import Records, i16, i32, i64

PRODUCE_KEY = 0
LIST_OFFSETS_KEY = 2
OFFSET_COMMIT_KEY = 8
OFFSET_FETCH_KEY = 9


def _entity(kind: EntityType, api_key: int, version: int, *, response: bool = False) -> Any:
    """Class decorator: kio's class attributes, then a frozen keyword-only dataclass."""

    def wrap(cls: type) -> type:
        cls.__type__ = kind  # type: ignore[attr-defined]
        cls.__version__ = i16(version)  # type: ignore[attr-defined]
        cls.__flexible__ = False  # type: ignore[attr-defined]
        cls.__api_key__ = i16(api_key)  # type: ignore[attr-defined]
        cls.__header_schema__ = ResponseHeader if response else RequestHeader  # type: ignore[attr-defined]
        return dataclass(frozen=True, slots=True, kw_only=True)(cls)

    return wrap


def _f(kafka_type: str, **kw: Any) -> Any:
    return field(metadata={"kafka_type": kafka_type}, **kw)


# -- ListOffsets v0 -----------------------------------------------------------------


@_entity(EntityType.nested, LIST_OFFSETS_KEY, 0)
class ListOffsetsPartitionV0:
    partition_index: i32 = _f("int32")
    timestamp: i64 = _f("int64")
    max_num_offsets: i32 = _f("int32")


@_entity(EntityType.nested, LIST_OFFSETS_KEY, 0)
class ListOffsetsTopicV0:
    name: str = _f("string")
    partitions: tuple[ListOffsetsPartitionV0, ...]


@_entity(EntityType.request, LIST_OFFSETS_KEY, 0)
class ListOffsetsRequestV0:
    replica_id: i32 = _f("int32")
    topics: tuple[ListOffsetsTopicV0, ...]


@_entity(EntityType.nested, LIST_OFFSETS_KEY, 0, response=True)
class ListOffsetsPartitionResponseV0:
    partition_index: i32 = _f("int32")
    error_code: ErrorCode = _f("error_code")
    old_style_offsets: tuple[i64, ...] = _f("int64")


@_entity(EntityType.nested, LIST_OFFSETS_KEY, 0, response=True)
class ListOffsetsTopicResponseV0:
    name: str = _f("string")
    partitions: tuple[ListOffsetsPartitionResponseV0, ...]


@_entity(EntityType.response, LIST_OFFSETS_KEY, 0, response=True)
class ListOffsetsResponseV0:
    topics: tuple[ListOffsetsTopicResponseV0, ...]


# -- OffsetCommit v0 and v1 ------------------------------------------------------------


@_entity(EntityType.nested, OFFSET_COMMIT_KEY, 0)
class OffsetCommitPartitionV0:
    partition_index: i32 = _f("int32")
    committed_offset: i64 = _f("int64")
    committed_metadata: str | None = _f("string")


@_entity(EntityType.nested, OFFSET_COMMIT_KEY, 0)
class OffsetCommitTopicV0:
    name: str = _f("string")
    partitions: tuple[OffsetCommitPartitionV0, ...]


@_entity(EntityType.request, OFFSET_COMMIT_KEY, 0)
class OffsetCommitRequestV0:
    group_id: str = _f("string")
    topics: tuple[OffsetCommitTopicV0, ...]


@_entity(EntityType.nested, OFFSET_COMMIT_KEY, 1)
class OffsetCommitPartitionV1:
    partition_index: i32 = _f("int32")
    committed_offset: i64 = _f("int64")
    commit_timestamp: i64 = _f("int64")  # -1: the broker's time; Kafka 2.1+ ignores it otherwise too
    committed_metadata: str | None = _f("string")


@_entity(EntityType.nested, OFFSET_COMMIT_KEY, 1)
class OffsetCommitTopicV1:
    name: str = _f("string")
    partitions: tuple[OffsetCommitPartitionV1, ...]


@_entity(EntityType.request, OFFSET_COMMIT_KEY, 1)
class OffsetCommitRequestV1:
    group_id: str = _f("string")
    generation_id_or_member_epoch: i32 = _f("int32")
    member_id: str = _f("string")
    topics: tuple[OffsetCommitTopicV1, ...]


# -- Produce v0-2: parsed to be refused ----------------------------------------------------


@_entity(EntityType.nested, PRODUCE_KEY, 0)
class PartitionProduceDataV0:
    index: i32 = _f("int32")
    records: Records | None = _f("records")


@_entity(EntityType.nested, PRODUCE_KEY, 0)
class TopicProduceDataV0:
    name: str = _f("string")
    partition_data: tuple[PartitionProduceDataV0, ...]


@_entity(EntityType.request, PRODUCE_KEY, 0)
class ProduceRequestV0:
    acks: i16 = _f("int16")
    timeout_ms: i32 = _f("int32")
    topic_data: tuple[TopicProduceDataV0, ...]


@_entity(EntityType.nested, PRODUCE_KEY, 0, response=True)
class PartitionProduceResponseV0:
    index: i32 = _f("int32")
    error_code: ErrorCode = _f("error_code")
    base_offset: i64 = _f("int64")


@_entity(EntityType.nested, PRODUCE_KEY, 0, response=True)
class TopicProduceResponseV0:
    name: str = _f("string")
    partition_responses: tuple[PartitionProduceResponseV0, ...]


@_entity(EntityType.response, PRODUCE_KEY, 0, response=True)
class ProduceResponseV0:
    responses: tuple[TopicProduceResponseV0, ...]


@_entity(EntityType.response, PRODUCE_KEY, 1, response=True)
class ProduceResponseV1:
    responses: tuple[TopicProduceResponseV0, ...]
    throttle_time_ms: i32 = _f("int32")


@_entity(EntityType.nested, PRODUCE_KEY, 2, response=True)
class PartitionProduceResponseV2:
    index: i32 = _f("int32")
    error_code: ErrorCode = _f("error_code")
    base_offset: i64 = _f("int64")
    log_append_time_ms: i64 = _f("int64", default=i64(-1))


@_entity(EntityType.nested, PRODUCE_KEY, 2, response=True)
class TopicProduceResponseV2:
    name: str = _f("string")
    partition_responses: tuple[PartitionProduceResponseV2, ...]


@_entity(EntityType.response, PRODUCE_KEY, 2, response=True)
class ProduceResponseV2:
    responses: tuple[TopicProduceResponseV2, ...]
    throttle_time_ms: i32 = _f("int32")


# (api_key, version) -> (request class, response class)
SCHEMAS: dict[tuple[int, int], tuple[type[Any], type[Any]]] = {
    (LIST_OFFSETS_KEY, 0): (ListOffsetsRequestV0, ListOffsetsResponseV0),
    (OFFSET_COMMIT_KEY, 0): (OffsetCommitRequestV0, OffsetCommitResponseV2),  # responses as v2's
    (OFFSET_COMMIT_KEY, 1): (OffsetCommitRequestV1, OffsetCommitResponseV2),
    (OFFSET_FETCH_KEY, 0): (OffsetFetchRequestV1, OffsetFetchResponseV1),  # v0 is v1's layout
    (PRODUCE_KEY, 0): (ProduceRequestV0, ProduceResponseV0),
    (PRODUCE_KEY, 1): (ProduceRequestV0, ProduceResponseV1),
    (PRODUCE_KEY, 2): (ProduceRequestV0, ProduceResponseV2),
}

# Versions Kafka 4 parses only to answer UNSUPPORTED_VERSION (KAFKA-18659: librdkafka reads a
# broker's Produce v0 support as "speaks compression").
REFUSED: frozenset[tuple[int, int]] = frozenset({(PRODUCE_KEY, 0), (PRODUCE_KEY, 1), (PRODUCE_KEY, 2)})


def request_schema(api_key: int, api_version: int) -> type[Any] | None:
    entry = SCHEMAS.get((api_key, api_version))
    return entry[0] if entry is not None else None


def response_schema(api_key: int, api_version: int) -> type[Any] | None:
    entry = SCHEMAS.get((api_key, api_version))
    return entry[1] if entry is not None else None


def refused_produce_response(api_version: int, request: Any) -> Any:
    """The Produce v0-2 answer: every partition UNSUPPORTED_VERSION, offset -1."""
    from odradek.protocol.build import build

    cls = SCHEMAS[(PRODUCE_KEY, api_version)][1]
    return build(cls, responses=[
        {"name": t.name, "partition_responses": [
            {"index": p.index, "error_code": ErrorCode.unsupported_version, "base_offset": -1}
            for p in t.partition_data]}
        for t in request.topic_data
    ])
