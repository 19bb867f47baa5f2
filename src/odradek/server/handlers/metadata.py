"""Metadata: brokers, controller, topics and their partition leaders.

v10 adds topic ids, v12 looks topics up by id, v13 a top-level error code, set when
the whole request is refused (MetadataRequest.getErrorResponse).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cluster.metadata import TopicError, TopicMetadata, validate_topic_name
from odradek.protocol.build import ZERO_UUID
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext

# Kafka sends this when the client did not ask for authorized operations.
NO_AUTHORIZED_OPERATIONS = -(2**31)


def topic_entry(ctx: RequestContext, topic: TopicMetadata) -> dict[str, Any]:
    broker = ctx.broker
    partitions = []
    for index, replicas in enumerate(topic.replicas):
        state = broker.partition_state(topic.name, index)
        partitions.append(
            {
                "error_code": state.error,
                "partition_index": index,
                "leader_id": state.leader,
                "leader_epoch": state.leader_epoch,
                "replica_nodes": replicas,
                "isr_nodes": state.isr,
                "offline_replicas": state.offline,
            }
        )
    return {
        "error_code": ErrorCode.none,
        "name": topic.name,
        "topic_id": topic.topic_id,
        "is_internal": topic.internal,
        "partitions": partitions,
        "topic_authorized_operations": NO_AUTHORIZED_OPERATIONS,
    }


def current_leader(ctx: RequestContext, topic: str, partition: int,
                   endpoints: dict[int, dict[str, Any]]) -> dict[str, int]:
    """KIP-951 (KafkaApis.getCurrentLeader): the leader and epoch a client should turn to after
    NOT_LEADER_OR_FOLLOWER; the leader's address on the request's listener, when it is alive,
    joins `endpoints` (node id -> the response's NodeEndpoint)."""
    state = ctx.broker.partition_state(topic, partition)
    if state.leader >= 0 and state.leader not in endpoints:
        for node in ctx.broker.live_nodes():
            if node.node_id == state.leader:
                host, port = ctx.address(node)
                endpoints[node.node_id] = {"node_id": node.node_id, "host": host, "port": port, "rack": node.rack}
                break
    return {"leader_id": state.leader, "leader_epoch": state.leader_epoch}


def cluster_authorized_operations(ctx: RequestContext, include: bool) -> int:
    """KafkaApis: asked for, the cluster's KIP-430 bit field, 0 without DESCRIBE on the cluster
    (Metadata v8-10 and DescribeCluster; the request itself needs no permission)."""
    if not include:
        return NO_AUTHORIZED_OPERATIONS
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.CLUSTER):
        return 0
    return ctx.authorized_operations(ResourceType.CLUSTER)


def _error_entry(name: str | None, code: ErrorCode) -> dict[str, Any]:
    return {"error_code": code, "name": name, "partitions": [], "topic_authorized_operations": NO_AUTHORIZED_OPERATIONS}


def _invalid_request(ctx: RequestContext, requested: Any) -> Any:
    """Kafka's MetadataRequest.getErrorResponse: INVALID_REQUEST for every topic asked for
    (a null name as ""), no brokers, and from v13 the top-level error code."""
    return ctx.respond(brokers=[], cluster_id=None, controller_id=-1, error_code=ErrorCode.invalid_request, topics=[
        {"error_code": ErrorCode.invalid_request, "name": item.name or "", "topic_id": item.topic_id,
         "partitions": [], "topic_authorized_operations": NO_AUTHORIZED_OPERATIONS}
        for item in requested
    ], cluster_authorized_operations=NO_AUTHORIZED_OPERATIONS)


async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    known = broker.topics()
    requested = request.topics
    # KafkaApis: v10 and v11 carry topic ids and nullable names in the schema, but a null
    # name or a topic id is only answered from v12 on (INVALID_REQUEST before).
    if requested and 10 <= ctx.version < 12 and any(
        item.name is None or item.topic_id not in (None, ZERO_UUID) for item in requested
    ):
        return _invalid_request(ctx, requested)
    # KafkaApis: topics the principal may not DESCRIBE are left out of "all topics" and
    # answered TOPIC_AUTHORIZATION_FAILED when named (whether or not they exist); creating one
    # automatically also needs CREATE on the cluster or on the topic.
    def described(name: str) -> bool:
        return ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, name)

    if requested is None or (ctx.version == 0 and not requested):
        entries = [topic_entry(ctx, t) for t in known.values() if described(t.name)]
    else:
        allow_auto = getattr(request, "allow_auto_topic_creation", True)
        by_id = {t.topic_id: t for t in known.values()}
        entries = []
        for item in requested:
            name = item.name
            if name is None:
                topic = by_id.get(item.topic_id) if getattr(item, "topic_id", None) is not None else None
                if topic is None:
                    entries.append(_error_entry(None, ErrorCode.unknown_topic_id))
                elif not described(topic.name):  # the id is not secret, the name is
                    entries.append({**_error_entry(None, ErrorCode.topic_authorization_failed),
                                    "topic_id": topic.topic_id})
                else:
                    entries.append(topic_entry(ctx, topic))
                continue
            if not described(name):
                entries.append(_error_entry(name, ErrorCode.topic_authorization_failed))
                continue
            topic = known.get(name)
            if topic is None and allow_auto and broker.config.auto_create_topics_enable and not (
                    ctx.authorized(AclOperation.CREATE, ResourceType.CLUSTER)
                    or ctx.authorized(AclOperation.CREATE, ResourceType.TOPIC, name)):
                entries.append(_error_entry(name, ErrorCode.topic_authorization_failed))
                continue
            if topic is None:
                try:
                    validate_topic_name(name)
                except TopicError:
                    entries.append(_error_entry(name, ErrorCode.invalid_topic_exception))
                    continue
                topic = broker.auto_create(name) if allow_auto else None
            if topic is None:
                entries.append(_error_entry(name, ErrorCode.unknown_topic_or_partition))
            else:
                entries.append(topic_entry(ctx, topic))
    if ctx.version >= 8 and getattr(request, "include_topic_authorized_operations", False):
        for entry in entries:
            if entry["name"] and entry["error_code"] != ErrorCode.topic_authorization_failed:
                entry["topic_authorized_operations"] = ctx.authorized_operations(ResourceType.TOPIC, entry["name"])
    return ctx.respond(
        brokers=[
            {"node_id": n.node_id, "host": ctx.address(n)[0], "port": ctx.address(n)[1], "rack": n.rack}
            for n in broker.live_nodes()
        ],
        cluster_id=broker.cluster_id,
        controller_id=broker.controller_id(),
        topics=entries,
        cluster_authorized_operations=cluster_authorized_operations(
            ctx, 8 <= ctx.version <= 10 and getattr(request, "include_cluster_authorized_operations", False)),
    )
