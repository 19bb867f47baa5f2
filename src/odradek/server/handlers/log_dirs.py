"""DescribeLogDirs: this broker's log directory, each partition's size on disk, and the disk.

odradek has one log dir per broker (log.dirs with one entry). Kafka's fields: partition_size
is the log's bytes, offset_lag the high watermark minus the log end offset when positive
(ReplicaManager.getLogEndOffsetLag; 0 for a leader), is_future_key false (no
AlterReplicaLogDirs moves), total_bytes / usable_bytes (v4+, KIP-827) the disk's. Needs
DESCRIBE on the cluster (v3+ answers CLUSTER_AUTHORIZATION_FAILED, older ones nothing).
"""

from __future__ import annotations

import shutil
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext


async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.CLUSTER):
        return ctx.respond(throttle_time=0, error_code=ErrorCode.cluster_authorization_failed, results=[])
    wanted = None if request.topics is None else {t.topic: set(t.partitions) for t in request.topics}
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for plog in sorted(broker.logs.logs(), key=lambda pl: (pl.topic, pl.partition)):
        if wanted is not None and plog.partition not in wanted.get(plog.topic, ()):
            continue
        by_topic.setdefault(plog.topic, []).append({
            "partition_index": plog.partition,
            "partition_size": int(getattr(plog, "size_bytes", 0)),
            "offset_lag": max(0, plog.high_watermark - plog.log_end_offset),
            "is_future_key": False,
        })
    log_dir = str(broker.data_dir.resolve())
    try:
        usage = shutil.disk_usage(broker.data_dir)
        total, usable = usage.total, usage.free
    except OSError:
        total = usable = -1
    result = {"error_code": ErrorCode.none, "log_dir": log_dir, "total_bytes": total, "usable_bytes": usable,
              "topics": [{"name": name, "partitions": parts} for name, parts in by_topic.items()]}
    return ctx.respond(throttle_time=0, error_code=ErrorCode.none, results=[result])
