"""The maintenance of a partition log's files: truncation (replication), DeleteRecords and
retention's segment deletion, a compaction's swap (Kafka's .cleaned -> .swap -> .log), and
the flush (fsync up to a recovery point, on the caller's thread or as a FlushJob run by a
thread beside the event loop). A part of PartitionLog (storage/log.py), mixed into it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from odradek.protocol.records import BatchHeader
from odradek.storage import txn_index
from odradek.storage.file_thread import in_file_thread
from odradek.storage.leader_epochs import LEADER_EPOCH_FILE
from odradek.storage.producer_state import ProducerStateManager
from odradek.storage.segment import LogSegment, scan_file

log = logging.getLogger("odradek.storage")


class LogMaintenance:
    """PartitionLog's truncation, segment deletion, swap and flush."""

    # PartitionLog's state this part uses (set in PartitionLog.__init__)
    _bases: list[int]
    _dirty: bool
    _epochs_dirty: bool
    _deleted: bool
    _flushing: FlushJob | None
    _swapping: SwapJob | None = None  # a compaction's swap waiting for prepare_swap's thread
    _truncations: int
    dir: Path
    epochs: list[tuple[int, int]]
    high_watermark: int
    log_end_offset: int
    log_start_offset: int
    partition: int
    producer_state: ProducerStateManager
    recovery_point: int
    segments: list[LogSegment]
    _snapshot_at: int
    topic: str

    if TYPE_CHECKING:  # PartitionLog's own, called from this part
        def _ensure_dir(self) -> None: ...
        def _new_segment(self, base_offset: int) -> LogSegment: ...
        def _rebuild_producer_state(self, names: set[str] | None = None) -> None: ...
        def _save_epochs(self) -> None: ...
        def _take_epochs(self) -> tuple[list[tuple[int, int]], int]: ...
        def _write_epochs(self, epochs: list[tuple[int, int]], taken: int, *, sync: bool) -> None: ...

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    def truncate_to(self, offset: int) -> None:
        """Replication: drop everything at or after `offset`."""
        if offset >= self.log_end_offset:
            return
        if self._swapping is not None:
            self._abandon_swap(self._swapping)
        self._dirty = True
        self._truncations += 1
        while len(self.segments) > 1 and self.segments[-1].base_offset >= offset:
            self.segments.pop().delete()
            self._bases.pop()
        seg = self.segments[-1]
        refused: OSError | None = None
        if seg.base_offset >= offset:
            seg.delete()
            self.segments[-1] = self._new_segment(max(offset, self.log_start_offset))
            self._bases[-1] = self.segments[-1].base_offset
        else:
            try:
                seg.truncate_to(offset)
            except OSError as exc:  # its index files rewritten on a full disk: the batches are cut all the same
                # (a new error: the caught one's frames hold the index buffer, which must be resizable again)
                refused = OSError(exc.errno, f"truncating {seg.log_path.name}: {exc.strerror}")
        self.log_end_offset = max(self.segments[-1].next_offset, self.segments[-1].base_offset)
        self.high_watermark = min(self.high_watermark, self.log_end_offset)
        self.recovery_point = min(self.recovery_point, self.log_end_offset)
        self.epochs = [(e, s) for e, s in self.epochs if s < self.log_end_offset]
        self.producer_state.drop_aborted(from_offset=self.log_end_offset)
        # the producer state before the files below: a full disk refusing them left the state with
        # the cut batches' sequence numbers (a retry of them was answered as a duplicate, unwritten)
        state = self.producer_state
        if state.producers or state.ongoing:
            self._rebuild_producer_state()
        else:  # no producer id in the log: nothing to replay (the replay read up to a whole segment)
            state.truncate()
            start = state.load_latest(self.log_end_offset)  # and a snapshot past the new end is removed
            self._snapshot_at = start if start == self.log_end_offset else -1
        self._save_epochs()
        last = self.segments[-1]
        txn_index.rewrite(txn_index.index_path(last.log_path),
                          [a for a in self.producer_state.aborted if a.last_offset >= last.base_offset])
        if refused is not None:
            raise refused

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Replication (Kafka's UnifiedLog.truncateFullyAndStartAt): a follower whose log ends
        below the leader's log start offset drops everything and starts empty at `offset`."""
        self._ensure_dir()
        if self._swapping is not None:
            self._abandon_swap(self._swapping)
        self._dirty = True
        self._truncations += 1
        for seg in self.segments:
            seg.delete()
        seg = self._new_segment(offset)
        self.segments = [seg]
        self._bases = [offset]
        self.log_start_offset = self.log_end_offset = self.recovery_point = self.high_watermark = offset
        self.epochs = []
        self._save_epochs()
        self.producer_state.truncate()
        for snapshot in self.dir.glob("*.snapshot"):
            snapshot.unlink(missing_ok=True)
        self.producer_state.aborted = []

    def delete_records_before(self, offset: int) -> None:
        """DeleteRecords: move the log start offset; whole segments below it go."""
        offset = min(offset, self.high_watermark)
        if offset <= self.log_start_offset:
            return
        self.log_start_offset = offset
        self.delete_segments_below(offset)

    def delete_segments_below(self, offset: int) -> int:
        deleted = 0
        while len(self.segments) > 1 and self.segments[1].base_offset <= offset:
            self.segments.pop(0).delete()
            self._bases.pop(0)
            deleted += 1
        if deleted:
            self.producer_state.drop_aborted(before=self.segments[0].base_offset)
        return deleted

    def replace_segments(self, cleaned: list[tuple[LogSegment, int, Path]]) -> bool:
        """Swap in the cleaner's rewritten segments (Kafka's .cleaned -> .swap -> .log), all on the
        caller's thread (tests, LogCleaner.clean_once); the broker's cleaner runs the same three
        steps with the middle one on a thread (LogCleaner.run). Returns False (and discards the
        files) when retention, DeleteRecords or truncation changed a segment meanwhile."""
        swap = self.begin_swap(cleaned)
        return swap is not None and self.finish_swap(swap, prepare_swap(swap))

    def begin_swap(self, cleaned: list[tuple[LogSegment, int, Path]]) -> SwapJob | None:
        """On the event loop: rename every `.cleaned` file `.swap`, so an interrupted swap is
        finished on open (finish_swaps); before that point open discards them. None when a
        segment changed since the clean began (the files are discarded)."""
        if not self._swap_unchanged(cleaned):
            _unlink_all([path for _, _, path in cleaned])
            return None
        swaps = []
        for seg, _, path in cleaned:
            swap = seg.dir / f"{seg.log_path.name}.swap"
            os.replace(path, swap)
            swaps.append(swap)
        job = SwapJob(self.dir, cleaned, swaps)
        self._swapping = job
        return job

    def finish_swap(self, job: SwapJob, headers: list[list[BatchHeader]]) -> bool:
        """On the event loop, once `prepare_swap` made the `.swap` names durable (its directory
        fsync: 5-40 ms on the loop before) and scanned them: the segments replaced. The old logs'
        blocks are freed by the file thread, which closes the last descriptor of each."""
        if self._swapping is job:
            self._swapping = None
        if job.abandoned or self._deleted or not self._swap_unchanged(job.cleaned):
            self._abandon_swap(job)
            return False
        kept: list[int] = []
        for (seg, _, _), swap, scanned in zip(job.cleaned, job.swaps, headers, strict=True):
            i = self.segments.index(seg)
            created = seg.created_ms
            kept.append(os.dup(seg.fd))  # the replaced log's inode lives until the file thread closes this
            seg.close()
            seg.index_path.unlink(missing_ok=True)  # stale positions: rebuilt from the new log
            seg.time_index_path.unlink(missing_ok=True)
            os.replace(swap, seg.log_path)
            fresh = LogSegment(self.dir, seg.base_offset, created)
            fresh.load_scanned(scanned)
            if fresh.size == 0 and i > 0:  # nothing left: the offsets become a gap
                fresh.delete()
                self.segments.pop(i)
                self._bases.pop(i)
            else:
                self.segments[i] = fresh
        in_file_thread(lambda: _close_all(kept))
        return True

    def _swap_unchanged(self, cleaned: list[tuple[LogSegment, int, Path]]) -> bool:
        current = {id(s) for s in self.segments[:-1]}
        return all(id(seg) in current and seg.size == size for seg, size, _ in cleaned)

    def _abandon_swap(self, job: SwapJob) -> None:
        """A truncation or a deletion met a swap under way: its `.swap` files go back to `.cleaned`
        (which a restart discards: the swap must never replay over the changed log) and away."""
        if self._swapping is job:
            self._swapping = None
        job.abandoned = True
        back = []
        for swap in job.swaps:
            cleaned = swap.with_name(swap.name[: -len(".swap")] + ".cleaned")
            try:
                os.replace(swap, cleaned)
            except FileNotFoundError:
                continue
            back.append(cleaned)
        in_file_thread(lambda: _unlink_all(back))

    def flush(self) -> None:
        """fsync what changed since the last flush and move the recovery point. A log nobody
        wrote to costs nothing (a broker's internal topics alone have 100 partitions)."""
        if self._epochs_dirty:
            self._save_epochs()
        if not self._dirty and self._flushing is None:
            self.recovery_point = self.log_end_offset
            return
        for seg in self._unflushed_segments():
            seg.flush()
        self.recovery_point = self.log_end_offset
        self._dirty = False

    def _unflushed_segments(self) -> list[LogSegment]:
        """The segments that may hold data past the recovery point: the active one, and those a
        roll since the last flush closed."""
        i = len(self.segments) - 1
        while i > 0 and self.segments[i - 1].next_offset > self.recovery_point:
            i -= 1
        return self.segments[i:]

    def begin_flush(self) -> FlushJob | None:
        """On the event loop: what a flush in the background must write and fsync (None for a
        clean log), no file written here: the leader epochs go as a copy, the index entries stay
        the segments' (taken under their lock by the thread, in order with the loop's own index
        writes), the logs' descriptors are duplicates (an eviction may close the segment's own
        meanwhile). Appends go on meanwhile: the thread fsyncs at least what was written before
        this call, and the recovery point moves only that far (`done`)."""
        job = FlushJob(self, self.log_end_offset, self._truncations)
        if self._epochs_dirty:
            job.epochs = self._take_epochs()
            self._epochs_dirty = False
        if not self._dirty:
            if job.epochs is None:
                self.recovery_point = self.log_end_offset
                return None
            return job  # the epochs alone; the recovery point moves once they are written
        for seg in self._unflushed_segments():
            job.fds.append(os.dup(seg.fd))
            job.segments.append(seg)
        self._dirty = False
        self._flushing = job  # until done: a stop meanwhile flushes on its own thread (flush)
        return job


class FlushJob:
    """A log's file work, run by a thread (`run`): its leader epochs written, its segments' new
    index entries appended, all fsynced; then its recovery point moved on the loop (`done`)."""

    __slots__ = ("epochs", "epochs_failed", "failed", "fds", "log", "log_end_offset", "segments", "truncations")

    def __init__(self, plog: LogMaintenance, log_end_offset: int, truncations: int) -> None:
        self.log = plog
        self.log_end_offset = log_end_offset
        self.truncations = truncations
        self.epochs: tuple[list[tuple[int, int]], int] | None = None  # a copy to write, and its number
        self.fds: list[int] = []
        self.segments: list[LogSegment] = []
        self.failed = False  # an OSError (a full disk): the recovery point stays, the next flush retries
        self.epochs_failed = False

    def run(self) -> None:
        try:
            if self.epochs is not None:
                try:
                    self.log._write_epochs(*self.epochs, sync=True)
                except OSError as exc:
                    self.epochs_failed = True
                    log.warning("%s-%d: writing %s failed: %s", self.log.topic, self.log.partition,
                                LEADER_EPOCH_FILE, exc)
            paths = [p for seg in self.segments for p in seg.write_index_entries()]
            for fd in self.fds:
                os.fsync(fd)
            for path in paths:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:  # deleted meanwhile
                    continue
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            self.failed = True
            log.warning("%s-%d: flush failed: %s", self.log.topic, self.log.partition, exc)
        finally:
            for fd in self.fds:
                os.close(fd)
            self.fds = []

    def done(self) -> None:
        plog = self.log
        if plog._flushing is self:
            plog._flushing = None
        if self.epochs_failed:
            plog._epochs_dirty = True
        if self.failed:
            plog._dirty = True
        elif plog._truncations == self.truncations:
            plog.recovery_point = max(plog.recovery_point, min(self.log_end_offset, plog.log_end_offset))
        else:  # truncated meanwhile: what was synced may be gone; the next flush decides
            plog._dirty = True


class SwapJob:
    """A compaction's swap under way: its segments, their `.cleaned` files renamed `.swap`."""

    __slots__ = ("abandoned", "cleaned", "directory", "swaps")

    def __init__(self, directory: Path, cleaned: list[tuple[LogSegment, int, Path]], swaps: list[Path]) -> None:
        self.directory = directory
        self.cleaned = cleaned
        self.swaps = swaps
        self.abandoned = False


def prepare_swap(job: SwapJob) -> list[list[BatchHeader]]:
    """Off the event loop: the `.swap` names made durable before any replaces its log (Kafka's
    replaceSegments flushes the directory there), and each file's batch headers for its indexes."""
    _fsync_dir(job.directory)
    out: list[list[BatchHeader]] = []
    for swap in job.swaps:
        try:
            fd = os.open(swap, os.O_RDONLY)
        except FileNotFoundError:  # abandoned meanwhile
            out.append([])
            continue
        try:
            out.append(scan_file(fd, os.fstat(fd).st_size)[0])
        finally:
            os.close(fd)
    return out


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def finish_swaps(directory: Path) -> None:
    """Recovery of an interrupted clean: `.swap` files are complete rewrites and
    replace their segment; `.cleaned` files may be partial and are discarded."""
    for p in directory.glob("*.cleaned"):
        p.unlink(missing_ok=True)  # or the file thread removes it (an abandoned swap's)
    for swap in sorted(directory.glob("*.log.swap")):
        stem = swap.name[: -len(".log.swap")]
        (directory / f"{stem}.index").unlink(missing_ok=True)
        (directory / f"{stem}.timeindex").unlink(missing_ok=True)
        os.replace(swap, directory / f"{stem}.log")
        log.info("%s: finished an interrupted compaction swap of segment %s", directory.name, stem)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
