"""OffsetForLeaderEpoch: where a leader epoch ends in the leader's log (KIP-101, KIP-279).

A follower that starts following asks, for its latest epoch, where that epoch
ends on the leader, and truncates its log there: records it holds beyond that
point were never committed. The answer is the start offset of the next higher
epoch, or the log end offset for the current epoch; for an epoch the leader
never saw, the largest epoch below it and that epoch's end.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext

# OffsetForLeaderEpochRequest.json: replica_id came in v3; before, its default (-2, a debugging
# client) applies, which reads like a consumer.
NO_REPLICA_ID = -2


async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    is_follower = getattr(request, "replica_id", NO_REPLICA_ID) >= 0
    # KIP-320: CLUSTER_ACTION on the cluster (followers), else DESCRIBE on each topic (consumers)
    replica = ctx.authorized(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER)
    topics = []
    for topic in request.topics:
        authorized = replica or ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, topic.topic)
        partitions = []
        for p in topic.partitions:
            entry: dict[str, Any] = {"partition": p.partition, "leader_epoch": -1, "end_offset": -1}
            plog = broker.partition_log(topic.topic, p.partition)
            if not authorized:
                error: ErrorCode | None = ErrorCode.topic_authorization_failed
            elif plog is None:
                error = ErrorCode.unknown_topic_or_partition
            else:
                error = broker.check_fetch(topic.topic, p.partition, is_follower)
            if error is None:
                assert plog is not None
                current = broker.leader_epoch(topic.topic, p.partition)
                if p.current_leader_epoch >= 0 and p.current_leader_epoch < current:
                    error = ErrorCode.fenced_leader_epoch
                elif p.current_leader_epoch > current:
                    error = ErrorCode.unknown_leader_epoch
                else:
                    epoch, end_offset = plog.end_offset_for_epoch(p.leader_epoch)
                    entry.update(leader_epoch=epoch, end_offset=end_offset)
            entry["error_code"] = error if error is not None else ErrorCode.none
            partitions.append(entry)
        topics.append({"topic": topic.topic, "partitions": partitions})
    return ctx.respond(throttle_time=0, topics=topics)
