"""Record batches (magic 2), sans I/O: header views, validation, and tools' codecs.

The produce and fetch paths only read the 61-byte batch header and check the
CRC32C (over attributes..end); records are never decoded there. `decode_batch`
and `encode_batch` (with compression) are for the coordinator, compaction,
ListOffsets by timestamp and tools.

Layout (Kafka's DefaultRecordBatch): baseOffset i64, batchLength i32,
partitionLeaderEpoch i32, magic i8, crc u32, attributes i16, lastOffsetDelta i32,
baseTimestamp i64, maxTimestamp i64, producerId i64, producerEpoch i16,
baseSequence i32, recordCount i32, records.
"""

from __future__ import annotations

import gzip
import io
import struct
from dataclasses import dataclass, field

import crc32c
from kio._kio_native import read_signed_varint, read_signed_varlong
from kio.records.writers import write_signed_compact_bytes
from kio.schema.errors import ErrorCode
from kio.serial.writers import write_signed_varint, write_signed_varlong

BATCH_HEADER_SIZE = 61
_HEADER = struct.Struct(">qiibIhiqqqhii")
_BASE_AND_LENGTH = struct.Struct(">qi")
MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - 12  # batchLength counts from partitionLeaderEpoch
CRC_START = 21  # the CRC covers attributes..end
TIMESTAMP_TYPE_BIT = 0x08
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20
NO_TIMESTAMP = -1

COMPRESSION_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


class InvalidRecordError(Exception):
    """A batch Kafka would refuse; `error_code` goes to the client."""

    def __init__(self, error_code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


@dataclass(slots=True)
class BatchHeader:
    position: int
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        return self.batch_length + 12

    @property
    def compression(self) -> int:
        return self.attributes & 0x07

    @property
    def timestamp_type(self) -> int:
        return 1 if self.attributes & TIMESTAMP_TYPE_BIT else 0

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_BIT)

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def last_sequence(self) -> int:
        return self.base_sequence + self.last_offset_delta if self.base_sequence >= 0 else -1


