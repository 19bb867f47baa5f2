"""Produce: validate each partition's batches, append them, acknowledge per acks.

The records stay bytes end to end: parse_batches reads the 61-byte headers and
checks the CRC; the log rewrites only the base offset (DESIGN.md, the hot path).
Only a compacted topic's batches are decoded, to refuse records without a key.

Versions (ProduceRequest.json): v8 adds record_errors and error_message (KIP-467),
v10 the leader hints of KIP-951, v12 the implicit AddPartitionsToTxn of KIP-890
part 2, v13 topic ids instead of names (KIP-516).
"""

from __future__ import annotations

import functools
import logging
import struct
import uuid
import weakref
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cluster.metadata import TopicMetadata
from odradek.protocol.bounds import uvarint_bytes as _uvarint
from odradek.protocol.build import ZERO_UUID
from odradek.protocol.framing import EncodedBody
from odradek.protocol.record_errors import InvalidRecordError
from odradek.protocol.records import (
    TRANSACTIONAL_BIT,
    BatchHeader,
    keyless_records,
    parse_batches,
)
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.add_partitions_to_txn import Verification, verify_produce
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
_NOTHING_TO_VERIFY = Verification()  # a request without a transactional id (read only)


@functools.lru_cache(maxsize=64)
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


async def _append(ctx: RequestContext, name: str, index: int, plog: Any, records: bytes, txn_checks: Verification,
                  produce: Any, request: Any) -> dict[str, Any]:
    """ReplicaManager's part for one partition this broker leads: validate, check the transaction,
    append; the partition's answer (on success with its "bytes" and "records" for the metrics)."""
    try:
        if not _holds_a_whole_batch(records):
            raise InvalidRecordError(ErrorCode.invalid_record, "produce request carries no whole record batch")
        batches = parse_batches(records, max_batch_bytes=plog.config.max_message_bytes)
        refused = _refuse_keyless(name, index, records, batches) if _is_compacted(
            plog.config.cleanup_policy) else None
    except InvalidRecordError as exc:
        log.warning("rejected produce to %s-%d from %s: %s", name, index, ctx.header.client_id, exc)
        return _error(index, exc.error_code, str(exc))
    if refused is not None:
        log.info("rejected produce to %s-%d from %s: %d record(s) without a key on a compacted topic",
                 name, index, ctx.header.client_id, len(refused["record_errors"]))
        return refused
    first = batches[0]
    if first.attributes & TRANSACTIONAL_BIT and first.producer_id >= 0:
        txn_error = txn_checks.error_for(name, index)  # a marker since the check refuses it
        if txn_error is not None:
            return _error(index, txn_error)
    end_before = plog.log_end_offset
    try:
        result = await produce(plog, records, batches, request.acks, request)
    except InvalidRecordError as exc:  # producer state: fenced epoch, sequence gap
        if exc.error_code == ErrorCode.out_of_order_sequence_number and _UNWRITABLE.get(plog) == plog.leader_epoch:
            log.info("refused produce to %s-%d while its disk refuses writes: %s", name, index, exc)
            return _error(index, ErrorCode.kafka_storage_error, f"the log cannot be written ({exc})")
        log.info("rejected produce to %s-%d: %s", name, index, exc)
        return _error(index, exc.error_code, str(exc))
    except OSError as exc:  # a full or read-only disk, an I/O error: nothing written, nothing acknowledged
        log.error("cannot write %s-%d: %s", name, index, exc)
        _UNWRITABLE[plog] = plog.leader_epoch
        return _error(index, ErrorCode.kafka_storage_error, f"cannot write: {exc}")
    if _UNWRITABLE and plog.log_end_offset != end_before:  # an append went through: the disk takes writes again
        _UNWRITABLE.pop(plog, None)
    if type(result) is ErrorCode:
        return _error(index, result)
    count = first.record_count if len(batches) == 1 else sum(b.record_count for b in batches)
    append_time = result.log_append_time_ms
    return {"index": index, "error_code": ErrorCode.none, "base_offset": result.base_offset,
            "log_append_time": append_time if append_time >= 0 else None,
            "log_start_offset": result.log_start_offset, "bytes": len(records), "records": count}


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
    txn_checks = _NOTHING_TO_VERIFY
    if request.transactional_id is not None:
        def writable(topic_data: Any) -> str | None:
            name = _resolve(ctx, topic_data, topics)[0]
            return name if name is not None and ctx.authorized(AclOperation.WRITE, ResourceType.TOPIC, name) else None

        # KIP-890: transactional batches are checked with their transaction coordinator (part 1: the
        # partition must be in the transaction) or, from v12 on (part 2), added to it, all at once
        txn_checks = await verify_produce(broker, request, ctx.version, writable)
    endpoints: dict[int, dict[str, Any]] = {}  # KIP-951: the leaders named in NOT_LEADER_OR_FOLLOWER answers
    hints = ctx.version >= LEADER_HINTS_VERSION
    acks_valid = acks in (0, 1, -1)
    partition_log, check_leader, produce = broker.partition_log, broker.check_leader, broker.produce
    responses = []
    for topic_data in request.topic_data:
        name, topic_id, topic = _resolve(ctx, topic_data, topics)
        authorized = name is not None and ctx.authorized(AclOperation.WRITE, ResourceType.TOPIC, name)
        partition_responses = []
        failed = bytes_in = messages_in = 0  # Kafka's BrokerTopicMetrics are per topic: added once a request
        for pdata in topic_data.partition_data:
            index = pdata.index
            # KafkaApis.handleProduceRequest's order: unknown id, authorization, unknown
            # partition; then ReplicaManager: acks, leadership, validation, append.
            if name is None:
                entry = _error(index, ErrorCode.unknown_topic_id)
            elif not authorized:
                entry = _error(index, ErrorCode.topic_authorization_failed)
            elif topic is None or not 0 <= index < topic.partitions:
                entry = _error(index, ErrorCode.unknown_topic_or_partition)
            elif not acks_valid:
                entry = _error(index, ErrorCode.invalid_required_acks)
            else:
                plog = partition_log(name, index)
                not_leader = ErrorCode.not_leader_or_follower if plog is None else check_leader(name, index)
                if not_leader is None:
                    assert plog is not None
                    entry = await _append(ctx, name, index, plog, pdata.records or b"", txn_checks, produce, request)
                    if entry["error_code"] == ErrorCode.none:
                        bytes_in += entry.pop("bytes")
                        messages_in += entry.pop("records")
                        partition_responses.append(entry)
                        continue
                    not_leader = entry["error_code"]
                else:
                    entry = _error(index, not_leader)
                if not_leader == ErrorCode.not_leader_or_follower and hints:
                    entry["current_leader"] = current_leader(ctx, name, index, endpoints)
            failed += 1
            partition_responses.append(entry)
        if name is not None:
            metrics = broker.metrics
            if bytes_in:
                metrics.bytes_in.labels(name).inc(bytes_in)
                metrics.messages_in.labels(name).inc(messages_in)
            if failed:
                metrics.failed_produce.labels(name).inc(failed)
        responses.append({"name": name or "", "topic_id": topic_id, "partition_responses": partition_responses})
    if acks == 0:
        return None
    if not endpoints and broker.faults is None:  # injected faults rewrite the response entity
        fast = encode_response_body(ctx.version, responses)
        if fast is not None:
            return fast
    return ctx.respond(responses=responses, node_endpoints=list(endpoints.values()))


