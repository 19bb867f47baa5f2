"""LogCleaner: log compaction for `cleanup.policy=compact` (and `compact,delete`).

Kafka's cleaner, in small: a partition's log is split at the cleaner checkpoint
(`cleaner-offset-checkpoint`) into a clean head and a dirty tail; when the dirty
share reaches `min.cleanable.dirty.ratio` (or the oldest dirty record is older
than `max.compaction.lag.ms`) the closed segments below the first uncleanable
offset are rewritten keeping only the last record of each key. Offsets are kept
(a compacted log has gaps), tombstones go once their segment is older than
`delete.retention.ms`, and segments newer than `min.compaction.lag.ms` or the
active segment are never touched.

File work happens in a thread (`clean_partition`); the swap of the rewritten
segments (`PartitionLog.replace_segments`) happens on the event loop, so readers
never see a half-swapped log. One partition is cleaned at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import crc32c

from odradek.protocol.records import BatchHeader, Record, decode_batch, encode_batch
from odradek.storage.log import PartitionLog
from odradek.storage.manager import read_checkpoint, write_checkpoint
from odradek.storage.segment import LogSegment, _scan_headers

log = logging.getLogger("odradek.cleaner")

CLEANER_CHECKPOINT_FILE = "cleaner-offset-checkpoint"
_CHUNK = 8 * 1024 * 1024
_CRC_START = 21
_LENGTH = struct.Struct(">i")


@dataclass
class CleanPlan:
    """What one pass cleans: closed segments in [log start, end), map built from [dirty_start, end)."""

    plog: PartitionLog
    segments: list[LogSegment]
    sizes: list[int]
    dirty_start: int
    end: int
    now_ms: int
    delete_retention_ms: int


@dataclass
class CleanStats:
    bytes_read: int = 0
    bytes_written: int = 0
    records_read: int = 0
    records_removed: int = 0
    cleaned: list[tuple[LogSegment, int, Path]] = field(default_factory=list)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _batches(path: Path) -> list[tuple[BatchHeader, bytes]]:
    """Every batch of a segment file, read through its own descriptor (the log may close its fd)."""
    out: list[tuple[BatchHeader, bytes]] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        pos = 0
        while True:
            chunk = os.pread(fd, _CHUNK, pos)
            if len(chunk) < 12:
                break
            headers, used = _scan_headers(chunk)
            if not headers:  # one batch larger than the chunk
                (length,) = _LENGTH.unpack_from(chunk, 8)
                chunk = os.pread(fd, length + 12, pos)
                headers, used = _scan_headers(chunk)
                if not headers:
                    break
            view = memoryview(chunk)
            for h in headers:
                out.append((h, bytes(view[h.position : h.position + h.size])))
            pos += used
    finally:
        os.close(fd)
    return out


def cleanable_plan(plog: PartitionLog, checkpoint: int, now_ms: int) -> CleanPlan | None:
    """The plan for one pass, or None when the log is not dirty enough (Kafka's LogCleanerManager)."""
    cfg = plog.config
    if "compact" not in cfg.cleanup_policy.split(","):
        return None
    closed = plog.segments[:-1]
    end_i = 0
    for seg in closed:  # the first uncleanable offset: min.compaction.lag.ms, high watermark
        if seg.next_offset > plog.high_watermark:
            break
        if seg.max_timestamp >= 0 and now_ms - seg.max_timestamp < cfg.min_compaction_lag_ms:
            break
        end_i += 1
    if end_i == 0:
        return None
    segments = closed[:end_i]
    end = plog.segments[end_i].base_offset
    dirty_start = max(checkpoint, plog.log_start_offset)
    if dirty_start >= end:
        return None
    clean = sum(s.size for s in segments if s.next_offset <= dirty_start)
    dirty = sum(s.size for s in segments if s.next_offset > dirty_start)
    if dirty == 0:
        return None
    ratio = dirty / (clean + dirty)
    first_dirty = next(s for s in segments if s.next_offset > dirty_start)
    head = first_dirty.header_at(0)
    overdue = head is not None and now_ms - head.base_timestamp > cfg.max_compaction_lag_ms
    if ratio < cfg.min_cleanable_dirty_ratio and not overdue:
        return None
    return CleanPlan(plog, list(segments), [s.size for s in segments], dirty_start, end, now_ms,
                     cfg.delete_retention_ms)


def _retained_batch(h: BatchHeader, raw: bytes, kept: list[Record]) -> bytes:
    """Re-encode a batch with only `kept`, keeping its offsets range, producer fields and codec.

    As Kafka's MemoryRecords.filterTo does for v2, the batch still ends at its
    original last offset (so the log end of the segment does not move) and its
    sequence range lines up with the retained offsets.
    """
    first = kept[0].offset
    seq = h.base_sequence + (first - h.base_offset) if h.base_sequence >= 0 else -1
    out = bytearray(encode_batch(
        kept, compression=h.compression, attributes=h.attributes, producer_id=h.producer_id,
        producer_epoch=h.producer_epoch, base_sequence=seq, partition_leader_epoch=h.partition_leader_epoch,
    ))
    struct.pack_into(">i", out, 23, h.last_offset - first)  # lastOffsetDelta
    if h.timestamp_type == 1:  # LogAppendTime: the batch's max timestamp is the broker's time
        struct.pack_into(">q", out, 35, h.max_timestamp)
    struct.pack_into(">I", out, 17, crc32c.crc32c(memoryview(out)[_CRC_START:]))
    return bytes(out)


def clean_partition(plan: CleanPlan) -> CleanStats:
    """The file work of one pass (runs in a thread): build the offset map, write `.cleaned` files."""
    stats = CleanStats()
    latest: dict[bytes, int] = {}
    for seg in plan.segments:
        if seg.next_offset <= plan.dirty_start:
            continue
        for h, raw in _batches(seg.log_path):
            if h.is_control or h.last_offset < plan.dirty_start:
                continue
            for r in decode_batch(raw).records:
                if r.key is not None and r.offset >= plan.dirty_start:
                    latest[r.key] = r.offset
    horizon = plan.now_ms - plan.delete_retention_ms
    for seg, size in zip(plan.segments, plan.sizes, strict=True):
        drop_tombstones = 0 <= seg.max_timestamp < horizon
        pieces: list[bytes] = []
        changed = False
        for h, raw in _batches(seg.log_path):
            stats.bytes_read += len(raw)
            if h.is_control or h.last_offset < plan.plog.log_start_offset:
                pieces.append(raw)
                continue
            records = decode_batch(raw).records
            stats.records_read += len(records)
            kept = [r for r in records
                    if r.key is None
                    or (latest.get(r.key, -1) <= r.offset and not (r.value is None and drop_tombstones))]
            if len(kept) == len(records):
                pieces.append(raw)
                continue
            changed = True
            stats.records_removed += len(records) - len(kept)
            if kept:
                pieces.append(_retained_batch(h, raw, kept))
        if not changed:
            continue
        path = seg.dir / f"{seg.log_path.name}.cleaned"
        with open(path, "wb") as f:
            f.writelines(pieces)
            f.flush()
            os.fsync(f.fileno())
        stats.bytes_written += sum(len(p) for p in pieces)
        stats.cleaned.append((seg, size, path))
    return stats


class LogCleaner:
    """The background cleaner: picks the dirtiest compacted partition, cleans it, repeats."""

    def __init__(self, data_dir: Path, backoff_ms: int = 15000) -> None:
        self.data_dir = Path(data_dir)
        self.backoff_s = backoff_ms / 1000.0
        self.checkpoints: dict[tuple[str, int], int] = read_checkpoint(self.data_dir / CLEANER_CHECKPOINT_FILE)
        self.total_bytes_read = 0
        self.total_seconds = 0.0

    def plan_next(self, logs: list[PartitionLog], now_ms: int) -> CleanPlan | None:
        best: tuple[float, CleanPlan] | None = None
        for plog in logs:
            if not isinstance(plog, PartitionLog):
                continue  # storage=memory logs have no segments to rewrite
            plan = cleanable_plan(plog, self.checkpoints.get((plog.topic, plog.partition), 0), now_ms)
            if plan is None:
                continue
            dirty = sum(s.size for s in plan.segments if s.next_offset > plan.dirty_start)
            ratio = dirty / max(sum(plan.sizes), 1)
            if best is None or ratio > best[0]:
                best = (ratio, plan)
        return best[1] if best else None

    def finish(self, plan: CleanPlan, stats: CleanStats, live: list[PartitionLog]) -> bool:
        """On the event loop: swap in the cleaned segments and move the cleaner checkpoint."""
        plog = plan.plog
        if plog not in live:  # the topic was deleted meanwhile
            for _, _, path in stats.cleaned:
                path.unlink(missing_ok=True)
            return False
        if stats.cleaned and not plog.replace_segments(stats.cleaned):
            return False
        self.checkpoints[(plog.topic, plog.partition)] = plan.end
        known = {(p.topic, p.partition) for p in live}
        self.checkpoints = {k: v for k, v in self.checkpoints.items() if k in known}
        write_checkpoint(self.data_dir / CLEANER_CHECKPOINT_FILE, self.checkpoints)
        return True

    def clean_once(self, logs: list[PartitionLog]) -> CleanStats | None:
        """One synchronous pass (tests and the bench): plan, clean, swap."""
        plan = self.plan_next(logs, _now_ms())
        if plan is None:
            return None
        stats = clean_partition(plan)
        self.finish(plan, stats, logs)
        return stats

    async def run(self, logs_of: object) -> None:
        """Forever: clean the dirtiest partition in a thread, swap on the loop, back off when idle."""
        loop = asyncio.get_running_loop()
        while True:
            logs = logs_of()  # type: ignore[operator]
            plan = self.plan_next(logs, _now_ms())
            if plan is None:
                await asyncio.sleep(self.backoff_s)
                continue
            started = time.monotonic()
            try:
                stats = await loop.run_in_executor(None, clean_partition, plan)
            except (OSError, ValueError) as exc:
                log.warning("cleaning %s-%d failed: %s", plan.plog.topic, plan.plog.partition, exc)
                await asyncio.sleep(self.backoff_s)
                continue
            elapsed = time.monotonic() - started
            if self.finish(plan, stats, logs_of()):  # type: ignore[operator]
                self.total_bytes_read += stats.bytes_read
                self.total_seconds += elapsed
                log.info("cleaned %s-%d up to offset %d: %d of %d records removed, %.1f MB in %.2f s",
                         plan.plog.topic, plan.plog.partition, plan.end, stats.records_removed,
                         stats.records_read, stats.bytes_read / 1e6, elapsed)
            await asyncio.sleep(0)
