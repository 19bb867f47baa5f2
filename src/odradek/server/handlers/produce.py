"""Produce: validate each partition's batches, append them, acknowledge per acks.

The records stay bytes end to end: parse_batches reads the 61-byte headers and
checks the CRC; the log rewrites only the base offset (DESIGN.md, the hot path).
Only a compacted topic's batches are decoded, to refuse records without a key.

Versions (ProduceRequest.json): v8 adds record_errors and error_message (KIP-467),
v10 the leader hints of KIP-951, v12 the implicit AddPartitionsToTxn of KIP-890
part 2, v13 topic ids instead of names (KIP-516).
"""

from __future__ import annotations

import logging
import struct
import uuid
import weakref
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cluster.metadata import TopicMetadata
from odradek.protocol.build import ZERO_UUID
from odradek.protocol.framing import EncodedBody
from odradek.protocol.records import (
    TRANSACTIONAL_BIT,
    BatchHeader,
    InvalidRecordError,
    keyless_records,
    parse_batches,
)
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.add_partitions_to_txn import verify_produce
from odradek.server.dispatcher import RequestContext
from odradek.server.handlers.metadata import current_leader

log = logging.getLogger("odradek.produce")

TOPIC_IDS_VERSION = 13  # KIP-516
LEADER_HINTS_VERSION = 10  # KIP-951


def _holds_a_whole_batch(records: bytes) -> bool:
    """Kafka's ProduceRequest.validateRecords: records without one whole batch (none, or the first
    cut short) are INVALID_RECORD; a length below a record's smallest (14) is left to parse_batches'
    CORRUPT_MESSAGE, as Kafka's batch iterator throws CorruptRecordException for it."""
    if len(records) < 12:
        return False
    length = int.from_bytes(records[8:12], "big", signed=True)
    return length < 14 or 12 + length <= len(records)


def _error(index: int, code: ErrorCode, message: str | None = None,
           record_errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"index": index, "error_code": code, "base_offset": -1, "log_start_offset": -1,
            "error_message": message, "record_errors": record_errors or []}


def _has_transactional_records(request: Any) -> bool:
    """Kafka's RequestUtils.hasTransactionalRecords: a partition's first batch is transactional
    (attributes at byte 21 of a v2 batch header)."""
    for topic_data in request.topic_data:
        for pdata in topic_data.partition_data:
            records = pdata.records
            if records and len(records) > 22 and records[16] == 2 and records[22] & TRANSACTIONAL_BIT:
                return True
    return False


def _refuse_all(ctx: RequestContext, request: Any, code: ErrorCode) -> Any:
    """Kafka's ProduceRequest.getErrorResponse: every partition answers `code`."""
    if request.acks == 0:
        return None
    return ctx.respond(responses=[
        {"name": getattr(t, "name", ""), "topic_id": getattr(t, "topic_id", ZERO_UUID),
         "partition_responses": [_error(p.index, code) for p in t.partition_data]}
        for t in request.topic_data
    ])


def _resolve(ctx: RequestContext, topic_data: Any,
             topics: dict[str, TopicMetadata]) -> tuple[str | None, uuid.UUID, TopicMetadata | None]:
    """(name, topic id, topic): v13 names a topic by id, a name the broker resolves
    (None for an unknown id: UNKNOWN_TOPIC_ID); before, by name."""
    if ctx.version >= TOPIC_IDS_VERSION:
        topic_id = topic_data.topic_id or ZERO_UUID
        topic = ctx.broker.topic_by_id(topic_id)
        return (topic.name if topic is not None else None), topic_id, topic
    topic = topics.get(topic_data.name)
    return topic_data.name, (topic.topic_id if topic is not None else ZERO_UUID), topic


# broker metrics -> topic -> its (bytes in, messages in) counter children: prometheus_client's
# labels() takes a lock and builds a key on every call, twice a partition of every Produce
_COUNTERS: weakref.WeakKeyDictionary[Any, dict[str, tuple[Any, Any]]] = weakref.WeakKeyDictionary()


def _topic_counters(broker: Any, name: str) -> tuple[Any, Any]:
    metrics = broker.metrics
    by_topic = _COUNTERS.get(metrics)
    if by_topic is None:
        by_topic = _COUNTERS[metrics] = {}
    counters = by_topic.get(name)
    if counters is None:
        if len(by_topic) > 10_000:  # deleted topics' children: start over
            by_topic.clear()
        counters = by_topic[name] = (metrics.bytes_in.labels(name), metrics.messages_in.labels(name))
    return counters


