"""Fetch: whole batches from the log, long-polled through the purgatory.

Kafka's rules kept here: the first batch of the response is returned whole even
when it is larger than the limits (KIP-74), max_bytes caps the response and
partition_max_bytes each partition; consumers read below the high watermark,
followers (replica_id >= 0) up to the log end; when fewer than min_bytes are
ready the request waits, up to max_wait, for an append to one of its partitions.
"""

from __future__ import annotations

import time
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.protocol.build import timedelta_to_ms
from odradek.server.dispatcher import RequestContext
from odradek.storage.log import OffsetOutOfRangeError

READ_COMMITTED = 1


def _read_all(ctx: RequestContext, request: Any) -> tuple[list[dict[str, Any]], int]:
    broker = ctx.broker
    is_follower = request.replica_id >= 0 if hasattr(request, "replica_id") else False
    read_committed = getattr(request, "isolation_level", 0) == READ_COMMITTED
    budget = request.max_bytes
    total = 0
    responses = []
    for topic in request.topics:
        name = topic.topic
        partitions = []
        for p in topic.partitions:
            entry: dict[str, Any] = {
                "partition_index": p.partition,
                "high_watermark": -1,
                "last_stable_offset": -1,
                "log_start_offset": -1,
                "preferred_read_replica": -1,
                "records": b"",
            }
            plog = broker.partition_log(name, p.partition)
            error = ErrorCode.unknown_topic_or_partition if plog is None else broker.check_fetch(name, p.partition, is_follower)
            if error is not None:
                entry["error_code"] = error
                partitions.append(entry)
                continue
            assert plog is not None
            if is_follower:
                broker.on_follower_fetch(plog, request.replica_id, p.fetch_offset)
            hw = plog.high_watermark
            lso = broker.last_stable_offset(plog)
            entry.update(high_watermark=hw, last_stable_offset=lso, log_start_offset=plog.log_start_offset)
            if read_committed:
                entry["aborted_transactions"] = broker.aborted_transactions(plog, p.fetch_offset, lso)
            limit = min(p.partition_max_bytes, budget - total) if budget > total else 0
            max_offset = None if is_follower else (lso if read_committed else hw)
            try:
                data = plog.read(p.fetch_offset, limit, max_offset=max_offset, min_one=total == 0) if (limit > 0 or total == 0) else b""
            except OffsetOutOfRangeError:
                entry["error_code"] = ErrorCode.offset_out_of_range
                partitions.append(entry)
                continue
            entry["error_code"] = ErrorCode.none
            entry["records"] = data
            if data:
                broker.metrics.bytes_out.labels(name).inc(len(data))
            total += len(data)
            partitions.append(entry)
        responses.append({"topic": name, "partitions": partitions})
    return responses, total


async def handle(ctx: RequestContext, request: Any) -> Any:
    deadline = time.monotonic() + timedelta_to_ms(request.max_wait) / 1000.0
    responses, total = _read_all(ctx, request)
    watched = [(t.topic, p.partition) for t in request.topics for p in t.partitions]
    while total < request.min_bytes and watched:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or any(
            p["error_code"] != ErrorCode.none for t in responses for p in t["partitions"]
        ):
            break
        await ctx.broker.purgatory.wait(watched, remaining)
        if ctx.connection is not None and ctx.connection.is_closed:
            return None
        responses, total = _read_all(ctx, request)
    return ctx.respond(error_code=ErrorCode.none, session_id=0, responses=responses)
