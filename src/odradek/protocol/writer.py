"""Entity writers: the bytes kio's `entity_writer` gives, at a fraction of its cost.

kio's writer checks every integer through its phantom types, writes a varint a byte at a time
and opens a BytesIO for the tagged fields of every flexible entity, set or not: encoding a
FindCoordinator answer was 40% of its dispatch, an ApiVersions answer 0.1-0.4 ms. These writers
take kio's own reading of each schema (field kinds, types, tags and the tagged fields' defaults)
and write into a list of byte strings joined once; the rare field types (timedeltas, datetimes)
go through kio's own writers. `tests/unit/test_entity_writer.py` holds them byte for byte to
kio's over every request and response schema.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any

from kio.serial import _serialize as kio_serialize
from kio.serial._implicit_defaults import get_tagged_field_default
from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveField,
    PrimitiveTupleField,
    classify_field,
    get_field_tag,
    get_schema_field_type,
    is_optional,
)

from odradek.protocol.bounds import uvarint_bytes as uvarint

Write = Callable[["Parts", Any], None]

_ZERO_UUID = bytes(16)
_NULL_ENTITY, _ENTITY = b"\xff", b"\x01"  # kio's NullableEntityMarker (KIP-893)


class Parts(list[bytes]):
    """Byte strings to join; `write` lets kio's own writers add to it as to a buffer."""

    __slots__ = ()
    write = list.append


def _packer(fmt: str) -> Write:
    pack = struct.Struct(fmt).pack

    def write(parts: Parts, value: Any) -> None:
        parts.append(pack(value))

    return write


def _error_code(parts: Parts, value: Any) -> None:
    parts.append(_INT16(value.value))


_INT16 = struct.Struct(">h").pack
_INT32 = struct.Struct(">i").pack


def _compact(nullable: bool) -> Write:
    def write(parts: Parts, value: Any) -> None:
        if value is None:
            if not nullable:
                raise TypeError("Unexpectedly received None value")
            parts.append(b"\0")
            return
        if isinstance(value, str):
            value = value.encode()
        parts.append(uvarint(len(value) + 1))
        parts.append(value)

    return write


def _legacy(string: bool, nullable: bool) -> Write:
    """A legacy string (int16 length, str encoded) or bytes (int32 length); -1 is null."""
    pack, null = (_INT16, b"\xff\xff") if string else (_INT32, b"\xff\xff\xff\xff")

    def write(parts: Parts, value: Any) -> None:
        if value is None:
            if not nullable:
                raise TypeError("Unexpectedly received None value")
            parts.append(null)
            return
        data = value.encode() if string else value
        parts.append(pack(len(data)))
        parts.append(data)

    return write


def _uuid(parts: Parts, value: Any) -> None:
    parts.append(_ZERO_UUID if value is None else value.bytes)


_FIXED = {
    "int8": ">b", "int16": ">h", "int32": ">i", "int64": ">q", "uint8": ">B", "uint16": ">H",
    "uint32": ">I", "uint64": ">Q", "float64": ">d", "bool": ">?",
}


def _primitive(kafka_type: str, flexible: bool, optional: bool) -> Write:
    if kafka_type in _FIXED and not optional:
        return _packer(_FIXED[kafka_type])
    if kafka_type == "error_code" and not optional:
        return _error_code
    if kafka_type == "uuid":
        return _uuid
    if kafka_type in ("string", "bytes", "records"):
        if flexible:
            return _compact(optional)
        return _legacy(kafka_type == "string", optional)
    kio_writer = kio_serialize.get_writer(kafka_type, flexible, optional)  # timedeltas, datetimes

    def write(parts: Parts, value: Any) -> None:
        kio_writer(parts, value)  # type: ignore[arg-type]  # kio writes to anything with write()

    return write


