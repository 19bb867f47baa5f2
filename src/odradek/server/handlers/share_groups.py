"""Share group APIs (KIP-932): ShareGroupHeartbeat, ShareGroupDescribe, ShareFetch,
ShareAcknowledge, and the share groups' configs (the admin APIs of their offsets are in
share_offsets.py).

The work is done by the ShareCoordinator (coordinator/share_group.py) and each group's
SharePartitions (coordinator/share_partition.py); here are the requests' shapes, the
share sessions' epochs, and the ShareFetch long poll, which waits, like Fetch, in the
purgatory for an append, a release or a lock timeout on one of its partitions.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.coordinator.share_group import ShareCoordinator, ShareSession
from odradek.coordinator.share_partition import RENEW, InvalidRecordState, SharePartition
from odradek.coordinator.share_state import SHARE_GROUP_CONFIGS, validate_group_config
from odradek.protocol.build import ZERO_UUID, timedelta_to_ms
from odradek.protocol.records import scan_batches
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server import app
from odradek.server.dispatcher import RequestContext
from odradek.server.handlers.metadata import current_leader
from odradek.storage.log import OffsetOutOfRangeError

E = ErrorCode
INITIAL_EPOCH, FINAL_EPOCH = 0, -1
READ_COMMITTED = "read_committed"
PARTITION_READ_BYTES = 1 << 20
NO_AUTHORIZED_OPERATIONS = -(2**31)


def share_coordinator(ctx: RequestContext) -> ShareCoordinator:
    coord = getattr(ctx.broker, "share_coordinator", None)
    if coord is None:  # a Broker served without the app's start hooks (embedded use)
        coord = ShareCoordinator(ctx.broker)
        ctx.broker.share_coordinator = coord  # type: ignore[attr-defined]
    assert isinstance(coord, ShareCoordinator)
    return coord


def _start(server: Any) -> list[Any]:
    coord = ShareCoordinator(server.broker)
    server.broker.share_coordinator = coord
    return coord.start()


async def _stop(server: Any) -> None:
    coord = getattr(server.broker, "share_coordinator", None)
    if isinstance(coord, ShareCoordinator):
        await coord.stop()


app.START_HOOKS.append(_start)
app.STOP_HOOKS.append(_stop)


def group_error(ctx: RequestContext, group_id: str) -> ErrorCode | None:
    """Share groups live in the group coordinator of their id (Kafka's GroupCoordinatorService)."""
    coord = ctx.broker.coordinator
    if coord is None:
        return E.coordinator_not_available
    error: ErrorCode | None = coord.group_error(group_id)
    if error is None and group_id in coord.groups:  # the id is taken by a classic group
        return E.group_id_not_found
    return error


# -- ShareGroupHeartbeat / ShareGroupDescribe ------------------------------------


async def share_group_heartbeat(ctx: RequestContext, request: Any) -> Any:
    def fail(code: ErrorCode, message: str | None = None) -> Any:
        return ctx.respond(error_code=code, error_message=message, member_id=None, member_epoch=0,
                           heartbeat_interval=0, assignment=None)

    if not ctx.authorized(AclOperation.READ, ResourceType.GROUP, request.group_id):
        return fail(E.group_authorization_failed)
    subscribed = list(request.subscribed_topic_names) if request.subscribed_topic_names is not None else None
    denied = [t for t in subscribed or () if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, t)]
    if denied:
        return fail(E.topic_authorization_failed)
    error = group_error(ctx, request.group_id)
    if error is not None:
        return fail(error)
    peer = ctx.connection.peer if ctx.connection is not None else ""
    coord = share_coordinator(ctx)
    result = await coord.heartbeat(request.group_id, request.member_id, request.member_epoch, request.rack_id,
                             subscribed, ctx.header.client_id or "", "/" + peer.rsplit(":", 1)[0] if peer else "")
    if result.error:
        return fail(result.error, result.message)
    assignment = None
    if result.assignment is not None:
        assignment = {"topic_partitions": [{"topic_id": t, "partitions": sorted(ps)}
                                           for t, ps in result.assignment.items()]}
    return ctx.respond(error_code=E.none, error_message=None, member_id=request.member_id,
                       member_epoch=result.member_epoch,
                       heartbeat_interval=ctx.broker.config.group_share_heartbeat_interval_ms,
                       assignment=assignment)


