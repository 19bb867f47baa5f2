"""Length checks of a request's bytes before kio decodes them, sans I/O.

kio's native reader sizes its buffers from the length prefixes it reads: an array
count of 33 billion in a 29-byte frame makes it ask for 264 GB and the allocator
aborts the process. Kafka's generated readers refuse a collection larger than the
bytes remaining ("Tried to allocate a collection of size N, but there are only M
bytes remaining"); this module does the same for every length prefix a schema has
(arrays, compact arrays, strings, bytes, records, nullable structs, tagged fields)
by walking the frame once with a walker compiled per kio entity class. It also
refuses what Kafka's readers refuse: null in a non-nullable field, a negative length
other than -1, a varint longer than five bytes. A walk allocates nothing; the only
work is reading prefixes and skipping the bytes they cover.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from functools import cache
from types import EllipsisType, NoneType, UnionType
from typing import Any, Union, get_args, get_origin

# (buffer, position, end, walk state) -> position after the field; raises BoundsError.
Walker = Callable[[bytes, int, int, "WalkState"], int]

# Array elements one request may hold, all arrays together. Kafka has no such bound, but
# its handlers run on many threads; here one event loop would spend ~17 us on each entry
# of a 32 MB OffsetFetch (8 million entries: over two minutes serving nobody else).
MAX_REQUEST_ELEMENTS = 200_000

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")

_FIXED = {
    "int8": 1, "uint8": 1, "bool": 1, "int16": 2, "uint16": 2, "error_code": 2,
    "int32": 4, "uint32": 4, "timedelta_i32": 4, "int64": 8, "uint64": 8, "float64": 8,
    "timedelta_i64": 8, "datetime_i64": 8, "uuid": 16,
}


@dataclass(frozen=True, slots=True)
class TagSection:
    """A tagged-field section with unknown tags: where its count is, and what to drop."""

    count_start: int
    count_end: int
    kept: int
    drop: tuple[tuple[int, int], ...]


class WalkState:
    """What one walk collects: tagged-field sections with unknown tags (see
    without_unknown_tags) and the array elements seen so far, against a bound."""

    __slots__ = ("clamp", "elements", "max_elements", "negative_times", "unknown")

    def __init__(self, max_elements: int | None = None) -> None:
        self.unknown: list[TagSection] = []
        self.clamp: list[int] = []  # positions of int64 durations beyond Python's timedelta
        self.negative_times: list[int] = []  # positions of -1 "no time" timestamps
        self.elements = 0
        self.max_elements = max_elements

    def count(self, n: int) -> None:
        self.elements += n
        if self.max_elements is not None and self.elements > self.max_elements:
            raise BoundsError(
                f"more than {self.max_elements} array elements in one request"
            )


class BoundsError(ValueError):
    """A length prefix that the frame's bytes cannot back, or a null Kafka forbids."""


def check_entity(
    cls: type,
    buf: bytes,
    pos: int,
    unknown: list[TagSection] | None = None,
    max_elements: int | None = None,
    clamp: list[int] | None = None,
    negative_times: list[int] | None = None,
) -> int:
    """Walk `cls` at `pos`; the position after it, or BoundsError. Tagged-field
    sections with tags the schema lacks are appended to `unknown`, int64 durations
    out of timedelta's range to `clamp`; more than `max_elements` array elements in
    all is refused."""
    state = WalkState(max_elements)
    end = _entity_walker(cls)(buf, pos, len(buf), state)
    if unknown is not None:
        unknown.extend(state.unknown)
    if clamp is not None:
        clamp.extend(state.clamp)
    if negative_times is not None:
        negative_times.extend(state.negative_times)
    return end


def check_request_header(flexible: bool, buf: bytes, unknown: list[TagSection]) -> int:
    """Request header v1 (v2 when flexible) at the frame's start: api key, version,
    correlation id, client id (a legacy nullable string in both, KIP-482), then v2's
    tagged fields. The position after it."""
    end = len(buf)
    state = WalkState()
    pos = _advance(0, 8, end)
    pos = _legacy_string(True)(buf, pos, end, state)
    if flexible:
        pos = _skip_tagged_fields(buf, pos, end, {}, state)
    unknown.extend(state.unknown)
    return pos


