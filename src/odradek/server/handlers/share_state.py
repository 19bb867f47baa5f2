"""The share coordinator's inter-broker APIs (KIP-932): InitializeShareGroupState,
ReadShareGroupState, WriteShareGroupState, DeleteShareGroupState, ReadShareGroupStateSummary.

A share partition's leader, or a share group's coordinator, asks the leader of the
__share_group_state partition its key hashes to (coordinator/share_persister.py); these
handlers are that leader's side. They need CLUSTER_ACTION on the cluster, as Kafka's
KafkaApis asks of them. As Kafka's ShareCoordinatorShard: the group coordinator
initializes a share partition's state (InitializeShareGroupState) before any read or
write of it, which are INVALID_REQUEST until then; the summary of a state never
initialized is a start offset of -1, no error.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.coordinator.share_partition import StateBatch
from odradek.coordinator.share_persister import UNINITIALIZED_READ, UNINITIALIZED_WRITE
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext
from odradek.server.handlers.share_groups import share_coordinator

E = ErrorCode


def _unknown(ctx: RequestContext, topic_id: Any, partition: int) -> ErrorCode | None:
    """UNKNOWN_TOPIC_OR_PARTITION for a partition the metadata does not have (Kafka's share
    coordinator: "Topic/TopicPartition not found in metadata image")."""
    meta = ctx.broker.topic_by_id(topic_id)
    return None if meta is not None and 0 <= partition < meta.partitions else E.unknown_topic_or_partition


def _results(request: Any, answer: Any) -> list[dict[str, Any]]:
    """One result per requested partition, `answer(topic_id, partition)` giving its fields."""
    return [{"topic_id": t.topic_id, "partitions": [{"partition": p.partition, **answer(t.topic_id, p)}
                                                    for p in t.partitions]} for t in request.topics]


async def read_share_group_state(ctx: RequestContext, request: Any) -> Any:
    persister = share_coordinator(ctx).persister
    allowed = ctx.authorized(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER)

    def answer(topic_id: Any, p: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"error_code": E.none, "error_message": None, "state_epoch": 0, "start_offset": -1,
                               "state_batches": []}
        if not allowed:
            out["error_code"] = E.cluster_authorization_failed
            return out
        if topic_id is None:  # the zero uuid: no topic (Kafka's share coordinator: INVALID_REQUEST)
            out["error_code"] = E.invalid_request
            return out
        error, snap = persister.read_local((request.group_id, topic_id, p.partition), p.leader_epoch)
        if error:
            out.update(error_code=error, error_message=UNINITIALIZED_READ if error == E.invalid_request else None)
        elif snap is not None:
            state_epoch, start, batches = snap
            out.update(state_epoch=state_epoch, start_offset=start, state_batches=[
                {"first_offset": b.first_offset, "last_offset": b.last_offset, "delivery_state": b.delivery_state,
                 "delivery_count": b.delivery_count} for b in batches])
        return out

    return ctx.respond(results=_results(request, answer))


async def write_share_group_state(ctx: RequestContext, request: Any) -> Any:
    persister = share_coordinator(ctx).persister
    allowed = ctx.authorized(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER)
    written: dict[tuple[Any, int], ErrorCode] = {}
    for t in request.topics:
        for p in t.partitions:
            batches = [StateBatch(b.first_offset, b.last_offset, b.delivery_state, b.delivery_count)
                       for b in p.state_batches]
            written[(t.topic_id, p.partition)] = E.cluster_authorization_failed if not allowed else \
                E.invalid_request if t.topic_id is None else await persister.write_local(
                    (request.group_id, t.topic_id, p.partition), (p.state_epoch, p.start_offset, batches),
                    p.leader_epoch, delivery_complete=getattr(p, "delivery_complete_count", -1))
    return ctx.respond(results=_results(request, lambda topic_id, p: {
        "error_code": written[(topic_id, p.partition)],
        "error_message": UNINITIALIZED_WRITE if written[(topic_id, p.partition)] == E.invalid_request else None}))


async def delete_share_group_state(ctx: RequestContext, request: Any) -> Any:
    persister = share_coordinator(ctx).persister
    allowed = ctx.authorized(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER)
    deleted: dict[tuple[Any, int], ErrorCode] = {}
    for t in request.topics:
        for p in t.partitions:
            deleted[(t.topic_id, p.partition)] = E.cluster_authorization_failed if not allowed else \
                E.invalid_request if t.topic_id is None else _unknown(ctx, t.topic_id, p.partition) or \
                await persister.write_local((request.group_id, t.topic_id, p.partition), None)
    return ctx.respond(results=_results(request, lambda topic_id, p: {
        "error_code": deleted[(topic_id, p.partition)], "error_message": None}))


async def initialize_share_group_state(ctx: RequestContext, request: Any) -> Any:
    persister = share_coordinator(ctx).persister
    allowed = ctx.authorized(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER)
    done: dict[tuple[Any, int], ErrorCode] = {}
    for t in request.topics:
        for p in t.partitions:
            done[(t.topic_id, p.partition)] = E.cluster_authorization_failed if not allowed else \
                E.invalid_request if t.topic_id is None or p.partition < 0 else \
                _unknown(ctx, t.topic_id, p.partition) or await persister.initialize_local((request.group_id, t.topic_id, p.partition), p.state_epoch,
                                                 p.start_offset)
    return ctx.respond(results=_results(request, lambda topic_id, p: {
        "error_code": done[(topic_id, p.partition)], "error_message": None}))


async def read_share_group_state_summary(ctx: RequestContext, request: Any) -> Any:
    """The state epoch, the leader epoch of its latest record, the start offset and (v1, KIP-1226)
    how many records past it are delivered for good (acknowledged or archived, as the share partition
    leader counted them); -1 as start offset of a state never initialized. No leader epoch fences it."""
    persister = share_coordinator(ctx).persister
    allowed = ctx.authorized(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER)

    def answer(topic_id: Any, p: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"error_code": E.none, "error_message": None, "state_epoch": 0, "leader_epoch": 0,
                               "start_offset": -1}
        if ctx.version >= 1:
            out["delivery_complete_count"] = -1
        if not allowed:
            out["error_code"] = E.cluster_authorization_failed
            return out
        if topic_id is None or p.partition < 0:
            out["error_code"] = E.invalid_request
            return out
        unknown = _unknown(ctx, topic_id, p.partition)
        if unknown:  # (Kafka answers start offset 0 then)
            out.update(error_code=unknown, error_message="This server does not host this topic-partition.",
                       start_offset=0)
            return out
        key = (request.group_id, topic_id, p.partition)
        error, snap = persister.summary_local(key)
        if error:
            out["error_code"] = error
        elif snap is not None:
            leader_epoch, delivered = persister.shown.get(key, (0, -1))
            out.update(state_epoch=snap[0], leader_epoch=leader_epoch, start_offset=snap[1])
            if ctx.version >= 1:
                out["delivery_complete_count"] = delivered
        return out

    return ctx.respond(results=_results(request, answer))
