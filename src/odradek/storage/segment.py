"""LogSegment with its OffsetIndex and TimeIndex, in Kafka's on-disk format.

`NNNNNNNNNNNNNNNNNNNN.log` holds batches exactly as on the wire.
`.index` holds 8-byte entries (relative offset i32, position i32) and `.timeindex`
12-byte entries (timestamp i64, relative offset i32), both sparse: one entry per
`index.interval.bytes` of log. Kafka preallocates and mmaps them; here they are
appended to and mirrored in memory lists, and rebuilt from the log when missing
or inconsistent.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
from pathlib import Path
from typing import BinaryIO

from odradek.protocol.records import BATCH_HEADER_SIZE, BatchHeader, read_header, scan_batches

log = logging.getLogger("odradek.storage")

_INDEX_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")
_BASE_AND_LENGTH = struct.Struct(">qi")
SCAN_CHUNK = 8 * 1024 * 1024


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


class FileSlice:
    """`size` bytes of whole batches at `position` of a segment file, for sendfile.

    A fetch response can wait in a connection's queue after the fetch was read, and
    meanwhile retention, compaction or truncation may close the segment (its
    descriptor number could then be reused by another file). The slice therefore
    holds its own duplicate of the descriptor, closed when sent or dropped.
    """

    __slots__ = ("fd", "position", "size")

    def __init__(self, fd: int, position: int, size: int) -> None:
        self.fd = os.dup(fd)
        self.position = position
        self.size = size

    def __len__(self) -> int:
        return self.size

    def read(self) -> bytes:
        """The bytes themselves, for paths that cannot use sendfile."""
        return os.pread(self.fd, self.size, self.position)

    def close(self) -> None:
        fd = getattr(self, "fd", -1)  # unset when os.dup failed in __init__ (no descriptors left)
        if fd >= 0:
            os.close(fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


class LogSegment:
    def __init__(self, directory: Path, base_offset: int, created_ms: int) -> None:
        self.dir = directory
        self.base_offset = base_offset
        stem = segment_name(base_offset)
        self.log_path = directory / f"{stem}.log"
        self.index_path = directory / f"{stem}.index"
        self.time_index_path = directory / f"{stem}.timeindex"
        self.fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT, 0o644)
        self.size = os.fstat(self.fd).st_size
        self.created_ms = created_ms
        self.next_offset = base_offset  # log end offset within this segment
        self.max_timestamp = -1
        self.index_offsets: list[int] = []  # absolute offsets (Kafka: the batch's last offset)
        self.index_positions: list[int] = []
        self.time_stamps: list[int] = []
        self.time_offsets: list[int] = []
        self.bytes_since_index = 0
        self._index_file: BinaryIO | None = None
        self._time_file: BinaryIO | None = None

    # -- loading -------------------------------------------------------------

    def load(self, *, verify: bool) -> bool:
        """Scan the log (CRC-checked when `verify`), truncate a torn tail, load or rebuild indexes.

        Returns True when the segment was cut short (corruption or a torn write).
        """
        if self.size == 0:  # a new segment: empty indexes
            self.index_path.write_bytes(b"")
            self.time_index_path.write_bytes(b"")
            self._open_index_files()
            return False
        headers, valid = self._scan(verify)
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
        self._open_index_files()
        return truncated

    def _scan(self, verify: bool) -> tuple[list[BatchHeader], int]:
        headers: list[BatchHeader] = []
        pos = 0
        while pos < self.size:
            chunk = os.pread(self.fd, max(SCAN_CHUNK, BATCH_HEADER_SIZE), pos)
            if len(chunk) >= 12:
                (_, length) = _BASE_AND_LENGTH.unpack_from(chunk, 0)
                if length + 12 > len(chunk) and 0 < length < 2**31 - 12:
                    chunk = os.pread(self.fd, length + 12, pos)  # one batch larger than the chunk
            found, valid = scan_batches(chunk, verify_crc=verify) if verify else _scan_headers(chunk)
            if not found:
                break
            for h in found:
                h.position += pos
            headers.extend(found)
            pos += valid
        return headers, pos

    def _load_indexes(self) -> bool:
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
        if offsets and offsets[-1] >= self.next_offset:
            return False
        self.index_offsets, self.index_positions = offsets, positions
        self.time_stamps, self.time_offsets = stamps, toffsets
        self.bytes_since_index = self.size - (positions[-1] if positions else 0)
        return True

    def _rebuild_indexes(self, headers: list[BatchHeader]) -> None:
        self.index_offsets, self.index_positions = [], []
        self.time_stamps, self.time_offsets = [], []
        self.bytes_since_index = 0
        self._close_index_files()
        with open(self.index_path, "wb") as idx, open(self.time_index_path, "wb") as tidx:
            self._index_file, self._time_file = idx, tidx
            for h in headers:
                self._maybe_index(h.last_offset, h.position, h.size, h.max_timestamp, 4096)
            self._index_file = self._time_file = None
        log.info("%s: rebuilt offset and time indexes (%d entries)", self.log_path.name, len(self.index_offsets))

    def _open_index_files(self) -> None:
        self._index_file = open(self.index_path, "ab")  # noqa: SIM115 - lives with the segment
        self._time_file = open(self.time_index_path, "ab")  # noqa: SIM115

    def _close_index_files(self) -> None:
        for f in (self._index_file, self._time_file):
            if f is not None:
                f.close()
        self._index_file = self._time_file = None

    # -- appending -------------------------------------------------------------

    def _maybe_index(self, last_offset: int, position: int, size: int, max_ts: int, interval: int) -> None:
        if self.bytes_since_index >= interval or not self.index_offsets:
            self.index_offsets.append(last_offset)
            self.index_positions.append(position)
            assert self._index_file is not None and self._time_file is not None
            self._index_file.write(_INDEX_ENTRY.pack(last_offset - self.base_offset, position))
            if not self.time_stamps or max_ts > self.time_stamps[-1]:
                self.time_stamps.append(max_ts)
                self.time_offsets.append(last_offset)
                self._time_file.write(_TIME_ENTRY.pack(max_ts, last_offset - self.base_offset))
            self.bytes_since_index = 0
        self.bytes_since_index += size

    def append(self, pieces: list[memoryview | bytes], batches: list[tuple[int, int, int, int]],
               index_interval: int) -> None:
        """Write batches; `batches` holds (last_offset, position-in-segment, size, max_timestamp)."""
        total = 0
        iov_max = 1000
        for i in range(0, len(pieces), iov_max):
            chunk = pieces[i : i + iov_max]
            want = sum(len(p) for p in chunk)
            written = os.pwritev(self.fd, chunk, self.size + total)
            if written != want:  # a short write: finish it byte-exactly
                rest = b"".join(bytes(p) for p in chunk)[written:]
                while rest:
                    n = os.pwrite(self.fd, rest, self.size + total + written)
                    written += n
                    rest = rest[n:]
            total += want
        for last_offset, position, size, max_ts in batches:
            self._maybe_index(last_offset, position, size, max_ts, index_interval)
            self.max_timestamp = max(self.max_timestamp, max_ts)
            self.next_offset = last_offset + 1
        self.size += total
        assert self._index_file is not None and self._time_file is not None
        self._index_file.flush()
        self._time_file.flush()

    # -- reading ---------------------------------------------------------------

    def position_of(self, offset: int) -> int | None:
        """File position of the batch holding `offset` (index lookup, then a header scan)."""
        i = bisect.bisect_left(self.index_offsets, offset) - 1
        pos = self.index_positions[i] + 0 if i >= 0 else 0
        if i >= 0:
            # the indexed batch ends at index_offsets[i] < offset: start after it
            h = self.header_at(pos)
            pos = pos + h.size if h is not None else pos
        while pos < self.size:
            h = self.header_at(pos)
            if h is None:
                return None
            if h.last_offset >= offset:
                return pos
            pos += h.size
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
        """Drop every batch at or after `offset` (whole batches: the one holding it goes)."""
        pos = self.position_of(offset)
        if pos is None:
            return
        os.ftruncate(self.fd, pos)
        self.size = pos
        headers, _ = self._scan(False)
        self.next_offset = headers[-1].next_offset if headers else self.base_offset
        self.max_timestamp = max((h.max_timestamp for h in headers), default=-1)
        self._rebuild_indexes(headers)
        self._open_index_files()

    def flush(self) -> None:
        os.fsync(self.fd)
        for f in (self._index_file, self._time_file):
            if f is not None:
                f.flush()
                os.fsync(f.fileno())

    def close(self) -> None:
        self._close_index_files()
        try:
            os.close(self.fd)
        except OSError:
            pass

    def delete(self) -> None:
        self.close()
        for p in (self.log_path, self.index_path, self.time_index_path, self.log_path.with_suffix(".txnindex")):
            p.unlink(missing_ok=True)


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
