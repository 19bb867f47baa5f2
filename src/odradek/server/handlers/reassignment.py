"""AlterPartitionReassignments and ListPartitionReassignments (KIP-455).

Both need ALTER / DESCRIBE on the cluster (KafkaApis). In cluster mode only the active
controller carries out AlterPartitionReassignments: it writes the new assignment into
ZooKeeper, fenced by its controller epoch (cluster/reassignment.py), and drives it to its end;
any other broker answers NOT_CONTROLLER at the top level, as Kafka's ZooKeeper-mode
KafkaController does, and the admin clients (which send it to the controller named in
Metadata) refresh their metadata and resend it there. ListPartitionReassignments only reads
what every broker watches, so any broker answers it. The single-node broker has one broker to place
replicas on: a reassignment to [its id] is already done, anything else is refused with
Kafka's INVALID_REPLICA_ASSIGNMENT, and there is never one to list or cancel.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cluster.metadata import TopicError
from odradek.cluster.reassignment import ongoing, plan
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext


async def alter_partition_reassignments(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    if not ctx.authorized(AclOperation.ALTER, ResourceType.CLUSTER):
        return ctx.respond(throttle_time=0, error_code=ErrorCode.cluster_authorization_failed,
                           error_message="Cluster authorization failed.", responses=[])
    allow = getattr(request, "allow_replication_factor_change", True)
    reassign = getattr(broker, "reassign_partitions", None)
    live = {n.node_id for n in broker.live_nodes()}
    responses = []
    for t in request.topics:
        targets: dict[int, list[int] | None] = {
            p.partition_index: (list(p.replicas) if p.replicas is not None else None) for p in t.partitions}
        if reassign is not None:
            try:
                results: dict[int, TopicError | None] = await reassign(t.name, targets, allow)
            except TopicError as exc:  # ControllerMoved: not (or no longer) the controller
                return ctx.respond(throttle_time=0, error_code=ErrorCode[exc.code], error_message=str(exc),
                                   responses=[])
        else:
            results = {}
            meta = broker.topics().get(t.name)
            for p, target in targets.items():
                try:
                    move = plan(meta, p, target, live, allow)
                    results[p] = None if not move.adding and not move.removing else TopicError(
                        "invalid_replica_assignment", "a single-node broker cannot move replicas")
                except TopicError as exc:
                    results[p] = exc
        partitions = []
        for p in t.partitions:
            error = results.get(p.partition_index)
            partitions.append({"partition_index": p.partition_index,
                               "error_code": ErrorCode.none if error is None else ErrorCode[error.code],
                               "error_message": None if error is None else str(error)})
        responses.append({"name": t.name, "partitions": partitions})
    return ctx.respond(throttle_time=0, error_code=ErrorCode.none, error_message=None, responses=responses)


async def list_partition_reassignments(ctx: RequestContext, request: Any) -> Any:
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.CLUSTER):
        return ctx.respond(throttle_time=0, error_code=ErrorCode.cluster_authorization_failed,
                           error_message="Cluster authorization failed.", topics=[])
    wanted = None if request.topics is None else {t.name: list(t.partition_indexes) for t in request.topics}
    topics = [
        {"name": name, "partitions": [
            {"partition_index": p, "replicas": move.replicas, "adding_replicas": move.adding,
             "removing_replicas": move.removing} for p, move in moves]}
        for name, moves in ongoing(ctx.broker.topics(), wanted).items()
    ]
    return ctx.respond(throttle_time=0, error_code=ErrorCode.none, error_message=None, topics=topics)
