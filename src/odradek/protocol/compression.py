"""Record batch compression (Kafka's codecs: gzip, snappy, lz4, zstd), sans I/O.

Decompression is bounded: a few KiB of zeros can claim gigabytes, so output is read in
steps and refused with CORRUPT_MESSAGE once past the bound, before more is held.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from collections.abc import Callable

from kio.schema.errors import ErrorCode

from odradek.protocol.record_errors import InvalidRecordError

COMPRESSION_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
# Decoding a batch inflates it whole; a few KiB of zeros can claim gigabytes, so the
# output is capped at Kafka's socket.request.max.bytes default (the largest request a
# broker reads at all) unless the caller asks for another bound.
MAX_DECOMPRESSED_BYTES = 100 * 1024 * 1024
_CHUNK = 64 * 1024  # the step in which gzip and zstd output is read
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = 16  # magic, version i32, compatible version i32


def decompress(codec: int, data: bytes | memoryview, max_bytes: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """The records of a compressed batch; a corrupt payload or one inflating past
    `max_bytes` is refused with CORRUPT_MESSAGE before more than that is held."""
    if codec == 0:
        return bytes(data)
    name = COMPRESSION_NAMES.get(codec)
    if name is None:
        raise InvalidRecordError(ErrorCode.corrupt_message, f"unknown compression codec {codec}")
    try:
        if codec == 1:
            out = _gunzip(data, max_bytes)
        elif codec == 2:
            out = _unsnappy(bytes(data), max_bytes)
        elif codec == 3:
            out = _unlz4(data, max_bytes)
        else:
            out = _unzstd(data, max_bytes)
    except InvalidRecordError:
        raise
    except _codec_errors(codec) as exc:
        raise InvalidRecordError(ErrorCode.corrupt_message, f"corrupt {name} record batch: {exc}") from None
    if len(out) > max_bytes:
        raise _too_large(name, max_bytes)
    return out


def _too_large(name: str, max_bytes: int) -> InvalidRecordError:
    return InvalidRecordError(ErrorCode.corrupt_message,
                              f"{name} record batch inflates past {max_bytes} bytes")


def _codec_errors(codec: int) -> tuple[type[BaseException], ...]:
    """What each codec's library raises on corrupt input (and nothing else)."""
    if codec == 1:
        return (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError
    if codec == 2:
        import snappy

        return (snappy.UncompressError,)
    if codec == 3:
        return (RuntimeError,)  # python-lz4 reports every LZ4F error so
    import zstandard

    return (zstandard.ZstdError,)


def _read_bounded(read: Callable[[int], bytes], max_bytes: int, name: str) -> bytes:
    """Read a decompressing stream in small steps, refusing it once past max_bytes."""
    out = bytearray()
    while chunk := read(_CHUNK):
        out += chunk
        if len(out) > max_bytes:
            raise _too_large(name, max_bytes)
    return bytes(out)


def _gunzip(data: bytes | memoryview, max_bytes: int) -> bytes:
    # GzipFile reads concatenated members, as Java's GZIPInputStream does.
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
        return _read_bounded(f.read, max_bytes, "gzip")


def _unsnappy(data: bytes, max_bytes: int) -> bytes:
    import snappy

    if not data.startswith(_XERIAL_MAGIC):
        _check_snappy_length(data, max_bytes, max_bytes)
        return bytes(snappy.uncompress(data))
    # xerial framing, as the Java client writes: the header, then [length i32][block] chunks
    out = bytearray()
    pos = _XERIAL_HEADER
    if len(data) < pos:
        raise InvalidRecordError(ErrorCode.corrupt_message, "snappy record batch: xerial header cut short")
    while pos < len(data):
        if len(data) - pos < 4:
            raise InvalidRecordError(ErrorCode.corrupt_message, "snappy record batch: chunk length cut short")
        (n,) = struct.unpack_from(">i", data, pos)
        if n < 0 or n > len(data) - pos - 4:
            raise InvalidRecordError(ErrorCode.corrupt_message,
                                     f"snappy record batch: chunk of {n} bytes does not fit")
        block = data[pos + 4 : pos + 4 + n]
        _check_snappy_length(block, max_bytes - len(out), max_bytes)
        out += snappy.uncompress(block)
        pos += 4 + n
    return bytes(out)


def _check_snappy_length(block: bytes, room: int, max_bytes: int) -> None:
    """A raw snappy block opens with its uncompressed length (a varint): refuse it before
    the library sizes a buffer by it."""
    length = shift = 0
    for i, b in enumerate(block[:5]):
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
        if i == 4:
            raise InvalidRecordError(ErrorCode.corrupt_message, "snappy record batch: bad length varint")
    if length > room:
        raise _too_large("snappy", max_bytes)


def _unlz4(data: bytes | memoryview, max_bytes: int) -> bytes:
    import lz4.frame

    d = lz4.frame.LZ4FrameDecompressor()
    out = bytearray(d.decompress(data, max_length=_CHUNK))  # max_length sizes its buffer
    while not d.eof and not d.needs_input:
        if len(out) > max_bytes:
            raise _too_large("lz4", max_bytes)
        out += d.decompress(b"", max_length=_CHUNK)
    if not d.eof:
        raise InvalidRecordError(ErrorCode.corrupt_message, "lz4 record batch: frame cut short")
    return bytes(out)


def _unzstd(data: bytes | memoryview, max_bytes: int) -> bytes:
    # A stream reader gives output in steps (one call would inflate it all); it ends
    # quietly where input is cut, and the record count then refuses the batch.
    import zstandard

    with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as r:
        return _read_bounded(r.read, max_bytes, "zstd")


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
