"""ApiVersions: what this broker speaks (KIP-35, KIP-511) and its feature levels (KIP-584)."""

from __future__ import annotations

import re
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.protocol.framing import EncodedBody, encode_body
from odradek.server.dispatcher import RequestContext
from odradek.server.features import FEATURES, FINALIZED_FEATURES_EPOCH

# ApiVersionsRequest.isValid (v3+, KIP-511): client software name and version
SOFTWARE_NAME_VERSION = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?")

# The answer of each version, encoded once: the routes and features are fixed for the process, and
# building and encoding the 60 API ranges cost 0.3-0.75 ms of the loop (every client connection
# asks first thing)
_ENCODED: dict[int, EncodedBody] = {}


async def handle(ctx: RequestContext, request: Any) -> Any:
    if ctx.version >= 3 and not (SOFTWARE_NAME_VERSION.fullmatch(request.client_software_name)
                                 and SOFTWARE_NAME_VERSION.fullmatch(request.client_software_version)):
        return ctx.respond(error_code=ErrorCode.invalid_request, api_keys=[])
    if ctx.broker.faults is not None:  # injected faults rewrite the response entity
        return _response(ctx)
    encoded = _ENCODED.get(ctx.version)
    if encoded is None:
        response = _response(ctx)
        encoded = _ENCODED[ctx.version] = EncodedBody(encode_body(response), response.__flexible__)
    return encoded


def _response(ctx: RequestContext) -> Any:
    from odradek.server.handlers import ROUTES

    # Kafka's ApiVersionsResponse: below v4 a feature whose minimum is 0 is left out, as older clients
    # refuse such a range (KAFKA-17011, KAFKA-17492); a feature finalized at level 0 is not finalized.
    supported = [f for f in FEATURES if ctx.version >= 4 or f.min_version > 0]
    finalized = [f for f in FEATURES if f.max_version > 0]
    return ctx.respond(
        api_keys=[
            {"api_key": key, "min_version": r.min_version, "max_version": r.max_version}
            for key, r in sorted(ROUTES.items())
        ],
        supported_features=[{"name": f.name, "min_version": f.min_version, "max_version": f.max_version}
                            for f in supported],
        finalized_features_epoch=FINALIZED_FEATURES_EPOCH if finalized else -1,
        finalized_features=[{"name": f.name, "min_version_level": f.max_version, "max_version_level": f.max_version}
                            for f in finalized],
    )
