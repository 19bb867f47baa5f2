"""__consumer_offsets and __transaction_state: where coordinators keep their state.

Every commit and every group change is appended to the partition that owns the
group (Kafka's partitionFor) as one uncompressed record batch, and on start the
whole compacted topic is read back, latest record per key winning, tombstones
deleting. The topic is created on first use, compacted, like Kafka does. The
transaction coordinator keeps its state the same way in __transaction_state
(InternalTopicStore is shared); offsets committed inside a transaction are
written as transactional batches and resolved by the markers that follow them.

A coordinator's write is acknowledged as Kafka's (offsets.commit.required.acks=-1,
TransactionLog.EnforcedRequiredAcks): refused while the partition's ISR is smaller than
its min.insync.replicas, answered once every in-sync replica holds it
(write_replicated), and its errors become the coordinator's (coordinator_error).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, ClassVar

import crc32c
from kazoo.exceptions import KazooException  # type: ignore[import-untyped]
from kio.records.readers import read_batch
from kio.schema.errors import ErrorCode

from odradek.cluster.metadata import TopicError
from odradek.cluster.topic_config import InvalidConfigError
from odradek.coordinator.records import partition_for
from odradek.protocol.records import control_type

if TYPE_CHECKING:
    from odradek.server.broker import Broker
    from odradek.storage.log import PartitionLog

log = logging.getLogger("odradek.coordinator")

OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_TOPIC_CONFIGS = {"cleanup.policy": "compact", "segment.bytes": "104857600"}
_READ_CHUNK = 1 << 20
_CONTROL_BIT = 0x20
_TRANSACTIONAL_BIT = 0x10
_COMPRESSION_MASK = 0x07


def _varint(value: int) -> bytes:
    z = (value << 1) ^ (value >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def encode_batch(records: list[tuple[bytes, bytes | None]], timestamp_ms: int, *,
                 producer_id: int = -1, producer_epoch: int = -1) -> bytes:
    """A magic-2 record batch of key/value records (base offset 0; the log assigns it);
    transactional when it carries a producer id (TxnOffsetCommit)."""
    body = bytearray()
    for delta, (key, value) in enumerate(records):
        rec = bytearray(b"\x00")  # attributes
        rec += _varint(0)  # timestamp delta
        rec += _varint(delta)
        rec += _varint(len(key)) + key
        rec += _varint(-1) if value is None else _varint(len(value)) + value
        rec += _varint(0)  # headers
        body += _varint(len(rec)) + rec
    attributes = _TRANSACTIONAL_BIT if producer_id >= 0 else 0
    after_crc = struct.pack(
        ">hiqqqhii", attributes, len(records) - 1, timestamp_ms, timestamp_ms, producer_id, producer_epoch, -1,
        len(records),
    ) + bytes(body)
    crc = crc32c.crc32c(after_crc)
    head = struct.pack(">qiiBI", 0, 4 + 1 + 4 + len(after_crc), 0, 2, crc)
    return head + after_crc


class InternalTopicStore:
    """Appends to and replays one compacted internal topic for one broker."""

    topic = OFFSETS_TOPIC
    topic_configs: ClassVar[Mapping[str, str]] = OFFSETS_TOPIC_CONFIGS

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._unanswered: set[asyncio.Task[None]] = set()  # acknowledge_in_background's waits

    @property
    def configured_partitions(self) -> int:
        return self.broker.config.offsets_topic_num_partitions

    @property
    def configured_replication_factor(self) -> int:
        return self.broker.config.offsets_topic_replication_factor

    @property
    def num_partitions(self) -> int:
        topic = self.broker.topics().get(self.topic)
        return topic.partitions if topic is not None else self.configured_partitions

    def partition_for(self, key: str) -> int:
        return partition_for(key, self.num_partitions)

    def exists(self) -> bool:
        return self.topic in self.broker.topics()

    def creation_configs(self) -> dict[str, str]:
        """The topic's configs when the first coordinator write creates it."""
        return dict(self.topic_configs)

    def ensure_topic(self) -> bool:
        """Create the topic on first use; False when it cannot be created now."""
        if self.exists():
            return True
        try:
            self.broker.create_topic(
                self.topic,
                num_partitions=self.configured_partitions,
                replication_factor=self.configured_replication_factor,
                configs=self.creation_configs(),
            )
        except (TopicError, InvalidConfigError, OSError, KazooException) as exc:  # OSError: ZkError, a disk
            if self.exists():
                return True
            log.warning("cannot create %s: %s", self.topic, exc)
            return False
        return True

    def write(self, key: str, records: list[tuple[bytes, bytes | None]], *,
              producer_id: int = -1, producer_epoch: int = -1) -> ErrorCode:
        """Append records to the partition of `key` (a group or transactional id); the
        error a client should see, or none."""
        if not records:
            return ErrorCode.none
        if not self.ensure_topic():
            return ErrorCode.coordinator_not_available
        from odradek.cluster.metadata import NotLeaderError
        from odradek.protocol.record_errors import InvalidRecordError
        from odradek.protocol.records import parse_batches

        partition = self.partition_for(key)
        plog = self.broker.partition_log(self.topic, partition)
        if plog is None:
            return ErrorCode.coordinator_not_available
        data = encode_batch(records, time.time_ns() // 1_000_000, producer_id=producer_id,
                            producer_epoch=producer_epoch)
        try:
            self.broker.append(plog, data, parse_batches(data))
        except InvalidRecordError as exc:  # a fenced producer epoch (TxnOffsetCommit)
            log.info("append to %s-%d for %s refused: %s", self.topic, partition, key, exc)
            return exc.error_code
        except (NotLeaderError, OSError) as exc:  # leadership moved since the check; a disk error
            log.warning("append to %s-%d for %s failed: %s", self.topic, partition, key, exc)
            return ErrorCode.coordinator_not_available
        return ErrorCode.none

    async def write_replicated(self, key: str, records: list[tuple[bytes, bytes | None]], timeout_ms: int, *,
                               producer_id: int = -1, producer_epoch: int = -1,
                               refuse_below_min_isr: bool = True) -> tuple[ErrorCode, int]:
        """Append records to the partition of `key` as an acks=-1 produce: refused while the ISR
        is smaller than min.insync.replicas, answered once every in-sync replica holds them and the
        ISR still has min.insync.replicas (a single broker has neither). (error as the coordinators
        answer it, the log end offset just after the records). `refuse_below_min_isr=False` appends
        whatever the ISR and fails only the answer, as Kafka's CoordinatorRuntime does (its writes are
        acks=1 and wait for the high watermark): for state already applied in memory."""
        error, end = self.append(key, records, producer_id=producer_id, producer_epoch=producer_epoch,
                                 refuse_below_min_isr=refuse_below_min_isr)
        if error != ErrorCode.none or end < 0:
            return error, end
        return await self.acknowledged(key, end, timeout_ms), end

    def append(self, key: str, records: list[tuple[bytes, bytes | None]], *, producer_id: int = -1,
               producer_epoch: int = -1, refuse_below_min_isr: bool = True) -> tuple[ErrorCode, int]:
        """write_replicated's first half, on the event loop without a pause: (error, -1) when
        refused and nothing was appended, else (NONE, the log end offset just after the records),
        so that a caller applies its change in memory exactly when the log has it (Kafka's
        CoordinatorRuntime replays a write's records as it appends them) and then awaits
        acknowledged() for the answer."""
        if not records:
            return ErrorCode.none, -1
        if not self.ensure_topic():
            return ErrorCode.coordinator_not_available, -1
        plog = self.broker.partition_log(self.topic, self.partition_for(key))
        if plog is None:
            return ErrorCode.not_coordinator, -1
        if refuse_below_min_isr:
            refused = self.min_isr_refusal(key)
            if refused is not None:
                return refused, -1
        written = self.write(key, records, producer_id=producer_id, producer_epoch=producer_epoch)
        if written != ErrorCode.none:
            return written, -1
        return ErrorCode.none, plog.log_end_offset  # no await since the append: these records end here

    def min_isr_refusal(self, key: str) -> ErrorCode | None:
        """The error a write for `key` is refused with now, before anything changes: the partition's
        ISR below min.insync.replicas (produce's acks=-1 rule), as the coordinator answers it."""
        plog = self.broker.partition_log(self.topic, self.partition_for(key))
        min_isr_error: Callable[[PartitionLog], ErrorCode | None] | None = getattr(self.broker, "min_isr_error", None)
        if plog is None or min_isr_error is None:
            return None
        refused = min_isr_error(plog)
        if refused is not None:
            log.info("write to %s-%d for %s refused: %s", self.topic, plog.partition, key, refused.name)
            return coordinator_error(refused)
        return None

    async def acknowledged(self, key: str, end: int, timeout_ms: int) -> ErrorCode:
        """write_replicated's second half: NONE once every in-sync replica holds the partition of `key`
        below `end` and the ISR still has min.insync.replicas, else the error as the coordinator
        answers it (the records stay in the log: a later leader of the partition may or may not have them)."""
        plog = self.broker.partition_log(self.topic, self.partition_for(key))
        if plog is None:
            return ErrorCode.not_coordinator
        wait: Callable[[PartitionLog, int, float], Awaitable[ErrorCode]] | None = getattr(
            self.broker, "wait_replicated", None)
        if wait is None:
            return ErrorCode.none
        code = await wait(plog, end, timeout_ms / 1000)
        min_isr_error: Callable[[PartitionLog], ErrorCode | None] | None = getattr(self.broker, "min_isr_error", None)
        if code == ErrorCode.none and min_isr_error is not None and min_isr_error(plog) is not None:
            code = ErrorCode.not_enough_replicas_after_append
        if code != ErrorCode.none:
            log.info("write to %s-%d for %s not acknowledged: %s", self.topic, plog.partition, key, code.name)
        return coordinator_error(code)

    def log_end(self, key: str) -> int:
        """The log end offset of the partition of `key` (-1 when this broker holds no log of it)."""
        plog = self.broker.partition_log(self.topic, self.partition_for(key))
        return plog.log_end_offset if plog is not None else -1

    async def all_acknowledged(self, key: str, timeout_ms: int) -> ErrorCode:
        """NONE once the ISR holds everything appended to the partition of `key` so far: Kafka's
        CoordinatorRuntime answers an operation once the high watermark passes the records of
        every write before its answer (a change made by several appends, or by none of its own)."""
        end = self.log_end(key)
        if end < 0:
            return ErrorCode.not_coordinator
        return await self.acknowledged(key, end, timeout_ms)

    def acknowledge_in_background(self, key: str, end: int, timeout_ms: int, what: str) -> None:
        """A write no client waits for (an Empty group, offset expiry, a session's end) is awaited
        all the same, as Kafka's coordinator writes are, and a failure logged: the change stays
        applied, as the log has it, and the next leader of the partition may not."""
        if end < 0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # replayed or driven outside the event loop: nothing to wait on
            return
        task = loop.create_task(self._log_unacknowledged(key, end, timeout_ms, what))
        self._unanswered.add(task)
        task.add_done_callback(self._unanswered.discard)

    async def _log_unacknowledged(self, key: str, end: int, timeout_ms: int, what: str) -> None:
        error = await self.acknowledged(key, end, timeout_ms)
        if error != ErrorCode.none:
            log.warning("%s of %s written but not acknowledged by the ISR: %s", what, key, error.name)

    def replay(self) -> Iterator[tuple[bytes, bytes | None]]:
        """Every key/value of the topic (non-transactional batches), partition by partition, in log order."""
        for _partition, _pid, _control, key, value in self.replay_events():
            if _pid < 0:
                yield key, value

    def replay_events(self, partitions: list[int] | None = None) -> Iterator[tuple[int, int, int, bytes, bytes | None]]:
        """(partition, producer id, control type, key, value) in log order: producer id -1 for plain
        records; a transactional record carries its producer id; an end-transaction marker comes as
        (partition, producer id, CONTROL_COMMIT or CONTROL_ABORT, b"", None)."""
        if not self.exists():
            return
        for partition in (range(self.num_partitions) if partitions is None else partitions):
            plog = self.broker.partition_log(self.topic, partition)
            if plog is None:
                continue
            offset = plog.log_start_offset
            end = plog.log_end_offset
            while offset < end:
                data = plog.read(offset, _READ_CHUNK, max_offset=end, min_one=True)
                if not data:
                    break
                next_offset = offset
                for pos, base, last_delta, attributes, records in _batches(data):
                    next_offset = max(next_offset, base + last_delta + 1)
                    pid = struct.unpack_from(">q", data, pos + 43)[0] if attributes & _TRANSACTIONAL_BIT else -1
                    if attributes & _CONTROL_BIT:
                        if pid >= 0 and base >= offset:
                            yield partition, pid, control_type(data, pos), b"", None
                        continue
                    if attributes & _COMPRESSION_MASK:
                        log.warning("skipping a compressed batch at %s-%d offset %d", self.topic, partition, base)
                        continue
                    for rec_offset, key, value in records:
                        if rec_offset >= offset and key is not None:
                            yield partition, pid, -1, key, value
                if next_offset <= offset:
                    break
                offset = next_offset


