"""Group membership APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
LeaveGroup, ListGroups, DescribeGroups, DeleteGroups.

Each handler decodes the version differences and asks the GroupCoordinator
(coordinator/) to do the work; a JoinGroup or SyncGroup that has to wait for the
rest of the group awaits its future here.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.coordinator import GroupCoordinator
from odradek.coordinator.consumer_group import ConsumerGroup
from odradek.coordinator.share_state import parse_share_key
from odradek.protocol.build import timedelta_to_ms
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server import app
from odradek.server.dispatcher import RequestContext

GROUP_KEY = 0
TRANSACTION_KEY = 1
SHARE_KEY = 2
NO_AUTHORIZED_OPERATIONS = -(2**31)


def coordinator(ctx: RequestContext) -> GroupCoordinator:
    coord = ctx.broker.coordinator
    if coord is None:  # a Broker served without the app's start hooks (embedded use)
        coord = ctx.broker.coordinator = GroupCoordinator(ctx.broker)
    assert isinstance(coord, GroupCoordinator)
    return coord


def _start_coordinator(server: Any) -> list[Any]:
    coord = GroupCoordinator(server.broker)
    server.broker.coordinator = coord
    return coord.start()


async def _stop_coordinator(server: Any) -> None:
    coord = server.broker.coordinator
    if isinstance(coord, GroupCoordinator):
        await coord.stop()


app.START_HOOKS.append(_start_coordinator)
app.STOP_HOOKS.append(_stop_coordinator)


def _client_host(ctx: RequestContext) -> str:
    peer = ctx.connection.peer if ctx.connection is not None else ""
    return "/" + peer.rsplit(":", 1)[0] if peer else ""


# -- FindCoordinator ---------------------------------------------------------


def _locate(ctx: RequestContext, key: str, key_type: int) -> dict[str, Any]:
    broker = ctx.broker
    entry: dict[str, Any] = {"key": key, "node_id": -1, "host": "", "port": -1,
                             "error_code": ErrorCode.none, "error_message": None}
    # KafkaApis.getCoordinator: DESCRIBE on the group, or on the transactional id
    if key_type == GROUP_KEY and not ctx.authorized(AclOperation.DESCRIBE, ResourceType.GROUP, key):
        entry.update(error_code=ErrorCode.group_authorization_failed, error_message="Group authorization failed.")
        return entry
    if key_type == TRANSACTION_KEY and not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, key):
        entry.update(error_code=ErrorCode.transactional_id_authorization_failed,
                     error_message="Transactional Id authorization failed.")
        return entry
    if key_type == SHARE_KEY:
        # KafkaApis.getCoordinator: the share key type from v6 on (KIP-932), CLUSTER_ACTION on the cluster;
        # the key "group:topicId:partition" names its __share_group_state partition
        share = getattr(broker, "share_coordinator", None)
        if ctx.version >= 6 and not ctx.authorized(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER):
            entry.update(error_code=ErrorCode.cluster_authorization_failed, error_message="Cluster authorization failed.")
            return entry
        parsed = parse_share_key(key)  # Kafka's SharePartitionKey: group:base64 topic id:partition
        if ctx.version < 6 or share is None or isinstance(parsed, str):
            entry.update(error_code=ErrorCode.invalid_request,
                         error_message=parsed if isinstance(parsed, str) else f"invalid share coordinator key {key!r}")
            return entry
        if not share.store.ensure_topic():
            entry.update(error_code=ErrorCode.coordinator_not_available,
                         error_message="__share_group_state is not available")
            return entry
        leader = broker.leader_of(share.store.topic, share.store.partition_for(share.store.share_key(*parsed)))
    elif key_type == GROUP_KEY:
        coord = coordinator(ctx)
        if not coord.store.ensure_topic():
            entry.update(error_code=ErrorCode.coordinator_not_available, error_message="__consumer_offsets is not available")
            return entry
        leader = broker.leader_of("__consumer_offsets", coord.partition_for(key))
    elif key_type == TRANSACTION_KEY and getattr(broker, "transaction_coordinator", None) is not None:
        txn = broker.transaction_coordinator
        if not txn.store.ensure_topic():
            entry.update(error_code=ErrorCode.coordinator_not_available, error_message="__transaction_state is not available")
            return entry
        leader = broker.leader_of("__transaction_state", txn.partition_for(key))
    elif key_type == TRANSACTION_KEY:
        entry.update(error_code=ErrorCode.coordinator_not_available, error_message="no transaction coordinator")
        return entry
    else:
        entry.update(error_code=ErrorCode.invalid_request, error_message=f"unknown key type {key_type}")
        return entry
    node = next((n for n in broker.live_nodes() if n.node_id == leader), None)
    if node is None:
        entry.update(error_code=ErrorCode.coordinator_not_available, error_message="the coordinator is offline")
        return entry
    host, port = ctx.address(node)
    entry.update(node_id=node.node_id, host=host, port=port)
    return entry


async def find_coordinator(ctx: RequestContext, request: Any) -> Any:
    key_type = getattr(request, "key_type", GROUP_KEY)
    if ctx.version >= 4:
        return ctx.respond(coordinators=[_locate(ctx, k, key_type) for k in request.coordinator_keys])
    entry = _locate(ctx, request.key, key_type)
    entry.pop("key")
    return ctx.respond(entry)


# -- JoinGroup / SyncGroup / Heartbeat / LeaveGroup ----------------------------------


def _may_read(ctx: RequestContext, group_id: str) -> bool:
    """JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit need READ on the group."""
    return ctx.authorized(AclOperation.READ, ResourceType.GROUP, group_id)


async def join_group(ctx: RequestContext, request: Any) -> Any:
    if not _may_read(ctx, request.group_id):
        return ctx.respond(error_code=ErrorCode.group_authorization_failed, generation_id=-1,
                           protocol_type=None, protocol_name=None if ctx.version >= 7 else "",
                           leader="", member_id="", members=[])
    rebalance = getattr(request, "rebalance_timeout", None)
    future = coordinator(ctx).join(
        group_id=request.group_id,
        member_id=request.member_id,
        instance_id=getattr(request, "group_instance_id", None),
        client_id=ctx.header.client_id or "",
        client_host=_client_host(ctx),
        session_timeout_ms=timedelta_to_ms(request.session_timeout),
        rebalance_timeout_ms=timedelta_to_ms(rebalance) if rebalance is not None else -1,
        protocol_type=request.protocol_type,
        protocols=[(p.name, p.metadata) for p in request.protocols],
        require_known_member_id=ctx.version >= 4,  # KIP-394
        version=ctx.version,
    )
    result = await future
    nullable = ctx.version >= 7
    return ctx.respond(
        error_code=result.error,
        generation_id=result.generation,
        protocol_type=result.protocol_type,
        protocol_name=result.protocol_name if nullable else (result.protocol_name or ""),
        leader=result.leader,
        skip_assignment=result.skip_assignment,
        member_id=result.member_id,
        members=[{"member_id": m, "group_instance_id": i, "metadata": md} for m, i, md in result.members],
    )


async def sync_group(ctx: RequestContext, request: Any) -> Any:
    if not _may_read(ctx, request.group_id):
        return ctx.respond(error_code=ErrorCode.group_authorization_failed, protocol_type=None,
                           protocol_name=None, assignment=b"")
    future = coordinator(ctx).sync(
        group_id=request.group_id,
        generation=request.generation_id,
        member_id=request.member_id,
        instance_id=getattr(request, "group_instance_id", None),
        protocol_type=getattr(request, "protocol_type", None),
        protocol_name=getattr(request, "protocol_name", None),
        assignments={a.member_id: a.assignment for a in request.assignments},
    )
    result = await future
    return ctx.respond(error_code=result.error, protocol_type=result.protocol_type,
                       protocol_name=result.protocol_name, assignment=result.assignment)


async def heartbeat(ctx: RequestContext, request: Any) -> Any:
    if not _may_read(ctx, request.group_id):
        return ctx.respond(error_code=ErrorCode.group_authorization_failed)
    error = coordinator(ctx).heartbeat(request.group_id, request.generation_id, request.member_id,
                                       getattr(request, "group_instance_id", None))
    return ctx.respond(error_code=error)


async def leave_group(ctx: RequestContext, request: Any) -> Any:
    if not _may_read(ctx, request.group_id):
        return ctx.respond(error_code=ErrorCode.group_authorization_failed, members=[])
    if ctx.version >= 3:
        members = [(m.member_id, m.group_instance_id) for m in request.members]
    else:
        members = [(request.member_id, None)]
    top, errors = await coordinator(ctx).leave(request.group_id, members)
    if ctx.version < 3:
        return ctx.respond(error_code=top if top != ErrorCode.none else errors[0])
    return ctx.respond(
        error_code=top,
        members=[{"member_id": m, "group_instance_id": i, "error_code": e} for (m, i), e in zip(members, errors)],
    )


# -- ListGroups / DescribeGroups / DeleteGroups ---------------------------------------


async def list_groups(ctx: RequestContext, request: Any) -> Any:
    states = {s.lower() for s in getattr(request, "states_filter", ()) or ()}
    types = {t.lower() for t in getattr(request, "types_filter", ()) or ()}
    # KafkaApis: DESCRIBE on the cluster lists every group, else those the principal may DESCRIBE
    every = ctx.authorized(AclOperation.DESCRIBE, ResourceType.CLUSTER)
    groups = []
    for g in coordinator(ctx).list_groups():
        if not every and not ctx.authorized(AclOperation.DESCRIBE, ResourceType.GROUP, g.group_id):
            continue
        if states and g.state.value.lower() not in states:
            continue
        group_type = "consumer" if isinstance(g, ConsumerGroup) else "classic"
        if types and group_type not in types:
            continue
        groups.append({"group_id": g.group_id, "protocol_type": g.protocol_type or "",
                       "group_state": g.state.value, "group_type": group_type})
    share = getattr(ctx.broker, "share_coordinator", None)  # KIP-932 share groups: type and protocol "share"
    for group_id, state in share.list_groups() if share is not None and (not types or "share" in types) else ():
        if (every or ctx.authorized(AclOperation.DESCRIBE, ResourceType.GROUP, group_id)) and (
                not states or state.lower() in states):
            groups.append({"group_id": group_id, "protocol_type": "share", "group_state": state,
                           "group_type": "share"})
    return ctx.respond(error_code=ErrorCode.none, groups=groups)


async def describe_groups(ctx: RequestContext, request: Any) -> Any:
    coord = coordinator(ctx)
    include_ops = getattr(request, "include_authorized_operations", False)
    described = []
    for group_id in request.groups:
        entry: dict[str, Any] = {"group_id": group_id, "group_state": "Dead", "protocol_type": "",
                                 "protocol_data": "", "members": [], "error_code": ErrorCode.none,
                                 "authorized_operations": NO_AUTHORIZED_OPERATIONS}
        error = coord.group_error(group_id)
        group = coord.groups.get(group_id)
        if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
            entry.update(error_code=ErrorCode.group_authorization_failed, group_state="")
        elif error is not None:
            entry["error_code"] = error
        elif group is None:
            if ctx.version >= 6:  # KIP-1043: unknown groups are an error from v6 on
                entry.update(error_code=ErrorCode.group_id_not_found,
                             error_message=f"group {group_id} not found")
        else:
            entry.update(group.describe())
            if include_ops:  # KIP-430
                entry["authorized_operations"] = ctx.authorized_operations(ResourceType.GROUP, group_id)
        described.append(entry)
    return ctx.respond(groups=described)


async def delete_groups(ctx: RequestContext, request: Any) -> Any:
    names = list(request.groups_names)
    allowed = [g for g in names if ctx.authorized(AclOperation.DELETE, ResourceType.GROUP, g)]
    errors = dict(zip(allowed, await coordinator(ctx).delete_groups(allowed), strict=True))
    share = getattr(ctx.broker, "share_coordinator", None)  # KIP-932: DeleteGroups deletes share groups too
    for g, error in list(errors.items()):
        if error == ErrorCode.group_id_not_found and share is not None and share.known_group(g):
            errors[g] = await share.delete_group(g)
    return ctx.respond(results=[{"group_id": g, "error_code": errors.get(g, ErrorCode.group_authorization_failed)}
                                for g in names])