def without_unknown_tags(buf: bytes, sections: list[TagSection]) -> bytes:
    """The frame without the tagged fields no schema of ours knows, counts adjusted.

    Kafka's readers keep unknown tags aside (KIP-482: a newer client may send fields an
    older broker ignores); kio's reader refuses them, so they are cut out before it reads.
    """
    out = bytearray()
    pos = 0
    for section in sorted(sections, key=lambda s: s.count_start):
        out += buf[pos:section.count_start]
        out += uvarint_bytes(section.kept)
        pos = section.count_end
        for start, stop in section.drop:
            out += buf[pos:start]
            pos = stop
    out += buf[pos:]
    return bytes(out)


_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def uvarint_bytes(n: int) -> bytes:
    """Kafka's unsigned varint (KIP-482), the writer's side of read_uvarint (a compact length
    below 128, most of them, is one shared byte string)."""
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_uvarint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """An unsigned varint of at most five bytes (Kafka's readUnsignedVarint)."""
    if pos < end and buf[pos] < 0x80:  # one byte: most compact lengths and counts
        return buf[pos], pos + 1
    result = 0
    for shift in (0, 7, 14, 21, 28):
        if pos >= end:
            raise BoundsError("varint runs past the end of the frame")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
    raise BoundsError("varint longer than five bytes")


def _advance(pos: int, size: int, end: int) -> int:
    pos += size
    if pos > end:
        raise BoundsError(f"a field of {size} bytes runs {pos - end} bytes past the end of the frame")
    return pos


def _fixed(size: int) -> Walker:
    def walk(buf: bytes, pos: int, end: int, state: WalkState) -> int:
        return _advance(pos, size, end)

    return walk


def _null(nullable: bool, what: str) -> None:
    if not nullable:
        raise BoundsError(f"non-nullable {what} was serialized as null")


def _legacy_length(prefix: struct.Struct, what: str, nullable: bool) -> Walker:
    """An int16 (string) or int32 (bytes) length, -1 for null, then that many bytes."""
    size = prefix.size

    def walk(buf: bytes, pos: int, end: int, state: WalkState) -> int:
        (n,) = prefix.unpack_from(buf, _advance(pos, size, end) - size)
        pos += size
        if n < 0:
            if n != -1:
                raise BoundsError(f"{what} length {n}")
            _null(nullable, what)
            return pos
        return _advance(pos, n, end)

    return walk


def _legacy_string(nullable: bool) -> Walker:
    return _legacy_length(_I16, "string", nullable)


def _legacy_bytes(nullable: bool) -> Walker:
    return _legacy_length(_I32, "bytes", nullable)


def _compact_bytes(nullable: bool) -> Walker:
    def walk(buf: bytes, pos: int, end: int, state: WalkState) -> int:
        n, pos = read_uvarint(buf, pos, end)
        if n == 0:
            _null(nullable, "string or bytes")
            return pos
        return _advance(pos, n - 1, end)

    return walk


def _array(item: Walker, item_min: int, flexible: bool, nullable: bool, fixed: bool = False) -> Walker:
    """`fixed`: each item is exactly item_min bytes with nothing to check inside (ints, uuids)."""
    item_min = max(item_min, 1)

    def walk(buf: bytes, pos: int, end: int, state: WalkState) -> int:
        if flexible:
            n, pos = read_uvarint(buf, pos, end)
            count = n - 1
        else:
            (count,) = _I32.unpack_from(buf, _advance(pos, 4, end) - 4)
            pos += 4
            if count < -1:
                raise BoundsError(f"array length {count}")
        if count == -1:
            _null(nullable, "array")
            return pos
        if count * item_min > end - pos:
            raise BoundsError(
                f"array of {count} elements needs at least {count * item_min} bytes, "
                f"{end - pos} remain"
            )
        state.count(count)
        if fixed:  # every item item_min bytes, all of them present (checked above)
            return pos + count * item_min
        for _ in range(count):
            pos = item(buf, pos, end, state)
        return pos

    return walk


