"""Produce: validate each partition's batches, append them, acknowledge per acks.

The records stay bytes end to end: parse_batches reads the 61-byte headers and
checks the CRC; the log rewrites only the base offset (DESIGN.md, the hot path).
"""

from __future__ import annotations

import logging
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.protocol.records import TRANSACTIONAL_BIT, InvalidRecordError, parse_batches
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext

log = logging.getLogger("odradek.produce")


def _error(index: int, code: ErrorCode, message: str | None = None) -> dict[str, Any]:
    return {"index": index, "error_code": code, "base_offset": -1, "log_start_offset": -1, "error_message": message}


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
        {"name": t.name, "partition_responses": [_error(p.index, code) for p in t.partition_data]}
        for t in request.topic_data
    ])


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
    responses = []
    for topic_data in request.topic_data:
        name = topic_data.name
        topic = topics.get(name)
        authorized = ctx.authorized(AclOperation.WRITE, ResourceType.TOPIC, name)
        partition_responses = []
        for pdata in topic_data.partition_data:
            index = pdata.index
            if acks not in (0, 1, -1):
                partition_responses.append(_error(index, ErrorCode.invalid_required_acks))
                continue
            if not authorized:
                partition_responses.append(_error(index, ErrorCode.topic_authorization_failed))
                continue
            plog = broker.partition_log(name, index) if topic is not None else None
            if plog is None:
                partition_responses.append(_error(index, ErrorCode.unknown_topic_or_partition))
                continue
            not_leader = broker.check_leader(name, index)
            if not_leader is not None:
                partition_responses.append(_error(index, not_leader))
                continue
            records = pdata.records or b""
            try:
                batches = parse_batches(records, max_batch_bytes=plog.config.max_message_bytes)
                if not batches:
                    raise InvalidRecordError(ErrorCode.corrupt_message, "produce request carries no record batch")
            except InvalidRecordError as exc:
                log.warning("rejected produce to %s-%d from %s: %s", name, index, ctx.header.client_id, exc)
                partition_responses.append(_error(index, exc.error_code, str(exc)))
                continue
            try:
                result = await broker.produce(plog, records, batches, acks, request)
            except InvalidRecordError as exc:  # producer state: fenced epoch, sequence gap
                log.info("rejected produce to %s-%d: %s", name, index, exc)
                partition_responses.append(_error(index, exc.error_code, str(exc)))
                continue
            if isinstance(result, ErrorCode):
                partition_responses.append(_error(index, result))
                continue
            broker.metrics.bytes_in.labels(name).inc(len(records))
            broker.metrics.messages_in.labels(name).inc(sum(b.record_count for b in batches))
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
        if failed:
            broker.metrics.failed_produce.labels(name).inc(failed)
        responses.append({"name": name, "partition_responses": partition_responses})
    if acks == 0:
        return None
    return ctx.respond(responses=responses)
