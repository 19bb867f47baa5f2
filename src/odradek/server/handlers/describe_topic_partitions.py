"""DescribeTopicPartitions (KIP-966): topics and their partitions, a page at a time.

What Kafka 4's AdminClient.describeTopics asks instead of Metadata. A response
holds at most response_partition_limit partitions (capped by Kafka's
max.request.partition.size.limit default, 2000); when a topic does not fit,
next_cursor names the topic and partition the next request starts from, and the
client sends the same request again with that cursor. Topics are answered in name
order, as Kafka's DescribeTopicPartitionsRequestHandler does. The eligible leader
replicas (ELR) of KIP-966 are empty: odradek elects leaders from the ISR only, as
Kafka does while eligible.leader.replicas.version is 0.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cluster.metadata import INTERNAL_TOPICS, TopicError, TopicMetadata, validate_topic_name
from odradek.protocol.build import ZERO_UUID
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext

# Kafka's max.request.partition.size.limit default: the most partitions one response holds
MAX_REQUEST_PARTITION_SIZE_LIMIT = 2000


def _partitions(ctx: RequestContext, topic: TopicMetadata, start: int, end: int) -> list[dict[str, Any]]:
    """KRaftMetadataCache.partitionMetadataForDescribeTopicResponse: no per-partition error; the
    leader is -1 while it is not alive."""
    partitions = []
    for index in range(start, end):
        state = ctx.broker.partition_state(topic.name, index)
        partitions.append({
            "error_code": ErrorCode.none,
            "partition_index": index,
            "leader_id": state.leader,
            "leader_epoch": state.leader_epoch,
            "replica_nodes": topic.replicas[index],
            "isr_nodes": state.isr,
            "eligible_leader_replicas": [],
            "last_known_elr": [],
            "offline_replicas": state.offline,
        })
    return partitions


def _topic(code: ErrorCode, name: str, topic: TopicMetadata | None = None,
           partitions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"error_code": code, "name": name, "topic_id": topic.topic_id if topic is not None else ZERO_UUID,
            "is_internal": name in INTERNAL_TOPICS if code != ErrorCode.topic_authorization_failed else False,
            "partitions": partitions or []}


def _invalid_request(ctx: RequestContext, request: Any) -> Any:
    """DescribeTopicPartitionsRequest.getErrorResponse: INVALID_REQUEST for every topic asked for."""
    return ctx.respond(topics=[{"error_code": ErrorCode.invalid_request, "name": t.name, "partitions": []}
                               for t in request.topics])


async def handle(ctx: RequestContext, request: Any) -> Any:
    known = ctx.broker.topics()
    cursor = request.cursor
    cursor_topic = cursor.topic_name if cursor is not None else ""
    describe_all = not request.topics
    if describe_all:
        names = {name for name in known if name >= cursor_topic}
    else:
        names = {t.name for t in request.topics if t.name >= cursor_topic}
        if cursor is not None and cursor.topic_name not in names:
            return _invalid_request(ctx, request)  # the cursor's topic must be one of those asked for
    if cursor is not None and cursor.partition_index < 0:
        return _invalid_request(ctx, request)
    # Topics the principal may not DESCRIBE are left out of "all topics" and, when named, answered
    # TOPIC_AUTHORIZATION_FAILED without their id, whether or not they exist.
    authorized: list[str] = []
    refused: list[dict[str, Any]] = []
    for name in names:
        if ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, name):
            authorized.append(name)
        elif not describe_all:
            refused.append(_topic(ErrorCode.topic_authorization_failed, name))
    remaining = max(min(MAX_REQUEST_PARTITION_SIZE_LIMIT, request.response_partition_limit), 1)
    topics: list[dict[str, Any]] = []
    next_cursor = None
    for name in sorted(authorized):
        if remaining == 0:  # the page ended with the previous topic's last partition
            next_cursor = {"topic_name": name, "partition_index": 0}
            break
        topic = known.get(name)
        if topic is None:
            if not describe_all:
                try:
                    validate_topic_name(name)
                    code = ErrorCode.unknown_topic_or_partition
                except TopicError:
                    code = ErrorCode.invalid_topic_exception
                topics.append(_topic(code, name))
            continue
        start = cursor.partition_index if cursor is not None and name == cursor_topic else 0
        end = min(topic.partitions, start + remaining)
        partitions = _partitions(ctx, topic, start, end)
        topics.append(_topic(ErrorCode.none, name, topic, partitions))
        if end < topic.partitions:
            next_cursor = {"topic_name": name, "partition_index": end}
            break
        remaining -= len(partitions)
    for entry in topics:
        entry["topic_authorized_operations"] = ctx.authorized_operations(ResourceType.TOPIC, entry["name"])
    return ctx.respond(topics=topics + refused, next_cursor=next_cursor)
