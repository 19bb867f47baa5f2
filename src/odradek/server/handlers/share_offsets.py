"""The admin APIs of share groups' offsets (KIP-932): DescribeShareGroupOffsets,
AlterShareGroupOffsets, DeleteShareGroupOffsets.

A share partition's start offset (SPSO) lives in its state in __share_group_state;
these read it (with the records delivered for good past it, KIP-1226's lag), set it
(the state initialized again under a newer state epoch, which fences the partition
leader's next write so that it reads the state again) or delete it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cluster.metadata import TopicMetadata
from odradek.coordinator.share_group import ShareCoordinator
from odradek.protocol.build import ZERO_UUID
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext
from odradek.server.handlers.share_groups import group_error, share_coordinator

E = ErrorCode


async def describe_share_group_offsets(ctx: RequestContext, request: Any) -> Any:
    coord = share_coordinator(ctx)
    known = ctx.broker.topics()
    groups = []
    for g in request.groups:
        out: dict[str, Any] = {"group_id": g.group_id, "topics": [], "error_code": E.none, "error_message": None}
        error = group_error(ctx, g.group_id)
        if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.GROUP, g.group_id):
            out["error_code"] = E.group_authorization_failed
        elif error is not None:
            out["error_code"] = error
        else:  # as Kafka: a group never heard of, a topic or partition unknown: start offset -1, no error
            asked = {t.topic_name: list(t.partitions) for t in g.topics} if g.topics is not None else None
            state = await coord.group_state(g.group_id, asked)
            wanted = [(t.topic_name, list(t.partitions)) for t in g.topics] if g.topics is not None else \
                [(n, sorted(p for (tn, _, p) in state if tn == n)) for n in sorted({k[0] for k in state})]
            wanted.sort(key=lambda x: x[0] not in known)  # Kafka answers the unknown topics last
            for name, partitions in wanted:
                meta = known.get(name)
                rows = []
                for p in partitions:
                    row: dict[str, Any] = {"partition_index": p, "start_offset": -1, "leader_epoch": 0, "lag": -1,
                                           "error_code": E.none, "error_message": None}
                    if meta is not None and (name, meta.topic_id, p) in state:
                        start, done = state[(name, meta.topic_id, p)]
                        plog = ctx.broker.partition_log(name, p)
                        row.update(start_offset=start, leader_epoch=ctx.broker.leader_epoch(name, p))
                        if plog is not None and start >= 0:  # KIP-1226: records after the SPSO not yet delivered for good
                            row["lag"] = max(plog.high_watermark - start - done, 0)
                    rows.append(row)
                out["topics"].append({"topic_name": name, "topic_id": meta.topic_id if meta else ZERO_UUID,
                                      "partitions": rows})
        groups.append(out)
    return ctx.respond(groups=groups)


TopicAnswer = Callable[[ShareCoordinator, Any, TopicMetadata | None], Awaitable[dict[str, Any]]]


async def _change_offsets(ctx: RequestContext, request: Any, answer: TopicAnswer, must_exist: bool = False) -> Any:
    """Alter/DeleteShareGroupOffsets: refused as a whole while the group's offsets cannot change
    (`must_exist`: nor when the group is unknown), else `answer` for each topic asked for, in turn."""
    coord = share_coordinator(ctx)
    code, message = _emptygroup_error(ctx, coord, request.group_id)
    if code == E.none and must_exist and not coord.known_group(request.group_id):
        code, message = E.group_id_not_found, f"Group {request.group_id} not found."
    if code:
        return ctx.respond(error_code=code, error_message=message, responses=[])
    known = ctx.broker.topics()
    responses = [await answer(coord, t, known.get(t.topic_name)) for t in request.topics]
    return ctx.respond(error_code=E.none, error_message=None, responses=responses)


def _emptygroup_error(ctx: RequestContext, coord: ShareCoordinator, group_id: str) -> tuple[ErrorCode, str | None]:
    if not ctx.authorized(AclOperation.READ, ResourceType.GROUP, group_id):
        return E.group_authorization_failed, None
    error = group_error(ctx, group_id)
    if error is not None:
        return error, None
    group = coord.groups.get(group_id)
    if group is not None and group.members:  # Kafka: offsets change only in an empty group
        return E.non_empty_group, "The group is not empty."
    return E.none, None


async def alter_share_group_offsets(ctx: RequestContext, request: Any) -> Any:
    async def answer(coord: ShareCoordinator, t: Any, meta: TopicMetadata | None) -> dict[str, Any]:
        rows = []
        for p in t.partitions:
            row: dict[str, Any] = {"partition_index": p.partition_index, "error_code": E.none, "error_message": None}
            if meta is None or not 0 <= p.partition_index < meta.partitions:
                row["error_code"] = E.unknown_topic_or_partition
            elif not ctx.authorized(AclOperation.READ, ResourceType.TOPIC, t.topic_name):
                row["error_code"] = E.topic_authorization_failed
            else:
                row["error_code"] = await _alter_start_offset(ctx, coord, request.group_id, t.topic_name,
                                                              meta.topic_id, p.partition_index, p.start_offset)
            rows.append(row)
        return {"topic_name": t.topic_name, "topic_id": meta.topic_id if meta else ZERO_UUID, "partitions": rows}

    return await _change_offsets(ctx, request, answer)


async def _alter_start_offset(ctx: RequestContext, coord: ShareCoordinator, group_id: str, topic: str,
                              topic_id: uuid.UUID, partition: int, start_offset: int) -> ErrorCode:
    """A new SPSO with nothing in flight, under a new state epoch: the partition's leader, here or
    not, finds its next write fenced (FENCED_STATE_EPOCH) and reads the state again."""
    key = (group_id, topic_id, partition)
    error, snap = await coord.persister.read(key)
    if error and error != E.invalid_request:  # (INVALID_REQUEST: never initialized)
        return error
    coord.partitions.pop((group_id, topic, partition), None)
    plog = ctx.broker.partition_log(topic, partition)
    if plog is not None:  # led here: the offset is kept within the log
        start_offset = min(max(start_offset, plog.log_start_offset), plog.high_watermark)
    group = coord.groups.get(group_id)
    state_epoch = max(snap[0] if snap else 0, group.epoch if group else 0) + 1
    error = await coord.persister.initialize(key, state_epoch, start_offset)
    if not error and group is not None:
        group.initialized.add((topic_id, partition))
    return error


async def delete_share_group_offsets(ctx: RequestContext, request: Any) -> Any:
    async def answer(coord: ShareCoordinator, t: Any, meta: TopicMetadata | None) -> dict[str, Any]:
        row: dict[str, Any] = {"topic_name": t.topic_name, "topic_id": meta.topic_id if meta else ZERO_UUID,
                               "error_code": E.none, "error_message": None}
        if meta is None:
            row["error_code"] = E.unknown_topic_or_partition
        else:
            row["error_code"] = await coord.delete_state(request.group_id, t.topic_name, meta.topic_id,
                                                         meta.partitions)
        return row

    return await _change_offsets(ctx, request, answer, must_exist=True)
