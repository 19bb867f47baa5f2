"""In-memory partition logs for `storage="memory"` (odradek.testing's fastest start).

Same interface as PartitionLog/LogManager, so the server cannot tell them apart;
batches are kept as bytes in a list, with offsets assigned the same way.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

from odradek.protocol.records import (
    NOT_A_MARKER,
    BatchHeader,
    control_marker,
    decode_batch,
    set_log_append_time,
)
from odradek.storage.log import AppendResult, LogConfig, OffsetOutOfRangeError
from odradek.storage.producer_state import ProducerStateManager

_STAMP = struct.Struct(">qii")


@dataclass
class _Segment:  # the shape retention expects: one per batch
    base_offset: int
    size: int
    max_timestamp: int


class MemoryPartitionLog:
    def __init__(self, topic: str, partition: int, config: LogConfig) -> None:
        self.topic = topic
        self.partition = partition
        self.config = config
        self._batches: list[bytes] = []
        self._last: list[int] = []  # last offset of each batch
        self._max_ts: list[int] = []
        self.log_start_offset = 0
        self.log_end_offset = 0
        self.high_watermark = 0
        self.recovery_point = 0
        self.leader_epoch = 0
        self.epochs: list[tuple[int, int]] = []
        self.producer_state = ProducerStateManager(None)

    def append(self, data: bytes | memoryview, batches: list[BatchHeader], *, now_ms: int) -> AppendResult:
        for b in batches:
            duplicate = self.producer_state.check(b)
            if duplicate is not None:
                return AppendResult(duplicate[0], duplicate[1], -1, self.log_start_offset)
        view = memoryview(data)
        first = offset = self.log_end_offset
        log_append = self.config.message_timestamp_type == "LogAppendTime"
        for b in batches:
            raw = bytearray(view[b.position : b.position + b.size])
            _STAMP.pack_into(raw, 0, offset, b.batch_length, self.leader_epoch)
            if log_append:
                set_log_append_time(raw, now_ms)
            self.producer_state.update(b, offset, *(control_marker(raw) if b.is_control else NOT_A_MARKER))
            offset += b.last_offset_delta + 1
            self._batches.append(bytes(raw))
            self._last.append(offset - 1)
            self._max_ts.append(now_ms if log_append else b.max_timestamp)
        self.log_end_offset = offset
        return AppendResult(first, offset - 1, now_ms if log_append else -1, self.log_start_offset)

    def read(self, offset: int, max_bytes: int, *, max_offset: int | None = None, min_one: bool = True) -> bytes:
        if offset < self.log_start_offset or offset > self.log_end_offset:
            raise OffsetOutOfRangeError(f"offset {offset} is outside [{self.log_start_offset}, {self.log_end_offset}]")
        i = bisect.bisect_left(self._last, offset)
        out: list[bytes] = []
        total = 0
        while i < len(self._batches):
            batch = self._batches[i]
            if max_offset is not None and struct.unpack_from(">q", batch)[0] >= max_offset:
                break
            if total + len(batch) > max_bytes and (out or not min_one):
                break
            out.append(batch)
            total += len(batch)
            i += 1
        return b"".join(out)

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: a memory log lives under one leader epoch, its current one."""
        if epoch < self.leader_epoch:
            return -1, -1
        return self.leader_epoch, self.log_end_offset

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        for i, ts in enumerate(self._max_ts):
            if ts >= timestamp_ms and self._last[i] >= self.log_start_offset:
                for r in decode_batch(self._batches[i]).records:
                    if r.timestamp >= timestamp_ms and r.offset >= self.log_start_offset:
                        return r.offset, r.timestamp
        return None

    @property
    def segments(self) -> list[_Segment]:
        return [_Segment(0, self.size_bytes, max(self._max_ts, default=-1))]

    @property
    def size_bytes(self) -> int:
        return sum(len(b) for b in self._batches)

    def delete_records_before(self, offset: int) -> None:
        offset = min(offset, self.high_watermark)
        if offset <= self.log_start_offset:
            return
        self.log_start_offset = offset
        while self._last and self._last[0] < offset:
            self._batches.pop(0)
            self._last.pop(0)
            self._max_ts.pop(0)
        self.producer_state.drop_aborted(before=offset)

    def truncate_to(self, offset: int) -> None:
        while self._last and struct.unpack_from(">q", self._batches[-1])[0] >= offset:
            self._batches.pop()
            self._last.pop()
            self._max_ts.pop()
        self.log_end_offset = max(self._last[-1] + 1 if self._last else self.log_start_offset, self.log_start_offset)
        self.high_watermark = min(self.high_watermark, self.log_end_offset)

    def update_config(self, config: LogConfig) -> None:
        self.config = config

    def flush(self) -> None:
        self.recovery_point = self.log_end_offset

    def close(self) -> None:
        pass

    def delete(self) -> None:
        self._batches.clear()


class MemoryLogManager:
    def __init__(self, *, default_config: LogConfig) -> None:
        self.default_config = default_config
        self._logs: dict[tuple[str, int], MemoryPartitionLog] = {}

    def open(self) -> None:
        pass

    def get(self, topic: str, partition: int) -> MemoryPartitionLog | None:
        return self._logs.get((topic, partition))

    def get_or_create(self, topic: str, partition: int, config: LogConfig) -> MemoryPartitionLog:
        plog = self._logs.get((topic, partition))
        if plog is None:
            plog = self._logs[(topic, partition)] = MemoryPartitionLog(topic, partition, config)
        else:
            plog.update_config(config)
        return plog

    def delete_topic(self, topic: str) -> None:
        for key in [k for k in self._logs if k[0] == topic]:
            del self._logs[key]

    def logs(self) -> list[MemoryPartitionLog]:
        return list(self._logs.values())

    def checkpoint(self) -> None:
        pass

    def flush_all(self) -> None:
        pass

    async def flush_in_background(self) -> None:
        pass

    def close(self) -> None:
        pass
