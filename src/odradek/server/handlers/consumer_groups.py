"""KIP-848 consumer group APIs: ConsumerGroupHeartbeat and ConsumerGroupDescribe.

The handler turns topic ids into the coordinator's terms and back; the group
coordinator (coordinator/consumer_coordinator.py) does the work. Kafka 4 clients
use these when `group.protocol=consumer` and the broker's `group.version` is 1+.
"""

from __future__ import annotations

import uuid
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.coordinator.consumer_group import ConsumerGroup, Partitions
from odradek.protocol.build import timedelta_to_ms
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext
from odradek.server.handlers.groups import NO_AUTHORIZED_OPERATIONS, coordinator
from odradek.server.handlers.groups import _client_host as client_host

CLASSIC_MEMBER_TYPE, CONSUMER_MEMBER_TYPE = 0, 1  # ConsumerGroupDescribe v1's MemberType


def _partitions(topics: Any) -> Partitions | None:
    if topics is None:
        return None
    out: Partitions = {}
    for t in topics:
        if t.topic_id is not None:
            out.setdefault(t.topic_id, set()).update(int(p) for p in t.partitions)
    return out


async def consumer_group_heartbeat(ctx: RequestContext, request: Any) -> Any:
    def refuse(code: ErrorCode, message: str) -> Any:
        return ctx.respond(error_code=code, error_message=message, member_id=None, member_epoch=-1,
                           heartbeat_interval=0, assignment=None)

    # KafkaApis: READ on the group; DESCRIBE on every topic named in the subscription
    if not ctx.authorized(AclOperation.READ, ResourceType.GROUP, request.group_id):
        return refuse(ErrorCode.group_authorization_failed, "Group authorization failed.")
    names = request.subscribed_topic_names
    denied = [n for n in names or () if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, n)]
    if denied:
        return refuse(ErrorCode.topic_authorization_failed, f"Topic authorization failed: {', '.join(sorted(denied))}")
    rebalance = timedelta_to_ms(request.rebalance_timeout)
    result = await coordinator(ctx).consumer_heartbeat(
        group_id=request.group_id, member_id=request.member_id, member_epoch=request.member_epoch,
        instance_id=request.instance_id, rack_id=request.rack_id, rebalance_timeout_ms=rebalance,
        topic_names=list(names) if names is not None else None, topic_regex=request.subscribed_topic_regex,
        server_assignor=request.server_assignor, owned=_partitions(request.topic_partitions),
        client_id=ctx.header.client_id or "", client_host=client_host(ctx),
    )
    assignment = None
    if result.assignment is not None and result.error == ErrorCode.none:
        assignment = {"topic_partitions": [
            {"topic_id": t, "partitions": sorted(ps)} for t, ps in sorted(result.assignment.items(), key=lambda kv: str(kv[0]))
        ]}
    return ctx.respond(error_code=result.error, error_message=result.message, member_id=result.member_id,
                       member_epoch=result.member_epoch, heartbeat_interval=result.heartbeat_interval_ms,
                       assignment=assignment)


def _assignment(names: dict[uuid.UUID, str], partitions: Partitions) -> dict[str, Any]:
    return {"topic_partitions": [
        {"topic_id": t, "topic_name": names.get(t, ""), "partitions": sorted(ps)}
        for t, ps in sorted(partitions.items(), key=lambda kv: names.get(kv[0], str(kv[0]))) if ps
    ]}


async def consumer_group_describe(ctx: RequestContext, request: Any) -> Any:
    coord = coordinator(ctx)
    names = {t.topic_id: name for name, t in ctx.broker.topics().items()}
    described = []
    for group_id in request.group_ids:
        entry: dict[str, Any] = {"group_id": group_id, "error_code": ErrorCode.none, "error_message": None,
                                 "group_state": "", "group_epoch": -1, "assignment_epoch": -1,
                                 "assignor_name": "", "members": [],
                                 "authorized_operations": NO_AUTHORIZED_OPERATIONS}
        group = coord.groups.get(group_id)
        error = coord.group_error(group_id)
        if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
            entry.update(error_code=ErrorCode.group_authorization_failed, error_message="Group authorization failed.")
        elif error is not None:
            entry["error_code"] = error
        elif not isinstance(group, ConsumerGroup):
            entry.update(error_code=ErrorCode.group_id_not_found,
                         error_message=f"Group {group_id} not found." if group is None
                         else f"Group {group_id} is not a consumer group.")
        else:
            entry.update(
                group_state=group.state.value, group_epoch=group.group_epoch,
                assignment_epoch=group.assignment_epoch,
                assignor_name=group.assignor_name or coord.assignor_names[0],
                members=[{
                    "member_id": m.member_id, "instance_id": m.instance_id, "rack_id": m.rack_id,
                    "member_epoch": m.member_epoch, "client_id": m.client_id, "client_host": m.client_host,
                    "subscribed_topic_names": m.subscribed_topic_names,
                    "subscribed_topic_regex": m.subscribed_topic_regex,
                    "assignment": _assignment(names, m.assigned),
                    "target_assignment": _assignment(names, group.target.get(m.member_id, {})),
                    "member_type": CLASSIC_MEMBER_TYPE if m.classic is not None else CONSUMER_MEMBER_TYPE,
                } for m in group.consumers.values()],
            )
            if request.include_authorized_operations:
                entry["authorized_operations"] = ctx.authorized_operations(ResourceType.GROUP, group_id)
        described.append(entry)
    return ctx.respond(groups=described)