async def share_group_describe(ctx: RequestContext, request: Any) -> Any:
    coord = share_coordinator(ctx)
    names = {t.topic_id: n for n, t in ctx.broker.topics().items()}
    groups = []
    for group_id in request.group_ids:
        entry: dict[str, Any] = {"group_id": group_id, "error_code": E.none, "error_message": None,
                                 "group_state": "Dead", "group_epoch": -1, "assignment_epoch": -1,
                                 "assignor_name": "simple", "members": [],
                                 "authorized_operations": NO_AUTHORIZED_OPERATIONS}
        error = group_error(ctx, group_id)
        group = coord.groups.get(group_id)
        if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
            entry.update(error_code=E.group_authorization_failed)
        elif error is not None:
            entry.update(error_code=error)
        elif group is None and not coord.known_group(group_id):
            entry.update(error_code=E.group_id_not_found, error_message=f"Group {group_id} not found.")
        else:
            entry.update(group_state=group.state if group else "Empty", group_epoch=group.epoch if group else 0,
                         assignment_epoch=group.assignment_epoch if group else 0)
            if group is not None:
                entry["members"] = [{
                    "member_id": m.member_id, "rack_id": m.rack_id, "member_epoch": m.epoch,
                    "client_id": m.client_id, "client_host": m.client_host,
                    "subscribed_topic_names": sorted(m.subscribed),
                    "assignment": {"topic_partitions": [
                        {"topic_id": t, "topic_name": names.get(t, ""), "partitions": sorted(ps)}
                        for t, ps in m.assignment.items()]},
                } for m in group.members.values()]
            if request.include_authorized_operations:
                entry["authorized_operations"] = ctx.authorized_operations(ResourceType.GROUP, group_id)
        groups.append(entry)
    return ctx.respond(groups=groups)


# -- ShareFetch / ShareAcknowledge -----------------------------------------------------


def _session(coord: ShareCoordinator, group_id: str, member_id: str, epoch: int,
             is_fetch: bool) -> tuple[ShareSession | None, ErrorCode | None]:
    """Kafka's ShareSessionCache rules: epoch 0 opens a session (ShareFetch only), -1 closes
    it, any other must be the epoch the session expects next."""
    key = (group_id, member_id)
    if epoch == INITIAL_EPOCH:
        if not is_fetch:
            return None, E.invalid_share_session_epoch
        coord.sessions[key] = ShareSession(epoch=1)
        return coord.sessions[key], None
    session = coord.sessions.get(key)
    if epoch == FINAL_EPOCH:
        coord.sessions.pop(key, None)
        return session or ShareSession(epoch=FINAL_EPOCH), None
    if session is None:
        return None, E.share_session_not_found
    if session.epoch != epoch:
        return None, E.invalid_share_session_epoch
    session.epoch = epoch + 1 if epoch < 2**31 - 1 else 1
    return session, None


def _locate(ctx: RequestContext, topic_id: uuid.UUID | None) -> str | None:
    meta = ctx.broker.topic_by_id(topic_id) if topic_id is not None else None
    return meta.name if meta is not None else None


def _partition_error(ctx: RequestContext, name: str | None, partition: int) -> ErrorCode | None:
    if name is None:
        return E.unknown_topic_id
    if not ctx.authorized(AclOperation.READ, ResourceType.TOPIC, name):
        return E.topic_authorization_failed
    if ctx.broker.partition_log(name, partition) is None:
        topic = ctx.broker.topics().get(name)
        known = topic is not None and 0 <= partition < topic.partitions
        return E.not_leader_or_follower if known else E.unknown_topic_or_partition
    return ctx.broker.check_fetch(name, partition, False)