def _array(item: Write, flexible: bool) -> Write:
    if flexible:
        def write_compact(parts: Parts, items: Any) -> None:
            if items is None:
                parts.append(b"\0")
                return
            parts.append(uvarint(len(items) + 1))
            for value in items:
                item(parts, value)

        return write_compact

    def write_legacy(parts: Parts, items: Any) -> None:
        if items is None:
            parts.append(b"\xff\xff\xff\xff")
            return
        parts.append(_INT32(len(items)))
        for value in items:
            item(parts, value)

    return write_legacy


def _nullable(write_entity: Write) -> Write:
    def write(parts: Parts, value: Any) -> None:
        if value is None:
            parts.append(_NULL_ENTITY)
            return
        parts.append(_ENTITY)
        write_entity(parts, value)

    return write


def _field_writer(field: Any, flexible: bool, is_request_header: bool, is_tag: bool) -> Write:
    """kio's get_field_writer, with these writers."""
    if is_request_header and field.name == "client_id":  # always a legacy string (RequestHeader.json)
        return _legacy(True, True)
    optional = False if is_tag else is_optional(field)
    kind = classify_field(field)
    inner: Write
    if isinstance(kind, PrimitiveField):
        inner = _primitive(get_schema_field_type(field), flexible, optional)
    elif isinstance(kind, PrimitiveTupleField):
        inner = _primitive(get_schema_field_type(field), flexible, False)
    elif isinstance(kind, EntityField):
        inner = _nullable(entity_writer(kind.type_)) if optional else entity_writer(kind.type_)
    elif isinstance(kind, EntityTupleField):
        inner = entity_writer(kind.type_)
    else:  # pragma: no cover - kio's classification is exhaustive
        raise NotImplementedError(f"field {field.name}: {kind!r}")
    return _array(inner, flexible) if kind.is_array else inner


_WRITERS: dict[type[Any], Write] = {}  # made, for any thread
_MAKING: dict[type[Any], Write] = {}  # being made, under _LOCK (a schema naming itself would find it)
_LOCK = threading.RLock()  # the broker's start-up thread makes writers while the loop may want one


def entity_writer(entity_type: type[Any]) -> Write:
    """The writer of one entity type (made once, then cached)."""
    found = _WRITERS.get(entity_type)
    if found is not None:
        return found
    with _LOCK:
        found = _WRITERS.get(entity_type) or _MAKING.get(entity_type)
        if found is not None:
            return found
        try:
            return _make(entity_type)
        finally:
            _MAKING.pop(entity_type, None)


def _make(entity_type: type[Any]) -> Write:
    flexible = bool(entity_type.__flexible__)
    is_request_header = entity_type.__name__ == "RequestHeader"
    getters: list[tuple[Write, str]] = []
    tagged: list[tuple[int, str, Write, Any, Any]] = []
    placeholder: list[Write] = []

    def write_entity(parts: Parts, entity: Any) -> None:  # until the fields are known (recursive schemas)
        placeholder[0](parts, entity)

    _MAKING[entity_type] = write_entity
    for field in fields(entity_type):
        tag = get_field_tag(field)
        writer = _field_writer(field, flexible, is_request_header, tag is not None)
        if tag is None:
            getters.append((writer, field.name))
        else:
            tagged.append((tag, field.name, writer, field.default, get_tagged_field_default(field)))
    tagged.sort(key=lambda t: t[0])

    def write(parts: Parts, entity: Any) -> None:
        for writer, name in getters:
            writer(parts, getattr(entity, name))
        if not flexible:
            return
        if not tagged:
            parts.append(b"\0")
            return
        written: list[bytes] = []
        for tag, name, writer, default, implicit in tagged:
            value = getattr(entity, name)
            if value == default or (default == MISSING and value == implicit):  # kio's rule: left out
                continue
            inner = Parts()
            writer(inner, value)
            data = b"".join(inner)
            written += (uvarint(tag), uvarint(len(data)), data)
        parts.append(uvarint(len(written) // 3))
        parts.extend(written)

    placeholder.append(write)
    _WRITERS[entity_type] = write
    return write


def encode(entity: Any) -> bytes:
    """The wire form of a kio entity (no header, no size prefix)."""
    parts = Parts()
    entity_writer(type(entity))(parts, entity)
    return b"".join(parts)

