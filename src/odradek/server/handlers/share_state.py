"""The share coordinator's inter-broker APIs (KIP-932): ReadShareGroupState,
WriteShareGroupState, DeleteShareGroupState.

A share partition's leader asks the leader of the __share_group_state partition its key
hashes to (coordinator/share_persister.py); these handlers are that leader's side. They
need CLUSTER_ACTION on the cluster, as Kafka's KafkaApis asks of them.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.coordinator.share_partition import StateBatch
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext
from odradek.server.handlers.share_groups import share_coordinator

E = ErrorCode


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
        error, snap = persister.read_local((request.group_id, topic_id, p.partition))
        if error:
            out["error_code"] = error
        elif snap is not None:  # no state yet: start offset -1, as Kafka's share coordinator answers
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
                E.invalid_request if t.topic_id is None else await persister.write_local((request.group_id, t.topic_id, p.partition),
                                            (p.state_epoch, p.start_offset, batches))
    return ctx.respond(results=_results(request, lambda topic_id, p: {
        "error_code": written[(topic_id, p.partition)], "error_message": None}))


async def delete_share_group_state(ctx: RequestContext, request: Any) -> Any:
    persister = share_coordinator(ctx).persister
    allowed = ctx.authorized(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER)
    deleted: dict[tuple[Any, int], ErrorCode] = {}
    for t in request.topics:
        for p in t.partitions:
            deleted[(t.topic_id, p.partition)] = E.cluster_authorization_failed if not allowed else \
                E.invalid_request if t.topic_id is None else await persister.write_local((request.group_id, t.topic_id, p.partition), None)
    return ctx.respond(results=_results(request, lambda topic_id, p: {
        "error_code": deleted[(topic_id, p.partition)], "error_message": None}))
