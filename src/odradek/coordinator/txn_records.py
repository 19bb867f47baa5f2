"""The records of __transaction_state, in Kafka's own key/value schemas.

TransactionLogKey v0: TransactionalId (string).
TransactionLogValue v0: ProducerId i64, ProducerEpoch i16, TransactionTimeoutMs i32,
TransactionStatus i8, TransactionPartitions [Topic string, PartitionIds [i32]]
(nullable), TransactionLastUpdateTimestampMs i64, TransactionStartTimestampMs i64.
Schemas: transaction-coordinator/src/main/resources/common/message/*.json in Kafka.
A tombstone (null value) removes an expired transactional id.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from enum import Enum

from odradek.coordinator.records import RecordFormatError, _Reader, _str

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


class TxnState(str, Enum):
    """Kafka's TransactionState names (DescribeTransactions and ListTransactions show them)."""

    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"
    DEAD = "Dead"
    PREPARE_EPOCH_FENCE = "PrepareEpochFence"


STATUS_CODES = {s: i for i, s in enumerate(TxnState)}  # Kafka's byte ids, in declaration order
STATES_BY_CODE = {i: s for s, i in STATUS_CODES.items()}


@dataclass
class TxnMetadata:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState = TxnState.EMPTY
    partitions: set[tuple[str, int]] = field(default_factory=set)
    last_update_ms: int = -1
    start_ms: int = -1
    last_producer_epoch: int = -1  # KIP-360: a producer retrying InitProducerId with the epoch before the bump

    def topics(self) -> dict[str, list[int]]:
        by_topic: dict[str, list[int]] = {}
        for t, p in sorted(self.partitions):
            by_topic.setdefault(t, []).append(p)
        return by_topic


def txn_key(transactional_id: str) -> bytes:
    buf = io.BytesIO()
    buf.write(_I16.pack(0))
    _str(buf, transactional_id)
    return buf.getvalue()


def txn_value(meta: TxnMetadata) -> bytes:
    buf = io.BytesIO()
    buf.write(_I16.pack(0))
    buf.write(_I64.pack(meta.producer_id))
    buf.write(_I16.pack(meta.producer_epoch))
    buf.write(_I32.pack(meta.timeout_ms))
    buf.write(_I8.pack(STATUS_CODES[meta.state]))
    topics = meta.topics()
    buf.write(_I32.pack(len(topics)))
    for topic, partitions in topics.items():
        _str(buf, topic)
        buf.write(_I32.pack(len(partitions)))
        for p in partitions:
            buf.write(_I32.pack(p))
    buf.write(_I64.pack(meta.last_update_ms))
    buf.write(_I64.pack(meta.start_ms))
    return buf.getvalue()


def read_txn_key(data: bytes) -> str:
    r = _Reader(data)
    version = r.i16()
    if version != 0:
        raise RecordFormatError(f"TransactionLogKey v{version} is not supported")
    return r.string() or ""


def read_txn_value(transactional_id: str, data: bytes) -> TxnMetadata:
    r = _Reader(data)
    version = r.i16()
    if version != 0:
        raise RecordFormatError(f"TransactionLogValue v{version} is not supported")
    pid, epoch, timeout = r.i64(), r.i16(), r.i32()
    if r.pos >= len(r.data):
        raise RecordFormatError("record ends early")
    status = _I8.unpack_from(r.data, r.pos)[0]
    r.pos += 1
    state = STATES_BY_CODE.get(status)
    if state is None:
        raise RecordFormatError(f"unknown transaction status {status}")
    partitions: set[tuple[str, int]] = set()
    for _ in range(max(r.i32(), 0)):
        topic = r.string() or ""
        for _ in range(max(r.i32(), 0)):
            partitions.add((topic, r.i32()))
    return TxnMetadata(transactional_id, pid, epoch, timeout, state, partitions, r.i64(), r.i64())
