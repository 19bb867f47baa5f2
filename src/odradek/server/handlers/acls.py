"""ACL APIs: DescribeAcls, CreateAcls, DeleteAcls (Kafka's AclApis).

Kafka's order of checks: the principal needs DESCRIBE (DescribeAcls) or ALTER (Create,
Delete) on the cluster, else CLUSTER_AUTHORIZATION_FAILED; then, with no authorizer
configured, SECURITY_DISABLED; then each ACL or filter is checked (INVALID_REQUEST) and
applied. Writes go through the authorizer's store (a file, or ZooKeeper in cluster mode),
so they run on an executor thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.security.authorizer import (
    AccessControlEntry,
    AclBinding,
    AclBindingFilter,
    AclError,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
    from_code,
)
from odradek.server.dispatcher import RequestContext

log = logging.getLogger("odradek.acls")

NOT_AUTHORIZED = "Cluster authorization failed."
SECURITY_DISABLED = "No Authorizer is configured on the broker"


def _code(error: AclError) -> ErrorCode:
    code: ErrorCode = getattr(ErrorCode, error.code, ErrorCode.unknown_server_error)
    return code


def _filter(f: Any) -> AclBindingFilter:
    return AclBindingFilter(
        from_code(ResourceType, f.resource_type_filter), f.resource_name_filter,
        from_code(PatternType, f.pattern_type_filter), f.principal_filter, f.host_filter,
        from_code(AclOperation, f.operation), from_code(AclPermissionType, f.permission_type),
    )


def _binding_fields(binding: AclBinding) -> dict[str, Any]:
    pattern, entry = binding.pattern, binding.entry
    return {"resource_type": pattern.resource_type, "resource_name": pattern.name,
            "pattern_type": pattern.pattern_type, "principal": entry.principal, "host": entry.host,
            "operation": entry.operation, "permission_type": entry.permission_type}


async def describe_acls(ctx: RequestContext, request: Any) -> Any:
    authorizer = ctx.broker.authorizer
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.CLUSTER):
        return ctx.respond(error_code=ErrorCode.cluster_authorization_failed, error_message=NOT_AUTHORIZED,
                           resources=[])
    if authorizer is None:
        return ctx.respond(error_code=ErrorCode.security_disabled, error_message=SECURITY_DISABLED,
                           resources=[])
    acl_filter = _filter(request)
    why = acl_filter.unknown_part()
    if why is not None:
        return ctx.respond(error_code=ErrorCode.invalid_request, error_message=why, resources=[])
    by_pattern: dict[ResourcePattern, list[AccessControlEntry]] = {}
    for binding in authorizer.acls(acl_filter):
        by_pattern.setdefault(binding.pattern, []).append(binding.entry)
    return ctx.respond(error_code=ErrorCode.none, error_message=None, resources=[
        {"resource_type": p.resource_type, "resource_name": p.name, "pattern_type": p.pattern_type,
         "acls": [{"principal": e.principal, "host": e.host, "operation": e.operation,
                   "permission_type": e.permission_type} for e in entries]}
        for p, entries in by_pattern.items()
    ])


async def create_acls(ctx: RequestContext, request: Any) -> Any:
    authorizer = ctx.broker.authorizer
    creations = request.creations
    if not ctx.authorized(AclOperation.ALTER, ResourceType.CLUSTER):
        return ctx.respond(results=[{"error_code": ErrorCode.cluster_authorization_failed,
                                     "error_message": NOT_AUTHORIZED} for _ in creations])
    if authorizer is None:
        return ctx.respond(results=[{"error_code": ErrorCode.security_disabled,
                                     "error_message": SECURITY_DISABLED} for _ in creations])
    bindings = [
        AclBinding(
            ResourcePattern(from_code(ResourceType, c.resource_type), c.resource_name,
                            from_code(PatternType, c.resource_pattern_type)),
            AccessControlEntry(c.principal, c.host, from_code(AclOperation, c.operation),
                               from_code(AclPermissionType, c.permission_type)),
        )
        for c in creations
    ]
    errors = await asyncio.get_running_loop().run_in_executor(None, authorizer.create_acls, bindings)
    for binding, error in zip(bindings, errors, strict=True):
        if error is None:
            log.info("%s created ACL %s", ctx.session.principal, binding)
    return ctx.respond(results=[
        {"error_code": ErrorCode.none if e is None else _code(e), "error_message": None if e is None else str(e)}
        for e in errors
    ])


async def delete_acls(ctx: RequestContext, request: Any) -> Any:
    authorizer = ctx.broker.authorizer
    filters = request.filters
    if not ctx.authorized(AclOperation.ALTER, ResourceType.CLUSTER):
        return ctx.respond(filter_results=[{"error_code": ErrorCode.cluster_authorization_failed,
                                            "error_message": NOT_AUTHORIZED, "matching_acls": []}
                                           for _ in filters])
    if authorizer is None:
        return ctx.respond(filter_results=[{"error_code": ErrorCode.security_disabled,
                                            "error_message": SECURITY_DISABLED, "matching_acls": []}
                                           for _ in filters])
    results = await asyncio.get_running_loop().run_in_executor(
        None, authorizer.delete_acls, [_filter(f) for f in filters])
    out = []
    for error, matched in results:
        for binding, failed in matched:
            if failed is None:
                log.info("%s deleted ACL %s", ctx.session.principal, binding)
        out.append({
            "error_code": ErrorCode.none if error is None else _code(error),
            "error_message": None if error is None else str(error),
            "matching_acls": [
                {"error_code": ErrorCode.none if failed is None else _code(failed),
                 "error_message": None if failed is None else str(failed), **_binding_fields(binding)}
                for binding, failed in matched
            ],
        })
    return ctx.respond(filter_results=out)
