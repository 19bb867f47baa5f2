"""The records of __transaction_state, in Kafka's own key/value schemas.

TransactionLogKey v0: TransactionalId (string).
TransactionLogValue v0: ProducerId i64, ProducerEpoch i16, TransactionTimeoutMs i32,
TransactionStatus i8, TransactionPartitions [Topic string, PartitionIds [i32]]
(nullable), TransactionLastUpdateTimestampMs i64, TransactionStartTimestampMs i64.
TransactionLogValue v1 (KIP-890, written from transaction.version 1 on, as Kafka does) is
the same fields in the flexible encoding plus tagged fields: PreviousProducerId (0),
NextProducerId (1), ClientTransactionVersion (2), NextProducerEpoch (3).
Schemas: transaction-coordinator/src/main/resources/common/message/*.json in Kafka.
A tombstone (null value) removes an expired transactional id.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from enum import Enum

from odradek.coordinator.records import RecordFormatError, _Reader, _str
from odradek.protocol.bounds import BoundsError, read_uvarint, uvarint_bytes

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")

# TransactionLogValue's tags (v1)
_TAG_PREVIOUS_PRODUCER_ID, _TAG_NEXT_PRODUCER_ID, _TAG_CLIENT_TRANSACTION_VERSION = 0, 1, 2


TV2 = 2  # transaction.version 2: epoch bump per transaction, implicit AddPartitionsToTxn (KIP-890)


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
    # KIP-890 part 2: the id before the last transition (a retried EndTxn across an epoch
    # overflow), the id a completing transaction moves to when its epochs ran out, and the
    # transaction version the client uses (2: an epoch bump at every EndTxn)
    prev_producer_id: int = -1
    next_producer_id: int = -1
    client_transaction_version: int = 0

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


def _compact_str(buf: io.BytesIO, value: str) -> None:
    data = value.encode()
    buf.write(uvarint_bytes(len(data) + 1))
    buf.write(data)


def txn_value(meta: TxnMetadata, version: int = 0) -> bytes:
    """TransactionLogValue `version` (0, or 1 once transaction.version is 1 or more)."""
    buf = io.BytesIO()
    buf.write(_I16.pack(version))
    buf.write(_I64.pack(meta.producer_id))
    buf.write(_I16.pack(meta.producer_epoch))
    buf.write(_I32.pack(meta.timeout_ms))
    buf.write(_I8.pack(STATUS_CODES[meta.state]))
    topics = meta.topics()
    if version == 0:
        buf.write(_I32.pack(len(topics)))
        for topic, partitions in topics.items():
            _str(buf, topic)
            buf.write(_I32.pack(len(partitions)))
            for p in partitions:
                buf.write(_I32.pack(p))
        buf.write(_I64.pack(meta.last_update_ms))
        buf.write(_I64.pack(meta.start_ms))
        return buf.getvalue()
    buf.write(uvarint_bytes(len(topics) + 1))
    for topic, partitions in topics.items():
        _compact_str(buf, topic)
        buf.write(uvarint_bytes(len(partitions) + 1))
        for p in partitions:
            buf.write(_I32.pack(p))
        buf.write(b"\x00")  # the partition entry's tagged fields
    buf.write(_I64.pack(meta.last_update_ms))
    buf.write(_I64.pack(meta.start_ms))
    tags = []  # only the fields that differ from their defaults, in tag order (Kafka's writer)
    if meta.prev_producer_id != -1:
        tags.append((_TAG_PREVIOUS_PRODUCER_ID, _I64.pack(meta.prev_producer_id)))
    if meta.next_producer_id != -1:
        tags.append((_TAG_NEXT_PRODUCER_ID, _I64.pack(meta.next_producer_id)))
    if meta.client_transaction_version != 0:
        tags.append((_TAG_CLIENT_TRANSACTION_VERSION, _I16.pack(meta.client_transaction_version)))
    buf.write(uvarint_bytes(len(tags)))
    for tag, data in tags:
        buf.write(uvarint_bytes(tag) + uvarint_bytes(len(data)) + data)
    return buf.getvalue()


def read_txn_key(data: bytes) -> str:
    r = _Reader(data)
    version = r.i16()
    if version != 0:
        raise RecordFormatError(f"TransactionLogKey v{version} is not supported")
    return r.string() or ""


class _FlexReader(_Reader):
    def uvarint(self) -> int:
        try:
            value, self.pos = read_uvarint(self.data, self.pos, len(self.data))
        except BoundsError as exc:
            raise RecordFormatError(str(exc)) from exc
        return value

    def compact_string(self) -> str:
        n = self.uvarint() - 1
        raw = self.data[self.pos : self.pos + max(n, 0)]
        if n < 0 or len(raw) != n:
            raise RecordFormatError("string runs past the record")
        self.pos += n
        return raw.decode()

    def tagged_fields(self) -> dict[int, bytes]:
        fields = {}
        for _ in range(self.uvarint()):
            tag, size = self.uvarint(), self.uvarint()
            fields[tag] = self.data[self.pos : self.pos + size]
            self.pos += size
        return fields


def read_txn_value(transactional_id: str, data: bytes) -> TxnMetadata:
    r = _FlexReader(data)
    version = r.i16()
    if version not in (0, 1):
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
    if version == 0:
        for _ in range(max(r.i32(), 0)):
            topic = r.string() or ""
            for _ in range(max(r.i32(), 0)):
                partitions.add((topic, r.i32()))
        return TxnMetadata(transactional_id, pid, epoch, timeout, state, partitions, r.i64(), r.i64())
    for _ in range(max(r.uvarint() - 1, 0)):
        topic = r.compact_string()
        for _ in range(max(r.uvarint() - 1, 0)):
            partitions.add((topic, r.i32()))
        r.tagged_fields()
    last_update, start = r.i64(), r.i64()
    tags = r.tagged_fields()

    def tagged(tag: int, s: struct.Struct, default: int) -> int:
        raw = tags.get(tag)
        return int(s.unpack(raw)[0]) if raw is not None and len(raw) == s.size else default

    return TxnMetadata(transactional_id, pid, epoch, timeout, state, partitions, last_update, start,
                       prev_producer_id=tagged(_TAG_PREVIOUS_PRODUCER_ID, _I64, -1),
                       next_producer_id=tagged(_TAG_NEXT_PRODUCER_ID, _I64, -1),
                       client_transaction_version=tagged(_TAG_CLIENT_TRANSACTION_VERSION, _I16, 0))
