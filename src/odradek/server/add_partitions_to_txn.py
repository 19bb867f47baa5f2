"""Transactional writes checked against their transaction (Kafka's AddPartitionsToTxnManager).

Before a partition leader appends a transactional batch of a producer that has no open
transaction on that partition yet, it asks the producer's transaction coordinator:
- KIP-890 part 1 (Produce v3-11, TxnOffsetCommit v0-4): is the partition in the open
  transaction? A write to a partition the producer never added is refused (INVALID_TXN_STATE,
  or TRANSACTION_ABORTABLE for the clients that know it), so it cannot hang the last stable
  offset behind a transaction the coordinator will never end.
- KIP-890 part 2 (Produce v12+, TxnOffsetCommit v5+, transactions version 2): add it; the
  producer no longer sends AddPartitionsToTxn itself.
The coordinator is this broker's own TransactionCoordinator or, in cluster mode, another
broker reached with AddPartitionsToTxn v5 (the batched form only brokers send).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.coordinator.records import partition_for
from odradek.coordinator.transactions import TRANSACTION_STATE_TOPIC
from odradek.protocol.records import BATCH_HEADER_SIZE, TRANSACTIONAL_BIT, read_header
from odradek.storage.producer_state import ProducerStateManager

E = ErrorCode
ADD_PARTITIONS_TO_TXN_KEY = 24
RETRY_BACKOFF_S = 0.02  # Kafka's add.partitions.to.txn.retry.backoff.ms
RETRY_MAX_S = 0.1  # add.partitions.to.txn.retry.backoff.max.ms
PEER_TIMEOUT_S = 30.0
# AddPartitionsToTxnManager.produceRequestVersionToTransactionSupportedOperation
PRODUCE_ADDS_FROM, PRODUCE_KNOWS_ABORTABLE_FROM = 12, 11
TXN_OFFSET_COMMIT_ADDS_FROM, TXN_OFFSET_COMMIT_KNOWS_ABORTABLE_FROM = 5, 4

TopicPartition = tuple[str, int]


@dataclass
class Verification:
    """The outcome for one request: errors for the partitions that may not be written, and the
    guards of those that may (a guard is gone once a marker ended the producer's transaction
    on the partition in the meantime, Kafka's VerificationGuard)."""

    errors: dict[TopicPartition, ErrorCode] = field(default_factory=dict)
    guards: dict[TopicPartition, tuple[ProducerStateManager, int, int, object]] = field(default_factory=dict)

    def error_for(self, topic: str, partition: int) -> ErrorCode | None:
        """Just before the append (nothing awaits in between): the error to answer, if any."""
        tp = (topic, partition)
        error = self.errors.get(tp)
        if error is not None:
            return error
        guard = self.guards.get(tp)
        if guard is not None and not guard[0].verified(*guard[1:]):
            return E.invalid_txn_state  # Kafka: the record was not part of an ongoing transaction
        return None


def _transactional_producer(records: bytes | None) -> tuple[int, int] | None:
    """(producer id, epoch) of a partition's first batch when it is transactional (Kafka checks the
    first batch, RequestUtils.hasTransactionalRecords); None otherwise, or for what fails validation later."""
    if not records or len(records) < BATCH_HEADER_SIZE or records[16] != 2 or not records[22] & TRANSACTIONAL_BIT:
        return None
    header = read_header(records)
    return (header.producer_id, header.producer_epoch) if header.producer_id >= 0 else None


async def verify_produce(broker: Any, request: Any, version: int,
                         resolve: Callable[[Any], str | None]) -> Verification:
    """Produce: every partition whose first batch is transactional, in one question to the
    coordinator before anything is appended (as Kafka's ReplicaManager). `resolve` names a
    request topic, or None for one that is unknown or may not be written."""
    if request.transactional_id is None:
        return Verification()  # Kafka verifies only requests that name their transactional id
    wanted: dict[TopicPartition, tuple[int, int]] = {}
    for topic_data in request.topic_data:
        name = resolve(topic_data)
        if name is None:
            continue
        for pdata in topic_data.partition_data:
            producer = _transactional_producer(pdata.records)
            if producer is not None:
                wanted[(name, pdata.index)] = producer
    if not wanted:
        return Verification()
    return await verify(broker, request.transactional_id, wanted, add=version >= PRODUCE_ADDS_FROM,
                        knows_abortable=version >= PRODUCE_KNOWS_ABORTABLE_FROM)


async def verify(broker: Any, transactional_id: str, wanted: dict[TopicPartition, tuple[int, int]], *,
                 add: bool, knows_abortable: bool) -> Verification:
    """Kafka's ReplicaManager.appendRecordsWithTransactionVerification, for the partitions led here."""
    out = Verification()
    producers = set(wanted.values())
    if len(producers) > 1:  # Kafka: "Transactional records contained more than one producer ID"
        out.errors = dict.fromkeys(wanted, E.invalid_producer_id_mapping)
        return out
    producer_id, epoch = producers.pop()
    ask: list[TopicPartition] = []
    for tp in wanted:
        plog = broker.partition_log(*tp)
        if plog is None or broker.check_leader(*tp) is not None:
            continue  # the produce path answers these
        state: ProducerStateManager = plog.producer_state
        entry = state.producers.get(producer_id)
        if entry is not None and epoch < entry.epoch:
            out.errors[tp] = E.invalid_producer_epoch  # UnifiedLog.maybeStartTransactionVerification
        elif not state.has_ongoing_txn(producer_id, epoch):
            out.guards[tp] = (state, producer_id, epoch, state.start_verification(producer_id, epoch, add))
            ask.append(tp)
    if not ask:
        return out
    started = time.monotonic()
    while True:
        errors = await add_or_verify(broker, transactional_id, producer_id, epoch, ask, add=add)
        # KIP-890 part 2: a partition added while the previous transaction completes is retried here
        # rather than by the producer (its retries are costly)
        if not add or E.concurrent_transactions not in errors.values() or time.monotonic() - started >= RETRY_MAX_S:
            break
        await asyncio.sleep(RETRY_BACKOFF_S)
    for tp, error in errors.items():
        if error != E.none:
            out.errors[tp] = _produce_error(error, add=add, knows_abortable=knows_abortable)
    return out


def _produce_error(error: ErrorCode, *, add: bool, knows_abortable: bool) -> ErrorCode:
    """The coordinator's answer as the producer is told it (AddPartitionsToTxnManager, then
    ReplicaManager's postVerificationCallback)."""
    if error == E.producer_fenced:
        return E.invalid_producer_epoch
    if error == E.transaction_abortable and not knows_abortable:
        return E.invalid_txn_state
    if error in (E.network_exception, E.coordinator_load_in_progress, E.coordinator_not_available,
                 E.not_coordinator):
        return E.not_enough_replicas  # retried by every client without a metadata refresh
    if error == E.concurrent_transactions and not add:
        return E.not_enough_replicas
    return error


async def add_or_verify(broker: Any, transactional_id: str, producer_id: int, epoch: int,
                        partitions: Iterable[TopicPartition], *, add: bool) -> dict[TopicPartition, ErrorCode]:
    """The coordinator's error per partition: local, or AddPartitionsToTxn v5 to its broker."""
    tps = list(partitions)
    txn = broker.transaction_coordinator
    call_broker = getattr(broker, "call_broker", None)
    if txn is not None and (call_broker is None or txn.owns(transactional_id)):
        if add:
            return await txn.add_partitions(transactional_id, producer_id, epoch, tps,  # type: ignore[no-any-return]
                                            transaction_version=2)
        return txn.verify_partitions(transactional_id, producer_id, epoch, tps)  # type: ignore[no-any-return]
    if call_broker is None:
        return dict.fromkeys(tps, E.coordinator_not_available)
    topic = broker.topics().get(TRANSACTION_STATE_TOPIC)
    leader = broker.leader_of(TRANSACTION_STATE_TOPIC, partition_for(transactional_id, topic.partitions)) \
        if topic is not None else -1
    if leader < 0:
        return dict.fromkeys(tps, E.coordinator_not_available)
    by_topic: dict[str, list[int]] = {}
    for t, p in tps:
        by_topic.setdefault(t, []).append(p)
    body = {"transactions": [{
        "transactional_id": transactional_id, "producer_id": producer_id, "producer_epoch": epoch,
        "verify_only": not add, "topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()]}]}
    try:
        resp = await call_broker(leader, ADD_PARTITIONS_TO_TXN_KEY, 5, body, PEER_TIMEOUT_S)
    except OSError:
        return dict.fromkeys(tps, E.network_exception)
    if resp.error_code != E.none:  # the whole request refused: a broker without CLUSTER_ACTION
        code = E.invalid_txn_state if resp.error_code == E.cluster_authorization_failed else resp.error_code
        return dict.fromkeys(tps, code)
    errors = dict.fromkeys(tps, E.none)
    for result in resp.results_by_transaction:
        for topic_result in result.topic_results:
            for p in topic_result.results_by_partition:
                errors[(topic_result.name, p.partition_index)] = p.partition_error_code
    return errors
