"""Produce requests decoded on a short path, sans I/O.

A Produce is most of a producing broker's requests (librdkafka sends one a partition: 1,000
partitions written at once are thousands of small Produce requests a second), and the generic
decode (framing.decode_request: bounds.py's walker compiled from the schema, then kio's
reader) took ~12 us of each, 5.8 us of it the walk. `check` is the same walk written out for
Produce v3-13 alone: it accepts only a frame the generic path accepts unchanged (every length
backed by the frame's bytes, no null where Kafka forbids one, no tagged fields at all, at most
MAX_REQUEST_ELEMENTS array elements) and otherwise answers None, leaving the frame to the
generic path and its errors. `decode` then runs kio's own readers, so the request is the same
kio entity the generic path gives.
"""

from __future__ import annotations

import struct
from typing import Any

from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.serial import entity_reader

from odradek.protocol.bounds import MAX_REQUEST_ELEMENTS
from odradek.protocol.framing import RequestHeader, request_type

PRODUCE_KEY = 0
MIN_VERSION = 3
MAX_VERSION = 13
FLEXIBLE_VERSION = 9  # KIP-482: compact lengths and tagged fields
TOPIC_IDS_VERSION = 13  # KIP-516: a topic id instead of its name

_I16 = struct.Struct(">h").unpack_from
_I32 = struct.Struct(">i").unpack_from
_read_header_v1 = entity_reader(RequestHeaderV1)
_read_header_v2 = entity_reader(RequestHeaderV2)
_READERS: dict[int, Any] = {}


class _Unusual(Exception):
    """Something the short path leaves to the generic one."""


def _uvarint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    result = byte & 0x7F
    for shift in (7, 14, 21, 28):
        pos += 1
        byte = buf[pos]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + 1
    raise _Unusual


def check(buf: bytes | memoryview, version: int) -> int | None:
    """Where the body starts when the short path may decode this Produce frame, else None."""
    if not MIN_VERSION <= version <= MAX_VERSION:
        return None
    try:
        return _walk(buf, version)
    except (_Unusual, IndexError, struct.error):
        return None


def _walk(buf: bytes | memoryview, version: int) -> int | None:
    end = len(buf)
    flexible = version >= FLEXIBLE_VERSION
    # header: api key, version, correlation id, then client id (a legacy nullable string)
    (n,) = _I16(buf, 8)
    if n < -1:
        return None
    pos = 10 + max(n, 0)
    if flexible:
        if buf[pos] != 0:  # header tagged fields
            return None
        pos += 1
    body = pos
    # transactional_id: a nullable string
    if flexible:
        n, pos = _uvarint(buf, pos)
        pos += max(n - 1, 0)
    else:
        (n,) = _I16(buf, pos)
        if n < -1:
            return None
        pos += 2 + max(n, 0)
    pos += 6  # acks int16, timeout int32
    if pos > end:
        return None
    if flexible:
        n, pos = _uvarint(buf, pos)
        topics = n - 1
    else:
        (topics,) = _I32(buf, pos)
        pos += 4
    if topics < 0 or topics > end - pos:  # a null topic_data is refused by the generic path
        return None
    elements = topics
    for _ in range(topics):
        if version >= TOPIC_IDS_VERSION:
            pos += 16
        elif flexible:
            n, pos = _uvarint(buf, pos)
            if n == 0:  # a null name
                return None
            pos += n - 1
        else:
            (n,) = _I16(buf, pos)
            if n < 0:
                return None
            pos += 2 + n
        if pos > end:
            return None
        if flexible:
            n, pos = _uvarint(buf, pos)
            partitions = n - 1
        else:
            (partitions,) = _I32(buf, pos)
            pos += 4
        if partitions < 0 or partitions > end - pos:
            return None
        elements += partitions
        if elements > MAX_REQUEST_ELEMENTS:
            return None
        for _ in range(partitions):
            pos += 4  # index
            if flexible:
                n, pos = _uvarint(buf, pos)
                pos += max(n - 1, 0)  # records, nullable
                if pos >= end or buf[pos] != 0:  # the partition's tagged fields
                    return None
                pos += 1
            else:
                (n,) = _I32(buf, pos)
                if n < -1:
                    return None
                pos += 4 + max(n, 0)
            if pos > end:
                return None
        if flexible:
            if pos >= end or buf[pos] != 0:  # the topic's tagged fields
                return None
            pos += 1
    if flexible:
        if pos >= end or buf[pos] != 0:  # the request's tagged fields
            return None
        pos += 1
    return body if pos <= end else None


def decode(buf: bytes | memoryview, api_version: int, correlation_id: int, body: int) -> tuple[RequestHeader, Any]:
    """Header and body of a frame `check` accepted (kio's readers; anything they raise, the
    caller answers by decoding the frame on the generic path)."""
    reader = _READERS.get(api_version)
    if reader is None:
        reader = _READERS[api_version] = entity_reader(request_type(PRODUCE_KEY, api_version))
    header, _ = (_read_header_v2 if api_version >= FLEXIBLE_VERSION else _read_header_v1)(buf, 0)
    request, _ = reader(buf, body)
    return RequestHeader(PRODUCE_KEY, api_version, correlation_id, header.client_id), request
