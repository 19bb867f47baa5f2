"""Committed-offset APIs: OffsetCommit, OffsetFetch (single- and multi-group), OffsetDelete.

OffsetCommit v0-1 and OffsetFetch v0 (dropped by Kafka 4, KIP-896) are served for
Sarama-based tools through protocol/legacy.py; v10 of both names topics by id.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.coordinator.offsets import Commit
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext
from odradek.server.handlers.groups import coordinator


def _may(ctx: RequestContext, operation: AclOperation, topic: str) -> bool:
    return ctx.authorized(operation, ResourceType.TOPIC, topic)


def _names_by_id(ctx: RequestContext) -> dict[Any, str]:
    return {t.topic_id: name for name, t in ctx.broker.topics().items()}


def _ids_by_name(ctx: RequestContext) -> dict[str, Any]:
    return {name: t.topic_id for name, t in ctx.broker.topics().items()}


async def offset_commit(ctx: RequestContext, request: Any) -> Any:
    # v10 names topics by id only (KIP-848): an id no topic has is UNKNOWN_TOPIC_ID for its partitions
    by_id = _names_by_id(ctx) if ctx.version >= 10 else {}
    named = [(by_id.get(t.topic_id, "") if ctx.version >= 10 else t.name, t) for t in request.topics]
    unknown = {id(t) for name, t in named if ctx.version >= 10 and not name}
    # KafkaApis: READ on the group (else every partition fails), then READ on each topic
    group_denied = not ctx.authorized(AclOperation.READ, ResourceType.GROUP, request.group_id)
    denied = {name for name, t in named if id(t) not in unknown
              and (group_denied or not _may(ctx, AclOperation.READ, name))}
    commits = [
        Commit(name, p.partition_index, p.committed_offset,
               getattr(p, "committed_leader_epoch", -1), p.committed_metadata)
        for name, t in named if name not in denied and id(t) not in unknown
        for p in t.partitions
    ]
    # v0 commits carry no generation: a simple (group-less) commit, as generation -1 says
    errors = iter(await coordinator(ctx).commit_replicated(
        request.group_id, getattr(request, "generation_id_or_member_epoch", -1),
        getattr(request, "member_id", ""), getattr(request, "group_instance_id", None), commits,
    ) if commits else ())
    refused = ErrorCode.group_authorization_failed if group_denied else ErrorCode.topic_authorization_failed

    def error(name: str, t: Any) -> ErrorCode:
        if id(t) in unknown:
            return ErrorCode.unknown_topic_id
        return refused if name in denied else next(errors)

    return ctx.respond(topics=[
        {"name": name, "topic_id": getattr(t, "topic_id", None),
         "partitions": [{"partition_index": p.partition_index, "error_code": error(name, t)} for p in t.partitions]}
        for name, t in named
    ])


def _fetch_group(ctx: RequestContext, group_id: str, topics: Any, require_stable: bool = False,
                 member: tuple[str | None, int] = (None, -1)) -> tuple[ErrorCode, list[dict[str, Any]]]:
    # KafkaApis: DESCRIBE on the group; offsets only of topics the principal may DESCRIBE
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
        return ErrorCode.group_authorization_failed, []
    # v9+ (KIP-848): a member of a consumer group fetches with its id and epoch
    member_error = coordinator(ctx).offset_fetch_error(group_id, *member) if coordinator(ctx).owns(group_id) else None
    if member_error is not None:
        return member_error, []
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
    # a coordinator whose ZooKeeper session is suspended may have been replaced: what it holds may be
    # stale (it refuses commits for the same reason); the client finds the coordinator again
    if error == ErrorCode.none and ctx.broker.check_leader("__consumer_offsets", coord.partition_for(group_id)) is not None:
        error, found = ErrorCode.not_coordinator, [(t, [(p, None) for p, _ in ps]) for t, ps in found]
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


def _fetch_group_by_ids(ctx: RequestContext, group_id: str, topics: Any, require_stable: bool,
                        member: tuple[str | None, int] = (None, -1)) -> tuple[ErrorCode, list[dict[str, Any]]]:
    """OffsetFetch v10 (KIP-848): topics by id, in the request and in the answer."""
    by_id, by_name = _names_by_id(ctx), _ids_by_name(ctx)
    known = None if topics is None else [t for t in topics if t.topic_id in by_id]
    named = None if known is None else [
        SimpleNamespace(name=by_id[t.topic_id], partition_indexes=t.partition_indexes) for t in known]
    error, entries = _fetch_group(ctx, group_id, named, require_stable, member)
    # a topic deleted since its offsets were committed has no id to answer with (Kafka drops it)
    entries = [{**e, "topic_id": by_name[e["name"]]} for e in entries if e["name"] in by_name]
    if error == ErrorCode.none:
        entries += [{"topic_id": t.topic_id, "partitions": [
            {"partition_index": p, "committed_offset": -1, "committed_leader_epoch": -1, "metadata": "",
             "error_code": ErrorCode.unknown_topic_id} for p in t.partition_indexes]}
            for t in topics or () if t.topic_id not in by_id]
    return error, entries


async def offset_fetch(ctx: RequestContext, request: Any) -> Any:
    if ctx.version >= 8:  # KIP-709: several groups in one request
        fetch = _fetch_group_by_ids if ctx.version >= 10 else _fetch_group
        groups = []
        for g in request.groups:
            member = (getattr(g, "member_id", None), getattr(g, "member_epoch", -1))
            error, topics = fetch(ctx, g.group_id, g.topics, request.require_stable, member)
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
    error, results = await coordinator(ctx).delete_offsets(request.group_id, [w for w in wanted if w[0] not in denied])
    results = {**results, **{(t, p): ErrorCode.topic_authorization_failed for t, ps in wanted if t in denied
                             for p in ps}}
    return ctx.respond(
        error_code=error,
        topics=[] if error != ErrorCode.none else [
            {"name": t, "partitions": [{"partition_index": p, "error_code": results[(t, p)]} for p in ps]}
            for t, ps in wanted
        ],
    )
