"""Fetch: whole batches from the log, long-polled through the purgatory.

Kafka's rules kept here: the first batch of the response is returned whole even
when it is larger than the limits (KIP-74), max_bytes caps the response and
partition_max_bytes each partition; consumers read below the high watermark,
followers (replica_id >= 0) up to the log end; when fewer than min_bytes are
ready the request waits, up to max_wait, for an append to one of its partitions.

Versions (FetchRequest.json): v13 names topics by id (KIP-516, UNKNOWN_TOPIC_ID for
an unknown one), v15 moves the replica id into ReplicaState (KIP-903), v16 adds the
leader hints of KIP-951; v17's directory id (KIP-853) and v18's high watermark
(KIP-1166) serve KRaft's own replication, which odradek does not run, and are
ignored as Kafka's broker ignores them on partition fetches. The current leader
epoch a fetch carries (v9+) is checked as KIP-320 says. From v7 a fetch may run in a session
(KIP-227, server/fetch_sessions.py): incremental fetches send and get only what changed. From
v11 a consumer's rack_id may get a preferred read replica (KIP-392), and a follower serves it.

Records of file storage leave as file slices: the response frame is encoded by
kio around a placeholder, and the connection sends the slices with sendfile
(DESIGN.md, Fetch), so the records are never copied through Python.
"""

from __future__ import annotations

import bisect
import os
import struct
import time
import uuid
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.protocol import fetch_response
from odradek.protocol.bounds import uvarint_bytes
from odradek.protocol.build import ZERO_UUID, timedelta_to_ms
from odradek.protocol.framing import encode_response
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext
from odradek.server.fetch_sessions import (
    FINAL_EPOCH,
    INITIAL_EPOCH,
    SESSIONLESS,
    FetchSession,
    SessionError,
    SessionTopic,
    cache_for,
    has_records,
)
from odradek.server.handlers.metadata import current_leader
from odradek.storage.log import OffsetOutOfRangeError, PartitionLog
from odradek.storage.open_files import FileSlice

READ_COMMITTED = 1
NO_EPOCH = -1  # a fetch without a current leader epoch (before v9, or a client that has none)
CLIENT_METADATA_VERSION = 11  # KIP-392: rack_id; a follower may serve a consumer from here on
SESSIONS_VERSION = 7  # KIP-227
TOPIC_IDS_VERSION = 13  # KIP-516
REPLICA_STATE_VERSION = 15  # KIP-903
LEADER_HINTS_VERSION = 16  # KIP-951
# Below this a copy costs less than a duplicated descriptor and a drained socket buffer.
SENDFILE_MIN_BYTES = 64 * 1024
# Each slice holds a duplicated descriptor until sent: past this many in one response the records
# are copied (a fetch of 2,000 partitions must not take 2,000 descriptors beside the open segments)
MAX_SLICES = 128
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
            if seg.size - pos < SENDFILE_MIN_BYTES:  # a copy either way: one pread of the tail, walked in memory
                return seg.read(pos, limit, max_offset, min_one)
            return seg.read_slice(pos, limit, max_offset, min_one, SENDFILE_MIN_BYTES)
    return b""  # the offset fell in a gap (compaction) or at a segment's end


def _replica_id(request: Any, version: int) -> int:
    """The fetching follower's broker id, -1 for a consumer (KIP-903: in ReplicaState from v15)."""
    if version >= REPLICA_STATE_VERSION:
        return int(request.replica_state.replica_id)
    return int(request.replica_id)


def _resolve(ctx: RequestContext, request: Any) -> list[tuple[Any, str | None, uuid.UUID]]:
    """Each requested topic with its name and id: v13+ name topics by id (None for an unknown
    id, answered UNKNOWN_TOPIC_ID), earlier versions by name."""
    broker = ctx.broker
    resolved = []
    if ctx.version >= TOPIC_IDS_VERSION:
        for topic in request.topics:
            meta = broker.topic_by_id(topic.topic_id) if topic.topic_id is not None else None
            resolved.append((topic, meta.name if meta is not None else None, topic.topic_id or ZERO_UUID))
    else:
        known = broker.topics()
        for topic in request.topics:
            meta = known.get(topic.topic)
            resolved.append((topic, topic.topic, meta.topic_id if meta is not None else ZERO_UUID))
    return resolved


def _denied(ctx: RequestContext, names: set[str], is_follower: bool) -> set[str]:
    """The topics this fetch may not read (KafkaApis): a follower needs CLUSTER_ACTION on the
    cluster for all of them, a consumer READ on each topic."""
    if is_follower:
        return set() if ctx.authorized(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER) else names
    return {n for n in names if not ctx.authorized(AclOperation.READ, ResourceType.TOPIC, n)}