async def _share_partition(ctx: RequestContext, coord: ShareCoordinator, group_id: str, name: str,
                           topic_id: uuid.UUID, partition: int) -> SharePartition | ErrorCode:
    plog = ctx.broker.partition_log(name, partition)
    assert plog is not None
    return await coord.share_partition(group_id, name, topic_id, partition, plog.log_start_offset, plog.high_watermark)


async def _acknowledge(ctx: RequestContext, coord: ShareCoordinator, group_id: str, member_id: str,
                 topics: Any, is_renew_ack: bool) -> dict[tuple[uuid.UUID, int], ErrorCode]:
    """Every acknowledgement batch of the request; the error per partition (INVALID_RECORD_STATE
    for records this member does not hold; INVALID_REQUEST for a RENEW in a request not flagged
    is_renew_ack, as Kafka's KafkaApis validates). Written to __share_group_state before the answer."""
    results: dict[tuple[uuid.UUID, int], ErrorCode] = {}
    now = time.monotonic()
    lock_s, limit = coord.lock_s(group_id), coord.delivery_limit(group_id)
    for topic in topics:
        name = _locate(ctx, topic.topic_id)
        for p in topic.partitions:
            if not p.acknowledgement_batches:
                continue
            key = (topic.topic_id or ZERO_UUID, p.partition_index)
            error = _partition_error(ctx, name, p.partition_index)
            if error is None and not is_renew_ack and any(RENEW in b.acknowledge_types
                                                          for b in p.acknowledgement_batches):
                error = E.invalid_request
            if error is not None:
                results[key] = error
                continue
            assert name is not None
            sp = await _share_partition(ctx, coord, group_id, name, key[0], p.partition_index)
            if isinstance(sp, ErrorCode):  # the share coordinator cannot be reached
                results[key] = sp
                continue
            code = E.none
            released = False
            saved = sp.checkpoint([(b.first_offset, b.last_offset) for b in p.acknowledgement_batches])
            for batch in p.acknowledgement_batches:
                try:
                    released |= sp.acknowledge(member_id, batch.first_offset, batch.last_offset,
                                               list(batch.acknowledge_types), lock_s, limit, now)
                except InvalidRecordState:
                    code = E.invalid_record_state
            if not await coord.save(sp):
                sp.rollback(saved)
                code = E.coordinator_not_available
            if released:
                ctx.broker.purgatory.notify((name, p.partition_index))
            results[key] = code
    return results


async def _acquire(ctx: RequestContext, coord: ShareCoordinator, group_id: str, member_id: str, name: str,
             topic_id: uuid.UUID, partition: int, max_records: int, budget: int) -> tuple[bytes, list[dict[str, int]]]:
    """Read the partition from the share partition's fetch offset and acquire what is
    deliverable; the bytes sent are cut after the last batch holding an acquired record."""
    broker = ctx.broker
    plog = broker.partition_log(name, partition)
    assert plog is not None
    sp = await _share_partition(ctx, coord, group_id, name, topic_id, partition)
    if isinstance(sp, ErrorCode):
        return b"", []
    if sp.start_offset < plog.log_start_offset:  # retention or DeleteRecords moved the log start past it
        sp.reset(plog.log_start_offset)
    committed = coord.group_configs.get(group_id, "share.isolation.level") == READ_COMMITTED
    upper = broker.last_stable_offset(plog) if committed else plog.high_watermark
    offset = sp.fetch_offset()
    if offset >= upper or max_records <= 0:
        return b"", []
    try:
        data = plog.read(offset, min(budget, PARTITION_READ_BYTES), max_offset=upper, min_one=True)
    except OffsetOutOfRangeError:
        return b"", []
    batches, _ = scan_batches(data, verify_crc=False)
    aborted = [(a["producer_id"], a["first_offset"]) for a in broker.aborted_transactions(plog, offset, upper)] \
        if committed else []
    runs, covered = sp.acquire(batches, aborted, member_id, max_records,
                               broker.config.group_share_partition_max_record_locks,
                               coord.lock_s(group_id), time.monotonic())
    if not runs:
        return b"", []
    end = next((b.position + b.size for b in batches if b.next_offset == covered), len(data))
    broker.metrics.bytes_out.labels(name).inc(end)
    return bytes(data[:end]), [{"first_offset": f, "last_offset": last, "delivery_count": d} for f, last, d in runs]