def _nullable_struct(inner: Walker) -> Walker:
    # KIP-893: a nullable struct is an int8 marker (-1 null, 1 present) and the struct.
    def walk(buf: bytes, pos: int, end: int, state: WalkState) -> int:
        (marker,) = _I8.unpack_from(buf, _advance(pos, 1, end) - 1)
        pos += 1
        if marker == -1:
            return pos
        if marker != 1:
            raise BoundsError(f"nullable struct marker {marker}")
        return inner(buf, pos, end, state)

    return walk


def _skip_tagged_fields(
    buf: bytes, pos: int, end: int, known: dict[int, Walker], state: WalkState
) -> int:
    if pos < end and buf[pos] == 0:  # none: nearly every section
        return pos + 1
    count_start = pos
    count, pos = read_uvarint(buf, pos, end)
    count_end = pos
    drop: list[tuple[int, int]] = []
    if count * 2 > end - pos:  # a tag and a size, one byte each at least
        raise BoundsError(f"{count} tagged fields cannot fit in {end - pos} bytes")
    for _ in range(count):
        tag_start = pos
        tag, pos = read_uvarint(buf, pos, end)
        size, pos = read_uvarint(buf, pos, end)
        field_end = _advance(pos, size, end)
        walker = known.get(tag)
        if walker is None:
            drop.append((tag_start, field_end))
        else:
            inner = WalkState()  # unknown tags inside: a size prefix would have to shrink
            if walker(buf, pos, field_end, inner) != field_end or inner.unknown:
                raise BoundsError(f"tagged field {tag} does not hold exactly its {size} bytes")
            state.count(inner.elements)
        pos = field_end
    if drop:
        state.unknown.append(TagSection(count_start, count_end, count - len(drop), tuple(drop)))
    return pos


def _unwrap(tp: Any) -> tuple[Any, bool, bool]:
    """(inner type, is an array, is nullable) of a kio field annotation."""
    nullable = False
    if get_origin(tp) in (UnionType, Union) and NoneType in get_args(tp):
        nullable = True
        tp = next(a for a in get_args(tp) if a is not NoneType)
    if get_origin(tp) is tuple:
        args = get_args(tp)
        if len(args) == 2 and isinstance(args[1], EllipsisType):
            inner = args[0]
            if get_origin(inner) in (UnionType, Union):
                inner = next(a for a in get_args(inner) if a is not NoneType)
            return inner, True, nullable
    return tp, False, nullable


_I64 = struct.Struct(">q")
# kio reads an int64 duration (OffsetCommit's retention_time) as a timedelta through its
# microseconds, an int64 too; Kafka accepts any int64, so a larger one is clamped (to
# 292,000 years: still "keep it", the only meaning such a value can have).
MAX_TIMEDELTA_MS = (2**63 - 1) // 1000


def _timedelta_i64(buf: bytes, pos: int, end: int, state: WalkState) -> int:
    new_pos = _advance(pos, 8, end)
    (value,) = _I64.unpack_from(buf, pos)
    if abs(value) > MAX_TIMEDELTA_MS:
        state.clamp.append(pos)
    return new_pos


def _datetime_i64(buf: bytes, pos: int, end: int, state: WalkState) -> int:
    new_pos = _advance(pos, 8, end)
    if buf[pos] & 0x80:  # negative: Kafka's -1 for "none" (a transaction not in progress)
        state.negative_times.append(pos)
    return new_pos


def zero_times(buf: bytes, positions: list[int]) -> bytes:
    """`buf` with the negative timestamps at `positions` set to 0: kio's datetime cannot hold
    Kafka's -1, and 0 (the epoch) reads as "none" to every caller of ours."""
    out = bytearray(buf)
    for pos in positions:
        _I64.pack_into(out, pos, 0)
    return bytes(out)