# Logs whose last append failed for storage (a full or read-only disk, an I/O error), until one
# succeeds. Kafka takes such a log dir offline and answers KAFKA_STORAGE_ERROR for all of its
# partitions; here the next append tries again (the space may be back), but a batch that follows
# one the disk refused is answered KAFKA_STORAGE_ERROR too, not OUT_OF_ORDER_SEQUENCE_NUMBER: to an
# idempotent producer the sequence gap means "bump the epoch and renumber what is unacknowledged"
# (librdkafka, KIP-360), and a batch of another partition that an old leader had written but not
# acknowledged is then sent again under new numbers: written twice (the fault campaign's disk-full
# during a leadership move). KAFKA_STORAGE_ERROR is retried with the same sequence numbers.
# Each log maps to its leader epoch at the failure: a later leadership starts afresh.
_UNWRITABLE: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _is_compacted(cleanup_policy: str) -> bool:
    return "compact" in (part.strip() for part in cleanup_policy.split(","))


def _refuse_keyless(name: str, index: int, records: bytes, batches: list[BatchHeader]) -> dict[str, Any] | None:
    """KIP-467, Kafka's LogValidator.validateKey: a compacted topic refuses a record without a
    key; the first batch holding one fails the partition with INVALID_RECORD, naming each such
    record by its index in that batch."""
    message = f"Compacted topic cannot accept message without key in topic partition {name}-{index}"
    for header in batches:
        missing = [] if header.is_control else keyless_records(records, header)
        if missing:
            shown = ", ".join(f"RecordError(batchIndex={i}, message='{message}')" for i in missing[:3])
            summary = (f"One or more records have been rejected due to {len(missing)} record errors in total, "
                       f"and only showing the first three errors at most: [{shown}]")
            return _error(index, ErrorCode.invalid_record, summary,
                          [{"batch_index": i, "batch_index_error_message": message} for i in missing])
    return None


async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    acks = request.acks
    # KafkaApis: transactional records need WRITE on their transactional id, else the whole
    # request fails; then every topic needs WRITE.
    if broker.authorizer is not None and _has_transactional_records(request):
        tid = request.transactional_id
        if tid is None or not ctx.authorized(AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, tid):
            return _refuse_all(ctx, request, ErrorCode.transactional_id_authorization_failed)
    topics = broker.topics()

    def writable(topic_data: Any) -> str | None:
        name = _resolve(ctx, topic_data, topics)[0]
        return name if name is not None and ctx.authorized(AclOperation.WRITE, ResourceType.TOPIC, name) else None

    # KIP-890: transactional batches are checked with their transaction coordinator (part 1: the
    # partition must be in the transaction) or, from v12 on (part 2), added to it, all at once
    txn_checks = await verify_produce(broker, request, ctx.version, writable)
    endpoints: dict[int, dict[str, Any]] = {}  # KIP-951: the leaders named in NOT_LEADER_OR_FOLLOWER answers
    responses = []
    for topic_data in request.topic_data:
        name, topic_id, topic = _resolve(ctx, topic_data, topics)
        authorized = name is not None and ctx.authorized(AclOperation.WRITE, ResourceType.TOPIC, name)
        partition_responses = []
        for pdata in topic_data.partition_data:
            index = pdata.index
            # KafkaApis.handleProduceRequest's order: unknown id, authorization, unknown
            # partition; then ReplicaManager: acks, leadership, validation, append.
            if name is None:
                partition_responses.append(_error(index, ErrorCode.unknown_topic_id))
                continue
            if not authorized:
                partition_responses.append(_error(index, ErrorCode.topic_authorization_failed))
                continue
            if topic is None or not 0 <= index < topic.partitions:
                partition_responses.append(_error(index, ErrorCode.unknown_topic_or_partition))
                continue
            if acks not in (0, 1, -1):
                partition_responses.append(_error(index, ErrorCode.invalid_required_acks))
                continue
            plog = broker.partition_log(name, index)
            not_leader = ErrorCode.not_leader_or_follower if plog is None else broker.check_leader(name, index)
            if not_leader is not None:
                entry = _error(index, not_leader)
                if not_leader == ErrorCode.not_leader_or_follower and ctx.version >= LEADER_HINTS_VERSION:
                    entry["current_leader"] = current_leader(ctx, name, index, endpoints)
                partition_responses.append(entry)
                continue
            assert plog is not None
            records = pdata.records or b""
            try:
                if not _holds_a_whole_batch(records):
                    raise InvalidRecordError(ErrorCode.invalid_record, "produce request carries no whole record batch")
                batches = parse_batches(records, max_batch_bytes=plog.config.max_message_bytes)
                refused = _refuse_keyless(name, index, records, batches) if _is_compacted(
                    plog.config.cleanup_policy) else None
            except InvalidRecordError as exc:
                log.warning("rejected produce to %s-%d from %s: %s", name, index, ctx.header.client_id, exc)
                partition_responses.append(_error(index, exc.error_code, str(exc)))
                continue
            if refused is not None:
                log.info("rejected produce to %s-%d from %s: %d record(s) without a key on a compacted topic",
                         name, index, ctx.header.client_id, len(refused["record_errors"]))
                partition_responses.append(refused)
                continue
            if batches[0].is_transactional and batches[0].producer_id >= 0:
                txn_error = txn_checks.error_for(name, index)  # a marker since the check refuses it
                if txn_error is not None:
                    partition_responses.append(_error(index, txn_error))
                    continue
            end_before = plog.log_end_offset
            try:
                result = await broker.produce(plog, records, batches, acks, request)
            except InvalidRecordError as exc:  # producer state: fenced epoch, sequence gap
                if exc.error_code == ErrorCode.out_of_order_sequence_number and \
                        _UNWRITABLE.get(plog) == plog.leader_epoch:
                    log.info("refused produce to %s-%d while its disk refuses writes: %s", name, index, exc)
                    partition_responses.append(_error(index, ErrorCode.kafka_storage_error,
                                                      f"the log cannot be written ({exc})"))
                    continue
                log.info("rejected produce to %s-%d: %s", name, index, exc)
                partition_responses.append(_error(index, exc.error_code, str(exc)))
                continue
            except OSError as exc:  # a full or read-only disk, an I/O error: nothing written, nothing acknowledged
                log.error("cannot write %s-%d: %s", name, index, exc)
                _UNWRITABLE[plog] = plog.leader_epoch
                partition_responses.append(_error(index, ErrorCode.kafka_storage_error, f"cannot write: {exc}"))
                continue
            if plog.log_end_offset != end_before:  # an append went through: the disk takes writes again
                _UNWRITABLE.pop(plog, None)
            if isinstance(result, ErrorCode):
                entry = _error(index, result)
                if result == ErrorCode.not_leader_or_follower and ctx.version >= LEADER_HINTS_VERSION:
                    entry["current_leader"] = current_leader(ctx, name, index, endpoints)
                partition_responses.append(entry)
                continue
            bytes_in, messages_in = _topic_counters(broker, name)
            bytes_in.inc(len(records))
            messages_in.inc(sum(b.record_count for b in batches))
            partition_responses.append(
                {
                    "index": index,
                    "error_code": ErrorCode.none,
                    "base_offset": result.base_offset,
                    "log_append_time": result.log_append_time_ms if result.log_append_time_ms >= 0 else None,
                    "log_start_offset": result.log_start_offset,
                }
            )
        failed = sum(1 for r in partition_responses if r["error_code"] != ErrorCode.none)
        if failed and name is not None:
            broker.metrics.failed_produce.labels(name).inc(failed)
        responses.append({"name": name or "", "topic_id": topic_id, "partition_responses": partition_responses})
    if acks == 0:
        return None
    if not endpoints and broker.faults is None:  # injected faults rewrite the response entity
        fast = encode_response_body(ctx.version, responses)
        if fast is not None:
            return fast
    return ctx.respond(responses=responses, node_endpoints=list(endpoints.values()))


