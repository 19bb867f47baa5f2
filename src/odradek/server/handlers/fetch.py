"""Fetch: whole batches from the log, long-polled through the purgatory.

Kafka's rules kept here: the first batch of the response is returned whole even
when it is larger than the limits (KIP-74), max_bytes caps the response and
partition_max_bytes each partition; consumers read below the high watermark,
followers (replica_id >= 0) up to the log end; when fewer than min_bytes are
ready the request waits, up to max_wait, for an append to one of its partitions.

Records of file storage leave as file slices: the response frame is encoded by
kio around a placeholder, and the connection sends the slices with sendfile
(DESIGN.md, Fetch), so the records are never copied through Python.
"""

from __future__ import annotations

import bisect
import os
import struct
import time
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.protocol.bounds import uvarint_bytes
from odradek.protocol.build import timedelta_to_ms
from odradek.protocol.framing import encode_response
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext
from odradek.storage.log import OffsetOutOfRangeError, PartitionLog
from odradek.storage.segment import FileSlice

READ_COMMITTED = 1
# Below this a copy costs less than a duplicated descriptor and a drained socket buffer.
SENDFILE_MIN_BYTES = 64 * 1024
_INT32 = struct.Struct(">i")


def _read(plog: Any, offset: int, limit: int, max_offset: int | None, min_one: bool,
          slices: bool) -> bytes | FileSlice:
    """PartitionLog.read's rules; a file log answers with a FileSlice when `slices`."""
    if not slices or not isinstance(plog, PartitionLog):
        return plog.read(offset, limit, max_offset=max_offset, min_one=min_one)  # type: ignore[no-any-return]
    if offset < plog.log_start_offset or offset > plog.log_end_offset:
        raise OffsetOutOfRangeError(f"offset {offset} is outside [{plog.log_start_offset}, {plog.log_end_offset}]")
    if offset == plog.log_end_offset or (max_offset is not None and offset >= max_offset):
        return b""
    segments = plog.segments
    i = max(bisect.bisect_right(segments, offset, key=lambda s: s.base_offset) - 1, 0)
    for seg in segments[i:]:
        pos = seg.position_of(offset)
        if pos is not None:
            return seg.read_slice(pos, limit, max_offset, min_one, SENDFILE_MIN_BYTES)
    return b""  # the offset fell in a gap (compaction) or at a segment's end


def _is_follower(request: Any) -> bool:
    return request.replica_id >= 0 if hasattr(request, "replica_id") else False


def _denied(ctx: RequestContext, request: Any) -> set[str]:
    """The topics this fetch may not read (KafkaApis): a follower needs CLUSTER_ACTION on the
    cluster for all of them, a consumer READ on each topic."""
    names = {t.topic for t in request.topics}
    if _is_follower(request):
        return set() if ctx.authorized(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER) else names
    return {n for n in names if not ctx.authorized(AclOperation.READ, ResourceType.TOPIC, n)}


def _read_all(ctx: RequestContext, request: Any, slices: bool,
              denied: set[str]) -> tuple[list[dict[str, Any]], int]:
    broker = ctx.broker
    is_follower = _is_follower(request)
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
            if name in denied:
                error: ErrorCode | None = ErrorCode.topic_authorization_failed
            elif plog is None:
                error = ErrorCode.unknown_topic_or_partition
            else:
                error = broker.check_fetch(name, p.partition, is_follower)
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
                data = _read(plog, p.fetch_offset, limit, max_offset, total == 0, slices) if (limit > 0 or total == 0) else b""
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
    # Fault injection rewrites the response entity, so it gets the records as bytes.
    slices = ctx.connection is not None and ctx.broker.faults is None
    denied = _denied(ctx, request) if ctx.broker.authorizer is not None else set()
    responses, total = _read_all(ctx, request, slices, denied)
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
        responses, total = _read_all(ctx, request, slices, denied)
    found = [p for t in responses for p in t["partitions"] if isinstance(p["records"], FileSlice)]
    if not found:
        return ctx.respond(error_code=ErrorCode.none, session_id=0, responses=responses)
    assert ctx.connection is not None
    parts = _frame_around_slices(ctx, responses, found)
    await ctx.connection.send_parts(parts)
    return None  # already sent, in order: the connection handles one request at a time


def _frame_around_slices(ctx: RequestContext, responses: list[dict[str, Any]],
                         found: list[dict[str, Any]]) -> list[bytes | FileSlice]:
    """The response frame as bytes pieces and the file slices between them.

    kio encodes the response with a random 16-byte placeholder for each slice;
    each placeholder and its length prefix are then replaced by the slice's
    length prefix and the slice itself, and the frame's size is corrected.
    """
    slices: list[FileSlice] = []
    tokens: list[bytes] = []
    for p in found:
        slices.append(p["records"])
        tokens.append(os.urandom(16))
        p["records"] = tokens[-1]
    response = ctx.respond(error_code=ErrorCode.none, session_id=0, responses=responses)
    frame = encode_response(ctx.header.correlation_id, response)
    flexible = bool(response.__flexible__)
    placeholder_prefix = _length_prefix(16, flexible)
    parts: list[bytes | FileSlice] = []
    start = 4  # the size prefix is rewritten below
    size = len(frame) - 4
    for token, sl in zip(tokens, slices, strict=True):
        at = frame.index(token, start)
        before = at - len(placeholder_prefix)
        if frame[before:at] != placeholder_prefix:
            raise AssertionError("fetch response: a records placeholder is not where kio wrote it")
        prefix = _length_prefix(sl.size, flexible)
        parts.append(frame[start:before] + prefix)
        parts.append(sl)
        size += len(prefix) + sl.size - len(placeholder_prefix) - 16
        start = at + 16
    parts.append(frame[start:])
    parts[0] = _INT32.pack(size) + parts[0]  # type: ignore[operator]
    return parts


def _length_prefix(n: int, flexible: bool) -> bytes:
    """Kafka's length of nullable bytes: int32, or an unsigned varint of n + 1 (KIP-482)."""
    if not flexible:
        return _INT32.pack(n)
    return uvarint_bytes(n + 1)
