"""__consumer_offsets: where the coordinator's state lives between restarts.

Every commit and every group change is appended to the partition that owns the
group (Kafka's partitionFor) as one uncompressed record batch, and on start the
whole compacted topic is read back, latest record per key winning, tombstones
deleting. The topic is created on first use, compacted, like Kafka does.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import crc32c
from kio.records.readers import read_batch
from kio.schema.errors import ErrorCode

from odradek.coordinator.records import partition_for

if TYPE_CHECKING:
    from odradek.server.broker import Broker

log = logging.getLogger("odradek.coordinator")

OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_TOPIC_CONFIGS = {"cleanup.policy": "compact", "segment.bytes": "104857600"}
_READ_CHUNK = 1 << 20
_CONTROL_BIT = 0x20
_COMPRESSION_MASK = 0x07


def _varint(value: int) -> bytes:
    z = (value << 1) ^ (value >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def encode_batch(records: list[tuple[bytes, bytes | None]], timestamp_ms: int) -> bytes:
    """A magic-2 record batch of key/value records (base offset 0; the log assigns it)."""
    body = bytearray()
    for delta, (key, value) in enumerate(records):
        rec = bytearray(b"\x00")  # attributes
        rec += _varint(0)  # timestamp delta
        rec += _varint(delta)
        rec += _varint(len(key)) + key
        rec += _varint(-1) if value is None else _varint(len(value)) + value
        rec += _varint(0)  # headers
        body += _varint(len(rec)) + rec
    after_crc = struct.pack(
        ">hiqqqhii", 0, len(records) - 1, timestamp_ms, timestamp_ms, -1, -1, -1, len(records)
    ) + bytes(body)
    crc = crc32c.crc32c(after_crc)
    head = struct.pack(">qiiBI", 0, 4 + 1 + 4 + len(after_crc), 0, 2, crc)
    return head + after_crc


class OffsetsStore:
    """Appends to and replays __consumer_offsets for one broker."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    @property
    def num_partitions(self) -> int:
        topic = self.broker.topics().get(OFFSETS_TOPIC)
        return topic.partitions if topic is not None else self.broker.config.offsets_topic_num_partitions

    def partition_for(self, group_id: str) -> int:
        return partition_for(group_id, self.num_partitions)

    def exists(self) -> bool:
        return OFFSETS_TOPIC in self.broker.topics()

    def ensure_topic(self) -> bool:
        """Create __consumer_offsets on first use; False when it cannot be created now."""
        if self.exists():
            return True
        try:
            self.broker.create_topic(
                OFFSETS_TOPIC,
                num_partitions=self.broker.config.offsets_topic_num_partitions,
                replication_factor=self.broker.config.offsets_topic_replication_factor,
                configs=dict(OFFSETS_TOPIC_CONFIGS),
            )
        except Exception as exc:  # TopicError, InvalidConfigError, or cluster trouble
            if self.exists():
                return True
            log.warning("cannot create %s: %s", OFFSETS_TOPIC, exc)
            return False
        return True

    def write(self, group_id: str, records: list[tuple[bytes, bytes | None]]) -> ErrorCode:
        """Append records for one group; the error a client should see, or none."""
        if not records:
            return ErrorCode.none
        if not self.ensure_topic():
            return ErrorCode.coordinator_not_available
        from odradek.protocol.records import parse_batches

        partition = self.partition_for(group_id)
        plog = self.broker.partition_log(OFFSETS_TOPIC, partition)
        if plog is None:
            return ErrorCode.coordinator_not_available
        data = encode_batch(records, time.time_ns() // 1_000_000)
        try:
            self.broker.append(plog, data, parse_batches(data))
        except Exception as exc:
            log.warning("append to %s-%d for group %s failed: %s", OFFSETS_TOPIC, partition, group_id, exc)
            return ErrorCode.coordinator_not_available
        return ErrorCode.none

    def replay(self) -> Iterator[tuple[bytes, bytes | None]]:
        """Every key/value of __consumer_offsets, partition by partition, in log order."""
        if not self.exists():
            return
        for partition in range(self.num_partitions):
            plog = self.broker.partition_log(OFFSETS_TOPIC, partition)
            if plog is None:
                continue
            offset = plog.log_start_offset
            end = plog.log_end_offset
            while offset < end:
                data = plog.read(offset, _READ_CHUNK, max_offset=end, min_one=True)
                if not data:
                    break
                next_offset = offset
                for base, last_delta, attributes, records in _batches(data):
                    next_offset = max(next_offset, base + last_delta + 1)
                    if attributes & _CONTROL_BIT:
                        continue
                    if attributes & _COMPRESSION_MASK:
                        log.warning("skipping a compressed batch at %s-%d offset %d", OFFSETS_TOPIC, partition, base)
                        continue
                    for rec_offset, key, value in records:
                        if rec_offset >= offset and key is not None:
                            yield key, value
                if next_offset <= offset:
                    break
                offset = next_offset


def _batches(data: bytes) -> Iterator[tuple[int, int, int, list[tuple[int, bytes | None, bytes | None]]]]:
    pos = 0
    while pos + 61 <= len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        end = pos + 12 + length
        if end > len(data):
            break
        base, attributes, last_delta = struct.unpack_from(">q", data, pos)[0], *struct.unpack_from(">hi", data, pos + 21)
        if attributes & (_CONTROL_BIT | _COMPRESSION_MASK):
            yield base, last_delta, attributes, []
        else:
            try:
                batch, _ = read_batch(memoryview(data)[pos:end], 0)
            except (ValueError, IndexError) as exc:
                log.warning("unreadable batch in %s at offset %d: %s", OFFSETS_TOPIC, base, exc)
                yield base, last_delta, _CONTROL_BIT, []
            else:
                yield base, last_delta, attributes, [(r.offset, r.key, r.value) for r in batch.records]
        pos = end
