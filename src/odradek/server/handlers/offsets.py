"""Committed-offset APIs: OffsetCommit, OffsetFetch (single- and multi-group), OffsetDelete."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.coordinator.offsets import Commit
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext
from odradek.server.handlers.groups import coordinator


def _may(ctx: RequestContext, operation: AclOperation, topic: str) -> bool:
    return ctx.authorized(operation, ResourceType.TOPIC, topic)


async def offset_commit(ctx: RequestContext, request: Any) -> Any:
    # KafkaApis: READ on the group (else every partition fails), then READ on each topic
    group_denied = not ctx.authorized(AclOperation.READ, ResourceType.GROUP, request.group_id)
    denied = {t.name for t in request.topics if group_denied or not _may(ctx, AclOperation.READ, t.name)}
    commits = [
        Commit(t.name, p.partition_index, p.committed_offset,
               getattr(p, "committed_leader_epoch", -1), p.committed_metadata)
        for t in request.topics if t.name not in denied
        for p in t.partitions
    ]
    errors = iter(coordinator(ctx).commit(
        request.group_id, request.generation_id_or_member_epoch, request.member_id,
        getattr(request, "group_instance_id", None), commits,
    ) if commits else ())
    refused = ErrorCode.group_authorization_failed if group_denied else ErrorCode.topic_authorization_failed
    return ctx.respond(topics=[
        {"name": t.name, "partitions": [
            {"partition_index": p.partition_index, "error_code": refused if t.name in denied else next(errors)}
            for p in t.partitions]}
        for t in request.topics
    ])


def _fetch_group(ctx: RequestContext, group_id: str, topics: Any,
                 require_stable: bool = False) -> tuple[ErrorCode, list[dict[str, Any]]]:
    # KafkaApis: DESCRIBE on the group; offsets only of topics the principal may DESCRIBE
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
        return ErrorCode.group_authorization_failed, []
    denied = [t for t in topics or () if not _may(ctx, AclOperation.DESCRIBE, t.name)]
    hidden = {t.name for t in denied}
    error, entries = _fetch_authorized(ctx, group_id, [t for t in topics if t.name not in hidden]
                                       if topics is not None else None, require_stable)
    if topics is None:
        entries = [e for e in entries if _may(ctx, AclOperation.DESCRIBE, e["name"])]
    elif error == ErrorCode.none:
        entries += [{"name": t.name, "partitions": [
            {"partition_index": p, "committed_offset": -1, "committed_leader_epoch": -1, "metadata": "",
             "error_code": ErrorCode.topic_authorization_failed} for p in t.partition_indexes]}
            for t in denied]
    return error, entries


def _fetch_authorized(ctx: RequestContext, group_id: str, topics: Any,
                      require_stable: bool) -> tuple[ErrorCode, list[dict[str, Any]]]:
    wanted = None if topics is None else [(t.name, list(t.partition_indexes)) for t in topics]
    coord = coordinator(ctx)
    error, found = coord.fetch_offsets(group_id, wanted)
    # KIP-447: a read_committed consumer waits while a transaction holds offsets of its partitions
    unstable = coord.unstable_partitions(group_id) if require_stable and error == ErrorCode.none else set()
    entries = []
    for topic, partitions in found:
        entries.append({
            "name": topic,
            "partitions": [
                {
                    "partition_index": p,
                    "committed_offset": v.offset if v is not None else -1,
                    "committed_leader_epoch": v.leader_epoch if v is not None else -1,
                    "metadata": v.metadata if v is not None else "",
                    "error_code": ErrorCode.unstable_offset_commit if (topic, p) in unstable else error,
                }
                for p, v in partitions
            ],
        })
    return error, entries


async def offset_fetch(ctx: RequestContext, request: Any) -> Any:
    if ctx.version >= 8:  # KIP-709: several groups in one request
        groups = []
        for g in request.groups:
            error, topics = _fetch_group(ctx, g.group_id, g.topics, request.require_stable)
            groups.append({"group_id": g.group_id, "topics": topics, "error_code": error})
        return ctx.respond(groups=groups)
    error, topics = _fetch_group(ctx, request.group_id, request.topics, getattr(request, "require_stable", False))
    if error == ErrorCode.group_authorization_failed and ctx.version < 2:  # no top-level error code before v2
        topics = [{"name": t.name, "partitions": [
            {"partition_index": p, "committed_offset": -1, "metadata": "", "error_code": error}
            for p in t.partition_indexes]} for t in request.topics or ()]
    return ctx.respond(topics=topics, error_code=error)


async def offset_delete(ctx: RequestContext, request: Any) -> Any:
    # KafkaApis: DELETE on the group, READ on each topic
    if not ctx.authorized(AclOperation.DELETE, ResourceType.GROUP, request.group_id):
        return ctx.respond(error_code=ErrorCode.group_authorization_failed, topics=[])
    wanted = [(t.name, [p.partition_index for p in t.partitions]) for t in request.topics]
    denied = {t for t, _ in wanted if not _may(ctx, AclOperation.READ, t)}
    error, results = coordinator(ctx).delete_offsets(request.group_id, [w for w in wanted if w[0] not in denied])
    results = {**results, **{(t, p): ErrorCode.topic_authorization_failed for t, ps in wanted if t in denied
                             for p in ps}}
    return ctx.respond(
        error_code=error,
        topics=[] if error != ErrorCode.none else [
            {"name": t, "partitions": [{"partition_index": p, "error_code": results[(t, p)]} for p in ps]}
            for t, ps in wanted
        ],
    )
