"""Kafka request/response framing, sans I/O.

A frame is a 4-byte big-endian size followed by that many bytes. A request
starts with api_key (int16), api_version (int16), correlation_id (int32) and
client_id; flexible versions (KIP-482) add tagged fields (header v2). Responses
carry the correlation id (header v0), plus empty tagged fields when flexible
(header v1) - except ApiVersions, whose response header is always v0 so that a
client can read it before it knows our versions.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.serial import entity_reader

from odradek.protocol import legacy
from odradek.protocol.bounds import (
    MAX_REQUEST_ELEMENTS,
    BoundsError,
    TagSection,
    check_entity,
    check_request_header,
    clamp_durations,
    skip_tagged_fields,
    without_unknown_tags,
    zero_times,
)
from odradek.protocol.writer import Parts, encode, entity_writer

API_VERSIONS_KEY = 18
_PREFIX = struct.Struct(">hhi")
_SIZE = struct.Struct(">i")
_INT16 = struct.Struct(">h")
_read_header_v1 = entity_reader(RequestHeaderV1)
_read_header_v2 = entity_reader(RequestHeaderV2)


class FrameError(Exception):
    """An unparsable frame: the connection is closed, as Kafka does."""


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


def peek_header(frame: bytes | memoryview) -> tuple[int, int, int]:
    """api_key, api_version, correlation_id: readable in every version."""
    if len(frame) < _PREFIX.size:
        raise FrameError(f"request of {len(frame)} bytes is shorter than a request header")
    api_key, api_version, correlation_id = _PREFIX.unpack_from(frame, 0)
    return api_key, api_version, correlation_id


@cache
def request_type(api_key: int, api_version: int) -> type[Any]:
    # the pre-2.1 versions kio lacks (KIP-896) first: legacy.py says why they are served
    return legacy.request_schema(api_key, api_version) or load_request_schema(api_key, api_version)


@cache
def response_type(api_key: int, api_version: int) -> type[Any]:
    return legacy.response_schema(api_key, api_version) or load_response_schema(api_key, api_version)


_READERS: dict[type[Any], Any] = {}


def _reader(cls: type[Any]) -> Any:
    reader = _READERS.get(cls)
    if reader is None:
        reader = _READERS[cls] = entity_reader(cls)
    return reader


def _plain_header(data: bytes, flexible: bool) -> tuple[int, str | None] | None:
    """Where the body starts and the client id, for the usual header: a client id in UTF-8 (or
    null) within the frame and, when flexible, no tagged fields; None for anything else, which
    the generic path (bounds.py's check, then kio's reader) reads or refuses."""
    if len(data) < 10:
        return None
    (n,) = _INT16.unpack_from(data, 8)
    if n < 0:
        if n != -1:
            return None
        client_id, pos = None, 10
    else:
        pos = 10 + n
        if pos > len(data):
            return None
        try:
            client_id = data[10:pos].decode()
        except UnicodeDecodeError:
            return None
    if flexible:
        if pos >= len(data) or data[pos] != 0:
            return None
        pos += 1
    return pos, client_id


def decode_request(frame: bytes | memoryview) -> tuple[RequestHeader, Any]:
    """Parse header and body of a request whose (api_key, version) we support."""
    api_key, api_version, correlation_id = peek_header(frame)
    cls = request_type(api_key, api_version)
    data = frame if isinstance(frame, bytes) else bytes(frame)
    try:
        # Every length prefix is checked against the bytes present before kio's native
        # reader sizes a buffer from it (bounds.py says why).
        unknown: list[TagSection] = []
        clamp: list[int] = []
        plain = _plain_header(data, cls.__flexible__)
        offset = plain[0] if plain is not None else check_request_header(cls.__flexible__, data, unknown)
        check_entity(cls, data, offset, unknown, MAX_REQUEST_ELEMENTS, clamp)
        if clamp:  # the same length: the body stays where it was
            data = clamp_durations(data, clamp)
        if unknown:
            data = without_unknown_tags(data, unknown)
        if plain is not None:  # unknown tags, if any, were the body's: the header is as it was
            client_id = plain[1]
        else:
            header, offset = (_read_header_v2 if cls.__flexible__ else _read_header_v1)(data, 0)
            client_id = header.client_id
        body, _ = _reader(cls)(data, offset)
    except BoundsError as exc:
        raise FrameError(f"{cls.__name__} v{api_version}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - kio raises assorted errors: bad UTF-8, enums, dates
        raise FrameError(f"cannot parse {cls.__name__} v{api_version}: {exc}") from None
    except BaseException as exc:  # a Rust panic in kio arrives as pyo3's PanicException
        if type(exc).__name__ != "PanicException":
            raise
        raise FrameError(f"cannot parse {cls.__name__} v{api_version}: {exc}") from None
    # Trailing bytes are tolerated, as Kafka does: librdkafka's all-topics Metadata v12
    # carries three bytes past the fields of the schema.
    return RequestHeader(api_key, api_version, correlation_id, client_id), body


class EncodedBody:
    """A response body already in wire form (Metadata splices cached topic bytes): `flexible`
    as its schema's `__flexible__`, which decides the response header."""

    __slots__ = ("__flexible__", "data")

    def __init__(self, data: bytes, flexible: bool) -> None:
        self.data = data
        self.__flexible__ = flexible