def _partition_error(ctx: RequestContext, name: str, p: Any, plog: Any, is_follower: bool) -> ErrorCode | None:
    """Kafka's ReplicaManager.getPartitionOrError and Partition.getLocalLog: a partition the
    metadata knows but this broker does not hold is NOT_LEADER_OR_FOLLOWER; a held one checks
    the client's current leader epoch first (KIP-320), then leadership."""
    broker = ctx.broker
    if plog is None:
        topic = broker.topics().get(name)
        known = topic is not None and 0 <= p.partition < topic.partitions
        return ErrorCode.not_leader_or_follower if known else ErrorCode.unknown_topic_or_partition
    client_epoch = getattr(p, "current_leader_epoch", NO_EPOCH)
    if client_epoch >= 0:  # FetchRequest.optionalEpoch: a negative epoch is none
        epoch = broker.leader_epoch(name, p.partition)
        if epoch > client_epoch:
            return ErrorCode.fenced_leader_epoch
        if epoch < client_epoch:
            return ErrorCode.unknown_leader_epoch
    # KIP-392: only followers and consumers without client metadata (before v11) need the leader
    return broker.check_fetch(name, p.partition, is_follower or ctx.version < CLIENT_METADATA_VERSION)


def _read_all(ctx: RequestContext, request: Any, resolved: list[tuple[Any, str | None, uuid.UUID]],
              slices: bool, denied: set[str], endpoints: dict[int, dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    broker = ctx.broker
    replica_id = _replica_id(request, ctx.version)
    is_follower = replica_id >= 0
    read_committed = getattr(request, "isolation_level", 0) == READ_COMMITTED
    leader_hints = ctx.version >= LEADER_HINTS_VERSION
    # KIP-392: the leader names a replica in the consumer's rack (replica.selector.class)
    select = getattr(broker, "preferred_read_replica", None)
    client_rack = getattr(request, "rack_id", None) if not is_follower and select is not None else None
    budget = request.max_bytes
    total = 0
    sliced = 0
    responses = []
    for topic, name, topic_id in resolved:
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
            plog = broker.partition_log(name, p.partition) if name is not None else None
            if name is None:
                error: ErrorCode | None = ErrorCode.unknown_topic_id
            elif name in denied:
                error = ErrorCode.topic_authorization_failed
            else:
                error = _partition_error(ctx, name, p, plog, is_follower)
            if error is not None:
                entry["error_code"] = error
                if leader_hints and error in (ErrorCode.not_leader_or_follower, ErrorCode.fenced_leader_epoch):
                    assert name is not None
                    entry["current_leader"] = current_leader(ctx, name, p.partition, endpoints)
                partitions.append(entry)
                continue
            assert plog is not None and name is not None
            quota = None
            if is_follower:
                broker.on_follower_fetch(plog, replica_id, p.fetch_offset)
                throttle = getattr(broker, "leader_throttle", None)  # cluster mode: KIP-73 replication quota
                quota = throttle(plog, replica_id) if throttle is not None else None
            hw = plog.high_watermark
            lso = broker.last_stable_offset(plog)
            entry.update(high_watermark=hw, last_stable_offset=lso, log_start_offset=plog.log_start_offset)
            if client_rack and select is not None:
                preferred = select(plog, p.fetch_offset, client_rack)
                if preferred >= 0:  # ReplicaManager.readFromLog: no records, the consumer goes there
                    entry.update(error_code=ErrorCode.none, preferred_read_replica=preferred)
                    partitions.append(entry)
                    continue
            if read_committed:
                entry["aborted_transactions"] = broker.aborted_transactions(plog, p.fetch_offset, lso)
            limit = min(p.partition_max_bytes, budget - total) if budget > total else 0
            max_offset = None if is_follower else (lso if read_committed else hw)
            if quota is not None and quota.exceeded():
                limit = -1  # Kafka's shouldLeaderThrottle: nothing for this replica until the quota refills
            try:
                data = _read(plog, p.fetch_offset, limit, max_offset, total == 0,
                             slices and sliced < MAX_SLICES) if (limit > 0 or (total == 0 and limit == 0)) else b""
            except OffsetOutOfRangeError:
                entry["error_code"] = ErrorCode.offset_out_of_range
                partitions.append(entry)
                continue
            entry["error_code"] = ErrorCode.none
            entry["records"] = data
            if isinstance(data, FileSlice):
                sliced += 1
            if quota is not None and data:
                quota.record(len(data))
            if data:
                broker.metrics.bytes_out.labels(name).inc(len(data))
            total += len(data)
            partitions.append(entry)
        responses.append({"topic": name or "", "topic_id": topic_id, "partitions": partitions})
    return responses, total


def _session(ctx: RequestContext, request: Any, is_follower: bool) -> tuple[FetchSession | None, bool]:
    """KIP-227, Kafka's FetchManager.newContext: (the session, whether this fetch is incremental).
    Epoch -1 closes a session and fetches without one, epoch 0 (re)starts one with the request's
    partitions, a higher epoch updates the session with the partitions sent and the forgotten
    ones. Raises SessionError for an unknown session or an epoch out of turn."""
    cache = cache_for(ctx.broker)
    session_id, epoch = request.session_id, request.session_epoch
    by_id = ctx.version >= TOPIC_IDS_VERSION
    if epoch in (FINAL_EPOCH, INITIAL_EPOCH):
        if session_id != SESSIONLESS:
            cache.remove(session_id)
        if epoch == FINAL_EPOCH or not request.topics:
            return None, False
        session = cache.create(privileged=is_follower)
        if session is None:  # no room: answered without a session, the client sends full fetches
            return None, False
        incremental = False
    else:
        session = cache.get(session_id, epoch)
        session.epoch = epoch + 1
        incremental = True
        for forgotten in request.forgotten_topics_data or ():
            session.forget(forgotten.topic_id if by_id else forgotten.topic, list(forgotten.partitions))
    for topic in request.topics:
        for p in topic.partitions:
            session.add(topic.topic_id if by_id else topic.topic, p)
    return session, incremental


def _session_resolved(ctx: RequestContext, session: FetchSession) -> list[tuple[Any, str | None, uuid.UUID]]:
    """The session's partitions, shaped as _resolve's answer."""
    broker = ctx.broker
    resolved: list[tuple[Any, str | None, uuid.UUID]] = []
    known = broker.topics()
    for key, partitions in session.topics():
        if isinstance(key, uuid.UUID):
            meta = broker.topic_by_id(key)
            resolved.append((SessionTopic(meta.name if meta else "", key, partitions),
                             meta.name if meta is not None else None, key))
        else:
            meta = known.get(key)
            resolved.append((SessionTopic(key, None, partitions), key,
                             meta.topic_id if meta is not None else ZERO_UUID))
    return resolved


def _answer_session(session: FetchSession, incremental: bool, resolved: list[tuple[Any, str | None, uuid.UUID]],
                    responses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Record what this answer tells each partition; an incremental answer keeps only the
    partitions with something new (CachedPartition.maybeUpdateResponseData)."""
    out = []
    answered = []
    for (topic, _, _), response in zip(resolved, responses, strict=True):
        kept = []
        for cached, entry in zip(topic.partitions, response["partitions"], strict=True):
            if cached.must_respond(entry) or not incremental:
                kept.append(entry)
            if has_records(entry):
                answered.append((topic.topic_id or topic.topic, cached.partition))
        if kept:
            out.append({**response, "partitions": kept})
    session.rotate(answered)
    return out


async def handle(ctx: RequestContext, request: Any) -> Any:
    is_follower = _replica_id(request, ctx.version) >= 0
    session, incremental = None, False
    if ctx.version >= SESSIONS_VERSION:
        try:
            session, incremental = _session(ctx, request, is_follower)
        except SessionError as exc:  # the client starts over with a full fetch
            return ctx.respond(error_code=exc.code, session_id=SESSIONLESS, responses=[])
    session_id = session.session_id if session is not None else SESSIONLESS
    deadline = time.monotonic() + timedelta_to_ms(request.max_wait) / 1000.0
    # Fault injection rewrites the response entity, so it gets the records as bytes.
    slices = ctx.connection is not None and ctx.broker.faults is None
    resolved = _session_resolved(ctx, session) if session is not None else _resolve(ctx, request)
    names = {name for _, name, _ in resolved if name is not None}
    denied = _denied(ctx, names, is_follower) if ctx.broker.authorizer is not None else set()
    endpoints: dict[int, dict[str, Any]] = {}
    responses, total = _read_all(ctx, request, resolved, slices, denied, endpoints)
    watched = [(name, p.partition) for topic, name, _ in resolved if name is not None for p in topic.partitions]
    while total < request.min_bytes and watched:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or any(  # an error or a preferred read replica answers at once (KIP-392)
            p["error_code"] != ErrorCode.none or p["preferred_read_replica"] >= 0
            for t in responses for p in t["partitions"]
        ):
            break
        await ctx.broker.purgatory.wait(watched, remaining)
        if ctx.connection is not None and ctx.connection.is_closed:
            return None
        endpoints.clear()
        responses, total = _read_all(ctx, request, resolved, slices, denied, endpoints)
    if session is not None:
        responses = _answer_session(session, incremental, resolved, responses)
    found = [p for t in responses for p in t["partitions"] if isinstance(p["records"], FileSlice)]
    if not found:
        if not endpoints and ctx.broker.faults is None:  # injected faults rewrite the response entity
            body = fetch_response.encode_body(ctx.version, ErrorCode.none, session_id, responses)
            if body is not None:
                return body
        return ctx.respond(error_code=ErrorCode.none, session_id=session_id, responses=responses,
                           node_endpoints=list(endpoints.values()))
    assert ctx.connection is not None
    parts = _frame_around_slices(ctx, responses, found, list(endpoints.values()), session_id)
    await ctx.connection.send_parts(parts)
    return None  # already sent, in order: the connection handles one request at a time


def _frame_around_slices(ctx: RequestContext, responses: list[dict[str, Any]], found: list[dict[str, Any]],
                         node_endpoints: list[dict[str, Any]], session_id: int) -> list[bytes | FileSlice]:
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
    response = ctx.respond(error_code=ErrorCode.none, session_id=session_id, responses=responses,
                           node_endpoints=node_endpoints)
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