def read_header(data: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    return BatchHeader(pos, *_HEADER.unpack_from(data, pos))


def parse_batches(
    data: bytes | bytearray | memoryview, *, verify_crc: bool = True, max_batch_bytes: int | None = None
) -> list[BatchHeader]:
    """Validate a produce request's record set: whole v2 batches, CRCs, counts."""
    batches: list[BatchHeader] = []
    end = len(data)
    pos = 0
    unpack = _HEADER.unpack_from
    view = memoryview(data) if verify_crc else None
    while pos < end:
        if end - pos < BATCH_HEADER_SIZE:
            raise InvalidRecordError(ErrorCode.corrupt_message, f"{end - pos} trailing bytes are not a record batch")
        fields = unpack(data, pos)
        length = fields[1]
        magic = fields[3]
        if magic != 2:
            raise InvalidRecordError(ErrorCode.corrupt_message, f"record batch magic {magic} is not supported (only v2)")
        if length < MIN_BATCH_LENGTH or pos + 12 + length > end:
            raise InvalidRecordError(ErrorCode.corrupt_message, f"record batch length {length} does not fit the request")
        if max_batch_bytes is not None and length + 12 > max_batch_bytes:
            raise InvalidRecordError(
                ErrorCode.message_too_large,
                f"record batch of {length + 12} bytes exceeds max.message.bytes {max_batch_bytes}",
            )
        if view is not None and crc32c.crc32c(view[pos + CRC_START : pos + 12 + length]) != fields[4]:
            raise InvalidRecordError(ErrorCode.corrupt_message, "record batch CRC32C mismatch")
        header = BatchHeader(pos, *fields)
        if header.record_count < 1 or header.last_offset_delta != header.record_count - 1:
            raise InvalidRecordError(
                ErrorCode.corrupt_message,
                f"record count {header.record_count} does not match last offset delta {header.last_offset_delta}",
            )
        batches.append(header)
        pos += 12 + length
    return batches


def scan_batches(data: bytes | bytearray | memoryview, *, verify_crc: bool = True) -> tuple[list[BatchHeader], int]:
    """Recovery: the valid prefix of a log file's bytes; stops at a torn or corrupt batch."""
    batches: list[BatchHeader] = []
    end = len(data)
    pos = 0
    view = memoryview(data)
    while end - pos >= BATCH_HEADER_SIZE:
        fields = _HEADER.unpack_from(data, pos)
        length = fields[1]
        if fields[3] != 2 or length < MIN_BATCH_LENGTH or pos + 12 + length > end:
            break
        if verify_crc and crc32c.crc32c(view[pos + CRC_START : pos + 12 + length]) != fields[4]:
            break
        batches.append(BatchHeader(pos, *fields))
        pos += 12 + length
    return batches, pos


def set_log_append_time(batch: bytearray, timestamp_ms: int) -> None:
    """LogAppendTime: set the timestamp-type bit and maxTimestamp, then the CRC (Kafka's LogValidator)."""
    (attributes,) = struct.unpack_from(">h", batch, 21)
    struct.pack_into(">h", batch, 21, attributes | TIMESTAMP_TYPE_BIT)
    struct.pack_into(">q", batch, 35, timestamp_ms)
    struct.pack_into(">I", batch, 17, crc32c.crc32c(memoryview(batch)[CRC_START:]))


# -- records: for tools, the coordinator and compaction -----------------------


@dataclass(slots=True)
class Record:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    attributes: int = 0


@dataclass(slots=True)
class DecodedBatch:
    header: BatchHeader
    records: list[Record] = field(default_factory=list)


def decompress(codec: int, data: bytes) -> bytes:
    if codec == 0:
        return data
    if codec == 1:
        return gzip.decompress(data)
    if codec == 2:
        import snappy

        if data[:8] == b"\x82SNAPPY\x00":  # xerial framing, as the Java client writes
            out = io.BytesIO()
            pos = 16
            while pos < len(data):
                (n,) = struct.unpack_from(">i", data, pos)
                out.write(snappy.uncompress(data[pos + 4 : pos + 4 + n]))
                pos += 4 + n
            return out.getvalue()
        return bytes(snappy.uncompress(data))
    if codec == 3:
        import lz4.frame

        return bytes(lz4.frame.decompress(data))
    if codec == 4:
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    raise InvalidRecordError(ErrorCode.corrupt_message, f"unknown compression codec {codec}")


def compress(codec: int, data: bytes) -> bytes:
    if codec == 0:
        return data
    if codec == 1:
        return gzip.compress(data)
    if codec == 2:
        import snappy

        return bytes(snappy.compress(data))
    if codec == 3:
        import lz4.frame

        return bytes(lz4.frame.compress(data))
    if codec == 4:
        import zstandard

        return bytes(zstandard.ZstdCompressor().compress(data))
    raise ValueError(f"unknown compression codec {codec}")


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    n, size = read_signed_varint(buf, pos)
    pos += size
    if n < 0:
        return None, pos
    return buf[pos : pos + n], pos + n


def decode_batch(data: bytes | memoryview, pos: int = 0) -> DecodedBatch:
    """Every record of one batch (decompressed), with absolute offsets and timestamps."""
    header = read_header(data, pos)
    body = decompress(header.compression, bytes(data[pos + BATCH_HEADER_SIZE : pos + header.size]))
    out = DecodedBatch(header)
    p = 0
    for _ in range(header.record_count):
        length, size = read_signed_varint(body, p)
        p += size
        end = p + length
        attributes = body[p]
        p += 1
        ts_delta, size = read_signed_varlong(body, p)
        p += size
        off_delta, size = read_signed_varint(body, p)
        p += size
        key, p = _read_bytes(body, p)
        value, p = _read_bytes(body, p)
        count, size = read_signed_varint(body, p)
        p += size
        headers = []
        for _ in range(count):
            hkey, p = _read_bytes(body, p)
            hval, p = _read_bytes(body, p)
            headers.append(((hkey or b"").decode("utf-8", "replace"), hval))
        if p != end:
            raise InvalidRecordError(ErrorCode.corrupt_message, "record length does not match its fields")
        out.records.append(Record(header.base_offset + off_delta, header.base_timestamp + ts_delta,
                                  key, value, tuple(headers), attributes))
    return out


def iter_batches(data: bytes | memoryview) -> list[DecodedBatch]:
    headers, _ = scan_batches(data, verify_crc=False)
    return [decode_batch(data, h.position) for h in headers]


def encode_batch(
    records: list[tuple[bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...]]] | list[Record],
    *,
    base_offset: int = 0,
    timestamp_ms: int | None = None,
    compression: int = 0,
    attributes: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    partition_leader_epoch: int = -1,
    offsets: list[int] | None = None,
) -> bytes:
    """Build one v2 batch. `records` are (key, value, headers) or Record (own offset/timestamp)."""
    import time

    now = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    items: list[Record] = []
    for i, r in enumerate(records):
        if isinstance(r, Record):
            items.append(r)
        else:
            off = offsets[i] if offsets is not None else base_offset + i
            items.append(Record(off, now, r[0], r[1], tuple(r[2])))
    if not items:
        raise ValueError("a record batch needs at least one record")
    first = items[0].offset
    base_ts = items[0].timestamp
    body = io.BytesIO()
    for r in items:
        rec = io.BytesIO()
        rec.write(bytes([r.attributes & 0xFF]))
        write_signed_varlong(rec, r.timestamp - base_ts)
        write_signed_varint(rec, r.offset - first)
        write_signed_compact_bytes(rec, r.key)
        write_signed_compact_bytes(rec, r.value)
        write_signed_varint(rec, len(r.headers))
        for hk, hv in r.headers:
            write_signed_compact_bytes(rec, hk.encode())
            write_signed_compact_bytes(rec, hv)
        raw = rec.getvalue()
        write_signed_varint(body, len(raw))
        body.write(raw)
    payload = compress(compression, body.getvalue())
    tail = struct.pack(
        ">hiqqqhii", (attributes & ~0x07) | compression, items[-1].offset - first, base_ts,
        max(r.timestamp for r in items), producer_id, producer_epoch, base_sequence, len(items),
    ) + payload
    crc = crc32c.crc32c(tail)
    return struct.pack(">qiibI", first, len(tail) + 9, partition_leader_epoch, 2, crc) + tail


