"""DescribeCluster (KIP-700): cluster id, controller and brokers."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.server.dispatcher import RequestContext
from odradek.server.handlers.metadata import cluster_authorized_operations


async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    return ctx.respond(
        error_code=ErrorCode.none,
        endpoint_type=getattr(request, "endpoint_type", 1),
        cluster_id=broker.cluster_id,
        controller_id=broker.controller_id(),
        brokers=[{"broker_id": n.node_id, "host": ctx.address(n)[0], "port": ctx.address(n)[1], "rack": n.rack}
                 for n in broker.live_nodes()],
        cluster_authorized_operations=cluster_authorized_operations(
            ctx, request.include_cluster_authorized_operations),
    )