_PARTITION_V5 = struct.Struct(">ihqqq")  # index, error code, base offset, log append time, log start offset
_PARTITION_V3 = struct.Struct(">ihqq")
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_response_body(version: int, responses: list[dict[str, Any]]) -> EncodedBody | None:
    """The Produce response (v3-13) in wire form, written directly: kio's generic writer was
    ~45% of the broker's time answering a Produce to 1,000 partitions. None when an entry needs
    what this writer leaves to kio (record errors, KIP-951 leader hints)."""
    flexible = version >= 9
    out: list[bytes] = []
    append = out.append

    def count(n: int) -> None:
        append(_uvarint(n + 1) if flexible else _INT32.pack(n))

    def string(value: str | None) -> None:
        if value is None:
            append(b"\0" if flexible else b"\xff\xff")
            return
        raw = value.encode()
        append((_uvarint(len(raw) + 1) if flexible else _INT16.pack(len(raw))) + raw)

    count(len(responses))
    for topic in responses:
        if version >= TOPIC_IDS_VERSION:
            append(topic["topic_id"].bytes)
        else:
            string(topic["name"])
        partitions = topic["partition_responses"]
        count(len(partitions))
        for p in partitions:
            if p.get("record_errors") or "current_leader" in p:
                return None
            append_time = p.get("log_append_time")
            append_time = -1 if append_time is None else append_time
            if version >= 5:
                append(_PARTITION_V5.pack(p["index"], p["error_code"], p["base_offset"], append_time,
                                          p["log_start_offset"]))
            else:
                append(_PARTITION_V3.pack(p["index"], p["error_code"], p["base_offset"], append_time))
            if version >= 8:
                count(0)  # record_errors
                string(p.get("error_message"))
            if flexible:
                append(b"\0")
        if flexible:
            append(b"\0")
    append(_INT32.pack(0))  # throttle_time_ms
    if flexible:
        append(b"\0")
    return EncodedBody(b"".join(out), flexible)
