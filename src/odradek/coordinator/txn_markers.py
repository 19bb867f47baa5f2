"""The transaction marker channel (Kafka's TransactionMarkerChannelManager, KIP-98).

Once PrepareCommit|PrepareAbort is written, a COMMIT|ABORT marker goes to every
partition of the transaction: appended here when this broker leads the partition,
else sent to its leader as WriteTxnMarkers. Each marker is retried until the leader
takes it, for as long as this broker coordinates the transactional id; then
CompleteCommit|CompleteAbort is written. A marker carries the coordinator epoch (the
__transaction_state partition's leader epoch when this broker loaded it), so that a
partition leader refuses the markers of a deposed coordinator
(TRANSACTION_COORDINATOR_FENCED, Kafka's ProducerAppendInfo.checkCoordinatorEpoch).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from kio.schema.errors import ErrorCode

from odradek.coordinator.txn_records import TV2, TxnMetadata, TxnState

if TYPE_CHECKING:
    from odradek.server.broker import Broker

log = logging.getLogger("odradek.transactions")

E = ErrorCode
S = TxnState
# each attempt is bounded by request.timeout.ms and given up early when the partition's leader moves;
# attempts back off as Kafka clients' retry.backoff.ms up to retry.backoff.max.ms, without end while
# this broker coordinates the transactional id
MARKER_REQUEST_TIMEOUT_S = 30.0
MARKER_BACKOFF_S = 0.1
MARKER_BACKOFF_MAX_S = 1.0
MARKER_LEADER_CHECK_S = 0.25
MARKER_STUCK_LOG_S = 5.0  # a partition failing this long is logged, once
# TransactionMarkerRequestCompletionHandler: the producer epoch moved on (nothing left to end there), or
# the partition cannot take markers (the producer could not have written to it either)
MARKER_DONE = (E.none, E.invalid_producer_epoch, E.unsupported_for_message_format, E.unsupported_version)
# ... and a newer coordinator wrote a marker for the producer there: this one is deposed, and leaves the
# transaction to it (Kafka's handler stops sending, abortSending, without writing Complete)
MARKER_FENCED = E.transaction_coordinator_fenced

Persist = Callable[[TxnMetadata], Awaitable[ErrorCode]]


class TxnMarkerChannel:
    """The markers of the transactions one coordinator ends, then their Complete state."""

    def __init__(self, broker: Broker, persist: Persist) -> None:
        self.broker = broker
        self.persist = persist  # the coordinator's write of a transaction's next state

    async def complete(self, prepared: TxnMetadata, coordinator_epoch: int,
                       coordinating: Callable[[], bool]) -> ErrorCode:
        """Markers, then CompleteCommit|CompleteAbort; NOT_COORDINATOR once `coordinating()` is
        false or a partition leader fenced this coordinator (the new coordinator resends the
        markers from the PrepareCommit|PrepareAbort it loads)."""
        tid = prepared.transactional_id
        committed = prepared.state == S.PREPARE_COMMIT
        try:
            if not await self._write_markers(prepared, committed, coordinator_epoch, coordinating):
                log.info("transaction %s: no longer its coordinator (coordinator epoch %d); the markers are "
                         "left to the new one", tid, coordinator_epoch)
                return E.not_coordinator
            done = replace(prepared, state=S.COMPLETE_COMMIT if committed else S.COMPLETE_ABORT, partitions=set(),
                           next_producer_id=-1)
            if prepared.client_transaction_version >= TV2 and prepared.next_producer_id >= 0:
                done.producer_id, done.producer_epoch = prepared.next_producer_id, 0
            backoff = MARKER_BACKOFF_S
            # Kafka's tryAppendToLog: COORDINATOR_NOT_AVAILABLE (ISR below min.insync.replicas) is retried
            while (error := await self.persist(done)) == E.coordinator_not_available and coordinating():
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MARKER_BACKOFF_MAX_S)
        except Exception as exc:  # noqa: BLE001 - a background task: its failure is logged, the state left to a reload
            log.warning("transaction %s: completing %s failed: %r", tid, prepared.state.value, exc)
            return E.unknown_server_error
        if error == E.none:
            # per transaction, so debug (as Kafka's coordinator): at INFO it was a sixth of EndTxn's time
            log.debug("transaction %s (producer %d epoch %d) %s over %d partition(s)", tid,
                      prepared.producer_id, prepared.producer_epoch, "committed" if committed else "aborted",
                      len(prepared.partitions))
        return error

    async def _write_markers(self, meta: TxnMetadata, committed: bool, coordinator_epoch: int,
                             coordinating: Callable[[], bool]) -> bool:
        """A marker on every partition, each retried until its leader took it; False when this
        broker stopped coordinating the id or was fenced by a newer coordinator."""
        landed = await asyncio.gather(*(self._write_marker(meta, tp, committed, coordinator_epoch, coordinating)
                                        for tp in sorted(meta.partitions)))
        return all(landed)

    async def _write_marker(self, meta: TxnMetadata, tp: tuple[str, int], committed: bool, coordinator_epoch: int,
                            coordinating: Callable[[], bool]) -> bool:
        topic, partition = tp
        started = time.monotonic()
        attempts, backoff, reported = 0, MARKER_BACKOFF_S, False
        while coordinating():
            described = self.broker.topics().get(topic)
            if described is None or not 0 <= partition < described.partitions:
                # Kafka: no leader endpoint in the metadata, the partition was deleted; nothing to end there
                log.info("transaction %s: %s-%d no longer exists; no marker written there", meta.transactional_id,
                         topic, partition)
                return True
            attempts += 1
            error = await self._marker_attempt(meta, tp, committed, coordinator_epoch, coordinating)
            if error == MARKER_FENCED:
                log.info("transaction %s: the marker for %s-%d was refused (%s): a newer coordinator wrote there",
                         meta.transactional_id, topic, partition, error.name)
                return False
            if error in MARKER_DONE:
                if error != E.none:
                    log.info("transaction %s: the marker for %s-%d was refused (%s)", meta.transactional_id,
                             topic, partition, error.name)
                elif reported:
                    log.info("transaction %s: the marker for %s-%d written after %d attempts in %.1f s",
                             meta.transactional_id, topic, partition, attempts, time.monotonic() - started)
                return True
            if not reported and time.monotonic() - started >= MARKER_STUCK_LOG_S:
                reported = True
                log.warning("transaction %s: the %s marker for %s-%d keeps failing (%s, %d attempts in %.1f s); "
                            "retrying until it is written", meta.transactional_id,
                            "COMMIT" if committed else "ABORT", topic, partition, error.name, attempts,
                            time.monotonic() - started)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MARKER_BACKOFF_MAX_S)
        return False

    async def _marker_attempt(self, meta: TxnMetadata, tp: tuple[str, int], committed: bool, coordinator_epoch: int,
                              coordinating: Callable[[], bool]) -> ErrorCode:
        """One WriteTxnMarkers to the partition's current leader (or the local append), given up
        after request.timeout.ms or as soon as the leader moves or the id moves away."""
        topic, partition = tp
        marker = self.broker.write_txn_marker(topic, partition, meta.producer_id, meta.producer_epoch, committed,
                                              coordinator_epoch, transaction_version=meta.client_transaction_version)
        call: asyncio.Future[ErrorCode] | None = None
        try:
            if self.broker.check_leader(topic, partition) is None:
                # led here: the append fails by itself if the leadership goes (NOT_LEADER_OR_FOLLOWER)
                try:
                    async with asyncio.timeout(MARKER_REQUEST_TIMEOUT_S):
                        return await marker
                except TimeoutError:
                    return E.request_timed_out
            leader = self.broker.leader_of(topic, partition)
            call = asyncio.ensure_future(marker)
            deadline = time.monotonic() + MARKER_REQUEST_TIMEOUT_S
            while True:
                done, _ = await asyncio.wait({call}, timeout=MARKER_LEADER_CHECK_S)
                if done:
                    return call.result()
                if self.broker.leader_of(topic, partition) != leader or not coordinating():
                    return E.not_leader_or_follower
                if time.monotonic() > deadline:
                    return E.request_timed_out
        except Exception as exc:  # noqa: BLE001 - a failed attempt is retried as any other (Kafka: disconnected)
            log.debug("transaction %s: the marker for %s-%d failed: %r", meta.transactional_id, topic, partition, exc)
            return E.unknown_server_error
        finally:
            if call is not None:
                call.cancel()
