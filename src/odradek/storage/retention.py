"""Retention: delete whole closed segments past retention.ms or beyond retention.bytes.

As Kafka does, time retention looks at a segment's largest timestamp, and the
active segment is never deleted; the log start offset moves to the first
remaining segment.
"""

from __future__ import annotations

from odradek.storage.log import PartitionLog


def enforce_retention(log: PartitionLog, now_ms: int) -> int:
    if "delete" not in log.config.cleanup_policy.split(","):
        return 0
    deletable = 0
    closed = log.segments[:-1]
    retention_ms = log.config.retention_ms
    if retention_ms >= 0:
        for seg in closed:
            # an empty segment (all compacted away) holds nothing to keep
            if seg.size == 0 or (seg.max_timestamp >= 0 and now_ms - seg.max_timestamp > retention_ms):
                deletable += 1
            else:
                break
    retention_bytes = log.config.retention_bytes
    if retention_bytes >= 0:
        excess = log.size_bytes - retention_bytes
        count = 0
        for seg in closed:
            if excess - seg.size < 0:
                break
            excess -= seg.size
            count += 1
        deletable = max(deletable, count)
    # never past the high watermark: consumers must still be able to read what is unreplicated
    while deletable and log.segments[deletable].base_offset > log.high_watermark:
        deletable -= 1
    if not deletable:
        return 0
    new_start = log.segments[deletable].base_offset
    for _ in range(deletable):
        log.segments.pop(0).delete()
        log._bases.pop(0)
    log.log_start_offset = max(log.log_start_offset, new_start)
    return deletable
