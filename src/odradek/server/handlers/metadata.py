"""Metadata: brokers, controller, topics and their partition leaders."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cluster.metadata import TopicError, TopicMetadata, validate_topic_name
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


def _error_entry(name: str | None, code: ErrorCode) -> dict[str, Any]:
    return {"error_code": code, "name": name, "partitions": [], "topic_authorized_operations": NO_AUTHORIZED_OPERATIONS}


async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    known = broker.topics()
    requested = request.topics
    if requested is None or (ctx.version == 0 and not requested):
        entries = [topic_entry(ctx, t) for t in known.values()]
    else:
        allow_auto = getattr(request, "allow_auto_topic_creation", True)
        by_id = {t.topic_id: t for t in known.values()}
        entries = []
        for item in requested:
            name = item.name
            if name is None:
                topic = by_id.get(getattr(item, "topic_id", None))
                entries.append(topic_entry(ctx, topic) if topic else _error_entry(None, ErrorCode.unknown_topic_id))
                continue
            topic = known.get(name)
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
    return ctx.respond(
        brokers=[
            {"node_id": n.node_id, "host": n.host, "port": n.port, "rack": n.rack}
            for n in broker.live_nodes()
        ],
        cluster_id=broker.cluster_id,
        controller_id=broker.controller_id(),
        topics=entries,
        cluster_authorized_operations=NO_AUTHORIZED_OPERATIONS,
    )
