"""LogSegment with its OffsetIndex and TimeIndex, in Kafka's on-disk format.

`NNNNNNNNNNNNNNNNNNNN.log` holds batches exactly as on the wire.
`.index` holds 8-byte entries (relative offset i32, position i32) and `.timeindex`
12-byte entries (timestamp i64, relative offset i32), both sparse: one entry per
`index.interval.bytes` of log. Kafka preallocates and mmaps them; here they are
mirrored in memory lists, their new entries written out when the segment is
flushed (by the flush's thread) or closed, and rebuilt from the log when missing or
inconsistent (a crash may leave an index short of its last entries: it is sparse, so
still right). Every write of the index files holds the segment's `index_lock`, so a flush
thread's append can neither reorder entries nor land after a rebuild or a deletion made on
the event loop; the entries waiting for a write are taken under a lock of their own, so an
append on the loop never waits for a thread's file write.

File descriptors open lazily and are bounded: a segment's `.log` opens on first
use and joins `OPEN_SEGMENTS`, a process-wide LRU that closes the least recently
used one past its capacity (the open-file limit is the process's; open_files.py). A partition
being written keeps its active segment open while it stays among the most
recently used; the indexes are files only at load, flush and close.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import logging
import os
import struct
import threading
from pathlib import Path

from odradek.protocol.records import BATCH_HEADER_SIZE, BatchHeader, read_header, scan_batches
from odradek.storage.file_thread import in_file_thread
from odradek.storage.open_files import OPEN_SEGMENTS, FileSlice

log = logging.getLogger("odradek.storage")

_INDEX_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")
_BASE_AND_LENGTH = struct.Struct(">qi")
_INT32 = struct.Struct(">i")
_LAST_OFFSET_DELTA_AT = 23  # a v2 batch header's lastOffsetDelta
POSITION_SCAN_BYTES = 16 * 1024  # what position_of reads at once after an index entry
RECENT_BATCHES = 16  # batches appended last whose positions the active segment keeps (position_of)
SCAN_CHUNK = 8 * 1024 * 1024
_IOV_MAX = 1000  # pieces a pwritev takes at once (Linux allows 1024)
DELETED_SUFFIX = ".deleted"  # Kafka's LogFileUtils.DELETED_FILE_SUFFIX: a segment file on its way out


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


class LogSegment:
    def __init__(self, directory: Path, base_offset: int, created_ms: int, *, exists: bool = True) -> None:
        self.dir = directory
        self.base_offset = base_offset
        self.log_path = directory / f"{segment_name(base_offset)}.log"
        self._fd = -1
        self._deleted = False
        self.size = 0
        self._exists = False
        if exists:  # else a new partition's first segment: nothing to look at yet
            try:
                self.size = os.stat(self.log_path).st_size
                self._exists = True
            except FileNotFoundError:
                pass
        self.created_ms = created_ms
        self.next_offset = base_offset  # log end offset within this segment
        # (last offset, position) of the batches appended since the segment was opened, loaded or
        # cut, the last RECENT_BATCHES to 2x that: a fetch at the log end finds its batch here
        # without reading headers. Rebound, never cut in place, so a reader's list stays whole.
        self._recent: list[tuple[int, int]] = []
        self.max_timestamp = -1
        self.index_offsets: list[int] = []  # absolute offsets (Kafka: the batch's last offset)
        self.index_positions: list[int] = []
        self.time_stamps: list[int] = []
        self.time_offsets: list[int] = []
        self.bytes_since_index = 0
        self.recovered_epochs: list[tuple[int, int]] = []  # (leader epoch, start offset) seen by a verified load
        self._index_pending = bytearray()  # entries not yet in the .index / .timeindex files
        self._time_pending = bytearray()
        self.index_lock = threading.RLock()  # writes of the index files, in order (see the module)
        self._pending_lock = threading.Lock()  # the two pending buffers, for the moment of a copy

    __hash__ = object.__hash__  # by identity: a key of OPEN_SEGMENTS

    @property
    def index_path(self) -> Path:
        return self.log_path.with_suffix(".index")

    @property
    def time_index_path(self) -> Path:
        return self.log_path.with_suffix(".timeindex")

    @property
    def fd(self) -> int:
        """The `.log` descriptor, opened (and the least recently used segment closed) if need be."""
        fd = self._fd
        if fd >= 0:
            OPEN_SEGMENTS.touch(self)
            return fd
        if self._deleted:
            raise OSError(errno.ENOENT, "the segment was deleted", str(self.log_path))
        try:
            fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # a new partition whose directory the file thread has not made yet
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT, 0o644)
        self._fd = fd
        OPEN_SEGMENTS.add(self)
        return fd

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    def close_file(self) -> None:
        """Close the `.log` descriptor (evicted, or the segment closed); it reopens on next use."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    # -- loading -------------------------------------------------------------

    def load(self, *, verify: bool, names: set[str] | None = None) -> bool:
        """Scan the log (CRC-checked when `verify`), truncate a torn tail, load or rebuild indexes.

        Without `verify` (a clean shutdown, or a segment below the recovery point) the
        indexes are trusted when they agree with the log: only the batches after the last
        indexed one are read. Returns True when the segment was cut short (corruption or
        a torn write). `names`: the directory's files, when the caller listed them.
        """
        self._recent = []
        if self.size == 0:  # a new segment: the file now, empty indexes once they have entries
            if not self._exists:
                self.fd  # noqa: B018 - creates the file and keeps it open: a new segment is written soon
            else:  # an emptied segment: no stale entries may precede its new ones
                for path in (self.index_path, self.time_index_path):
                    if names is None or path.name in names:
                        path.unlink(missing_ok=True)
            return False
        if not verify and self._load_trusted():
            return False
        headers, valid = self._scan(verify)
        if verify:
            for h in headers:
                epoch = h.partition_leader_epoch
                if epoch >= 0 and (not self.recovered_epochs or self.recovered_epochs[-1][0] < epoch):
                    self.recovered_epochs.append((epoch, h.base_offset))
        truncated = valid < self.size
        if truncated:
            log.warning("%s: truncating %d bytes of torn or corrupt data at position %d",
                        self.log_path, self.size - valid, valid)
            os.ftruncate(self.fd, valid)
            self.size = valid
        if headers:
            self.next_offset = headers[-1].next_offset
            self.max_timestamp = max(h.max_timestamp for h in headers)
        if truncated or not self._load_indexes():
            self._rebuild_indexes(headers)
        return truncated

    def _load_trusted(self) -> bool:
        """A clean segment: its indexes, and the batches from the last indexed one to the end."""
        if not self._load_indexes(check_end=False):
            return False
        start = self.index_positions[-1] if self.index_positions else 0
        headers, valid = self._scan(False, start)
        if valid != self.size or (self.index_offsets and (not headers or headers[0].last_offset
                                                          != self.index_offsets[-1])):
            self.index_offsets, self.index_positions, self.time_stamps, self.time_offsets = [], [], [], []
            return False  # the indexes disagree with the log: scan it all
        if headers:
            self.next_offset = headers[-1].next_offset
            self.max_timestamp = max(h.max_timestamp for h in headers)
        if self.time_stamps:  # Kafka's time index holds the largest timestamp so far
            self.max_timestamp = max(self.max_timestamp, self.time_stamps[-1])
        self.bytes_since_index = self.size - start
        return True

    def _scan(self, verify: bool, start: int = 0) -> tuple[list[BatchHeader], int]:
        return scan_file(self.fd, self.size, verify, start)

    def load_scanned(self, headers: list[BatchHeader]) -> None:
        """A segment whose batches were scanned elsewhere (a compaction's swap, on a thread): its
        end, timestamps and index files from their headers."""
        self._recent = []
        if headers:
            self.next_offset = headers[-1].next_offset
            self.max_timestamp = max(h.max_timestamp for h in headers)
        self._rebuild_indexes(headers)

    def _load_indexes(self, *, check_end: bool = True) -> bool:
        try:
            raw = self.index_path.read_bytes()
            traw = self.time_index_path.read_bytes()
        except FileNotFoundError:
            return False
        if len(raw) % 8 or len(traw) % 12:
            return False
        offsets: list[int] = []
        positions: list[int] = []
        for rel, pos in _INDEX_ENTRY.iter_unpack(raw):
            if (rel == 0 and pos == 0 and offsets) or pos >= max(self.size, 1) or (offsets and pos <= positions[-1]):
                return False
            offsets.append(self.base_offset + rel)
            positions.append(pos)
        stamps: list[int] = []
        toffsets: list[int] = []
        for ts, rel in _TIME_ENTRY.iter_unpack(traw):
            if stamps and ts < stamps[-1]:
                return False
            stamps.append(ts)
            toffsets.append(self.base_offset + rel)
        if check_end and offsets and offsets[-1] >= self.next_offset:
            return False
        self.index_offsets, self.index_positions = offsets, positions
        self.time_stamps, self.time_offsets = stamps, toffsets
        self.bytes_since_index = self.size - (positions[-1] if positions else 0)
        return True

    def _rebuild_indexes(self, headers: list[BatchHeader]) -> None:
        with self.index_lock:  # a flush thread's append of older entries must not follow the rewrite
            self._rebuild_indexes_locked(headers)

    def _rebuild_indexes_locked(self, headers: list[BatchHeader]) -> None:
        self.index_offsets, self.index_positions = [], []
        self.time_stamps, self.time_offsets = [], []
        self.bytes_since_index = 0
        self._index_pending.clear()
        self._time_pending.clear()
        running = -1
        for h in headers:
            running = max(running, h.max_timestamp)
            self._maybe_index(h.last_offset, h.position, h.size, running, 4096)
        self.index_path.write_bytes(self._index_pending)
        self.time_index_path.write_bytes(self._time_pending)
        self._index_pending.clear()
        self._time_pending.clear()
        log.info("%s: rebuilt offset and time indexes (%d entries)", self.log_path.name, len(self.index_offsets))

    def write_index_entries(self) -> list[Path]:
        """Append the new entries to the index files, unsynced; the files, to fsync elsewhere.
        From any thread (a flush's): the entries are taken and written under `index_lock`."""
        with self.index_lock:
            if self._deleted:
                return []
            self._write_index_entries(sync=False)
            return [self.index_path, self.time_index_path] if self.index_offsets else []

    def _write_index_entries(self, *, sync: bool) -> None:
        """Append the entries made since the last write to the index files (fsynced when `sync`)."""
        with self.index_lock:
            for path, pending in ((self.index_path, self._index_pending),
                                  (self.time_index_path, self._time_pending)):
                with self._pending_lock:
                    data = bytes(pending)
                    pending.clear()
                if not data and not sync:
                    continue
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                    try:
                        view = memoryview(data)
                        while view:
                            view = view[os.write(fd, view):]
                        if sync:
                            os.fsync(fd)
                    finally:
                        os.close(fd)
                except OSError:  # unwritten (a full disk): the entries wait for the next write, first
                    with self._pending_lock:
                        pending[0:0] = data
                    raise

    # -- appending -------------------------------------------------------------

    def _maybe_index(self, last_offset: int, position: int, size: int, max_ts: int, interval: int) -> None:
        """`max_ts` is the largest timestamp so far in the segment (Kafka's maxTimestampSoFar)."""
        if self.bytes_since_index >= interval or not self.index_offsets:
            self.index_offsets.append(last_offset)
            self.index_positions.append(position)
            with self._pending_lock:  # a flush thread may be taking the pending entries (once an entry's interval)
                self._index_pending += _INDEX_ENTRY.pack(last_offset - self.base_offset, position)
                if not self.time_stamps or max_ts > self.time_stamps[-1]:
                    self.time_stamps.append(max_ts)
                    self.time_offsets.append(last_offset)
                    self._time_pending += _TIME_ENTRY.pack(max_ts, last_offset - self.base_offset)
            self.bytes_since_index = 0
        self.bytes_since_index += size

    def append(self, pieces: list[memoryview | bytes], batches: list[tuple[int, int, int, int]],
               index_interval: int, nbytes: int = -1) -> None:
        """Write batches; `batches` holds (last_offset, position-in-segment, size, max_timestamp);
        `nbytes`, when known, is the pieces' total length."""
        fd = self.fd
        size = self.size
        try:
            if nbytes >= 0 and len(pieces) <= _IOV_MAX:  # the usual case: one call
                written = os.pwritev(fd, pieces, size)
                if written != nbytes:
                    self._finish_short_write(fd, pieces, written, size)
                total = nbytes
            else:
                total = 0
                for i in range(0, len(pieces), _IOV_MAX):
                    chunk = pieces[i : i + _IOV_MAX]
                    want = sum(len(p) for p in chunk)
                    written = os.pwritev(fd, chunk, size + total)
                    if written != want:
                        self._finish_short_write(fd, chunk, written, size + total)
                    total += want
        except OSError:  # a full disk, an I/O error: cut what part of it landed, so a restart cannot find it
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
        max_so_far = self.max_timestamp
        recent = self._recent
        if len(recent) >= 2 * RECENT_BATCHES:
            recent = self._recent = recent[-RECENT_BATCHES:]
        for last_offset, position, length, max_ts in batches:
            recent.append((last_offset, position))
            max_so_far = max(max_so_far, max_ts)
            if self.bytes_since_index >= index_interval or not self.index_offsets:
                self._maybe_index(last_offset, position, length, max_so_far, index_interval)
            else:  # what _maybe_index does between index entries
                self.bytes_since_index += length
        self.max_timestamp = max_so_far
        if batches:
            self.next_offset = batches[-1][0] + 1
        self.size = size + total

    def forget_recent(self) -> None:
        """No longer the active segment (rolled): its recent positions are not kept (memory)."""
        self._recent = []

    @staticmethod
    def _finish_short_write(fd: int, pieces: list[memoryview | bytes], written: int, at: int) -> None:
        """A short pwritev: write the rest byte-exactly."""
        rest = b"".join(bytes(p) for p in pieces)[written:]
        while rest:
            n = os.pwrite(fd, rest, at + written)
            written += n
            rest = rest[n:]

    # -- reading ---------------------------------------------------------------

    def position_of(self, offset: int) -> int | None:
        """File position of the batch holding `offset` (index lookup, then a header scan).

        The scan reads the headers after the indexed batch in one pread (index.interval.bytes
        apart, they fit POSITION_SCAN_BYTES), not one pread each: a fetch at the log end of
        100 B batches read ~12 headers one by one. An offset in one of the batches appended last
        is found without reading (the first of them whose last offset is at least `offset`)."""
        recent = self._recent
        if recent and offset > recent[0][0]:
            j = bisect.bisect_left(recent, (offset,))
            return recent[j][1] if j < len(recent) else None
        i = bisect.bisect_left(self.index_offsets, offset) - 1
        pos = self.index_positions[i] if i >= 0 else 0
        skip = i >= 0  # the indexed batch ends at index_offsets[i] < offset: start after it
        fd = self.fd
        size = self.size
        while pos < size:
            chunk = os.pread(fd, min(size - pos, POSITION_SCAN_BYTES), pos)
            n = len(chunk)
            if n < BATCH_HEADER_SIZE:
                return None
            at = 0
            while n - at >= BATCH_HEADER_SIZE:
                base, length = _BASE_AND_LENGTH.unpack_from(chunk, at)
                if not skip and base + _INT32.unpack_from(chunk, at + _LAST_OFFSET_DELTA_AT)[0] >= offset:
                    return pos + at
                if length < 0:
                    return None  # not a batch: nothing readable from here on
                skip = False
                at += 12 + length
            pos += at
        return None

    def header_at(self, pos: int) -> BatchHeader | None:
        data = os.pread(self.fd, BATCH_HEADER_SIZE, pos)
        if len(data) < BATCH_HEADER_SIZE:
            return None
        h = read_header(data)
        h.position = pos
        return h

    def read(self, pos: int, max_bytes: int, max_offset: int | None, min_one: bool) -> bytes:
        """Whole batches from `pos`, up to max_bytes (the first one whole when min_one)."""
        want = min(max(max_bytes, 0), self.size - pos)
        data = os.pread(self.fd, want, pos) if want > 0 else b""
        end = 0
        n = len(data)
        while n - end >= 12:
            base, length = _BASE_AND_LENGTH.unpack_from(data, end)
            if max_offset is not None and base >= max_offset:
                break
            if end + 12 + length > n:
                break
            end += 12 + length
        if end == 0 and min_one and pos < self.size:
            h = self.header_at(pos)
            if h is not None and (max_offset is None or h.base_offset < max_offset):
                return os.pread(self.fd, h.size, pos)
            return b""
        return data if end == n else data[:end]

    def read_slice(self, pos: int, max_bytes: int, max_offset: int | None, min_one: bool,
                   min_slice: int) -> bytes | FileSlice:
        """What `read` returns, as a FileSlice when it is at least `min_slice` bytes.

        The end is found without reading the records: batches before `max_offset`
        end where the batch holding it starts (or ends, when it straddles), the
        offset index jumps to the last indexed batch inside the limit, and only the
        few headers after that one are read.
        """
        limit = min(pos + max(max_bytes, 0), self.size)
        if max_offset is not None and max_offset < self.next_offset:
            at = self.position_of(max_offset)
            h = self.header_at(at) if at is not None else None
            if at is not None and h is not None:
                limit = min(limit, at + h.size if h.base_offset < max_offset else at)
        i = bisect.bisect_right(self.index_positions, limit) - 1
        start = self.index_positions[i] if i >= 0 and self.index_positions[i] > pos else pos
        end = self._whole_batches_end(start, limit)
        if end == pos and min_one and pos < self.size:  # KIP-74: the first batch whole
            h = self.header_at(pos)
            if h is not None and (max_offset is None or h.base_offset < max_offset):
                end = pos + h.size
        if end <= pos:
            return b""
        if end - pos < min_slice:
            return os.pread(self.fd, end - pos, pos)
        return FileSlice(self.fd, pos, end - pos)

    def _whole_batches_end(self, start: int, limit: int) -> int:
        """The end of the last whole batch between `start` (a batch start) and `limit`."""
        end = start
        while limit - end >= 12:
            chunk = os.pread(self.fd, min(limit - end, 64 * 1024), end)
            off = 0
            while len(chunk) - off >= 12:
                _, length = _BASE_AND_LENGTH.unpack_from(chunk, off)
                if length <= 0 or end + off + 12 + length > limit:
                    return end + off
                off += 12 + length  # may pass the chunk's end: a batch longer than the chunk
            if off == 0:
                return end
            end += off
        return end

    def timestamp_lookup(self, timestamp: int) -> int:
        """A file position at or before the first batch whose max timestamp >= timestamp."""
        i = bisect.bisect_left(self.time_stamps, timestamp) - 1
        if i < 0:
            return 0
        pos = self.position_of(self.time_offsets[i])
        return pos or 0

    # -- maintenance -----------------------------------------------------------

    def truncate_to(self, offset: int) -> None:
        """Drop every batch at or after `offset` (whole batches: the one holding it goes).

        The kept index entries are those before the cut, so only the batches after the last of
        them are read again (a scan of the whole segment held the loop up to ~1 s a GB), and the
        index files are cut to them (ftruncate) instead of rewritten."""
        pos = self.position_of(offset)
        if pos is None:
            return
        cut = self.header_at(pos)
        self._recent = []
        os.ftruncate(self.fd, pos)
        self.size = pos
        kept = bisect.bisect_left(self.index_positions, pos)
        kept_times = bisect.bisect_left(self.time_offsets, cut.base_offset) if cut is not None else 0
        start = self.index_positions[kept - 1] if kept else 0
        headers, _ = self._scan(False, start)
        with self.index_lock:  # a flush thread's append of entries waits for the cut
            self._cut_index_file(self.index_path, self._index_pending, len(self.index_offsets), kept,
                                 _INDEX_ENTRY.size)
            self._cut_index_file(self.time_index_path, self._time_pending, len(self.time_stamps), kept_times,
                                 _TIME_ENTRY.size)
            del self.index_offsets[kept:], self.index_positions[kept:]
            del self.time_stamps[kept_times:], self.time_offsets[kept_times:]
        self.next_offset = headers[-1].next_offset if headers else self.base_offset
        self.max_timestamp = max([h.max_timestamp for h in headers] + self.time_stamps[-1:], default=-1)
        self.bytes_since_index = pos - start if kept else pos

    def _cut_index_file(self, path: Path, pending: bytearray, entries: int, kept: int, size: int) -> None:
        """Keep the first `kept` of an index's `entries` (the last len(pending) // size not yet in
        the file): the unwritten ones past `kept` are dropped, the file is cut if it holds more."""
        with self._pending_lock:
            written = entries - len(pending) // size
            if kept >= written:
                del pending[(kept - written) * size:]
                return
            pending.clear()
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError:
            return
        try:
            os.ftruncate(fd, kept * size)
        finally:
            os.close(fd)

    def flush(self) -> None:
        """fsync the log (reopened if evicted: its written pages are the file's, not the
        descriptor's) and write out and fsync the new index entries."""
        os.fsync(self.fd)
        self._write_index_entries(sync=True)

    def close(self) -> None:
        """Write out the new index entries and close the file (a broker stop, a swap)."""
        with self.index_lock:
            if self._index_pending or self._time_pending:
                self._write_index_entries(sync=False)
        OPEN_SEGMENTS.discard(self)
        self.close_file()

    def delete_handles(self) -> None:
        """Forget the segment's descriptor and unwritten index entries (its files are going)."""
        with self.index_lock, self._pending_lock:  # a flush thread's write of them is over, or sees the deletion
            self._deleted = True
            self._index_pending.clear()
            self._time_pending.clear()
        self.close()

    def delete(self) -> None:
        """Close the files and rename them `<name>.deleted` (a new segment of the same base offset
        can be made at once; a restart removes what is left, `remove_deleted`); the log file thread
        unlinks them: an unlink frees a big file's blocks, 10-100 ms a GB on the event loop."""
        self.delete_handles()
        gone: list[Path] = []
        for p in (self.log_path, self.index_path, self.time_index_path, self.log_path.with_suffix(".txnindex")):
            target = p.with_name(p.name + DELETED_SUFFIX)
            try:
                os.rename(p, target)
            except FileNotFoundError:
                continue
            gone.append(target)
        if gone:
            in_file_thread(lambda: _unlink_all(gone))


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def remove_deleted(directory: Path, names: set[str]) -> set[str]:
    """At open: unlink the `.deleted` files a stop or a crash left; the other names."""
    for n in names:
        if n.endswith(DELETED_SUFFIX):
            (directory / n).unlink(missing_ok=True)
    return {n for n in names if not n.endswith(DELETED_SUFFIX)}


