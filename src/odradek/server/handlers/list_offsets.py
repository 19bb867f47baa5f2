"""ListOffsets: an offset for each partition by a timestamp or one of Kafka's specs.

The specs are negative timestamps, each with the first version that may carry it
(Kafka's ReplicaManager.timestampMinSupportedVersion): latest (-1) and earliest (-2)
from v1, max-timestamp (-3, KIP-734) from v7, earliest-local (-4, KIP-405) from v8,
latest-tiered (-5, KIP-1005) from v9, earliest-pending-upload (-6, KIP-1023) from v11.
odradek has no tiered storage, so it answers them as Kafka answers a topic without
remote storage: earliest-local is the log start offset, latest-tiered and
earliest-pending-upload are offset -1 with leader epoch -1. v10's timeout only bounds
remote lookups. v0 (pre-KIP-79, served for Sarama-based tools such as Burrow) lists
up to max_num_offsets segment boundaries before a time instead.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext
from odradek.storage.log import PartitionLog

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4
LATEST_TIERED = -5
EARLIEST_PENDING_UPLOAD = -6
SPEC_MIN_VERSION = {LATEST: 0, EARLIEST: 0, MAX_TIMESTAMP: 7, EARLIEST_LOCAL: 8, LATEST_TIERED: 9,
                    EARLIEST_PENDING_UPLOAD: 11}
READ_COMMITTED = 1
CONSUMER_REPLICA_ID = -1


def epoch_for_offset(plog: PartitionLog, offset: int) -> int:
    """The leader epoch that wrote `offset` (Kafka's LeaderEpochFileCache.epochForOffset), or -1."""
    found = -1
    for epoch, start in plog.epochs:
        if start > offset:
            break
        found = epoch
    return found


def max_timestamp(plog: PartitionLog) -> tuple[int, int, int] | None:
    """KIP-734: (offset, timestamp, leader epoch) of the first record with the largest timestamp."""
    largest = max((seg.max_timestamp for seg in plog.segments), default=-1)
    if largest < 0:
        return None
    found = plog.offset_for_timestamp(largest)
    if found is None:
        return None
    offset, timestamp = found
    return offset, timestamp, epoch_for_offset(plog, offset)


def _lookup(ctx: RequestContext, plog: PartitionLog, topic: str, partition: int, timestamp: int,
            last_fetchable: int) -> tuple[int, int, int]:
    """(offset, timestamp, leader epoch) for one spec or timestamp: Kafka's UnifiedLog.fetchOffsetByTimestamp
    and the filter of ReplicaManager.fetchOffset (nothing at or past the last fetchable offset)."""
    if timestamp == LATEST:
        return last_fetchable, -1, ctx.broker.leader_epoch(topic, partition)
    if timestamp in (EARLIEST, EARLIEST_LOCAL):
        first = plog.epochs[0] if plog.epochs else None
        epoch = first[0] if first is not None and first[1] <= plog.log_start_offset else -1
        return plog.log_start_offset, -1, epoch
    if timestamp in (LATEST_TIERED, EARLIEST_PENDING_UPLOAD):
        return -1, -1, -1
    if timestamp == MAX_TIMESTAMP:
        found = max_timestamp(plog)
    else:
        hit = plog.offset_for_timestamp(timestamp)
        found = None if hit is None else (hit[0], hit[1], epoch_for_offset(plog, hit[0]))
    if found is None or found[0] >= last_fetchable:
        return -1, -1, -1
    return found


def _legacy_offsets(plog: PartitionLog, timestamp: int, max_num_offsets: int, from_consumer: bool) -> list[int]:
    """ListOffsets v0: Kafka's UnifiedLog.legacyFetchOffsetsBefore, the segment base offsets (and
    the log end offset) whose segment was last written at or before `timestamp`, newest first."""
    now = time.time() * 1000
    boundaries = [(max(seg.base_offset, plog.log_start_offset), _last_modified_ms(seg, now)) for seg in plog.segments]
    if plog.segments[-1].size > 0:
        boundaries.append((plog.log_end_offset, now))
    if timestamp == LATEST:
        start = len(boundaries) - 1
    elif timestamp == EARLIEST:
        start = 0
    else:
        start = len(boundaries) - 1
        while start >= 0 and boundaries[start][1] > timestamp:
            start -= 1
    count = max(0, min(max_num_offsets, start + 1))
    offsets = sorted((boundaries[start - j][0] for j in range(count)), reverse=True)
    if from_consumer and any(o > plog.high_watermark for o in offsets):
        # Partition.legacyFetchOffsetsForTimestamp: a consumer sees nothing past the high watermark
        offsets = [plog.high_watermark] + [o for o in offsets if o <= plog.high_watermark]
    return offsets


def _last_modified_ms(seg: Any, now: float) -> float:
    """Kafka's LogSegment.lastModified: the segment file's mtime (now for an in-memory log)."""
    path = getattr(seg, "log_path", None)
    try:
        return float(path.stat().st_mtime * 1000) if path is not None else now
    except OSError:  # deleted meanwhile by retention
        return now


def _epoch_error(leader_epoch: int, current: int) -> ErrorCode | None:
    if current < 0:  # none given
        return None
    if current < leader_epoch:
        return ErrorCode.fenced_leader_epoch
    if current > leader_epoch:
        return ErrorCode.unknown_leader_epoch
    return None


async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    version = ctx.version
    from_consumer = request.replica_id == CONSUMER_REPLICA_ID
    read_committed = getattr(request, "isolation_level", 0) == READ_COMMITTED
    # ReplicaManager.fetchOffset: a partition asked for twice gets INVALID_REQUEST both times
    asked = Counter((t.name, p.partition_index) for t in request.topics for p in t.partitions)
    duplicates = {tp for tp, n in asked.items() if n > 1}
    topics = []
    for topic in request.topics:
        authorized = ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, topic.name)
        partitions = []
        for p in topic.partitions:
            entry: dict[str, Any] = {"partition_index": p.partition_index, "timestamp": -1, "offset": -1,
                                     "leader_epoch": -1, "old_style_offsets": []}
            plog = broker.partition_log(topic.name, p.partition_index)
            if not authorized:
                error: ErrorCode | None = ErrorCode.topic_authorization_failed
            elif (topic.name, p.partition_index) in duplicates:
                error = ErrorCode.invalid_request
            elif p.timestamp < 0 and version < SPEC_MIN_VERSION.get(p.timestamp, 1 << 15):
                error = ErrorCode.unsupported_version
            elif plog is None:
                error = ErrorCode.unknown_topic_or_partition
            else:
                # v4+: Partition.localLogWithEpochOrThrow checks the current leader epoch first (a
                # follower too: FENCED_LEADER_EPOCH tells a client its metadata is stale), then leadership
                error = _epoch_error(broker.leader_epoch(topic.name, p.partition_index),
                                     getattr(p, "current_leader_epoch", -1))
                if error is None:
                    error = broker.check_leader(topic.name, p.partition_index)
            entry["error_code"] = error if error is not None else ErrorCode.none
            if error is None:
                assert plog is not None
                if version == 0:
                    entry["old_style_offsets"] = _legacy_offsets(plog, p.timestamp, p.max_num_offsets, from_consumer)
                else:
                    if not from_consumer:
                        last_fetchable = plog.log_end_offset
                    elif read_committed:
                        last_fetchable = broker.last_stable_offset(plog)
                    else:
                        last_fetchable = plog.high_watermark
                    offset, timestamp, epoch = _lookup(ctx, plog, topic.name, p.partition_index, p.timestamp,
                                                       last_fetchable)
                    entry.update(offset=offset, timestamp=timestamp, leader_epoch=epoch if version >= 4 else -1)
            partitions.append(entry)
        topics.append({"name": topic.name, "partitions": partitions})
    return ctx.respond(topics=topics)