# A partition's answer by version: index, error code, base offset, log append time (v2+), log
# start offset (v5+); then record_errors and error_message (v8+) and tagged fields (v9+)
_PARTITION_V3 = struct.Struct(">ihqq")
_PARTITION_V5 = struct.Struct(">ihqqq")
_PARTITION_V8_OK = struct.Struct(">ihqqqih")  # no record errors (int32 0), a null message (int16 -1)
_PARTITION_V9_OK = struct.Struct(">ihqqq3s")  # the same in compact form, then no tagged fields
_V9_OK_TAIL = b"\x01\x00\x00"
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")


def _count(n: int, flexible: bool) -> bytes:
    return _uvarint(n + 1) if flexible else _INT32.pack(n)


def _string(value: str | None, flexible: bool) -> bytes:
    if value is None:
        return b"\0" if flexible else b"\xff\xff"
    raw = value.encode()
    return (_uvarint(len(raw) + 1) if flexible else _INT16.pack(len(raw))) + raw


_topic_name = functools.lru_cache(maxsize=4096)(_string)  # names repeat from request to request


def encode_response_body(version: int, responses: list[dict[str, Any]]) -> EncodedBody | None:
    """The Produce response (v3-13) in wire form, written directly: kio's generic writer was
    ~45% of the broker's time answering a Produce to 1,000 partitions. None when an entry needs
    what this writer leaves to kio (record errors, KIP-951 leader hints)."""
    flexible = version >= 9
    out: list[bytes] = [_count(len(responses), flexible)]
    append = out.append
    for topic in responses:
        append(topic["topic_id"].bytes if version >= TOPIC_IDS_VERSION else _topic_name(topic["name"], flexible))
        partitions = topic["partition_responses"]
        append(_count(len(partitions), flexible))
        for p in partitions:
            if p.get("record_errors") or "current_leader" in p:
                return None
            append_time = p.get("log_append_time")
            fields = (p["index"], p["error_code"], p["base_offset"], -1 if append_time is None else append_time)
            if version < 5:
                append(_PARTITION_V3.pack(*fields))
                continue
            message = p.get("error_message")
            if version < 8:
                append(_PARTITION_V5.pack(*fields, p["log_start_offset"]))
            elif message is None:
                append(_PARTITION_V9_OK.pack(*fields, p["log_start_offset"], _V9_OK_TAIL) if flexible
                       else _PARTITION_V8_OK.pack(*fields, p["log_start_offset"], 0, -1))
            else:
                append(_PARTITION_V5.pack(*fields, p["log_start_offset"]))
                append(_count(0, flexible))  # record_errors
                append(_string(message, flexible))
                if flexible:
                    append(b"\0")
        if flexible:
            append(b"\0")
    append(_INT32.pack(0))  # throttle_time_ms
    if flexible:
        append(b"\0")
    return EncodedBody(b"".join(out), flexible)
