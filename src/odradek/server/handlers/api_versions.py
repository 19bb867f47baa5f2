"""ApiVersions: what this broker speaks (KIP-35, KIP-511)."""

from __future__ import annotations

from typing import Any

from odradek.server.dispatcher import RequestContext


async def handle(ctx: RequestContext, request: Any) -> Any:
    from odradek.server.handlers import ROUTES

    return ctx.respond(
        api_keys=[
            {"api_key": key, "min_version": r.min_version, "max_version": r.max_version}
            for key, r in sorted(ROUTES.items())
        ],
        finalized_features_epoch=-1,
    )
