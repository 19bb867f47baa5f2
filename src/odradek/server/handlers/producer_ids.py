"""InitProducerId: producer ids and epochs for idempotent producers (KIP-98, KIP-360); v6's
two-phase commit (KIP-939) is answered as Kafka answers it with the feature disabled."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext

MAX_EPOCH = 32767


async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    # KafkaApis: WRITE on the transactional id; an idempotent producer needs IDEMPOTENT_WRITE on
    # the cluster or (KIP-679) WRITE on some topic
    tid = request.transactional_id
    if tid is not None and not ctx.authorized(AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, tid):
        return ctx.respond(error_code=ErrorCode.transactional_id_authorization_failed, producer_id=-1,
                           producer_epoch=-1)
    if tid is None and not (ctx.authorized(AclOperation.IDEMPOTENT_WRITE, ResourceType.CLUSTER)
                            or ctx.authorized_by_resource_type(AclOperation.WRITE, ResourceType.TOPIC)):
        return ctx.respond(error_code=ErrorCode.cluster_authorization_failed, producer_id=-1, producer_epoch=-1)
    if (getattr(request, "producer_id", -1) == -1) != (getattr(request, "producer_epoch", -1) == -1):
        # KafkaApis: an id without an epoch (or the reverse) is malformed
        return ctx.respond(error_code=ErrorCode.invalid_request, producer_id=-1, producer_epoch=-1)
    if request.transactional_id is not None:
        from odradek.server.handlers.transactions import init_producer_id

        return await init_producer_id(ctx, request)
    pid = getattr(request, "producer_id", -1)
    epoch = getattr(request, "producer_epoch", -1)
    if pid >= 0 and 0 <= epoch < MAX_EPOCH - 1:
        # KIP-360: an idempotent producer bumps its own epoch to reset its sequences
        return ctx.respond(error_code=ErrorCode.none, producer_id=pid, producer_epoch=epoch + 1)
    return ctx.respond(error_code=ErrorCode.none, producer_id=broker.allocate_producer_id(), producer_epoch=0)
