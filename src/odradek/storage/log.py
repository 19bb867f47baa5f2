"""PartitionLog (Kafka's UnifiedLog): the segments of one topic-partition.

The leader-epoch cache (`leader_epochs.LeaderEpochs`) and the maintenance of the files
(truncation, DeleteRecords, a compaction's swap, the flush: `log_maintenance.LogMaintenance`)
are the class's other two parts, each in its own module; the thread that makes and removes
log directories is `file_thread`.

Offsets are assigned by writing a new base offset (and the leader epoch) in front
of the unchanged rest of each batch - both fields sit before the CRC'd part, so
the producer's bytes, compressed or not, go to disk untouched. Reads return whole
batches from the segment found by bisecting on base offsets.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from odradek.protocol.records import (
    NOT_A_MARKER,
    BatchHeader,
    control_marker,
    decode_batch,
    set_log_append_time,
)
from odradek.storage import txn_index
from odradek.storage.file_thread import delete_later, settle_rename
from odradek.storage.leader_epochs import LEADER_EPOCH_FILE, LeaderEpochs
from odradek.storage.log_maintenance import FlushJob, LogMaintenance, finish_swaps
from odradek.storage.producer_state import AbortedTxn, ProducerStateManager
from odradek.storage.segment import DELETED_SUFFIX, LogSegment, _scan_headers, remove_deleted

_STAMP = struct.Struct(">qii")  # base offset, batch length, partition leader epoch


class OffsetOutOfRangeError(Exception):
    """The fetch offset is outside [log start offset, log end offset]."""


@dataclass
class LogConfig:
    segment_bytes: int = 1073741824  # segment.bytes
    segment_ms: int = 604800000  # segment.ms
    index_interval_bytes: int = 4096  # index.interval.bytes
    segment_index_bytes: int = 10485760  # segment.index.bytes
    retention_ms: int = 604800000  # retention.ms
    retention_bytes: int = -1  # retention.bytes
    cleanup_policy: str = "delete"  # cleanup.policy
    max_message_bytes: int = 1048588  # max.message.bytes
    message_timestamp_type: str = "CreateTime"  # message.timestamp.type
    delete_retention_ms: int = 86400000  # delete.retention.ms
    min_cleanable_dirty_ratio: float = 0.5  # min.cleanable.dirty.ratio
    min_compaction_lag_ms: int = 0  # min.compaction.lag.ms
    max_compaction_lag_ms: int = 2**63 - 1  # max.compaction.lag.ms


@dataclass
class AppendResult:
    base_offset: int
    last_offset: int
    log_append_time_ms: int
    log_start_offset: int


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class PartitionLog(LeaderEpochs, LogMaintenance):
    def __init__(self, directory: Path, topic: str, partition: int, config: LogConfig) -> None:
        self.dir = directory
        self.topic = topic
        self.partition = partition
        self.config = config
        self.segments: list[LogSegment] = []
        self._bases: list[int] = []
        self.log_start_offset = 0
        self.log_end_offset = 0
        self.high_watermark = 0
        self.recovery_point = 0
        self._dirty = False  # written or truncated since the last fsync: the periodic checkpoint skips clean logs
        self.leader_epoch = 0  # stamped into every batch this broker appends as leader
        self.epochs: list[tuple[int, int]] = []  # leader-epoch cache: (epoch, start offset)
        self.producer_state = ProducerStateManager(directory)
        self._snapshot_at = -1  # the log end offset the newest producer snapshot covers, if unchanged since
        self._files_lock: threading.Lock | None = None  # a created log whose files may not exist yet
        self._epochs_dirty = False  # leader-epoch-checkpoint is behind self.epochs
        self._epochs_lock = threading.Lock()  # the file: written by the loop and by a flush's thread
        self._epochs_taken = 0  # copies of self.epochs taken to be written, numbered in order
        self._epochs_saved = 0  # the number of the copy the file holds (an older one is never written)
        self._truncations = 0  # a flush in the background moves the recovery point only if this held
        self._flushing: FlushJob | None = None
        self._deleted = False

    # -- opening ---------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, topic: str, partition: int, config: LogConfig) -> PartitionLog:
        """A new partition (CreateTopics, CreatePartitions): one empty segment, and no file
        work on the caller's thread. `materialize` makes the directory and the segment file
        (in the background thread: 0.3-1.5 ms of mkdir and creat each on this machine's
        ext4, 3-15 s of event loop for 10,000 partitions); a write that comes first makes
        them itself (LogSegment.fd)."""
        plog = cls(directory, topic, partition, config)
        plog.segments.append(LogSegment(directory, 0, _now_ms(), exists=False))
        plog._bases = [0]
        plog._snapshot_at = 0  # nothing to snapshot: no producer has written here
        plog._files_lock = threading.Lock()
        return plog

    def _ensure_dir(self) -> None:
        """Before the first write to a created log: its directory, if the file thread lags."""
        lock = self._files_lock
        if lock is not None:
            settle_rename(self.dir)  # an earlier log of this partition, deleted, still in the way
            with lock:
                if not self._deleted:
                    self.dir.mkdir(parents=True, exist_ok=True)
                    self._files_lock = None

    def materialize(self) -> None:
        """In the background thread: the directory and file of a created log, unless it was
        deleted first (Kafka creates them in CreateTopics; a restart finds them either way,
        as the topic's metadata recreates whatever is missing)."""
        lock = self._files_lock
        if lock is None:
            return
        with lock:
            if self._deleted:
                return
            settle_rename(self.dir)
            self.dir.mkdir(parents=True, exist_ok=True)
            for seg in self.segments:
                os.close(os.open(seg.log_path, os.O_WRONLY | os.O_CREAT, 0o644))
            self._files_lock = None

    @classmethod
    def open(cls, directory: Path, topic: str, partition: int, config: LogConfig, *,
             recovery_point: int = 0, log_start_offset: int = 0, clean_shutdown: bool = True) -> PartitionLog:
        try:  # one directory listing answers every "is there a ... file" of the opening
            names = set(os.listdir(directory))
        except FileNotFoundError:
            directory.mkdir(parents=True, exist_ok=True)
            names = set()
        plog = cls(directory, topic, partition, config)
        if any(n.endswith(DELETED_SUFFIX) for n in names):  # segments deleted before a crash
            names = remove_deleted(directory, names)
        if any(n.endswith((".cleaned", ".swap")) for n in names):
            finish_swaps(directory)
            names = set(os.listdir(directory))
        bases = sorted(int(n[:-4]) for n in names if n.endswith(".log") and n[:-4].isdigit())
        now = _now_ms()
        cut = False
        for base in bases:
            seg = LogSegment(directory, base, now)
            if cut:  # everything after a corruption point is gone
                seg.delete()
                continue
            verify = not clean_shutdown and seg_may_need_recovery(base, bases, recovery_point)
            cut = seg.load(verify=verify, names=names)
            plog.segments.append(seg)
        if not plog.segments:
            plog.segments.append(plog._new_segment(max(log_start_offset, 0)))
        # an empty trailing segment after truncation keeps its base offset
        plog._bases = [s.base_offset for s in plog.segments]
        plog.log_end_offset = max(plog.segments[-1].next_offset, plog.segments[-1].base_offset)
        plog.log_start_offset = min(max(log_start_offset, plog.segments[0].base_offset), plog.log_end_offset)
        plog.high_watermark = plog.log_end_offset
        plog.recovery_point = plog.log_end_offset if clean_shutdown else min(recovery_point, plog.log_end_offset)
        plog._dirty = not clean_shutdown  # a recovered (perhaps truncated) tail is synced at the next checkpoint
        if LEADER_EPOCH_FILE in names:
            plog._load_epochs()
        for seg in plog.segments:  # Kafka's LogSegment.recover: the epochs of the recovered batches
            for epoch, start in seg.recovered_epochs:
                if start < plog.log_end_offset and (not plog.epochs or plog.epochs[-1][0] < epoch):
                    plog.epochs.append((epoch, start))
                    plog.leader_epoch = max(plog.leader_epoch, epoch)
                    plog._epochs_dirty = True
        plog._load_aborted(names)
        plog._rebuild_producer_state(names)
        return plog

    def _load_aborted(self, names: set[str] | None = None) -> None:
        """The aborted-transaction index of every segment (markers past the log end are gone)."""
        entries: list[AbortedTxn] = []
        for seg in self.segments:
            path = txn_index.index_path(seg.log_path)
            if names is None or path.name in names:
                entries += txn_index.load(path)
        self.producer_state.aborted = sorted((e for e in entries if e.last_offset < self.log_end_offset),
                                             key=lambda e: e.last_offset)

    def _rebuild_producer_state(self, names: set[str] | None = None) -> None:
        """Load the newest snapshot, then replay batch headers after it (only end-transaction
        markers are decoded, for their type). `names`: the directory's files, when known."""
        state = self.producer_state
        state.truncate()
        start = state.load_latest(self.log_end_offset, names)
        self._snapshot_at = start if start == self.log_end_offset else -1
        for seg in self.segments:
            if seg.next_offset <= start or seg.size == 0:
                continue
            pos = seg.position_of(start) if start > seg.base_offset else 0
            while pos is not None and pos < seg.size:
                chunk = os.pread(seg.fd, 8 * 1024 * 1024, pos)
                headers, used = _scan_headers(chunk)
                if not headers:
                    h = seg.header_at(pos)  # one batch larger than the chunk
                    if h is None:
                        break
                    chunk = os.pread(seg.fd, h.size, pos)
                    h.position = 0
                    headers, used = [h], h.size
                for h in headers:
                    if h.base_offset >= start:
                        control = control_marker(chunk, h.position) if h.is_control else NOT_A_MARKER
                        aborted = state.update(h, h.base_offset, *control)
                        if aborted is not None:
                            txn_index.append(txn_index.index_path(seg.log_path), aborted)
                pos += used

    def _new_segment(self, base_offset: int) -> LogSegment:
        seg = LogSegment(self.dir, base_offset, _now_ms())
        seg.load(verify=False)
        return seg

    # -- appending -------------------------------------------------------------

    def _maybe_roll(self, incoming: int, now_ms: int) -> None:
        active = self.segments[-1]
        if active.size == 0:
            return
        cfg = self.config
        full = active.size + incoming > cfg.segment_bytes
        old = now_ms - active.created_ms >= cfg.segment_ms
        index_full = (len(active.index_offsets) + 1) * 8 > cfg.segment_index_bytes
        if full or old or index_full:
            self.roll()

    def roll(self) -> None:
        """Close the active segment for appends and start one at the log end offset. Its fsync
        is the next flush's, on the flush's thread (Kafka's roll schedules the flush too,
        flushUptoOffsetExclusive): on the event loop, a produce that rolled waited for the disk.
        Its index entries are written out (unsynced, as Kafka's mmapped index): every closed
        segment has its index files whole. Its producer snapshot stays here: written by the log
        file thread it made this call slower, not faster (bench/loop_file_work.py's roll case)."""
        active = self.segments[-1]
        if active.size == 0:
            return
        active.write_index_entries()
        active.forget_recent()
        if self._epochs_dirty:  # the closed segment's epochs go with it (unsynced, as its index)
            self._save_epochs()
        self.producer_state.snapshot(self.log_end_offset)
        seg = self._new_segment(self.log_end_offset)
        for path in (seg.index_path, seg.time_index_path):  # Kafka's layout: every segment has both
            path.touch()
        self.segments.append(seg)
        self._bases.append(seg.base_offset)

    def append(self, data: bytes | memoryview, batches: list[BatchHeader], *, now_ms: int) -> AppendResult:
        """Leader append: assign offsets from the log end offset; one pwritev for all batches.

        The hot path of every Produce (librdkafka sends one a partition: thousands a second when
        it writes 1,000 partitions), so it skips what a batch without a producer id cannot need:
        the producer state's check and update, which do nothing for it."""
        if self._files_lock is not None:
            self._ensure_dir()
        state = self.producer_state
        total = 0
        idempotent = False
        for b in batches:
            if b.producer_id >= 0:
                idempotent = True
                duplicate = state.check(b)
                if duplicate is not None:  # a retried batch: answer with where it was written
                    return AppendResult(duplicate[0], duplicate[1], -1, self.log_start_offset)
            total += b.batch_length + 12
        view = memoryview(data)
        cfg = self.config
        log_append = cfg.message_timestamp_type == "LogAppendTime"
        seg = self.segments[-1]
        if seg.size and (seg.size + total > cfg.segment_bytes or now_ms - seg.created_ms >= cfg.segment_ms
                         or (len(seg.index_offsets) + 1) * 8 > cfg.segment_index_bytes):  # _maybe_roll
            self.roll()
            seg = self.segments[-1]
        pieces: list[memoryview | bytes] = []
        index: list[tuple[int, int, int, int]] = []
        offset = self.log_end_offset
        first = offset
        position = seg.size
        epoch = self.leader_epoch
        stamp = _STAMP.pack
        written: list[tuple[BatchHeader, int, tuple[int, int]]] = []  # producer state follows only a write that happened
        for b in batches:
            at = b.position
            size = b.batch_length + 12
            if log_append:
                copy = bytearray(view[at : at + size])
                set_log_append_time(copy, now_ms)
                pieces.append(stamp(offset, b.batch_length, epoch))
                pieces.append(memoryview(copy)[16:])
                max_ts = now_ms
            else:
                pieces.append(stamp(offset, b.batch_length, epoch))
                pieces.append(view[at + 16 : at + size])
                max_ts = b.max_timestamp
            last = offset + b.last_offset_delta
            if idempotent:
                written.append((b, offset, control_marker(view, at) if b.is_control else NOT_A_MARKER))
            index.append((last, position, size, max_ts))
            position += size
            offset = last + 1
        if not self.epochs or self.epochs[-1][0] < epoch:
            self.assign_leader_epoch(epoch, first)
        seg.append(pieces, index, cfg.index_interval_bytes, total)  # OSError (a full disk): nothing changed
        self._dirty = True
        self.log_end_offset = offset
        if written:
            aborted = [e for b, at, ctl in written if (e := state.update(b, at, *ctl)) is not None]
            for entry in aborted:
                txn_index.append(txn_index.index_path(seg.log_path), entry)
        return AppendResult(first, offset - 1, now_ms if log_append else -1, self.log_start_offset)

    def append_as_follower(self, data: bytes | memoryview, batches: list[BatchHeader]) -> None:
        """Replication: keep the leader's offsets and epochs; batches must start at the log end."""
        if not batches:
            return
        self._ensure_dir()
        view = memoryview(data)
        if batches[0].base_offset != self.log_end_offset:
            raise ValueError(f"{self.topic}-{self.partition}: follower append at {batches[0].base_offset} "
                             f"but the log ends at {self.log_end_offset}")
        total = sum(b.size for b in batches)
        self._maybe_roll(total, _now_ms())
        seg = self.segments[-1]
        position = seg.size
        index = []
        for b in batches:
            index.append((b.last_offset, position, b.size, b.max_timestamp))
            position += b.size
            if b.partition_leader_epoch >= 0 and (not self.epochs or self.epochs[-1][0] < b.partition_leader_epoch):
                self.assign_leader_epoch(b.partition_leader_epoch, b.base_offset)
        seg.append([view[batches[0].position : batches[-1].position + batches[-1].size]], index,
                   self.config.index_interval_bytes)  # OSError (a full disk): producer state unchanged
        update = self.producer_state.update
        aborted = [e for b in batches
                   if (e := update(b, b.base_offset, *(control_marker(view, b.position) if b.is_control else NOT_A_MARKER)))]
        self._dirty = True
        self.log_end_offset = batches[-1].next_offset
        for entry in aborted:
            txn_index.append(txn_index.index_path(seg.log_path), entry)

    # -- reading ---------------------------------------------------------------

    def _segment_index(self, offset: int) -> int:
        return max(bisect.bisect_right(self._bases, offset) - 1, 0)

    def read(self, offset: int, max_bytes: int, *, max_offset: int | None = None, min_one: bool = True) -> bytes:
        if offset < self.log_start_offset or offset > self.log_end_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside [{self.log_start_offset}, {self.log_end_offset}]")
        if offset == self.log_end_offset or (max_offset is not None and offset >= max_offset):
            return b""
        i = self._segment_index(offset)
        while i < len(self.segments):
            seg = self.segments[i]
            pos = seg.position_of(offset)
            if pos is not None:
                return seg.read(pos, max_bytes, max_offset, min_one)
            i += 1  # the offset fell in a gap (compaction) or at this segment's end
        return b""

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """The first record with timestamp >= timestamp_ms, as (offset, timestamp)."""
        for seg in self.segments:
            if seg.max_timestamp < timestamp_ms:
                continue
            pos = seg.timestamp_lookup(timestamp_ms)
            while pos < seg.size:
                h = seg.header_at(pos)
                if h is None:
                    break
                if h.max_timestamp >= timestamp_ms and h.last_offset >= self.log_start_offset:
                    batch = decode_batch(os.pread(seg.fd, h.size, pos))
                    if h.timestamp_type == 1:  # LogAppendTime: every record has the batch time
                        return max(h.base_offset, self.log_start_offset), h.max_timestamp
                    for r in batch.records:
                        if r.timestamp >= timestamp_ms and r.offset >= self.log_start_offset:
                            return r.offset, r.timestamp
                pos += h.size
        return None

    # -- configuration and closing ---------------------------------------------

    def update_config(self, config: LogConfig) -> None:
        self.config = config

    def close(self) -> None:
        """Write the leader epochs and snapshot the producer state (unless the newest snapshot already covers the log
        end: a restart of 10,000 idle partitions writes nothing) and close the segments."""
        if self._epochs_dirty:
            self._save_epochs()
        if self._snapshot_at != self.log_end_offset or self._dirty:
            self.producer_state.snapshot(self.log_end_offset)
            self._snapshot_at = self.log_end_offset
        for seg in self.segments:
            seg.close()

    def delete(self) -> None:
        """Close the files; the file thread renames the directory `<topic>-<partition>.<id>-delete`
        and removes it (one rename a partition on the event loop held it ~2 s for a DeleteTopics
        of 1,000 partitions on this machine)."""
        for seg in self.segments:
            seg.delete_handles()
        lock = self._files_lock
        with lock if lock is not None else contextlib.nullcontext():
            self._deleted = True  # materialize, if still to run, does nothing now
        delete_later(self.dir)


def seg_may_need_recovery(base: int, bases: list[int], recovery_point: int) -> bool:
    """Kafka recovers the segments that may hold data past the recovery point."""
    i = bases.index(base)
    nxt = bases[i + 1] if i + 1 < len(bases) else None
    return nxt is None or nxt > recovery_point