def scan_file(fd: int, size: int, verify: bool = False, start: int = 0) -> tuple[list[BatchHeader], int]:
    """The batch headers of a segment file from `start`, and where the valid batches end."""
    headers: list[BatchHeader] = []
    pos = start
    while pos < size:
        chunk = os.pread(fd, max(SCAN_CHUNK, BATCH_HEADER_SIZE), pos)
        if len(chunk) >= 12:
            (_, length) = _BASE_AND_LENGTH.unpack_from(chunk, 0)
            if length + 12 > len(chunk) and 0 < length < 2**31 - 12:
                chunk = os.pread(fd, length + 12, pos)  # one batch larger than the chunk
        found, valid = scan_batches(chunk, verify_crc=verify) if verify else _scan_headers(chunk)
        if not found:
            break
        for h in found:
            h.position += pos
        headers.extend(found)
        pos += valid
    return headers, pos


def _scan_headers(data: bytes) -> tuple[list[BatchHeader], int]:
    """Batch boundaries without CRC checks (a clean shutdown's segments)."""
    headers: list[BatchHeader] = []
    pos = 0
    n = len(data)
    while n - pos >= BATCH_HEADER_SIZE:
        h = read_header(data, pos)
        if h.magic != 2 or h.batch_length < BATCH_HEADER_SIZE - 12 or pos + h.size > n:
            break
        headers.append(h)
        pos += h.size
    return headers, pos
