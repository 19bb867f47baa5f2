"""ListOffsets: earliest (-2), latest (-1), or the first offset at a timestamp."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext

LATEST = -1
EARLIEST = -2
READ_COMMITTED = 1


async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    read_committed = getattr(request, "isolation_level", 0) == READ_COMMITTED
    topics = []
    for topic in request.topics:
        authorized = ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, topic.name)
        partitions = []
        for p in topic.partitions:
            entry: dict[str, Any] = {"partition_index": p.partition_index, "timestamp": -1, "offset": -1, "leader_epoch": -1}
            plog = broker.partition_log(topic.name, p.partition_index)
            if not authorized:
                error: ErrorCode | None = ErrorCode.topic_authorization_failed
            elif plog is None:
                error = ErrorCode.unknown_topic_or_partition
            else:
                error = broker.check_leader(topic.name, p.partition_index)
            if error is not None:
                entry["error_code"] = error
                partitions.append(entry)
                continue
            assert plog is not None
            entry["error_code"] = ErrorCode.none
            entry["leader_epoch"] = broker.leader_epoch(topic.name, p.partition_index)
            if p.timestamp == LATEST:
                entry["offset"] = broker.last_stable_offset(plog) if read_committed else plog.high_watermark
            elif p.timestamp == EARLIEST:
                entry["offset"] = plog.log_start_offset
            elif p.timestamp < 0:
                entry["error_code"] = ErrorCode.unsupported_version
            else:
                found = plog.offset_for_timestamp(p.timestamp)
                if found is not None and found[0] < plog.high_watermark:
                    entry["offset"], entry["timestamp"] = found
            partitions.append(entry)
        topics.append({"name": topic.name, "partitions": partitions})
    return ctx.respond(topics=topics)