def coordinator_error(code: ErrorCode) -> ErrorCode:
    """A failed coordinator write as the client sees it: Kafka's TransactionStateManager and
    GroupMetadataManager.storeGroup mappings (CoordinatorOperationExceptionHelper in the new runtime)."""
    if code in (ErrorCode.not_leader_or_follower, ErrorCode.kafka_storage_error):
        return ErrorCode.not_coordinator
    if code in (ErrorCode.request_timed_out, ErrorCode.not_enough_replicas,
                ErrorCode.not_enough_replicas_after_append, ErrorCode.unknown_topic_or_partition):
        return ErrorCode.coordinator_not_available
    if code in (ErrorCode.message_too_large, ErrorCode.record_list_too_large):
        return ErrorCode.unknown_server_error
    return code


def _batches(data: bytes) -> Iterator[tuple[int, int, int, int, list[tuple[int, bytes | None, bytes | None]]]]:
    pos = 0
    while pos + 61 <= len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        end = pos + 12 + length
        if end > len(data):
            break
        base, attributes, last_delta = struct.unpack_from(">q", data, pos)[0], *struct.unpack_from(">hi", data, pos + 21)
        if attributes & (_CONTROL_BIT | _COMPRESSION_MASK):
            yield pos, base, last_delta, attributes, []
        else:
            try:
                batch, _ = read_batch(memoryview(data)[pos:end], 0)
            except (ValueError, IndexError) as exc:
                log.warning("unreadable batch at offset %d: %s", base, exc)
                yield pos, base, last_delta, attributes & ~_TRANSACTIONAL_BIT, []
            else:
                yield pos, base, last_delta, attributes, [(r.offset, r.key, r.value) for r in batch.records]
        pos = end


class OffsetsStore(InternalTopicStore):
    """__consumer_offsets (offsets.topic.num.partitions, offsets.topic.replication.factor)."""

    @property
    def commit_timeout_ms(self) -> int:
        """offsets.commit.timeout.ms: how long every write of the group coordinator waits for the ISR."""
        return self.broker.config.offsets_commit_timeout_ms
