"""Committed-offset APIs: OffsetCommit, OffsetFetch (single- and multi-group), OffsetDelete."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.coordinator.offsets import Commit
from odradek.server.dispatcher import RequestContext
from odradek.server.handlers.groups import coordinator


async def offset_commit(ctx: RequestContext, request: Any) -> Any:
    commits = [
        Commit(t.name, p.partition_index, p.committed_offset,
               getattr(p, "committed_leader_epoch", -1), p.committed_metadata)
        for t in request.topics
        for p in t.partitions
    ]
    errors = iter(coordinator(ctx).commit(
        request.group_id, request.generation_id_or_member_epoch, request.member_id,
        getattr(request, "group_instance_id", None), commits,
    ))
    return ctx.respond(topics=[
        {"name": t.name, "partitions": [{"partition_index": p.partition_index, "error_code": next(errors)}
                                        for p in t.partitions]}
        for t in request.topics
    ])


def _fetch_group(ctx: RequestContext, group_id: str, topics: Any,
                 require_stable: bool = False) -> tuple[ErrorCode, list[dict[str, Any]]]:
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
    return ctx.respond(topics=topics, error_code=error)


async def offset_delete(ctx: RequestContext, request: Any) -> Any:
    wanted = [(t.name, [p.partition_index for p in t.partitions]) for t in request.topics]
    error, results = coordinator(ctx).delete_offsets(request.group_id, wanted)
    return ctx.respond(
        error_code=error,
        topics=[] if error != ErrorCode.none else [
            {"name": t, "partitions": [{"partition_index": p, "error_code": results[(t, p)]} for p in ps]}
            for t, ps in wanted
        ],
    )
