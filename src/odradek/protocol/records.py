"""Record batches (magic 2), sans I/O: header views, validation, and tools' codecs.

The produce and fetch paths only read the 61-byte batch header and check the
CRC32C (over attributes..end); records are never decoded there. `decode_batch`
and `encode_batch` (with compression, compression.py) are for the coordinator,
compaction, ListOffsets by timestamp and tools.

Layout (Kafka's DefaultRecordBatch): baseOffset i64, batchLength i32,
partitionLeaderEpoch i32, magic i8, crc u32, attributes i16, lastOffsetDelta i32,
baseTimestamp i64, maxTimestamp i64, producerId i64, producerEpoch i16,
baseSequence i32, recordCount i32, records.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import crc32c
from kio._kio_native import read_signed_varint, read_signed_varlong
from kio.records.writers import write_signed_compact_bytes
from kio.schema.errors import ErrorCode
from kio.serial.errors import DecodeError
from kio.serial.writers import write_signed_varint, write_signed_varlong

from odradek.protocol.compression import MAX_DECOMPRESSED_BYTES, compress, decompress
from odradek.protocol.record_errors import InvalidRecordError

BATCH_HEADER_SIZE = 61
_HEADER = struct.Struct(">qiibIhiqqqhii")
_BASE_AND_LENGTH = struct.Struct(">qi")
MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - 12  # batchLength counts from partitionLeaderEpoch
CRC_START = 21  # the CRC covers attributes..end
TIMESTAMP_TYPE_BIT = 0x08
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20
NO_TIMESTAMP = -1



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
    if pos < 0 or len(data) - pos < BATCH_HEADER_SIZE:
        raise InvalidRecordError(ErrorCode.corrupt_message,
                                 f"{max(len(data) - pos, 0)} bytes at {pos} are not a record batch header")
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
        check_records(data, header)
        batches.append(header)
        pos += 12 + length
    return batches


def records_area(data: bytes | bytearray | memoryview,
                 header: BatchHeader) -> tuple[bytes | bytearray | memoryview, int, int]:
    """Where a batch's records are: (bytes, start, end), the batch's own bytes in `data` when it is
    not compressed, else its records decompressed (capped at MAX_DECOMPRESSED_BYTES)."""
    if header.compression == 0:
        return data, header.position + BATCH_HEADER_SIZE, header.position + header.size
    body = decompress(header.compression, memoryview(data)[header.position + BATCH_HEADER_SIZE:
                                                           header.position + header.size])
    return body, 0, len(body)


def check_records(data: bytes | bytearray | memoryview, header: BatchHeader) -> None:
    """A batch's records fill it exactly: record_count length-prefixed records, no more, no
    fewer, no bytes after them (Kafka's LogValidator reads every record of a produced batch).
    A batch that lies about its count would take offsets it does not fill, and a consumer
    reading it as Kafka's clients do (the Java client reads exactly record_count records)
    fails on it. Kafka's record iterator refuses it INVALID_RECORD (InvalidRecordException).

    One record length at a time (a C varint read each); where records repeat a size, as a
    producer's same-size values do, runs of them are checked by byte columns instead: if the
    record at p + i * stride starts with the same length bytes as the one at p, for every i,
    each of them is one stride long. A compressed batch is decompressed (capped), as Kafka does."""
    count = header.record_count
    body, p, total = records_area(data, header)
    if count > (total - p) // MIN_RECORD_SIZE:
        raise _invalid(f"record count {count} does not fit {total - p} bytes of records")
    # a batch's records mostly share one size, but librdkafka's grow a byte where the offset delta's
    # varint does (at 64 and 8,192 records): a run is first tried to the batch's end, and again
    # (a few times: each try reads up to the rest) after each size change; otherwise runs double.
    # Records of varied sizes (VARIED_AFTER size changes in a row) are walked VARIED_CHUNK at a
    # time without the runs' bookkeeping, then runs are looked for again.
    left, previous, run, hunches, changes = count, -1, count, 3, 0
    varint = read_signed_varint
    shortest = MIN_RECORD_SIZE - 1
    try:
        while left:
            if changes >= VARIED_AFTER:
                changes = 0
                n = min(left, VARIED_CHUNK)
                left -= n
                for _ in range(n):  # p may pass total here: bounded by count, refused below
                    length, size = varint(body, p)
                    if length < shortest:
                        raise _invalid(f"record length {length} is below the smallest record's")
                    p += size + length
                if p > total:
                    raise _invalid(f"record count {count}: a record runs past the batch's end")
                previous = -1
                continue
            length, size = varint(body, p)
            if length < shortest:
                raise _invalid(f"record length {length} is below the smallest record's")
            stride = size + length
            if stride == previous:
                n = min(left, run, (total - p) // stride)
                same = n
                for c in range(size):  # how many records from p on start with these length bytes
                    column = bytes(body[p + c:p + c + n * stride:stride])
                    first = column[:1]
                    if column != first * n:  # one comparison when all agree (lstrip tests each byte against its strip set)
                        same = min(same, n - len(column.lstrip(first)))
                if same:  # at least the record at p itself
                    p += same * stride
                    left -= same
                    changes = 0
                    if same == n:
                        run *= 2
                    elif hunches:
                        hunches -= 1
                        run = left
                    else:
                        run = 8
                    continue
            p += stride
            left -= 1
            changes += 1
            previous = stride
            if p > total:
                raise _invalid(f"record count {count}: a record runs past the batch's end")
    except (DecodeError, ValueError, IndexError) as exc:  # a varint cut short, or longer than 5 bytes
        raise _invalid(f"bad record length varint: {exc}") from None
    if p != total:
        raise _invalid(f"{total - p} bytes remain after the batch's {count} records")


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


def _invalid(message: str) -> InvalidRecordError:
    return InvalidRecordError(ErrorCode.invalid_record, message)


def _corrupt(message: str) -> InvalidRecordError:
    return InvalidRecordError(ErrorCode.corrupt_message, message)


def _decode_records(body: bytes, count: int, base_offset: int, base_timestamp: int) -> list[Record]:
    """`count` of Kafka's DefaultRecord from a decompressed body. Every length and count
    comes from the producer, so each is checked against the bytes left before it is used;
    one loop with locals, as compaction decodes every record of a segment."""
    varint, varlong = read_signed_varint, read_signed_varlong
    records: list[Record] = []
    total = len(body)
    p = 0
    try:
        for _ in range(count):
            length, size = varint(body, p)
            p += size
            end = p + length
            if length < 1 or end > total:
                raise _corrupt(f"record length {length} does not fit the {total - p} bytes left")
            attributes = body[p]
            ts_delta, size = varlong(body, p + 1)
            p += 1 + size
            off_delta, size = varint(body, p)
            p += size
            key, p = _nullable_bytes(body, p, end, "key")
            value, p = _nullable_bytes(body, p, end, "value")
            n, size = varint(body, p)
            p += size
            if n < 0 or n > (end - p) // 2:  # a header is at least two varints
                raise _corrupt(f"record header count {n} does not fit the record")
            headers = []
            for _ in range(n):
                hkey, p = _nullable_bytes(body, p, end, "header key")
                if hkey is None:
                    raise _corrupt("record header key is null")
                hvalue, p = _nullable_bytes(body, p, end, "header value")
                headers.append((hkey.decode("utf-8", "replace"), hvalue))
            if p != end:
                raise _corrupt("record length does not match its fields")
            records.append(Record(base_offset + off_delta, base_timestamp + ts_delta, key, value,
                                  tuple(headers), attributes))
    except (DecodeError, ValueError) as exc:  # a varint cut short, or longer than 5 (10) bytes
        raise _corrupt(f"bad varint in record: {exc}") from None
    if p != total:
        # Kafka: "Incorrect declared batch size, records still remaining in file"
        raise _corrupt(f"{total - p} bytes remain after {count} records")
    return records


def _nullable_bytes(body: bytes, p: int, end: int, what: str) -> tuple[bytes | None, int]:
    n, size = read_signed_varint(body, p)
    p += size
    if n < 0:  # any negative length is null (Kafka's DefaultRecord)
        return None, p
    if n > end - p:
        raise _corrupt(f"record {what} of {n} bytes exceeds the {end - p} left in the record")
    return body[p : p + n], p + n


MIN_RECORD_SIZE = 7  # length, attributes, timestamp and offset deltas, key, value, header count
VARIED_AFTER = 8  # check_records: size changes in a row before records are walked without runs
VARIED_CHUNK = 256  # check_records: records walked so before runs are looked for again


def decode_batch(data: bytes | bytearray | memoryview, pos: int = 0, *, verify_crc: bool = False,
                 max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES) -> DecodedBatch:
    """Every record of one batch (decompressed), with absolute offsets and timestamps.

    Whatever the bytes, this returns exactly record_count records or raises
    InvalidRecordError; nothing inside the batch can make it read past the batch or
    hold more than `max_decompressed_bytes`."""
    header = read_header(data, pos)
    if header.magic != 2:
        raise _corrupt(f"record batch magic {header.magic} is not supported (only v2)")
    if header.batch_length < MIN_BATCH_LENGTH or header.size > len(data) - pos:
        raise _corrupt(f"record batch length {header.batch_length} does not fit the {len(data) - pos} bytes")
    view = memoryview(data)[pos : pos + header.size]
    if verify_crc and crc32c.crc32c(view[CRC_START:]) != header.crc:
        raise _corrupt("record batch CRC32C mismatch")
    if header.record_count < 0:
        raise _corrupt(f"record count {header.record_count} is negative")
    body = decompress(header.compression, view[BATCH_HEADER_SIZE:], max_decompressed_bytes)
    if header.record_count > len(body) // MIN_RECORD_SIZE:
        raise _corrupt(f"record count {header.record_count} does not fit {len(body)} bytes of records")
    return DecodedBatch(header, _decode_records(body, header.record_count, header.base_offset,
                                                header.base_timestamp))


def iter_batches(data: bytes | memoryview) -> list[DecodedBatch]:
    headers, _ = scan_batches(data, verify_crc=False)
    return [decode_batch(data, h.position) for h in headers]


def keyless_records(data: bytes, header: BatchHeader) -> list[int]:
    """The indexes of the records of one batch (at header.position in `data`) that have no key,
    which a compacted topic refuses (Kafka's LogValidator.validateKey). Only the fields before
    each key are read, so this costs a quarter of decode_batch; a record that does not fit the
    batch is CORRUPT_MESSAGE as there."""
    body, p, total = records_area(data, header)
    varint, varlong = read_signed_varint, read_signed_varlong
    missing: list[int] = []
    try:
        for index in range(header.record_count):
            length, size = varint(body, p)
            p += size
            end = p + length
            if length < 1 or end > total:
                raise _corrupt(f"record length {length} does not fit the {total - p} bytes left")
            _, size = varlong(body, p + 1)  # the timestamp delta, after the attributes
            key_at = p + 1 + size
            _, size = varint(body, key_at)  # the offset delta
            key_at += size
            if key_at >= end:
                raise _corrupt("record ends before its key")
            key_length, _ = varint(body, key_at)
            if key_length < 0:  # any negative length is null (Kafka's DefaultRecord)
                missing.append(index)
            p = end
    except (DecodeError, ValueError) as exc:  # a varint cut short, or longer than 5 (10) bytes
        raise _corrupt(f"bad varint in record: {exc}") from None
    if p != total:
        raise _corrupt(f"{total - p} bytes remain after {header.record_count} records")
    return missing


def encode_batch(
    records: Sequence[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes | None]]] | Record],
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
    for i, item in enumerate(records):
        if isinstance(item, Record):
            items.append(item)
        else:
            off = offsets[i] if offsets is not None else base_offset + i
            items.append(Record(off, now, item[0], item[1], tuple(item[2])))
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


NOT_A_MARKER = (-1, -1)


def control_type(data: bytes | bytearray | memoryview, pos: int = 0) -> int:
    """CONTROL_COMMIT or CONTROL_ABORT for the control batch at `pos` (-1 when unreadable)."""
    return control_marker(data, pos)[0]


def control_marker(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """(CONTROL_COMMIT or CONTROL_ABORT, coordinator epoch) of the control batch at `pos`
    (Kafka's EndTransactionMarker); -1 for what is unreadable."""
    try:
        batch = decode_batch(data, pos)
    except InvalidRecordError:
        return NOT_A_MARKER
    if not batch.records or batch.records[0].key is None or len(batch.records[0].key) < 4:
        return NOT_A_MARKER
    value = batch.records[0].value
    epoch = _CONTROL_VALUE.unpack_from(value)[1] if value is not None and len(value) >= 6 else -1
    return int(_CONTROL_KEY.unpack_from(batch.records[0].key)[1]), int(epoch)
