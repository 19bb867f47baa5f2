"""CreateTopics, DeleteTopics, CreatePartitions."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cluster.metadata import TopicError
from odradek.cluster.topic_config import InvalidConfigError, effective_topic_configs
from odradek.protocol.build import ZERO_UUID
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.admin_calls import metadata_synced, off_loop, off_loop_unsynced
from odradek.server.dispatcher import RequestContext
from odradek.server.handlers.configs import CONFIG_SOURCE

log = logging.getLogger("odradek.topics")

# Kafka's controller refuses a request that would write more than 10,000 metadata records
# (QuorumController.MAX_RECORDS_PER_USER_OP) with POLICY_VIOLATION; one record per partition.
MAX_NEW_PARTITIONS = 10_000
TOO_LARGE = "Unable to perform excessively large batch operation."


DUPLICATE_NAME = "Duplicate topic name."


def _duplicates(names: list[Any]) -> set[Any]:
    """The entries a request names more than once."""
    return {n for n, count in Counter(names).items() if count > 1}


def _answer_duplicate(entry: dict[str, Any], results: list[dict[str, Any]], reported: set[str]) -> None:
    """A topic the request names twice: answered once, INVALID_REQUEST, and left alone."""
    if entry["name"] not in reported:
        reported.add(entry["name"])
        entry.update(error_code=ErrorCode.invalid_request, error_message=DUPLICATE_NAME)
        results.append(entry)


def _failure(exc: Exception) -> tuple[ErrorCode, str]:
    if isinstance(exc, TopicError):
        return ErrorCode[exc.code], str(exc)
    if isinstance(exc, InvalidConfigError):
        return ErrorCode.invalid_config, str(exc)
    raise exc


def _manual_assignment(broker: Any, t: Any) -> list[list[int]]:
    """kafka-topics --replica-assignment: partitions 0..n-1, each with the same number of
    distinct, registered brokers (Kafka's validateReplicaAssignment; its words)."""
    if t.num_partitions != -1 or t.replication_factor != -1:
        raise TopicError("invalid_request", "Both numPartitions or replicationFactor and replicasAssignments "
                                            "were set. Both cannot be used at the same time.")
    by_partition = {a.partition_index: list(a.broker_ids) for a in t.assignments}
    if len(by_partition) != len(t.assignments) or sorted(by_partition) != list(range(len(by_partition))):
        raise TopicError("invalid_replica_assignment", "partitions should be a consecutive 0-based integer sequence")
    replicas = [by_partition[p] for p in range(len(by_partition))]
    if any(not r for r in replicas):
        raise TopicError("invalid_replica_assignment", "The manual partition assignment includes an empty replica list.")
    if len({len(r) for r in replicas}) != 1:
        raise TopicError("invalid_replica_assignment", "All partitions should have the same number of replicas")
    if any(len(set(r)) != len(r) for r in replicas):
        raise TopicError("invalid_replica_assignment", f"Duplicate replica assignment found: {replicas}")
    live = {n.node_id for n in broker.live_nodes()}
    for b in sorted({b for r in replicas for b in r}):
        if b not in live:
            raise TopicError("invalid_replica_assignment",
                             f"The manual partition assignment includes broker {b}, but no such broker is registered.")
    return replicas


async def create_topics(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    results: list[dict[str, Any]] = []
    # Kafka's ControllerApis: a name given twice is answered once, INVALID_REQUEST, and not created
    duplicates = _duplicates([t.name for t in request.topics])
    reported: set[str] = set()
    new_partitions = 0
    # KafkaApis: CREATE on the cluster, or on each topic; its configs are shown to DESCRIBE_CONFIGS only
    cluster_create = ctx.authorized(AclOperation.CREATE, ResourceType.CLUSTER)
    for i, t in enumerate(request.topics):
        if i:  # the loop's other clients between topics (one of 100 partitions: 2-7 ms of the loop here)
            await asyncio.sleep(0)
        entry: dict[str, Any] = {"name": t.name, "num_partitions": -1, "replication_factor": -1, "configs": None}
        if t.name in duplicates:
            _answer_duplicate(entry, results, reported)
            continue
        if not (cluster_create or ctx.authorized(AclOperation.CREATE, ResourceType.TOPIC, t.name)):
            entry.update(error_code=ErrorCode.topic_authorization_failed, error_message="Authorization failed.")
            results.append(entry)
            continue
        try:
            assignment = _manual_assignment(broker, t) if t.assignments else None
            wanted = broker.config.num_partitions if t.num_partitions == -1 else t.num_partitions
            if assignment is not None:
                wanted = len(assignment)
            if new_partitions + max(wanted, 0) > MAX_NEW_PARTITIONS:
                raise TopicError("policy_violation", TOO_LARGE)
            configs = {c.name: c.value for c in t.configs}
            assigned = getattr(broker, "create_topic_assigned", None)
            # ZooKeeper writes in cluster mode: off the event loop (server/admin_calls.py)
            if assignment is not None and assigned is not None:
                topic = await off_loop_unsynced(broker, assigned, t.name, assignment, configs,
                                                validate_only=request.validate_only)
            elif assignment is not None:  # one broker: the only assignment is [its id] everywhere
                topic = await off_loop_unsynced(broker, broker.create_topic, t.name, len(assignment), 1,
                                                configs, validate_only=request.validate_only)
            else:
                topic = await off_loop_unsynced(broker, broker.create_topic, t.name, t.num_partitions,
                                                t.replication_factor, configs, validate_only=request.validate_only)
        except (TopicError, InvalidConfigError) as exc:
            code, message = _failure(exc)
            log.info("create topic %s refused: %s", t.name, message)
            entry.update(error_code=code, error_message=message)
            results.append(entry)
            continue
        new_partitions += max(wanted, 0)
        entry["error_code"] = ErrorCode.none
        if not ctx.authorized(AclOperation.DESCRIBE_CONFIGS, ResourceType.TOPIC, t.name):
            entry.update(topic_config_error_code=ErrorCode.topic_authorization_failed)
        elif topic is not None:
            entry.update(
                topic_id=topic.topic_id,
                num_partitions=topic.partitions,
                replication_factor=len(topic.replicas[0]),
                configs=[
                    {"name": c.name, "value": c.value, "read_only": False,
                     "config_source": CONFIG_SOURCE[c.source], "is_sensitive": False}
                    for c in effective_topic_configs(topic.configs, broker.config)
                ],
            )
        elif assignment is not None:  # validate_only
            entry.update(num_partitions=len(assignment), replication_factor=len(assignment[0]))
        else:  # validate_only
            entry.update(num_partitions=t.num_partitions, replication_factor=t.replication_factor)
        results.append(entry)
    await metadata_synced(broker)  # one topics.json write for all the request's topics
    return ctx.respond(topics=results)


async def _delete_one(ctx: RequestContext, name: str, topic_id: Any) -> dict[str, Any]:
    broker = ctx.broker
    entry: dict[str, Any] = {"name": name, "error_code": ErrorCode.none}
    if topic_id is not None:
        entry["topic_id"] = topic_id
    if not broker.config.delete_topic_enable:
        entry.update(error_code=ErrorCode.topic_deletion_disabled)
        return entry
    if not ctx.authorized(AclOperation.DELETE, ResourceType.TOPIC, name):
        # KafkaApis: named by id, the name stays hidden from who may not DESCRIBE it
        if topic_id is not None and not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, name):
            entry["name"] = None
        entry.update(error_code=ErrorCode.topic_authorization_failed)
        return entry
    try:
        topic = broker.topics().get(name)
        if topic is not None and topic.internal:
            raise TopicError("invalid_topic_exception", f"internal topic {name} cannot be deleted")
        await off_loop_unsynced(broker, broker.delete_topic, name)  # the request awaits one write
    except TopicError as exc:
        entry.update(error_code=ErrorCode[exc.code], error_message=str(exc))
    return entry


def _invalid(name: str | None, topic_id: Any, message: str) -> dict[str, Any]:
    return {"name": name, "topic_id": topic_id, "error_code": ErrorCode.invalid_request, "error_message": message}


async def delete_topics(ctx: RequestContext, request: Any) -> Any:
    """Kafka's ControllerApis.deleteTopics: names and ids (v6+) each named once; a row with
    neither or both, a name or id given twice, are INVALID_REQUEST and delete nothing."""
    if not hasattr(request, "topics"):  # v1-v5: names only
        duplicates = _duplicates(list(request.topic_names))
        results = [_invalid(n, None, DUPLICATE_NAME) for n in sorted(duplicates)]
        results += [await _delete_one(ctx, n, None) for n in dict.fromkeys(request.topic_names) if n not in duplicates]
        await metadata_synced(ctx.broker)
        return ctx.respond(responses=results)
    results = []
    names: list[str] = []
    ids: list[Any] = []
    for t in request.topics:
        topic_id = None if t.topic_id in (None, ZERO_UUID) else t.topic_id
        if t.name is None and topic_id is None:
            results.append(_invalid(None, ZERO_UUID, "Neither topic name nor id were specified."))
        elif t.name is not None and topic_id is not None:
            results.append(_invalid(t.name, topic_id, "You may not specify both topic name and topic id."))
        elif t.name is not None:
            names.append(t.name)
        else:
            ids.append(topic_id)
    dup_names, dup_ids = _duplicates(names), _duplicates(ids)
    results += [_invalid(n, ZERO_UUID, DUPLICATE_NAME) for n in sorted(dup_names)]
    results += [_invalid(None, i, "Duplicate topic id.") for i in sorted(dup_ids)]
    by_id = {t.topic_id: t.name for t in ctx.broker.topics().values()}
    wanted: dict[str, Any] = {}
    for topic_id in dict.fromkeys(i for i in ids if i not in dup_ids):
        name = by_id.get(topic_id)
        if name is None:
            results.append({"name": None, "topic_id": topic_id, "error_code": ErrorCode.unknown_topic_id})
        else:
            wanted[name] = topic_id
    for name in dict.fromkeys(n for n in names if n not in dup_names):
        if name in wanted:
            results.append(_invalid(name, wanted[name],
                                    "The provided topic name maps to an ID that was already supplied."))
            del wanted[name]
        else:
            wanted[name] = None
    results += [await _delete_one(ctx, name, topic_id) for name, topic_id in wanted.items()]
    await metadata_synced(ctx.broker)  # one topics.json write for all the request's topics
    return ctx.respond(responses=results)


def _grow_assigned(broker: Any, topic: Any, t: Any, validate_only: bool) -> None:
    """kafka-topics --alter --partitions N --replica-assignment: one list per new partition,
    as many replicas as the existing ones, registered brokers only (Kafka's words)."""
    added = t.count - topic.partitions
    replicas = [list(a.broker_ids) for a in t.assignments]
    if len(replicas) != added:
        raise TopicError("invalid_replica_assignment",
                         f"Increasing the number of partitions by {added} but {len(replicas)} assignments provided.")
    rf = len(topic.replicas[0])
    live = {n.node_id for n in broker.live_nodes()}
    for r in replicas:
        if len(r) != rf:
            raise TopicError("invalid_replica_assignment",
                             f"The manual partition assignment includes a partition with {len(r)} replica(s), but "
                             f"this is not consistent with previous partitions, which have {rf} replica(s).")
        if len(set(r)) != len(r):
            raise TopicError("invalid_replica_assignment", f"Duplicate replica assignment found: {replicas}")
        for b in r:
            if b not in live:
                raise TopicError("invalid_replica_assignment", f"The manual partition assignment includes broker "
                                                               f"{b}, but no such broker is registered.")
    grow = getattr(broker, "create_partitions_assigned", None)
    if grow is not None:
        grow(t.name, replicas, validate_only=validate_only)
    else:  # one broker: every list is [its id], as create_partitions places them
        broker.create_partitions(t.name, t.count, validate_only=validate_only)


async def create_partitions(ctx: RequestContext, request: Any) -> Any:
    results: list[dict[str, Any]] = []
    duplicates = _duplicates([t.name for t in request.topics])  # as CreateTopics: answered once, not grown
    reported: set[str] = set()
    new_partitions = 0
    for t in request.topics:
        entry: dict[str, Any] = {"name": t.name, "error_code": ErrorCode.none}
        if t.name in duplicates:
            _answer_duplicate(entry, results, reported)
            continue
        if not ctx.authorized(AclOperation.ALTER, ResourceType.TOPIC, t.name):
            entry.update(error_code=ErrorCode.topic_authorization_failed,
                         error_message="The topic authorization is failed.")
            results.append(entry)
            continue
        try:
            topic = ctx.broker.topics().get(t.name)
            added = t.count - topic.partitions if topic is not None else 0
            if added > 0 and new_partitions + added > MAX_NEW_PARTITIONS:
                raise TopicError("policy_violation", TOO_LARGE)
            if t.assignments and topic is not None and added > 0:
                await off_loop(ctx.broker, _grow_assigned, ctx.broker, topic, t, request.validate_only)
            else:
                await off_loop(ctx.broker, ctx.broker.create_partitions, t.name, t.count,
                               validate_only=request.validate_only)
            new_partitions += max(added, 0)
        except TopicError as exc:
            entry.update(error_code=ErrorCode[exc.code], error_message=str(exc))
        results.append(entry)
    return ctx.respond(results=results)
