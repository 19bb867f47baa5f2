"""The transaction coordinator (Kafka's TransactionCoordinator, KIP-98).

Each transactional id belongs to the `__transaction_state` partition
abs(hashCode(id)) % transaction.state.log.num.partitions; the broker leading that
partition coordinates it. Every state change is written there before it is
answered (Kafka's TransactionLogValue), so a restarted coordinator replays the
topic and finishes what was in flight: a PrepareCommit or PrepareAbort has its
markers (re)written, an Ongoing transaction is aborted once its
transaction.timeout.ms has passed, exactly as if the broker had not stopped.

Life of a transaction: InitProducerId (epoch bump; fences an older instance and
aborts its open transaction) -> AddPartitionsToTxn / AddOffsetsToTxn (Ongoing)
-> EndTxn: PrepareCommit|PrepareAbort is written, a COMMIT|ABORT marker (control
batch) goes to every partition of the transaction, then CompleteCommit|
CompleteAbort. While a transaction is between states, requests for its id get
CONCURRENT_TRANSACTIONS, as in Kafka; clients retry them. A marker is retried until its
partition's leader takes it, for as long as this broker coordinates the id (Kafka's
TransactionMarkerChannelManager); EndTxn waits for them at most END_TXN_WAIT_S, the
outcome being decided once PrepareCommit|PrepareAbort is written.

Transactions version 2 (KIP-890 part 2; EndTxn v5+, AddPartitionsToTxn v4+ from a
partition leader): the partitions join implicitly when the producer writes to them, and
every EndTxn bumps the epoch (PrepareCommit|PrepareAbort carry epoch + 1; the markers
fence the finished transaction's epoch; EndTxn answers the new epoch, or a new producer id
at epoch 0 once the epochs ran out).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from kio.schema.errors import ErrorCode

from odradek.coordinator.records import RecordFormatError, partition_for
from odradek.coordinator.store import OFFSETS_TOPIC, InternalTopicStore
from odradek.coordinator.txn_markers import TxnMarkerChannel
from odradek.coordinator.txn_records import (
    TV2,
    TxnMetadata,
    TxnState,
    read_txn_key,
    read_txn_value,
    txn_key,
    txn_value,
)
from odradek.server.features import finalized_level

if TYPE_CHECKING:
    from odradek.server.broker import Broker

log = logging.getLogger("odradek.transactions")

E = ErrorCode
TRANSACTION_STATE_TOPIC = "__transaction_state"
MAX_EPOCH = 32767
REPLICATION_TIMEOUT_S = 30.0
# EndTxn waits this long for the markers, then answers NONE: the outcome is decided once PrepareCommit|
# PrepareAbort is written (Kafka answers EndTxn then), and the markers go on in the background
END_TXN_WAIT_S = 10.0

S = TxnState
COMPLETE = (S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT)
PREPARING = (S.PREPARE_COMMIT, S.PREPARE_ABORT, S.PREPARE_EPOCH_FENCE)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class TxnStore(InternalTopicStore):
    """__transaction_state (transaction.state.log.num.partitions, ...replication.factor)."""

    topic = TRANSACTION_STATE_TOPIC
    topic_configs: ClassVar[Mapping[str, str]] = {"cleanup.policy": "compact", "segment.bytes": "104857600"}

    @property
    def configured_partitions(self) -> int:
        return self.broker.config.transaction_state_log_num_partitions

    @property
    def configured_replication_factor(self) -> int:
        return self.broker.config.transaction_state_log_replication_factor

    def creation_configs(self) -> dict[str, str]:
        """transaction.state.log.min.isr becomes the topic's min.insync.replicas, as in Kafka's
        TransactionStateManager: its acks=-1 writes are refused below it."""
        return {**self.topic_configs, "min.insync.replicas": str(self.broker.config.transaction_state_log_min_isr)}


class TransactionCoordinator:
    """The transactional ids whose __transaction_state partition this broker leads."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.config = broker.config
        self.store = TxnStore(broker)
        self.txns: dict[str, TxnMetadata] = {}
        self.busy: set[str] = set()  # ids with a state change being written (Kafka's pendingState)
        self.loading: set[int] = set()  # partitions being replayed: COORDINATOR_LOAD_IN_PROGRESS
        self.coordinator_epochs: dict[int, int] = {}
        # bumped at every move of a partition's leadership, here or away: a marker task of an
        # earlier tenure stops (the loading coordinator resends from the state it read)
        self.tenures: dict[int, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._completing: dict[str, asyncio.Task[ErrorCode]] = {}  # Kafka's transactionsWithPendingMarkers
        self.markers = TxnMarkerChannel(broker, self._persist)

    @property
    def transaction_version(self) -> int:
        """The finalized transaction.version: what this coordinator uses for the aborts it starts itself."""
        return finalized_level("transaction.version")

    # -- ownership -------------------------------------------------------------

    def partition_for(self, transactional_id: str) -> int:
        return partition_for(transactional_id, self.store.num_partitions)

    def owns(self, transactional_id: str) -> bool:
        """This broker leads the id's __transaction_state partition and may act as its leader. One cut
        from ZooKeeper (its session suspended) may have been replaced already and hold older state than
        the new coordinator: it answers NOT_COORDINATOR, as a deposed Kafka coordinator does, rather than
        fencing a producer (INVALID_PRODUCER_EPOCH / PRODUCER_FENCED, fatal to it) from that state."""
        p = self.partition_for(transactional_id)
        return self.broker.leader_of(TRANSACTION_STATE_TOPIC, p) == self.broker.node_id \
            and self.broker.check_leader(TRANSACTION_STATE_TOPIC, p) is None

    def id_error(self, transactional_id: str | None, pending_ok: bool = False) -> ErrorCode | None:
        """NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS or CONCURRENT_TRANSACTIONS before any work
        (not the last when `pending_ok`: a read that a pending state change does not disturb)."""
        if not transactional_id:
            return E.invalid_request
        if not self.store.ensure_topic():
            return E.coordinator_not_available
        if not self.owns(transactional_id):
            return E.not_coordinator
        if self.partition_for(transactional_id) in self.loading:
            return E.coordinator_load_in_progress
        if transactional_id in self.busy and not pending_ok:
            return E.concurrent_transactions
        return None

    @staticmethod
    def _fence(meta: TxnMetadata | None, api: str, producer_id: int, producer_epoch: int,
               fenced: ErrorCode) -> ErrorCode:
        """The fenced answer, logged: a producer fenced without a new instance is a finding."""
        log.info("%s of transaction %s: producer %d epoch %d fenced (%s); the coordinator has %s", api,
                 meta.transactional_id if meta else "?", producer_id, producer_epoch, fenced.name,
                 f"producer {meta.producer_id} epoch {meta.producer_epoch} (last {meta.last_producer_epoch}) "
                 f"{meta.state.value}" if meta else "nothing")
        return fenced

    def _check_producer(self, meta: TxnMetadata | None, producer_id: int, producer_epoch: int,
                        fenced: ErrorCode, api: str = "AddPartitionsToTxn") -> ErrorCode | None:
        if meta is None or meta.producer_id != producer_id:
            return E.invalid_producer_id_mapping
        if producer_epoch != meta.producer_epoch:
            return self._fence(meta, api, producer_id, producer_epoch, fenced)
        if meta.state in PREPARING:
            return E.concurrent_transactions
        return None

    # -- persistence -----------------------------------------------------------

    async def _persist(self, new: TxnMetadata) -> ErrorCode:
        """Write the next state of a transaction; it becomes current only once written (and,
        in cluster mode, replicated), so an answer never runs ahead of the log."""
        new.last_update_ms = now_ms()
        old = self.txns.get(new.transactional_id)
        if old is not None and new is not old:  # Kafka: every transition remembers the id it came from
            new.prev_producer_id = old.producer_id
        version = 1 if self.transaction_version >= 1 else 0  # Kafka's TransactionVersion.transactionLogValueVersion
        # issue 18 (group coordinator helper's edit): acks=-1 as Kafka's TransactionStateManager, refused
        # below min.insync.replicas, answered once the ISR holds it; errors mapped as Kafka's (NOT_ENOUGH_REPLICAS,
        # REQUEST_TIMED_OUT -> COORDINATOR_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER -> NOT_COORDINATOR)
        error, _ = await self.store.write_replicated(
            new.transactional_id, [(txn_key(new.transactional_id), txn_value(new, version))],
            int(REPLICATION_TIMEOUT_S * 1000))
        if error != E.none:
            log.warning("could not write the state of transaction %s: %s", new.transactional_id, error.name)
            return error
        self.txns[new.transactional_id] = new
        return E.none

    # -- InitProducerId ----------------------------------------------------------

    async def init_producer_id(self, transactional_id: str, timeout_ms: int, producer_id: int = -1,
                               producer_epoch: int = -1, fenced: ErrorCode = E.producer_fenced
                               ) -> tuple[ErrorCode, int, int]:
        """(error, producer id, epoch): a new id, or the same id with the next epoch."""
        error = self.id_error(transactional_id)
        if error is not None:
            return error, -1, -1
        if not 0 < timeout_ms <= self.config.transaction_max_timeout_ms:
            return E.invalid_transaction_timeout, -1, -1
        meta = self.txns.get(transactional_id)
        if meta is None:
            fresh = TxnMetadata(transactional_id, self.broker.allocate_producer_id(), 0, timeout_ms)
            error = await self._locked(transactional_id, self._persist(fresh))
            if error == E.none:
                self._initialized(fresh, producer_id, producer_epoch)
            return (error, fresh.producer_id, 0) if error == E.none else (error, -1, -1)
        # KIP-360: only the current instance may re-initialize with its id (or one that retries
        # across the move to a new id when its epochs ran out)
        if producer_id >= 0 and not (producer_id == meta.producer_id or (
                producer_id == meta.prev_producer_id and producer_epoch >= MAX_EPOCH - 1)):
            return self._fence(meta, "InitProducerId", producer_id, producer_epoch, fenced), -1, -1
        if meta.state in PREPARING:
            return E.concurrent_transactions, -1, -1
        if meta.state == S.ONGOING:
            # A new instance: fence the old one and abort its transaction, then answer
            # CONCURRENT_TRANSACTIONS as Kafka's prepareFenceProducerEpoch does; the client's retry
            # bumps the epoch once more (or moves to a new producer id if the fence took the last one)
            error = await self._locked(transactional_id, self._abort_with_fence(meta, "fenced by a new producer"))
            return (E.concurrent_transactions if error == E.none else error), -1, -1
        # Kafka's TransactionMetadata.prepareIncrementProducerEpoch / prepareProducerIdRotation
        if meta.producer_epoch >= MAX_EPOCH - 1 and (producer_id < 0 or producer_epoch == meta.producer_epoch):
            bumped = replace(meta, producer_id=self.broker.allocate_producer_id(), producer_epoch=0,
                             last_producer_epoch=meta.producer_epoch if producer_id >= 0 else -1)
        elif producer_id < 0:
            bumped = replace(meta, producer_epoch=meta.producer_epoch + 1, last_producer_epoch=-1)
        elif producer_epoch == meta.producer_epoch:
            bumped = replace(meta, producer_epoch=meta.producer_epoch + 1, last_producer_epoch=meta.producer_epoch)
        elif producer_epoch == meta.last_producer_epoch:
            bumped = replace(meta)  # a retry of a bump that succeeded: the same epoch again
        else:
            return self._fence(meta, "InitProducerId", producer_id, producer_epoch, fenced), -1, -1
        bumped = replace(bumped, state=S.EMPTY, partitions=set(), timeout_ms=timeout_ms, start_ms=-1)
        error = await self._locked(transactional_id, self._persist(bumped))
        if error == E.none:
            self._initialized(bumped, producer_id, producer_epoch)
        return (error, bumped.producer_id, bumped.producer_epoch) if error == E.none else (error, -1, -1)

    @staticmethod
    def _initialized(meta: TxnMetadata, producer_id: int, producer_epoch: int) -> None:
        """Kafka logs each InitProducerId at INFO too: the epoch a fenced producer lost to."""
        log.info("InitProducerId of transaction %s: producer %d epoch %d (%s)", meta.transactional_id,
                 meta.producer_id, meta.producer_epoch, "a new instance" if producer_id < 0
                 else f"the instance of producer {producer_id} epoch {producer_epoch}")

    async def _locked(self, transactional_id: str, work: Awaitable[ErrorCode]) -> ErrorCode:
        self.busy.add(transactional_id)
        try:
            return await work
        finally:
            self.busy.discard(transactional_id)

    # -- AddPartitionsToTxn / AddOffsetsToTxn ------------------------------------------

    async def add_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                             partitions: list[tuple[str, int]], fenced: ErrorCode = E.producer_fenced,
                             transaction_version: int = 0) -> dict[tuple[str, int], ErrorCode]:
        """One error per partition; all or none are added, as in Kafka. `transaction_version` is 2
        when a partition leader adds them for a producer of transactions version 2."""
        error = self.id_error(transactional_id)
        meta = self.txns.get(transactional_id)
        if error is None:
            error = self._check_producer(meta, producer_id, producer_epoch, fenced)
        if error is not None:
            return dict.fromkeys(partitions, error)
        assert meta is not None
        topics = self.broker.topics()
        unknown = {(t, p) for t, p in partitions
                   if t not in topics or not 0 <= p < topics[t].partitions}
        if unknown:
            return {tp: E.unknown_topic_or_partition if tp in unknown else E.operation_not_attempted
                    for tp in partitions}
        if meta.state == S.ONGOING and set(partitions) <= meta.partitions:
            return dict.fromkeys(partitions, E.none)
        start = meta.start_ms if meta.state == S.ONGOING else now_ms()
        ongoing = replace(meta, state=S.ONGOING, partitions=meta.partitions | set(partitions), start_ms=start,
                          client_transaction_version=transaction_version)
        error = await self._locked(transactional_id, self._persist(ongoing))
        return dict.fromkeys(partitions, error)

    def verify_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                          partitions: list[tuple[str, int]]) -> dict[tuple[str, int], ErrorCode]:
        """KIP-890 part 1 (AddPartitionsToTxn v4+ with verify_only, from a partition leader): is
        each partition in the producer's open transaction? TRANSACTION_ABORTABLE if not."""
        error = self.id_error(transactional_id, pending_ok=True)
        meta = self.txns.get(transactional_id)
        if error is None:
            if meta is None or meta.producer_id != producer_id:
                error = E.invalid_producer_id_mapping
            elif meta.producer_epoch != producer_epoch:
                error = self._fence(meta, "AddPartitionsToTxn (verify)", producer_id, producer_epoch,
                                    E.producer_fenced)
            elif meta.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
                error = E.concurrent_transactions
        if error is not None:
            return dict.fromkeys(partitions, error)
        assert meta is not None
        return {tp: E.none if tp in meta.partitions else E.transaction_abortable for tp in partitions}

    async def add_offsets(self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str,
                          fenced: ErrorCode = E.producer_fenced) -> ErrorCode:
        """The group's __consumer_offsets partition joins the transaction (its TxnOffsetCommit goes there)."""
        coord = self.broker.coordinator
        if coord is None or not coord.store.ensure_topic():
            return E.coordinator_not_available
        tp = (OFFSETS_TOPIC, coord.partition_for(group_id))
        return (await self.add_partitions(transactional_id, producer_id, producer_epoch, [tp], fenced))[tp]

    # -- EndTxn ---------------------------------------------------------------------------

    async def end_txn(self, transactional_id: str, producer_id: int, producer_epoch: int, committed: bool,
                      fenced: ErrorCode = E.producer_fenced, transaction_version: int = 0
                      ) -> tuple[ErrorCode, int, int]:
        """(error, producer id, epoch); the id and epoch are the producer's next ones with
        transactions version 2 (EndTxn v5+), -1 before."""
        if transaction_version >= TV2:
            return await self._end_txn_v2(transactional_id, producer_id, producer_epoch, committed, fenced)
        error = self.id_error(transactional_id)
        meta = self.txns.get(transactional_id)
        # a retried EndTxn whose first attempt completed: the same outcome is success
        if error is None and meta is not None and meta.producer_id == producer_id \
                and producer_epoch == meta.producer_epoch \
                and meta.state == (S.COMPLETE_COMMIT if committed else S.COMPLETE_ABORT):
            return E.none, -1, -1
        if error is None:
            error = self._check_producer(meta, producer_id, producer_epoch, fenced, "EndTxn")
        if error is not None:
            return error, -1, -1
        assert meta is not None
        if meta.state != S.ONGOING:
            return E.invalid_txn_state, -1, -1
        return await self._locked(transactional_id, self._complete(meta, committed, transaction_version)), -1, -1

    async def _end_txn_v2(self, transactional_id: str, producer_id: int, producer_epoch: int, committed: bool,
                          fenced: ErrorCode) -> tuple[ErrorCode, int, int]:
        """Kafka's TransactionCoordinator.endTransaction with transactions version 2: the epoch
        decides whether this is the next EndTxn or a retry of one that completed."""
        error = self.id_error(transactional_id)
        if error is not None:
            return error, -1, -1
        meta = self.txns.get(transactional_id)
        if meta is None:
            return E.invalid_producer_id_mapping, -1, -1
        retry_on_overflow = (meta.prev_producer_id == producer_id and producer_epoch == MAX_EPOCH - 1
                             and meta.producer_epoch == 0)
        retry_on_bump = meta.producer_epoch == producer_epoch + 1
        if meta.producer_id != producer_id and not retry_on_overflow:
            return E.invalid_producer_id_mapping, -1, -1
        if meta.state in (S.ONGOING, S.EMPTY):
            valid = producer_epoch == meta.producer_epoch
        elif meta.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
            valid = retry_on_bump
        else:
            valid = retry_on_bump or retry_on_overflow or producer_epoch == meta.producer_epoch
        if not valid:
            return self._fence(meta, "EndTxn", producer_id, producer_epoch, fenced), -1, -1
        retry = retry_on_bump or retry_on_overflow
        if meta.state in (S.COMPLETE_COMMIT, S.COMPLETE_ABORT):
            if retry:  # the same outcome again is success, and answers the epoch already given
                ok = meta.state == (S.COMPLETE_COMMIT if committed else S.COMPLETE_ABORT)
                return (E.none, meta.producer_id, meta.producer_epoch) if ok else (E.invalid_txn_state, -1, -1)
            if committed:
                return E.invalid_txn_state, -1, -1
        elif meta.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
            same = meta.state == (S.PREPARE_COMMIT if committed else S.PREPARE_ABORT)
            return (E.concurrent_transactions if same else E.invalid_txn_state), -1, -1
        elif meta.state == S.EMPTY and committed:
            return E.invalid_txn_state, -1, -1
        # Ongoing, or an abort with no partition (allowed from version 2 on): bump and end
        error = await self._locked(transactional_id, self._complete(meta, committed, TV2))
        if error != E.none:
            return error, -1, -1
        done = self.txns[transactional_id]
        if done.state in PREPARING and done.next_producer_id >= 0:  # answered before Complete was written
            return E.none, done.next_producer_id, 0
        return E.none, done.producer_id, done.producer_epoch

    def _prepare(self, meta: TxnMetadata, committed: bool, transaction_version: int) -> TxnMetadata:
        """Kafka's TransactionMetadata.prepareAbortOrCommit."""
        state = S.PREPARE_COMMIT if committed else S.PREPARE_ABORT
        if transaction_version < TV2:
            return replace(meta, state=state, client_transaction_version=transaction_version)
        # version 2: the epoch goes up by one; when that exhausts it, the transaction completes
        # onto a new producer id (at epoch 0)
        epoch = meta.producer_epoch if meta.producer_epoch >= MAX_EPOCH else meta.producer_epoch + 1
        next_pid = self.broker.allocate_producer_id() if meta.producer_epoch >= MAX_EPOCH - 1 else -1
        ongoing = meta.state == S.ONGOING
        return replace(meta, state=state, producer_epoch=epoch, last_producer_epoch=meta.producer_epoch,
                       next_producer_id=next_pid, client_transaction_version=transaction_version,
                       partitions=meta.partitions if ongoing else set(),
                       start_ms=meta.start_ms if ongoing else now_ms())

    async def _complete(self, meta: TxnMetadata, committed: bool, transaction_version: int,
                        wait_s: float = END_TXN_WAIT_S) -> ErrorCode:
        """Prepare -> markers on every partition -> Complete (Kafka's two-phase end)."""
        prepared = self._prepare(meta, committed, transaction_version)
        error = await self._persist(prepared)
        if error != E.none:
            return error
        return await self._finish(prepared, wait_s)

    async def _finish(self, prepared: TxnMetadata, wait_s: float = END_TXN_WAIT_S) -> ErrorCode:
        """Markers, then Complete, in a task of the coordinator (a client that hangs up does not
        stop it); waited for up to `wait_s`, after which the decided outcome is answered (NONE)."""
        tid = prepared.transactional_id
        task = self._completing.get(tid)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._markers_then_complete(prepared))
            self._completing[tid] = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda t: self._completing.pop(tid) if self._completing.get(tid) is t else None)
        if wait_s <= 0:
            return E.none
        done, _ = await asyncio.wait({task}, timeout=wait_s)  # cancelled or not, the task goes on
        if done:
            return task.result()
        log.info("transaction %s: %s decided, its markers not all written after %.0f s; answering now, "
                 "they are retried until written", tid, prepared.state.value, wait_s)
        return E.none

    async def _markers_then_complete(self, prepared: TxnMetadata) -> ErrorCode:
        """The marker channel's work for this tenure of the id's __transaction_state partition: it
        stops (NOT_COORDINATOR) once the partition moved, here or away, or is being loaded again."""
        tid = prepared.transactional_id
        p = self.partition_for(tid)
        tenure, coordinator_epoch = self.tenures.get(p, 0), self.coordinator_epochs.get(p, 0)

        def coordinating() -> bool:
            return self.tenures.get(p, 0) == tenure and p not in self.loading and self.owns(tid)

        return await self.markers.complete(prepared, coordinator_epoch, coordinating)

    async def _abort_with_fence(self, meta: TxnMetadata, why: str) -> ErrorCode:
        """Bump the epoch and abort with it: the old instance is fenced everywhere its
        transaction wrote (the markers carry the new epoch). Kafka starts these aborts with the
        broker's own transaction version, and answers (InitProducerId: CONCURRENT_TRANSACTIONS) once
        PrepareAbort is written; the markers follow in the background."""
        log.info("aborting transaction %s of producer %d epoch %d: %s", meta.transactional_id,
                 meta.producer_id, meta.producer_epoch, why)
        version = self.transaction_version
        if version >= TV2:  # _prepare bumps the epoch
            return await self._complete(meta, False, version, wait_s=0)
        epoch = meta.producer_epoch + 1 if meta.producer_epoch < MAX_EPOCH - 1 else meta.producer_epoch
        fencing = replace(meta, producer_epoch=epoch, last_producer_epoch=meta.producer_epoch)
        return await self._complete(fencing, False, version, wait_s=0)

    # -- describe ----------------------------------------------------------------------

    def describe(self, transactional_id: str) -> tuple[ErrorCode, TxnMetadata | None]:
        if not self.store.exists() or not self.owns(transactional_id):
            return E.not_coordinator, None
        if self.partition_for(transactional_id) in self.loading:
            return E.coordinator_load_in_progress, None
        meta = self.txns.get(transactional_id)
        return (E.none, meta) if meta is not None else (E.transactional_id_not_found, None)

    def list_transactions(self, states: Iterable[str] = (), producer_ids: Iterable[int] = (),
                          min_duration_ms: int = -1, id_pattern: re.Pattern[str] | None = None
                          ) -> list[TxnMetadata]:
        """Kafka's TransactionStateManager.listTransactionStates: a duration filter keeps the
        transactions started more than that long ago (KIP-994), a pattern must match the whole
        transactional id (KIP-1152)."""
        wanted_states, wanted_pids = set(states), set(producer_ids)
        now = now_ms()
        out = []
        for meta in self.txns.values():
            if wanted_states and meta.state.value not in wanted_states:
                continue
            if wanted_pids and meta.producer_id not in wanted_pids:
                continue
            if min_duration_ms >= 0 and now - meta.start_ms <= min_duration_ms:
                continue
            if id_pattern is not None and id_pattern.fullmatch(meta.transactional_id) is None:
                continue
            out.append(meta)
        return sorted(out, key=lambda m: m.transactional_id)

    # -- loading, timeouts, expiry -------------------------------------------------------

    def start(self) -> list[asyncio.Task[None]]:
        """Load the partitions this broker leads, then abort timed-out transactions periodically."""
        loop = asyncio.get_running_loop()
        if self.store.exists():
            led = [p for p in range(self.store.num_partitions)
                   if self.broker.leader_of(TRANSACTION_STATE_TOPIC, p) == self.broker.node_id]
            self.partition_moved_many(led, True)
            for p in led:  # the coordinator epoch is the partition's leader epoch, as at every move
                self.coordinator_epochs[p] = max(self.broker.leader_epoch(TRANSACTION_STATE_TOPIC, p), 0)
        return [loop.create_task(self.run_timeouts())]

    def partition_moved(self, partition: int, is_leader: bool, coordinator_epoch: int = 0) -> None:
        self.partition_moved_many([partition], is_leader, coordinator_epoch)

    def partition_moved_many(self, partitions: list[int], is_leader: bool, coordinator_epoch: int = 0) -> None:
        """Leadership of __transaction_state partitions moved: load them, or forget their ids."""
        for p in partitions:
            self.tenures[p] = self.tenures.get(p, 0) + 1
        for tid in [t for t in self._completing if self.partition_for(t) in partitions]:
            del self._completing[tid]  # its task stops at its next check; a load starts a new one
        if not is_leader:
            for tid in [t for t in self.txns if self.partition_for(t) in partitions]:
                del self.txns[tid]
            self.loading.difference_update(partitions)
            return
        for p in partitions:
            self.coordinator_epochs[p] = coordinator_epoch
        self.loading.update(partitions)
        task = asyncio.get_running_loop().create_task(self._load(partitions))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, partitions: list[int]) -> None:
        try:
            loaded: dict[str, TxnMetadata] = {}
            count = 0
            for _p, _pid, _control, key, value in self.store.replay_events(partitions):
                try:
                    tid = read_txn_key(key)
                    if value is None:
                        loaded.pop(tid, None)
                    else:
                        loaded[tid] = read_txn_value(tid, value)
                    count += 1
                except (RecordFormatError, UnicodeDecodeError) as exc:
                    log.warning("skipping an unreadable %s record: %s", TRANSACTION_STATE_TOPIC, exc)
                await asyncio.sleep(0) if count % 1000 == 0 else None
            self.txns.update(loaded)
            if loaded:
                log.info("transaction coordinator: loaded %d transactional id(s) from %s partition(s) %s",
                         len(loaded), TRANSACTION_STATE_TOPIC, partitions if len(partitions) < 8 else len(partitions))
        finally:
            self.loading.difference_update(partitions)
        for meta in list(loaded.values()):  # finish what the previous coordinator had begun
            if meta.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
                log.info("transaction %s was %s when the coordinator stopped: completing it",
                         meta.transactional_id, meta.state.value)
                await self._finish(meta, wait_s=0)  # all at once: one partition's markers may take long

    async def _safely(self, transactional_id: str, work: Awaitable[ErrorCode]) -> None:
        try:
            await self._locked(transactional_id, work)
        except Exception as exc:  # noqa: BLE001 - the timeout and load tasks must outlive one transaction
            log.warning("transaction %s: %s", transactional_id, exc)

    async def run_timeouts(self) -> None:
        interval = self.config.transaction_abort_timed_out_transaction_cleanup_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            await self.abort_timed_out()
            await self.expire_ids()

    async def abort_timed_out(self) -> None:
        """transaction.timeout.ms: an open transaction nobody ended is aborted, its producer fenced."""
        now = now_ms()
        for meta in list(self.txns.values()):
            if meta.state == S.ONGOING and now - meta.start_ms > meta.timeout_ms and meta.transactional_id not in self.busy \
                    and self.partition_for(meta.transactional_id) not in self.loading and self.owns(meta.transactional_id):
                why = f"transaction.timeout.ms passed (open {now - meta.start_ms} ms, timeout {meta.timeout_ms} ms)"
                await self._safely(meta.transactional_id, self._abort_with_fence(meta, why))

    async def expire_ids(self) -> None:
        """transactional.id.expiration.ms: an id idle that long is forgotten (a tombstone)."""
        now = now_ms()
        for meta in list(self.txns.values()):
            tid = meta.transactional_id
            idle = meta.state in COMPLETE and now - meta.last_update_ms > self.config.transactional_id_expiration_ms
            if idle and tid not in self.busy and self.store.write(tid, [(txn_key(tid), None)]) == E.none:
                self.txns.pop(tid, None)
                log.info("transactional id %s expired", tid)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
