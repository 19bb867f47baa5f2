"""InitProducerId: producer ids and epochs for idempotent producers (KIP-98, KIP-360)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.server.dispatcher import RequestContext

MAX_EPOCH = 32767


async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    if request.transactional_id is not None:
        from odradek.server.handlers.transactions import init_producer_id

        return await init_producer_id(ctx, request)
    pid = getattr(request, "producer_id", -1)
    epoch = getattr(request, "producer_epoch", -1)
    if pid >= 0 and 0 <= epoch < MAX_EPOCH - 1:
        # KIP-360: an idempotent producer bumps its own epoch to reset its sequences
        return ctx.respond(error_code=ErrorCode.none, producer_id=pid, producer_epoch=epoch + 1)
    return ctx.respond(error_code=ErrorCode.none, producer_id=broker.allocate_producer_id(), producer_epoch=0)