def clamp_durations(buf: bytes, positions: list[int]) -> bytes:
    """`buf` with the int64 durations at `positions` clamped into timedelta's range."""
    out = bytearray(buf)
    for pos in positions:
        (value,) = _I64.unpack_from(out, pos)
        _I64.pack_into(out, pos, MAX_TIMEDELTA_MS if value > 0 else -MAX_TIMEDELTA_MS)
    return bytes(out)


def _scalar(kafka_type: str, flexible: bool, nullable: bool) -> tuple[Walker, int]:
    """Walker and minimum encoded size of one primitive value."""
    if kafka_type == "timedelta_i64":
        return _timedelta_i64, 8
    if kafka_type == "datetime_i64" and not nullable:
        return _datetime_i64, 8
    size = _FIXED.get(kafka_type)
    if size is not None:
        return _fixed(size), size
    if kafka_type in ("string", "bytes", "records"):
        if flexible:
            return _compact_bytes(nullable), 1
        if kafka_type == "string":
            return _legacy_string(nullable), 2
        return _legacy_bytes(nullable), 4
    raise BoundsError(f"no length check for kafka_type {kafka_type!r}")


def _field_walker(field: Any, flexible: bool, tagged: bool) -> tuple[Walker, int]:
    inner, is_array, nullable = _unwrap(field.type)
    if tagged:
        nullable = nullable and is_array  # a tagged field's absence is its null
    if isinstance(inner, type) and is_dataclass(inner):
        item, item_min = _entity_walker(inner), _entity_min(inner)
        if not is_array:
            if nullable:
                return _nullable_struct(item), 1
            return item, item_min
    else:
        item, item_min = _scalar(field.metadata["kafka_type"], flexible, nullable and not is_array)
        if not is_array:
            return item, item_min
        fixed = _plain_size(field.metadata["kafka_type"]) is not None
        return _array(item, item_min, flexible, nullable, fixed), 1 if flexible else 4
    return _array(item, item_min, flexible, nullable), 1 if flexible else 4


def _plain_size(kafka_type: Any) -> int | None:
    """The size of a value that is always that many bytes with nothing in them to check (an
    int, a uuid; not the int64 times kio reads as timedelta or datetime, which are checked)."""
    if not isinstance(kafka_type, str) or kafka_type in ("timedelta_i64", "datetime_i64"):
        return None
    return _FIXED.get(kafka_type)


def _fixed_size(field: Any) -> int | None:
    """The size of a field that is one such value (not an array, not nullable)."""
    if get_origin(field.type) in (UnionType, Union, tuple):
        return None
    return _plain_size(field.metadata.get("kafka_type"))


@cache
def _entity_walker(cls: type) -> Walker:
    flexible = bool(cls.__flexible__)  # type: ignore[attr-defined]
    plain: list[Walker] = []
    tagged: dict[int, Walker] = {}
    run = 0  # bytes of fixed-size fields in a row: one check for all of them
    for field in fields(cls):
        tag = field.metadata.get("tag")
        size = _fixed_size(field) if tag is None else None
        if size is not None:
            run += size
            continue
        if run:
            plain.append(_fixed(run))
            run = 0
        walker, _ = _field_walker(field, flexible, tag is not None)
        if tag is None:
            plain.append(walker)
        else:
            tagged[int(tag)] = walker
    if run:
        plain.append(_fixed(run))
    walkers = tuple(plain)

    def walk(buf: bytes, pos: int, end: int, state: WalkState) -> int:
        for w in walkers:
            pos = w(buf, pos, end, state)
        if flexible:
            pos = _skip_tagged_fields(buf, pos, end, tagged, state)
        return pos

    return walk


@cache
def _entity_min(cls: type) -> int:
    flexible = bool(cls.__flexible__)  # type: ignore[attr-defined]
    total = 1 if flexible else 0
    for field in fields(cls):
        if field.metadata.get("tag") is None:
            total += _field_walker(field, flexible, False)[1]
    return total


def skip_tagged_fields(buf: bytes, pos: int) -> int:
    """Past the tagged fields at `pos` (a flexible header's), each checked against the frame."""
    return _skip_tagged_fields(buf, pos, len(buf), {}, WalkState())
