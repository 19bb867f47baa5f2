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
segments happens on the event loop (`PartitionLog.begin_swap`, `finish_swap`), so
readers never see a half-swapped log, with its directory fsync and the new files'
scan on a thread between the two. One partition is cleaned at a time.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import crc32c

from odradek.protocol.records import BatchHeader, Record, decode_batch, encode_batch
from odradek.storage.log import PartitionLog
from odradek.storage.log_maintenance import SwapJob, prepare_swap
from odradek.storage.manager import read_checkpoint, write_checkpoint
from odradek.storage.segment import LogSegment, _scan_headers

log = logging.getLogger("odradek.cleaner")

CLEANER_CHECKPOINT_FILE = "cleaner-offset-checkpoint"
_CHUNK = 8 * 1024 * 1024
_CRC_START = 21
_LENGTH = struct.Struct(">i")
_SYNC_EVERY = 4 * 1024 * 1024


@dataclass(frozen=True)
class SegmentFile:
    """What the cleaner needs of one segment: plain values, so a worker process can take it."""

    log_path: Path
    next_offset: int
    max_timestamp: int
    size: int


@dataclass(frozen=True)
class CleanJob:
    """The file work of one pass: segments in [log start, end), offset map built from [dirty_start, end)."""

    segments: tuple[SegmentFile, ...]
    dirty_start: int
    end: int
    log_start_offset: int
    now_ms: int
    delete_retention_ms: int
    aborted: tuple[tuple[int, int, int], ...] = ()  # (producer id, first offset, marker offset)

    def is_aborted(self, h: BatchHeader) -> bool:
        """A batch of an aborted transaction: never a key's latest value, and removed (as Kafka does)."""
        if not h.is_transactional or h.is_control:
            return False
        return any(pid == h.producer_id and first <= h.base_offset < last for pid, first, last in self.aborted)


@dataclass
class CleanPlan:
    plog: PartitionLog
    segments: list[LogSegment]
    job: CleanJob

    @property
    def dirty_start(self) -> int:
        return self.job.dirty_start

    @property
    def end(self) -> int:
        return self.job.end


@dataclass
class CleanStats:
    bytes_read: int = 0
    bytes_written: int = 0
    records_read: int = 0
    records_removed: int = 0
    cleaned: list[tuple[int, Path]] = field(default_factory=list)  # (segment index in the job, .cleaned)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _batches(fd: int) -> Iterator[tuple[int, BatchHeader, bytes]]:
    """(position, header, bytes) of every batch of a segment, read chunk by chunk through the
    cleaner's own descriptor (the log may close its fd meanwhile)."""
    pos = 0
    while True:
        chunk = os.pread(fd, _CHUNK, pos)
        if len(chunk) < 12:
            return
        headers, used = _scan_headers(chunk)
        if not headers:  # one batch larger than the chunk
            (length,) = _LENGTH.unpack_from(chunk, 8)
            chunk = os.pread(fd, length + 12, pos)
            headers, used = _scan_headers(chunk)
            if not headers:
                return
        view = memoryview(chunk)
        for h in headers:
            yield pos + h.position, h, bytes(view[h.position : h.position + h.size])
        pos += used


def cleanable_plan(plog: PartitionLog, checkpoint: int, now_ms: int) -> CleanPlan | None:
    """The plan for one pass, or None when the log is not dirty enough (Kafka's LogCleanerManager)."""
    cfg = plog.config
    if "compact" not in cfg.cleanup_policy.split(","):
        return None
    closed = plog.segments[:-1]
    end_i = 0
    stable = plog.producer_state.last_stable_offset(plog.high_watermark)
    for seg in closed:  # the first uncleanable offset: min.compaction.lag.ms, last stable offset
        if seg.next_offset > stable:
            break
        if seg.max_timestamp >= 0 and now_ms - seg.max_timestamp < cfg.min_compaction_lag_ms:
            break
        end_i += 1
    if end_i == 0:
        return None
    segments = closed[:end_i]
    end = plog.segments[end_i].base_offset
    if checkpoint > plog.log_end_offset:  # a recreated topic, or a truncated log: start over
        checkpoint = 0
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
    files = tuple(SegmentFile(s.log_path, s.next_offset, s.max_timestamp, s.size) for s in segments)
    aborted = tuple((a.producer_id, a.first_offset, a.last_offset)
                    for a in plog.producer_state.collect_aborted(plog.log_start_offset, end))
    job = CleanJob(files, dirty_start, end, plog.log_start_offset, now_ms, cfg.delete_retention_ms, aborted)
    return CleanPlan(plog, list(segments), job)


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