# -- transaction markers (control batches) --------------------------------------

CONTROL_ABORT = 0
CONTROL_COMMIT = 1
_CONTROL_KEY = struct.Struct(">hh")  # version, type
_CONTROL_VALUE = struct.Struct(">hi")  # version, coordinator epoch


def encode_control_batch(committed: bool, producer_id: int, producer_epoch: int, coordinator_epoch: int,
                         timestamp_ms: int) -> bytes:
    """An end-transaction marker (Kafka's EndTransactionMarker): one control record whose
    key says COMMIT or ABORT, in a batch flagged transactional + control."""
    key = _CONTROL_KEY.pack(0, CONTROL_COMMIT if committed else CONTROL_ABORT)
    value = _CONTROL_VALUE.pack(0, coordinator_epoch)
    return encode_batch([(key, value, ())], timestamp_ms=timestamp_ms, attributes=TRANSACTIONAL_BIT | CONTROL_BIT,
                        producer_id=producer_id, producer_epoch=producer_epoch)


def control_type(data: bytes | bytearray | memoryview, pos: int = 0) -> int:
    """CONTROL_COMMIT or CONTROL_ABORT for the control batch at `pos` (-1 when unreadable)."""
    try:
        batch = decode_batch(data, pos)
    except (InvalidRecordError, IndexError, ValueError, struct.error):
        return -1
    if not batch.records or batch.records[0].key is None or len(batch.records[0].key) < 4:
        return -1
    return int(_CONTROL_KEY.unpack_from(batch.records[0].key)[1])