async def share_fetch(ctx: RequestContext, request: Any) -> Any:
    coord = share_coordinator(ctx)
    group_id, member_id = request.group_id or "", request.member_id or ""

    def fail(code: ErrorCode, message: str | None = None) -> Any:
        return ctx.respond(error_code=code, error_message=message, acquisition_lock_timeout=0, responses=[],
                           node_endpoints=[])

    if not group_id or not member_id:
        return fail(E.invalid_request, "ShareFetch needs a group id and a member id.")
    if not ctx.authorized(AclOperation.READ, ResourceType.GROUP, group_id):
        return fail(E.group_authorization_failed)
    session, error = _session(coord, group_id, member_id, request.share_session_epoch, True)
    if error is not None or session is None:
        return fail(error or E.share_session_not_found)
    for topic in request.topics:
        for p in topic.partitions:
            session.partitions[(topic.topic_id or ZERO_UUID, p.partition_index)] = None
    for forgotten in request.forgotten_topics_data:
        for index in forgotten.partitions:
            session.partitions.pop((forgotten.topic_id or ZERO_UUID, index), None)
    acks = await _acknowledge(ctx, coord, group_id, member_id, request.topics,
                              getattr(request, "is_renew_ack", False))
    entries: dict[tuple[uuid.UUID, int], dict[str, Any]] = {}
    endpoints: dict[int, dict[str, Any]] = {}

    def entry(key: tuple[uuid.UUID, int]) -> dict[str, Any]:
        if key not in entries:
            entries[key] = {"partition_index": key[1], "error_code": E.none, "acknowledge_error_code": E.none,
                            "current_leader": {"leader_id": -1, "leader_epoch": -1}, "records": b"",
                            "acquired_records": []}
        return entries[key]

    for key, code in acks.items():
        entry(key)["acknowledge_error_code"] = code
    lock_ms = int(coord.lock_s(group_id) * 1000)
    if request.share_session_epoch == FINAL_EPOCH:
        coord.release_member(group_id, member_id)
    elif not getattr(request, "is_renew_ack", False) and request.max_records > 0:
        deadline = time.monotonic() + timedelta_to_ms(request.max_wait) / 1000
        watched: list[tuple[str, int]] = []
        while True:
            got = await _fetch_round(ctx, coord, group_id, member_id, session, request, entry, endpoints, watched)
            remaining = deadline - time.monotonic()
            if got or remaining <= 0 or not watched:
                break
            await ctx.broker.purgatory.wait(watched, remaining)
            if ctx.connection is not None and ctx.connection.is_closed:
                coord.release_member(group_id, member_id)
                return None
    responses: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for (topic_id, _), e in entries.items():
        responses.setdefault(topic_id, []).append(e)
    return ctx.respond(error_code=E.none, error_message=None, acquisition_lock_timeout=lock_ms,
                       responses=[{"topic_id": t, "partitions": ps} for t, ps in responses.items()],
                       node_endpoints=list(endpoints.values()))