def warm(api_key: int, api_version: int) -> None:
    """Import the schemas of one API version and build their reader and writer ahead of the
    first request of that kind (the broker's start-up thread; 30-100 ms each otherwise, on the
    event loop, in the middle of a client's first requests)."""
    _reader(request_type(api_key, api_version))
    entity_writer(response_type(api_key, api_version))


def encode_body(entity: Any) -> bytes:
    """The wire form of a kio entity alone (no header, no size prefix)."""
    return encode(entity)


def encode_response(correlation_id: int, response: Any, *, header_v0: bool = False) -> bytes:
    """Size prefix + response header + body of a kio response entity (or an EncodedBody)."""
    parts = Parts()
    parts.append(b"")  # the size, once known
    parts.append(_SIZE.pack(correlation_id))
    if response.__flexible__ and not header_v0:
        parts.append(b"\0")  # no tagged fields in the header
    if isinstance(response, EncodedBody):
        parts.append(response.data)
    else:
        entity_writer(type(response))(parts, response)
    parts[0] = _SIZE.pack(sum(map(len, parts)))
    return b"".join(parts)


def encode_request(api_key: int, api_version: int, correlation_id: int, body: Any,
                   client_id: str | None = "odradek") -> bytes:
    """A whole request frame; for tools and tests that talk to a broker directly."""
    parts = Parts()
    parts.append(b"")  # the size, once known
    parts.append(_PREFIX.pack(api_key, api_version, correlation_id))
    cid = None if client_id is None else client_id.encode()
    parts.append(_SIZE.pack(-1)[2:] if cid is None else struct.pack(">h", len(cid)) + cid)
    if body.__flexible__:
        parts.append(b"\0")
    entity_writer(type(body))(parts, body)
    parts[0] = _SIZE.pack(sum(map(len, parts)))
    return b"".join(parts)


def decode_response(frame: bytes, api_key: int, api_version: int) -> tuple[int, Any]:
    """correlation_id and body of a response frame (without its size prefix)."""
    cls = response_type(api_key, api_version)
    if len(frame) < 4:
        raise FrameError(f"response of {len(frame)} bytes is shorter than a response header")
    (correlation_id,) = _SIZE.unpack_from(frame, 0)
    offset = 4
    try:
        if cls.__flexible__ and api_key != API_VERSIONS_KEY:
            offset = skip_tagged_fields(frame, offset)
        unknown: list[TagSection] = []
        negative_times: list[int] = []
        check_entity(cls, frame, offset, unknown, None, None, negative_times)
        if negative_times:
            frame = zero_times(frame, negative_times)
        if unknown:
            frame = without_unknown_tags(frame, unknown)
        body, _ = _reader(cls)(frame, offset)
    except BoundsError as exc:
        raise FrameError(f"{cls.__name__} v{api_version}: {exc}") from None
    return correlation_id, body
