"""DescribeCluster (KIP-700): cluster id, controller and brokers.

v1 adds the endpoint type (KIP-919): a broker describes brokers only, and refuses a
request for controllers with MISMATCHED_ENDPOINT_TYPE (INVALID_REQUEST in v0), an
unknown type with UNSUPPORTED_ENDPOINT_TYPE, as Kafka's AuthHelper does. v2 adds
include_fenced_brokers and is_fenced (KIP-1073): odradek lists the brokers that are
up, none of them fenced, so the flag changes nothing.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.server.dispatcher import RequestContext
from odradek.server.handlers.metadata import cluster_authorized_operations

BROKER_ENDPOINT = 1
CONTROLLER_ENDPOINT = 2


async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    requested = getattr(request, "endpoint_type", BROKER_ENDPOINT)
    if requested != BROKER_ENDPOINT:
        known = requested == CONTROLLER_ENDPOINT
        if ctx.version == 0:
            error = ErrorCode.invalid_request
        else:
            error = ErrorCode.mismatched_endpoint_type if known else ErrorCode.unsupported_endpoint_type
        message = ("The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER"
                   if known else f"Unsupported endpoint type {requested}")
        return ctx.respond(error_code=error, error_message=message, cluster_id="", controller_id=-1, brokers=[],
                           cluster_authorized_operations=-(2**31))
    return ctx.respond(
        error_code=ErrorCode.none,
        endpoint_type=BROKER_ENDPOINT,
        cluster_id=broker.cluster_id,
        controller_id=broker.controller_id(),
        brokers=[{"broker_id": n.node_id, "host": ctx.address(n)[0], "port": ctx.address(n)[1], "rack": n.rack,
                  "is_fenced": False}
                 for n in broker.live_nodes()],
        cluster_authorized_operations=cluster_authorized_operations(
            ctx, request.include_cluster_authorized_operations),
    )
