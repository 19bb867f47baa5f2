"""DeleteRecords: move a partition's log start offset (the low watermark).

Kafka's rules: offset -1 means the high watermark; an offset beyond the high
watermark is OFFSET_OUT_OF_RANGE; the answer carries the new low watermark.
The log start offset is checkpointed at once so it survives a kill -9.
"""

from __future__ import annotations

import logging
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext

log = logging.getLogger("odradek.handlers")

HIGH_WATERMARK = -1


async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    topics = []
    moved = False
    for topic in request.topics:
        authorized = ctx.authorized(AclOperation.DELETE, ResourceType.TOPIC, topic.name)
        partitions = []
        for p in topic.partitions:
            entry: dict[str, Any] = {"partition_index": p.partition_index, "low_watermark": -1}
            plog = broker.partition_log(topic.name, p.partition_index)
            if not authorized:
                error: ErrorCode | None = ErrorCode.topic_authorization_failed
            elif plog is None:
                error = ErrorCode.unknown_topic_or_partition
            else:
                error = broker.check_leader(topic.name, p.partition_index)
            if error is None:
                assert plog is not None
                offset = plog.high_watermark if p.offset == HIGH_WATERMARK else p.offset
                if offset < 0 or offset > plog.high_watermark:
                    log.info("DeleteRecords %s-%d: offset %d is outside [0, %d]", topic.name,
                             p.partition_index, p.offset, plog.high_watermark)
                    error = ErrorCode.offset_out_of_range
                else:
                    before = plog.log_start_offset
                    plog.delete_records_before(offset)
                    moved = moved or plog.log_start_offset != before
                    entry["low_watermark"] = plog.log_start_offset
            entry["error_code"] = error if error is not None else ErrorCode.none
            partitions.append(entry)
        topics.append({"name": topic.name, "partitions": partitions})
    if moved:
        broker.logs.checkpoint()  # log-start-offset-checkpoint: durable before we answer
    return ctx.respond(throttle_time=0, topics=topics)