class _CleanedWriter:
    """The `.cleaned` file of one segment, opened at the first removed record: unchanged batches
    are copied from the source by range (no buffering of a whole segment), and the file is
    fsynced in steps of _SYNC_EVERY bytes, so the disk sees a steady trickle instead of one burst
    that stalls the broker's own writes (bench/compaction_bench.py)."""

    def __init__(self, source_fd: int, path: Path) -> None:
        self.source_fd = source_fd
        self.path = path
        path.unlink(missing_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # never share a writer's file
        self.copied_to = 0  # source position up to which everything is written
        self.written = 0
        self.unsynced = 0

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.written += len(data)
        self.unsynced += len(data)
        if self.unsynced >= _SYNC_EVERY:
            os.fdatasync(self.fd)
            self.unsynced = 0

    def copy_until(self, position: int) -> None:
        while self.copied_to < position:
            data = os.pread(self.source_fd, min(_CHUNK, position - self.copied_to), self.copied_to)
            if not data:
                raise OSError(f"{self.path}: source segment ended early")
            self._write(data)
            self.copied_to += len(data)

    def replace(self, position: int, size: int, retained: bytes | None) -> None:
        """The batch at [position, position + size) becomes `retained` (None: dropped)."""
        self.copy_until(position)
        if retained is not None:
            self._write(retained)
        self.copied_to = position + size

    def finish(self, source_size: int) -> None:
        self.copy_until(source_size)
        os.fsync(self.fd)
        os.close(self.fd)

    def abort(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


def clean_partition(job: CleanJob) -> CleanStats:
    """The file work of one pass (in a worker): build the offset map, write `.cleaned` files."""
    stats = CleanStats()
    latest: dict[bytes, int] = {}
    for seg in job.segments:
        if seg.next_offset <= job.dirty_start:
            continue
        fd = os.open(seg.log_path, os.O_RDONLY)
        try:
            for _, h, raw in _batches(fd):
                if h.is_control or h.last_offset < job.dirty_start or job.is_aborted(h):
                    continue
                for r in decode_batch(raw).records:
                    if r.key is not None and r.offset >= job.dirty_start:
                        latest[r.key] = r.offset
        finally:
            os.close(fd)
    horizon = job.now_ms - job.delete_retention_ms
    for i, seg in enumerate(job.segments):
        drop_tombstones = 0 <= seg.max_timestamp < horizon
        fd = os.open(seg.log_path, os.O_RDONLY)
        out: _CleanedWriter | None = None
        try:
            for pos, h, raw in _batches(fd):
                if pos + h.size > seg.size:
                    break  # only what the plan saw
                stats.bytes_read += len(raw)
                if h.is_control or h.last_offset < job.log_start_offset:
                    continue
                records = decode_batch(raw).records
                stats.records_read += len(records)
                kept = [] if job.is_aborted(h) else [r for r in records
                        if r.key is None
                        or (latest.get(r.key, -1) <= r.offset and not (r.value is None and drop_tombstones))]
                if len(kept) == len(records):
                    continue
                stats.records_removed += len(records) - len(kept)
                if out is None:
                    out = _CleanedWriter(fd, seg.log_path.with_name(f"{seg.log_path.name}.cleaned"))
                out.replace(pos, h.size, _retained_batch(h, raw, kept) if kept else None)
            if out is not None:
                out.finish(seg.size)
                stats.bytes_written += out.written
                stats.cleaned.append((i, out.path))
                out = None
        finally:
            if out is not None:
                out.abort()
            os.close(fd)
    return stats


def _worker_init() -> None:
    """The cleaner is background work: at nice 19 and SCHED_IDLE it gets the CPU the request path leaves idle.
    It also dies with the broker (PR_SET_PDEATHSIG), so after a kill -9 no orphan keeps writing
    `.cleaned` files next to the restarted broker's."""
    try:
        os.nice(19)
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # Linux: run only on idle CPU
    except (OSError, AttributeError):
        pass
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LogCleaner:
    """The background cleaner: picks the dirtiest compacted partition, cleans it, repeats."""

    def __init__(self, data_dir: Path, backoff_ms: int = 15000, *, use_process: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.backoff_s = backoff_ms / 1000.0
        self.checkpoints: dict[tuple[str, int], int] = read_checkpoint(self.data_dir / CLEANER_CHECKPOINT_FILE)
        self.total_bytes_read = 0
        self.total_seconds = 0.0
        self._pool: ProcessPoolExecutor | None = None
        self._pool_failed = not use_process
        self.uncleanable: set[tuple[str, int]] = set()

    def plan_next(self, logs: list[PartitionLog], now_ms: int) -> CleanPlan | None:
        best: tuple[float, CleanPlan] | None = None
        for plog in logs:
            if not isinstance(plog, PartitionLog) or (plog.topic, plog.partition) in self.uncleanable:
                continue  # storage=memory logs have no segments to rewrite
            plan = cleanable_plan(plog, self.checkpoints.get((plog.topic, plog.partition), 0), now_ms)
            if plan is None:
                continue
            dirty = sum(s.size for s in plan.segments if s.next_offset > plan.dirty_start)
            ratio = dirty / max(sum(s.size for s in plan.segments), 1)
            if best is None or ratio > best[0]:
                best = (ratio, plan)
        return best[1] if best else None

    def finish(self, plan: CleanPlan, stats: CleanStats, live: list[PartitionLog]) -> bool:
        """Swap in the cleaned segments and move the cleaner checkpoint, on the caller's thread."""
        begun, swap = self._begin(plan, stats, live)
        if not begun:
            return False
        if swap is not None and not plan.plog.finish_swap(swap, prepare_swap(swap)):
            return False
        write_checkpoint(self.data_dir / CLEANER_CHECKPOINT_FILE, self._checkpoints_after(plan, live))
        return True

    async def finish_in_background(self, plan: CleanPlan, stats: CleanStats,
                                   logs_of: Callable[[], list[PartitionLog]]) -> bool:
        """`finish` with the file work on threads (the directory fsync and the new segments' scan,
        then the checkpoint's write and fsync): the event loop only renames and swaps, and readers
        never see a half-swapped log."""
        begun, swap = self._begin(plan, stats, logs_of())
        if not begun:
            return False
        if swap is not None:
            headers = await asyncio.to_thread(prepare_swap, swap)
            if not plan.plog.finish_swap(swap, headers):
                return False
        await asyncio.to_thread(write_checkpoint, self.data_dir / CLEANER_CHECKPOINT_FILE,
                                self._checkpoints_after(plan, logs_of()))
        return True

    def _begin(self, plan: CleanPlan, stats: CleanStats, live: list[PartitionLog]) -> tuple[bool, SwapJob | None]:
        """(False, None) when the log or a segment changed since the clean began; else the swap
        begun (None: nothing to swap)."""
        plog = plan.plog
        if plog not in live:  # the topic was deleted meanwhile
            for _, path in stats.cleaned:
                path.unlink(missing_ok=True)
            return False, None
        swaps = [(plan.segments[i], plan.job.segments[i].size, path) for i, path in stats.cleaned]
        if not swaps:
            return True, None
        job = plog.begin_swap(swaps)
        return job is not None, job

    def _checkpoints_after(self, plan: CleanPlan, live: list[PartitionLog]) -> dict[tuple[str, int], int]:
        """The cleaner checkpoint moved to the clean's end (a copy to write), forgetting deleted logs."""
        plog = plan.plog
        self.checkpoints[(plog.topic, plog.partition)] = plan.end
        known = {(p.topic, p.partition) for p in live}
        self.checkpoints = {k: v for k, v in self.checkpoints.items() if k in known}
        return dict(self.checkpoints)

    def clean_once(self, logs: list[PartitionLog]) -> CleanStats | None:
        """One synchronous pass (tests and the bench): plan, clean, swap."""
        plan = self.plan_next(logs, _now_ms())
        if plan is None:
            return None
        stats = clean_partition(plan.job)
        self.finish(plan, stats, logs)
        return stats

    def _executor(self) -> Executor | None:
        """A low-priority worker process, so record decoding neither holds the broker's GIL nor takes
        CPU from requests (bench/compaction_bench.py: produce fell to ~55% of its speed with the cleaner
        in a thread or a normal-priority process, on 2 CPUs); a thread if no process can start."""
        if self._pool is None and not self._pool_failed:
            try:
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_worker_init)
            except (OSError, ValueError) as exc:
                log.warning("cleaner worker process unavailable (%s); cleaning in a thread", exc)
                self._pool_failed = True
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def run(self, logs_of: Callable[[], list[PartitionLog]]) -> None:
        """Forever: clean the dirtiest partition in the worker, swap on the loop, back off when idle."""
        loop = asyncio.get_running_loop()
        while True:
            logs = logs_of()
            plan = self.plan_next(logs, _now_ms())
            if plan is None:
                await asyncio.sleep(self.backoff_s)
                continue
            started = time.monotonic()
            try:
                stats = await loop.run_in_executor(self._executor(), clean_partition, plan.job)
            except BrokenProcessPool as exc:  # e.g. a host program that spawn cannot re-import
                log.warning("cleaner worker process failed (%s); cleaning in a thread from now on", exc)
                self.close()
                self._pool_failed = True
                continue
            except Exception as exc:  # noqa: BLE001 - a bad segment must not stop the cleaner
                # Kafka's LogCleanerManager marks such a partition uncleanable until restart
                log.warning("cleaning %s-%d failed, marking it uncleanable: %s", plan.plog.topic,
                            plan.plog.partition, exc)
                self.uncleanable.add((plan.plog.topic, plan.plog.partition))
                continue
            elapsed = time.monotonic() - started
            if await self.finish_in_background(plan, stats, logs_of):
                self.total_bytes_read += stats.bytes_read
                self.total_seconds += elapsed
                log.info("cleaned %s-%d up to offset %d: %d of %d records removed, %.1f MB in %.2f s",
                         plan.plog.topic, plan.plog.partition, plan.end, stats.records_removed,
                         stats.records_read, stats.bytes_read / 1e6, elapsed)
            await asyncio.sleep(0)
