"""Transaction APIs: AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit,
WriteTxnMarkers, DescribeTransactions, ListTransactions, DescribeProducers.

The work is the transaction coordinator's (coordinator/transactions.py) and, for
TxnOffsetCommit, the group coordinator's; markers are appended by the partition
leader (Broker.write_txn_marker), which WriteTxnMarkers exposes to other brokers.
KIP-588: fenced producers get PRODUCER_FENCED from the versions that know it
(AddPartitions/AddOffsets/EndTxn v2+, InitProducerId v4+), INVALID_PRODUCER_EPOCH before.
KIP-890: EndTxn v5 and AddPartitionsToTxn v4+ (from partition leaders) are transactions
version 2; TxnOffsetCommit v5 adds the group's partition to the transaction itself.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cluster.metadata import INTERNAL_TOPICS
from odradek.coordinator.offsets import Commit
from odradek.coordinator.store import OFFSETS_TOPIC
from odradek.coordinator.transactions import TransactionCoordinator
from odradek.coordinator.txn_records import TV2, TxnState
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server import app
from odradek.server.add_partitions_to_txn import (
    TXN_OFFSET_COMMIT_ADDS_FROM,
    TXN_OFFSET_COMMIT_KNOWS_ABORTABLE_FROM,
    verify,
)
from odradek.server.dispatcher import RequestContext
from odradek.server.handlers.groups import coordinator

E = ErrorCode
READ, WRITE, DESCRIBE = AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE
TOPIC, GROUP, TXN_ID = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID


def transaction_coordinator(ctx: RequestContext) -> TransactionCoordinator:
    txn = ctx.broker.transaction_coordinator
    if txn is None:  # a broker driven without the server app (tests of one handler)
        txn = ctx.broker.transaction_coordinator = TransactionCoordinator(ctx.broker)
    return txn  # type: ignore[no-any-return]


def _fenced(ctx: RequestContext, since: int) -> ErrorCode:
    return E.producer_fenced if ctx.version >= since else E.invalid_producer_epoch


def _start(server: Any) -> list[Any]:
    txn = server.broker.transaction_coordinator = TransactionCoordinator(server.broker)
    moved = getattr(server.broker, "on_leadership_change", None)
    if moved is not None:  # cluster mode: coordinate the ids of the __transaction_state partitions led here
        def follow(topic: str, partition: int, is_leader: bool) -> None:
            if topic == "__transaction_state":
                txn.partition_moved(partition, is_leader, max(server.broker.leader_epoch(topic, partition), 0))
        moved(follow)
    return txn.start()


async def _stop(server: Any) -> None:
    txn = server.broker.transaction_coordinator
    if txn is not None:
        await txn.stop()


app.START_HOOKS.append(_start)
app.STOP_HOOKS.append(_stop)


async def init_producer_id(ctx: RequestContext, request: Any) -> Any:
    """InitProducerId with a transactional.id (producer_ids.py hands it over)."""
    if getattr(request, "enable2_pc", False):
        # KIP-939: transaction.two.phase.commit.enable is false (odradek has no two-phase commit), which
        # Kafka's coordinator answers as an authorization failure
        return ctx.respond(error_code=E.transactional_id_authorization_failed, producer_id=-1, producer_epoch=-1)
    if getattr(request, "keep_prepared_txn", False):  # Kafka: not implemented yet
        return ctx.respond(error_code=E.unsupported_version, producer_id=-1, producer_epoch=-1)
    timeout = request.transaction_timeout
    timeout_ms = int(timeout.total_seconds() * 1000) if hasattr(timeout, "total_seconds") else int(timeout)
    error, pid, epoch = await transaction_coordinator(ctx).init_producer_id(
        request.transactional_id, timeout_ms, getattr(request, "producer_id", -1),
        getattr(request, "producer_epoch", -1), fenced=_fenced(ctx, 4))
    return ctx.respond(error_code=error, producer_id=pid, producer_epoch=epoch)


def _refused_partitions(ctx: RequestContext, tid: str, wanted: list[tuple[str, int]]) -> dict[tuple[str, int], E] | None:
    """KafkaApis (v0-3, from clients): WRITE on the transactional id, then on every topic (an
    internal topic never counts as written to); a refusal adds nothing: the other partitions
    are OPERATION_NOT_ATTEMPTED (UNKNOWN_TOPIC_OR_PARTITION if they do not exist)."""
    if not ctx.authorized(WRITE, TXN_ID, tid):
        return {tp: E.transactional_id_authorization_failed for tp in wanted}
    denied = {t for t, _ in wanted if t in INTERNAL_TOPICS or not ctx.authorized(WRITE, TOPIC, t)}
    if not denied:
        return None
    return {(t, p): E.topic_authorization_failed if t in denied
            else E.unknown_topic_or_partition if ctx.broker.partition_log(t, p) is None
            else E.operation_not_attempted for t, p in wanted}


async def add_partitions_to_txn(ctx: RequestContext, request: Any) -> Any:
    if ctx.version >= 4:
        return await _add_partitions_batched(ctx, request)
    wanted = [(t.name, p) for t in request.v3_and_below_topics for p in t.partitions]
    results = _refused_partitions(ctx, request.v3_and_below_transactional_id, wanted)
    if results is None:
        results = await transaction_coordinator(ctx).add_partitions(
            request.v3_and_below_transactional_id, request.v3_and_below_producer_id,
            request.v3_and_below_producer_epoch, wanted, fenced=_fenced(ctx, 2))
    return ctx.respond(results_by_topic_v3_and_below=[
        {"name": t.name, "results_by_partition": [
            {"partition_index": p, "partition_error_code": results[(t.name, p)]} for p in t.partitions]}
        for t in request.v3_and_below_topics
    ])


async def _add_partitions_batched(ctx: RequestContext, request: Any) -> Any:
    """v4+, from a partition leader (KIP-890): several transactions, each added or, with
    verify_only, checked. Only brokers send it: CLUSTER_ACTION on the cluster, no topic ACLs."""
    if not ctx.authorized(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER):
        return ctx.respond(error_code=E.cluster_authorization_failed, results_by_transaction=[])
    txn = transaction_coordinator(ctx)
    topics = ctx.broker.topics()
    results = []
    for t in request.transactions:
        wanted = [(topic.name, p) for topic in t.topics for p in topic.partitions]
        unknown = {(n, p) for n, p in wanted if n not in topics or not 0 <= p < topics[n].partitions}
        if unknown:
            errors = {tp: E.unknown_topic_or_partition if tp in unknown else E.operation_not_attempted
                      for tp in wanted}
        elif t.verify_only:
            errors = txn.verify_partitions(t.transactional_id, t.producer_id, t.producer_epoch, wanted)
        else:
            errors = await txn.add_partitions(t.transactional_id, t.producer_id, t.producer_epoch, wanted,
                                              transaction_version=TV2)
        results.append({"transactional_id": t.transactional_id, "topic_results": [
            {"name": topic.name, "results_by_partition": [
                {"partition_index": p, "partition_error_code": errors[(topic.name, p)]} for p in topic.partitions]}
            for topic in t.topics]})
    return ctx.respond(error_code=E.none, results_by_transaction=results)


async def add_offsets_to_txn(ctx: RequestContext, request: Any) -> Any:
    if not ctx.authorized(WRITE, TXN_ID, request.transactional_id):
        return ctx.respond(error_code=E.transactional_id_authorization_failed)
    if not ctx.authorized(READ, GROUP, request.group_id):
        return ctx.respond(error_code=E.group_authorization_failed)
    error = await transaction_coordinator(ctx).add_offsets(
        request.transactional_id, request.producer_id, request.producer_epoch, request.group_id,
        fenced=_fenced(ctx, 2))
    return ctx.respond(error_code=error)


async def end_txn(ctx: RequestContext, request: Any) -> Any:
    if not ctx.authorized(WRITE, TXN_ID, request.transactional_id):
        return ctx.respond(error_code=E.transactional_id_authorization_failed, producer_id=-1, producer_epoch=-1)
    error, pid, epoch = await transaction_coordinator(ctx).end_txn(
        request.transactional_id, request.producer_id, request.producer_epoch, request.committed,
        fenced=_fenced(ctx, 2), transaction_version=TV2 if ctx.version >= 5 else 0)
    return ctx.respond(error_code=error, producer_id=pid, producer_epoch=epoch)


async def txn_offset_commit(ctx: RequestContext, request: Any) -> Any:
    # KafkaApis: WRITE on the transactional id, READ on the group (else every partition fails),
    # then READ on each topic
    refused = (E.transactional_id_authorization_failed if not ctx.authorized(WRITE, TXN_ID, request.transactional_id)
               else E.group_authorization_failed if not ctx.authorized(READ, GROUP, request.group_id)
               else E.topic_authorization_failed)
    denied = {t.name for t in request.topics
              if refused != E.topic_authorization_failed or not ctx.authorized(READ, TOPIC, t.name)}
    commits = [
        Commit(t.name, p.partition_index, p.committed_offset, getattr(p, "committed_leader_epoch", -1),
               p.committed_metadata)
        for t in request.topics if t.name not in denied
        for p in t.partitions
    ]
    unverified = await _verify_offsets_partition(ctx, request) if commits else None
    if unverified is not None:
        refused, denied = unverified, {t.name for t in request.topics}
        commits = []
    errors = iter(await coordinator(ctx).txn_commit_replicated(
        request.group_id, request.producer_id, request.producer_epoch, getattr(request, "generation_id", -1),
        getattr(request, "member_id", ""), getattr(request, "group_instance_id", None), commits) if commits else ())
    return ctx.respond(topics=[
        {"name": t.name, "partitions": [
            {"partition_index": p.partition_index, "error_code": refused if t.name in denied else next(errors)}
            for p in t.partitions]}
        for t in request.topics
    ])


async def _verify_offsets_partition(ctx: RequestContext, request: Any) -> ErrorCode | None:
    """KIP-890 for TxnOffsetCommit: the group's __consumer_offsets partition must be in the
    transaction (v0-4), or is added to it (v5+, transactions version 2, no AddOffsetsToTxn).
    The error for every partition, or None when the offsets may be written."""
    groups = coordinator(ctx)
    if not groups.store.exists():
        return None  # the group coordinator answers
    tp = (OFFSETS_TOPIC, groups.store.partition_for(request.group_id))
    checked = await verify(ctx.broker, request.transactional_id, {tp: (request.producer_id, request.producer_epoch)},
                           add=ctx.version >= TXN_OFFSET_COMMIT_ADDS_FROM,
                           knows_abortable=ctx.version >= TXN_OFFSET_COMMIT_KNOWS_ABORTABLE_FROM)
    error = checked.error_for(*tp)
    # the group coordinator's view of errors (Kafka's CoordinatorOperationExceptionHelper)
    return E.coordinator_not_available if error == E.not_enough_replicas else error


async def write_txn_markers(ctx: RequestContext, request: Any) -> Any:
    """From a transaction coordinator on another broker: markers for partitions led here."""
    broker = ctx.broker
    # KafkaApis: ALTER or CLUSTER_ACTION on the cluster (brokers), else every partition fails
    if not (ctx.authorized(AclOperation.ALTER, ResourceType.CLUSTER)
            or ctx.authorized(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER)):
        return ctx.respond(markers=[
            {"producer_id": m.producer_id, "topics": [
                {"name": t.name, "partitions": [{"partition_index": p, "error_code": E.cluster_authorization_failed}
                                                for p in t.partition_indexes]} for t in m.topics]}
            for m in request.markers])
    results = []
    for marker in request.markers:
        topics = []
        for t in marker.topics:
            codes = await asyncio.gather(*(
                broker.write_txn_marker(t.name, p, marker.producer_id, marker.producer_epoch,
                                        marker.transaction_result, marker.coordinator_epoch,
                                        getattr(marker, "transaction_version", 0))
                for p in t.partition_indexes))
            topics.append({"name": t.name, "partitions": [
                {"partition_index": p, "error_code": code} for p, code in zip(t.partition_indexes, codes, strict=True)]})
        results.append({"producer_id": marker.producer_id, "topics": topics})
    return ctx.respond(markers=results)


async def describe_transactions(ctx: RequestContext, request: Any) -> Any:
    txn = transaction_coordinator(ctx)
    states = []
    for tid in request.transactional_ids:
        if not ctx.authorized(DESCRIBE, TXN_ID, tid):  # KafkaApis
            states.append({"error_code": E.transactional_id_authorization_failed, "transactional_id": tid,
                           "transaction_state": "", "transaction_timeout": 0, "transaction_start_time": 0,
                           "producer_id": -1, "producer_epoch": -1, "topics": []})
            continue
        error, meta = txn.describe(tid)
        if meta is None:
            states.append({"error_code": error, "transactional_id": tid, "transaction_state": "",
                           "transaction_timeout": 0, "transaction_start_time": 0, "producer_id": -1,
                           "producer_epoch": -1, "topics": []})
            continue
        states.append({
            "error_code": E.none, "transactional_id": tid, "transaction_state": meta.state.value,
            "transaction_timeout": meta.timeout_ms, "transaction_start_time": meta.start_ms,
            "producer_id": meta.producer_id, "producer_epoch": meta.producer_epoch,
            "topics": [{"topic": t, "partitions": ps} for t, ps in meta.topics().items()
                       if ctx.authorized(DESCRIBE, TOPIC, t)],  # only topics the principal may describe
        })
    return ctx.respond(transaction_states=states)


async def list_transactions(ctx: RequestContext, request: Any) -> Any:
    if transaction_coordinator(ctx).loading:  # Kafka's TransactionStateManager.listTransactionStates
        return ctx.respond(error_code=E.coordinator_load_in_progress, unknown_state_filters=[], transaction_states=[])
    known = {s.value for s in TxnState}
    filters = list(request.state_filters or ())
    pattern = None
    if getattr(request, "transactional_id_pattern", None):  # v2, KIP-1152: the whole id must match
        try:
            pattern = re.compile(request.transactional_id_pattern)
        except re.error:
            return ctx.respond(error_code=E.invalid_regular_expression, unknown_state_filters=[],
                               transaction_states=[])
    txns = transaction_coordinator(ctx).list_transactions(
        [s for s in filters if s in known], request.producer_id_filters or (),
        getattr(request, "duration_filter", -1), pattern)
    if filters and not any(s in known for s in filters):
        txns = []
    txns = [m for m in txns if ctx.authorized(DESCRIBE, TXN_ID, m.transactional_id)]  # KafkaApis
    return ctx.respond(
        error_code=E.none,
        unknown_state_filters=[s for s in filters if s not in known],
        transaction_states=[{"transactional_id": m.transactional_id, "producer_id": m.producer_id,
                             "transaction_state": m.state.value} for m in txns],
    )


async def describe_producers(ctx: RequestContext, request: Any) -> Any:
    """The producers a partition's leader remembers (idempotent and transactional)."""
    broker = ctx.broker
    topics = []
    for t in request.topics:
        authorized = ctx.authorized(READ, TOPIC, t.name)  # KafkaApis
        partitions = []
        for p in t.partition_indexes:
            plog = broker.partition_log(t.name, p)
            error = (E.topic_authorization_failed if not authorized else E.unknown_topic_or_partition if plog is None
                     else broker.check_leader(t.name, p))
            if error is not None or plog is None:
                partitions.append({"partition_index": p, "error_code": error, "active_producers": []})
                continue
            state = plog.producer_state
            partitions.append({"partition_index": p, "error_code": E.none, "active_producers": [
                {"producer_id": pid, "producer_epoch": entry.epoch, "last_sequence": entry.last_seq,
                 "last_timestamp": entry.last_timestamp, "coordinator_epoch": entry.coordinator_epoch,
                 "current_txn_start_offset": state.ongoing.get(pid, -1)}
                for pid, entry in sorted(state.producers.items())
            ]})
        topics.append({"name": t.name, "partitions": partitions})
    return ctx.respond(topics=topics)