async def _fetch_round(ctx: RequestContext, coord: ShareCoordinator, group_id: str, member_id: str,
                 session: ShareSession, request: Any, entry: Any, endpoints: dict[int, dict[str, Any]],
                 watched: list[tuple[str, int]]) -> bool:
    """One pass over the session's partitions; True when records were acquired (or an error must be told)."""
    left = request.max_records
    budget = request.max_bytes
    got = False
    watched.clear()
    for topic_id, index in list(session.partitions):
        name = _locate(ctx, topic_id)
        error = _partition_error(ctx, name, index)
        if error is not None:
            e = entry((topic_id, index))
            e["error_code"] = error
            if name is not None and error == E.not_leader_or_follower:
                e["current_leader"] = current_leader(ctx, name, index, endpoints)
            got = True
            continue
        assert name is not None
        watched.append((name, index))
        if left <= 0 or budget <= 0:
            continue
        data, runs = await _acquire(ctx, coord, group_id, member_id, name, topic_id, index, left, budget)
        if runs:
            e = entry((topic_id, index))
            e["records"] = data
            e["acquired_records"] = runs
            plog = ctx.broker.partition_log(name, index)
            assert plog is not None
            e["current_leader"] = {"leader_id": ctx.broker.node_id,
                                   "leader_epoch": ctx.broker.leader_epoch(name, index)}
            left -= sum(r["last_offset"] - r["first_offset"] + 1 for r in runs)
            budget -= len(data)
            got = True
    return got


async def share_acknowledge(ctx: RequestContext, request: Any) -> Any:
    coord = share_coordinator(ctx)
    group_id, member_id = request.group_id or "", request.member_id or ""

    def fail(code: ErrorCode) -> Any:
        return ctx.respond(error_code=code, acquisition_lock_timeout=0, responses=[], node_endpoints=[])

    if not ctx.authorized(AclOperation.READ, ResourceType.GROUP, group_id):
        return fail(E.group_authorization_failed)
    _, error = _session(coord, group_id, member_id, request.share_session_epoch, False)
    if error is not None:
        return fail(error)
    acks = await _acknowledge(ctx, coord, group_id, member_id, request.topics,
                              getattr(request, "is_renew_ack", False))
    if request.share_session_epoch == FINAL_EPOCH:
        coord.release_member(group_id, member_id)
    responses: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for (topic_id, index), code in acks.items():
        responses.setdefault(topic_id, []).append({"partition_index": index, "error_code": code,
                                                   "current_leader": {"leader_id": -1, "leader_epoch": -1}})
    return ctx.respond(error_code=E.none, acquisition_lock_timeout=int(coord.lock_s(group_id) * 1000),
                       responses=[{"topic_id": t, "partitions": ps} for t, ps in responses.items()],
                       node_endpoints=[])


# -- group configs (DescribeConfigs / IncrementalAlterConfigs on GROUP resources) ------------


def group_configs(ctx: RequestContext, group_id: str) -> dict[str, str]:
    """The dynamic configs set on a group."""
    return dict(share_coordinator(ctx).group_configs.configs.get(group_id, {}))


def group_config_entries(ctx: RequestContext, group_id: str) -> list[tuple[str, str, bool]]:
    """(name, value, is default) of every share group config, as DescribeConfigs shows them."""
    coord = share_coordinator(ctx)
    config = ctx.broker.config
    broker_defaults = {"share.record.lock.duration.ms": config.group_share_record_lock_duration_ms,
                       "share.session.timeout.ms": config.group_share_session_timeout_ms,
                       "share.heartbeat.interval.ms": config.group_share_heartbeat_interval_ms,
                       "share.delivery.count.limit": config.group_share_delivery_count_limit}
    own = coord.group_configs.configs.get(group_id, {})
    out = []
    for name, default in SHARE_GROUP_CONFIGS.items():
        value = own.get(name) or default or str(broker_defaults.get(name, ""))
        out.append((name, value, name not in own))
    return out


def set_group_configs(ctx: RequestContext, group_id: str, configs: dict[str, str],
                      validate_only: bool) -> tuple[ErrorCode, str] | None:
    """Kafka's GroupConfig.validate for the share group keys; the configs replace the group's."""
    for name, value in configs.items():
        error = validate_group_config(name, value)
        if error is not None:
            return E.invalid_config, error
    if not validate_only:
        share_coordinator(ctx).group_configs.set(group_id, configs)
    return None
