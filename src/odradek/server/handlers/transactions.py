"""Transaction APIs: AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit,
WriteTxnMarkers, DescribeTransactions, ListTransactions, DescribeProducers.

The work is the transaction coordinator's (coordinator/transactions.py) and, for
TxnOffsetCommit, the group coordinator's; markers are appended by the partition
leader (Broker.write_txn_marker), which WriteTxnMarkers exposes to other brokers.
KIP-588: fenced producers get PRODUCER_FENCED from the versions that know it
(AddPartitions/AddOffsets/EndTxn v2+, InitProducerId v4+), INVALID_PRODUCER_EPOCH before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.coordinator.offsets import Commit
from odradek.coordinator.transactions import TransactionCoordinator
from odradek.coordinator.txn_records import TxnState
from odradek.server import app
from odradek.server.dispatcher import RequestContext
from odradek.server.handlers.groups import coordinator

E = ErrorCode


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
    timeout = request.transaction_timeout
    timeout_ms = int(timeout.total_seconds() * 1000) if hasattr(timeout, "total_seconds") else int(timeout)
    error, pid, epoch = await transaction_coordinator(ctx).init_producer_id(
        request.transactional_id, timeout_ms, getattr(request, "producer_id", -1),
        getattr(request, "producer_epoch", -1), fenced=_fenced(ctx, 4))
    return ctx.respond(error_code=error, producer_id=pid, producer_epoch=epoch)


async def add_partitions_to_txn(ctx: RequestContext, request: Any) -> Any:
    wanted = [(t.name, p) for t in request.v3_and_below_topics for p in t.partitions]
    results = await transaction_coordinator(ctx).add_partitions(
        request.v3_and_below_transactional_id, request.v3_and_below_producer_id,
        request.v3_and_below_producer_epoch, wanted, fenced=_fenced(ctx, 2))
    return ctx.respond(results_by_topic_v3_and_below=[
        {"name": t.name, "results_by_partition": [
            {"partition_index": p, "partition_error_code": results[(t.name, p)]} for p in t.partitions]}
        for t in request.v3_and_below_topics
    ])


async def add_offsets_to_txn(ctx: RequestContext, request: Any) -> Any:
    error = await transaction_coordinator(ctx).add_offsets(
        request.transactional_id, request.producer_id, request.producer_epoch, request.group_id,
        fenced=_fenced(ctx, 2))
    return ctx.respond(error_code=error)


async def end_txn(ctx: RequestContext, request: Any) -> Any:
    error = await transaction_coordinator(ctx).end_txn(
        request.transactional_id, request.producer_id, request.producer_epoch, request.committed,
        fenced=_fenced(ctx, 2))
    return ctx.respond(error_code=error)


async def txn_offset_commit(ctx: RequestContext, request: Any) -> Any:
    commits = [
        Commit(t.name, p.partition_index, p.committed_offset, getattr(p, "committed_leader_epoch", -1),
               p.committed_metadata)
        for t in request.topics
        for p in t.partitions
    ]
    errors = iter(coordinator(ctx).txn_commit(
        request.group_id, request.producer_id, request.producer_epoch, getattr(request, "generation_id", -1),
        getattr(request, "member_id", ""), getattr(request, "group_instance_id", None), commits))
    return ctx.respond(topics=[
        {"name": t.name, "partitions": [{"partition_index": p.partition_index, "error_code": next(errors)}
                                        for p in t.partitions]}
        for t in request.topics
    ])


async def write_txn_markers(ctx: RequestContext, request: Any) -> Any:
    """From a transaction coordinator on another broker: markers for partitions led here."""
    broker = ctx.broker
    results = []
    for marker in request.markers:
        topics = []
        for t in marker.topics:
            codes = await asyncio.gather(*(
                broker.write_txn_marker(t.name, p, marker.producer_id, marker.producer_epoch,
                                        marker.transaction_result, marker.coordinator_epoch)
                for p in t.partition_indexes))
            topics.append({"name": t.name, "partitions": [
                {"partition_index": p, "error_code": code} for p, code in zip(t.partition_indexes, codes, strict=True)]})
        results.append({"producer_id": marker.producer_id, "topics": topics})
    return ctx.respond(markers=results)


async def describe_transactions(ctx: RequestContext, request: Any) -> Any:
    txn = transaction_coordinator(ctx)
    states = []
    for tid in request.transactional_ids:
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
            "topics": [{"topic": t, "partitions": ps} for t, ps in meta.topics().items()],
        })
    return ctx.respond(transaction_states=states)


async def list_transactions(ctx: RequestContext, request: Any) -> Any:
    known = {s.value for s in TxnState}
    filters = list(request.state_filters or ())
    txns = transaction_coordinator(ctx).list(
        [s for s in filters if s in known], request.producer_id_filters or (),
        getattr(request, "duration_filter", -1))
    if filters and not any(s in known for s in filters):
        txns = []
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
        partitions = []
        for p in t.partition_indexes:
            plog = broker.partition_log(t.name, p)
            error = E.unknown_topic_or_partition if plog is None else broker.check_leader(t.name, p)
            if error is not None or plog is None:
                partitions.append({"partition_index": p, "error_code": error, "active_producers": []})
                continue
            state = plog.producer_state
            partitions.append({"partition_index": p, "error_code": E.none, "active_producers": [
                {"producer_id": pid, "producer_epoch": entry.epoch, "last_sequence": entry.last_seq,
                 "last_timestamp": entry.last_timestamp, "coordinator_epoch": -1,
                 "current_txn_start_offset": state.ongoing.get(pid, -1)}
                for pid, entry in sorted(state.producers.items())
            ]})
        topics.append({"name": t.name, "partitions": partitions})
    return ctx.respond(topics=topics)
