"""Hostile variants of captured request frames: the network fuzzer's mutation engine.

A captured frame is first mapped with kio's generated schemas (the same dataclasses the
broker decodes with): where every length prefix sits (array counts, compact-array
uvarints, string and bytes lengths, records sizes, tagged-field counts and sizes), where
every fixed-width number sits, and, inside a records field, each record batch's header
fields and each record's varints. Mutations then lie precisely: one prefix set to a huge,
negative, null or off-by-one value while every enclosing size stays true (and, by
default, the batch CRC is recomputed, so the lie gets past the checksum), a nullable field
replaced by null, an array element duplicated, a number set to an extreme. Blind mutations
(flipped bits, truncation, inserted bytes, splices of two frames, a header on the wrong
body, random versions) need no map and also cover frames the map cannot read.

Sessions: a captured connection, or a bag of frames from several; some frames mutated,
some duplicated, reordered or dropped; a frame may go out with a lying size prefix or in
small pieces. Everything comes from one random.Random(seed).
"""

from __future__ import annotations

import dataclasses
import json
import random
import struct
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import crc32c
from kio.index import KioIndexError, load_request_schema
from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveTupleField,
    classify_field,
    get_field_tag,
)

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus" / "sessions.json"

_FIXED = {"bool": 1, "int8": 1, "int16": 2, "uint16": 2, "error_code": 2, "int32": 4, "timedelta_i32": 4,
          "int64": 8, "timedelta_i64": 8, "datetime_i64": 8, "float64": 8, "uuid": 16}
_SIZED = ("string", "bytes", "records", "tagged_size", "batch_length", "record_length", "record_key",
          "record_value", "header_key", "header_value")


@dataclass(slots=True)
class Span:
    """One field of a frame: [start, end); a length-prefixed field's prefix is [start, body)."""
    kind: str  # a kafka_type, 'array', 'tags', 'tagged_size', 'nullable_struct', or a record-batch field
    name: str
    start: int
    body: int
    end: int
    value: int | None = None  # the count or length a prefix says (-1: null), or a fixed field's number
    encoding: str = ""  # 'i16', 'i32', 'uvarint' (compact: length + 1), 'varint' (zigzag), 'fixed'
    parents: tuple[int, ...] = ()  # enclosing byte-size prefixes (outermost first): kept true when we resize
    elements: list[tuple[int, int]] = field(default_factory=list)  # an array's elements
    batch: int | None = None  # start of the record batch this field is in


class FrameMap:
    """Every field of one request frame (without its 4-byte size prefix)."""

    def __init__(self, frame: bytes) -> None:
        self.buf = frame
        self.spans: list[Span] = []
        self.batches: list[int] = []  # start of each record batch
        self._sizes: list[int] = []  # stack of open byte-size prefixes

    # -- primitives ---------------------------------------------------------------

    def _need(self, pos: int, n: int) -> None:
        if n < 0 or pos + n > len(self.buf):
            raise ValueError(f"{n} bytes at {pos} run past the frame's {len(self.buf)}")

    def _uvarint(self, pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            self._need(pos, 1)
            b = self.buf[pos]
            value |= (b & 0x7F) << shift
            pos += 1
            if not b & 0x80:
                return value, pos
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def _varint(self, pos: int) -> tuple[int, int]:
        raw, pos = self._uvarint(pos)
        return (raw >> 1) ^ -(raw & 1), pos

    def _add(self, span: Span) -> int:
        span.parents = tuple(self._sizes)
        self.spans.append(span)
        return len(self.spans) - 1

    def _fixed(self, kafka_type: str, name: str, pos: int) -> int:
        width = _FIXED[kafka_type]
        self._need(pos, width)
        value = None
        if kafka_type != "uuid" and kafka_type != "float64":
            fmt = {1: ">b", 2: ">H" if kafka_type == "uint16" else ">h", 4: ">i", 8: ">q"}[width]
            (value,) = struct.unpack_from(fmt, self.buf, pos)
        self._add(Span(kafka_type, name, pos, pos, pos + width, value, "fixed"))
        return pos + width

    def _length(self, pos: int, compact: bool, wide: bool) -> tuple[int, int, str]:
        """(length or -1 for null, position after the prefix, encoding)."""
        if compact:
            raw, after = self._uvarint(pos)
            return raw - 1, after, "uvarint"
        if wide:
            self._need(pos, 4)
            return struct.unpack_from(">i", self.buf, pos)[0], pos + 4, "i32"
        self._need(pos, 2)
        return struct.unpack_from(">h", self.buf, pos)[0], pos + 2, "i16"

    def _sized(self, kafka_type: str, name: str, pos: int, compact: bool) -> int:
        n, body, enc = self._length(pos, compact, wide=kafka_type != "string")
        end = body + max(n, 0)
        self._need(body, max(n, 0))
        index = self._add(Span(kafka_type, name, pos, body, end, n, enc))
        if kafka_type == "records" and n > 0:
            self._sizes.append(index)
            self._records(body, end)
            self._sizes.pop()
        return end

    # -- schema walk --------------------------------------------------------------

    def walk(self) -> FrameMap:
        api_key, version = struct.unpack_from(">hh", self.buf, 0)
        cls = load_request_schema(api_key, version)
        pos = self._fixed("int16", "header.api_key", 0)
        pos = self._fixed("int16", "header.api_version", pos)
        pos = self._fixed("int32", "header.correlation_id", pos)
        pos = self._sized("string", "header.client_id", pos, compact=False)  # never compact (KIP-482)
        if cls.__flexible__:
            pos = self._tags(pos, None, "header")
        self.body_start = pos
        self.entity(cls, pos, cls.__name__)
        return self

    def entity(self, cls: type, pos: int, path: str) -> int:
        flexible = cls.__flexible__
        tagged: dict[int, dataclasses.Field[Any]] = {}
        for f in dataclasses.fields(cls):
            tag = get_field_tag(f)
            if tag is not None:
                tagged[int(tag)] = f
                continue
            pos = self._field(f, pos, flexible, f"{path}.{f.name}")
        if flexible:
            pos = self._tags(pos, tagged, path)
        return pos

    def _field(self, f: dataclasses.Field[Any], pos: int, flexible: bool, path: str) -> int:
        fc = classify_field(f)
        if fc.is_array:
            n, body, enc = self._length(pos, flexible, wide=True)
            span = Span("array", path, pos, body, body, n, enc)
            self._add(span)
            at = body
            for _ in range(max(n, 0)):
                start = at
                if isinstance(fc, EntityTupleField):
                    at = self.entity(fc.type_, at, path + "[]")
                else:
                    assert isinstance(fc, PrimitiveTupleField)
                    at = self._primitive(f.metadata["kafka_type"], path + "[]", at, flexible)
                span.elements.append((start, at))
            span.end = at
            return at
        if isinstance(fc, EntityField):
            if _nullable(f):  # KIP-893: an int8 marker, -1 for null
                self._need(pos, 1)
                marker = struct.unpack_from(">b", self.buf, pos)[0]
                self._add(Span("nullable_struct", path, pos, pos + 1, pos + 1, marker, "fixed"))
                return pos + 1 if marker < 0 else self.entity(fc.type_, pos + 1, path)
            return self.entity(fc.type_, pos, path)
        return self._primitive(f.metadata["kafka_type"], path, pos, flexible)

    def _primitive(self, kafka_type: str, name: str, pos: int, flexible: bool) -> int:
        if kafka_type in _FIXED:
            return self._fixed(kafka_type, name, pos)
        return self._sized(kafka_type, name, pos, compact=flexible)

    def _tags(self, pos: int, known: dict[int, dataclasses.Field[Any]] | None, path: str) -> int:
        count, body = self._uvarint(pos)
        span = Span("tags", path + ".<tags>", pos, body, body, count, "uvarint")
        self._add(span)
        at = body
        for _ in range(count):
            tag, size_pos = self._uvarint(at)
            size, value_pos = self._uvarint(size_pos)
            self._need(value_pos, size)
            index = self._add(Span("tagged_size", f"{path}.<tag {tag}>", size_pos, value_pos, value_pos + size,
                                   size, "uvarint"))
            f = (known or {}).get(tag)
            if f is not None:
                self._sizes.append(index)
                try:
                    self._field(f, value_pos, True, f"{path}.{f.name}")
                except ValueError:
                    pass  # a tagged value we cannot map is still a size we can lie about
                self._sizes.pop()
            span.elements.append((at, value_pos + size))
            at = value_pos + size
        span.end = at
        return at

    # -- record batches (Kafka's v2 format: 61-byte header, then records) ---------

    def _records(self, pos: int, end: int) -> None:
        while end - pos >= 61:
            (length,) = struct.unpack_from(">i", self.buf, pos + 8)
            stop = pos + 12 + length
            if length < 49 or stop > end:
                return
            self.batches.append(pos)
            index = self._add(Span("batch_length", "batch.length", pos + 8, pos + 12, stop, length, "i32", batch=pos))
            self._sizes.append(index)
            for off, kind, name in ((0, "int64", "batch.base_offset"), (12, "int32", "batch.leader_epoch"),
                                    (16, "int8", "batch.magic"), (21, "int16", "batch.attributes"),
                                    (23, "int32", "batch.last_offset_delta"), (27, "int64", "batch.base_timestamp"),
                                    (35, "int64", "batch.max_timestamp"), (43, "int64", "batch.producer_id"),
                                    (51, "int16", "batch.producer_epoch"), (53, "int32", "batch.base_sequence")):
                self._fixed(kind, name, pos + off)
                self.spans[-1].batch = pos
            count_span = self._add(Span("record_count", "batch.record_count", pos + 57, pos + 61, stop,
                                        struct.unpack_from(">i", self.buf, pos + 57)[0], "i32", batch=pos))
            attributes = struct.unpack_from(">h", self.buf, pos + 21)[0]
            if attributes & 0x07 == 0:  # uncompressed: the records themselves can be mapped
                try:
                    self._batch_records(pos, pos + 61, stop, self.spans[count_span].value or 0)
                except ValueError:
                    pass
            self._sizes.pop()
            pos = stop

    def _batch_records(self, batch: int, pos: int, stop: int, count: int) -> None:
        for _ in range(min(count, 1000)):
            if pos >= stop:
                return
            length, body = self._varint(pos)
            index = self._add(Span("record_length", "record.length", pos, body, body + length, length, "varint",
                                   batch=batch))
            self._sizes.append(index)
            at = body + 1  # attributes
            for name in ("record.timestamp_delta", "record.offset_delta"):
                value, after = self._varint(at)
                self._add(Span("varint", name, at, after, after, value, "varint", batch=batch))
                at = after
            for name in ("record_key", "record_value"):
                n, after = self._varint(at)
                self._add(Span(name, name.replace("_", "."), at, after, after + max(n, 0), n, "varint", batch=batch))
                at = after + max(n, 0)
            headers, after = self._varint(at)
            self._add(Span("header_count", "record.headers", at, after, after, headers, "varint", batch=batch))
            at = after
            for _ in range(min(headers, 100)):
                for name in ("header_key", "header_value"):
                    n, after = self._varint(at)
                    self._add(Span(name, name.replace("_", "."), at, after, after + max(n, 0), n, "varint",
                                   batch=batch))
                    at = after + max(n, 0)
            self._sizes.pop()
            pos = body + length


def _nullable(f: dataclasses.Field[Any]) -> bool:
    from kio.serial._introspect import is_optional

    return is_optional(f)


@cache
def frame_map(frame: bytes) -> FrameMap | None:
    """The map of a frame, or None where kio's schemas cannot read it (then only blind mutations)."""
    try:
        return FrameMap(frame).walk()
    except (ValueError, KeyError, IndexError, struct.error, KioIndexError):  # no schema, or not following it
        return None


# -- encoding ---------------------------------------------------------------------

def uvarint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(value: int) -> bytes:
    return uvarint((value << 1) ^ (value >> 63))


def encode_length(span: Span, value: int) -> bytes:
    """`value` (a length or count; -1 is null) in the span's own prefix encoding."""
    if span.encoding == "uvarint":
        return uvarint(value + 1 if span.kind not in ("tags", "tagged_size") else value)
    if span.encoding == "varint":
        return varint(value)
    if span.encoding == "i16":
        return struct.pack(">h", _wrap(value, 16))
    return struct.pack(">i", _wrap(value, 32))


def _wrap(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def replace(m: FrameMap, start: int, end: int, new: bytes, parents: tuple[int, ...], fix_crc: bool = True) -> bytes:
    """m.buf with [start, end) replaced by `new`; enclosing byte sizes stay true, batch CRCs too."""
    out = bytearray(m.buf)
    out[start:end] = new
    delta = len(new) - (end - start)
    for index in reversed(parents):  # innermost first: each sits before what it measures
        p = m.spans[index]
        if delta:
            prefix = encode_length(p, (p.value or 0) + delta)
            old = p.body - p.start
            out[p.start:p.body] = prefix
            delta += len(prefix) - old
        if p.kind == "batch_length" and fix_crc and p.batch is not None:
            b = p.batch
            length = struct.unpack_from(">i", out, b + 8)[0]
            struct.pack_into(">I", out, b + 17, crc32c.crc32c(bytes(out[b + 21:b + 12 + length])))
    return bytes(out)


def fix_batch_crc(m: FrameMap, buf: bytes, span: Span) -> bytes:
    """After a same-width change inside a batch: the batch's CRC again matches (else the lie stops at the CRC)."""
    if span.batch is None:
        return buf
    out = bytearray(buf)
    b = span.batch
    length = struct.unpack_from(">i", out, b + 8)[0]
    if length < 9 or b + 12 + length > len(out):
        return buf
    struct.pack_into(">I", out, b + 17, crc32c.crc32c(bytes(out[b + 21:b + 12 + length])))
    return bytes(out)


# -- lies -------------------------------------------------------------------------

def length_lies(rng: random.Random, span: Span, remaining: int) -> int:
    current = span.value or 0
    choices = [-1, -2, 0, 1, current + 1, current - 1, current * 2 + 7, remaining + 1, remaining + 1000,
               0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x40000000, 0x01000000, -0x80000000, rng.randrange(1 << 31)]
    if span.encoding in ("uvarint", "varint"):
        choices += [33_000_000_000, (1 << 63) - 2, (1 << 62), 1 << 35, rng.randrange(1 << 63)]
    return rng.choice(choices)


_INTERESTING = {1: [0, 1, -1, 127, -128, 2, 16], 2: [0, 1, -1, 32767, -32768, 2, 255, 256, 1000, 9999],
                4: [0, 1, -1, 0x7FFFFFFF, -0x80000000, 0x40000000, 65535, 1 << 24, 1000000000, 1000, 9999, 100_000],
                8: [0, 1, -1, (1 << 63) - 1, -(1 << 63), 1 << 32, 10 ** 18, 0x7FFFFFFF]}


def set_number(m: FrameMap, span: Span, rng: random.Random) -> bytes:
    width = span.end - span.start
    values = _INTERESTING.get(width)
    if values is None:  # uuid, float64
        return replace(m, span.start, span.end, rng.randbytes(width), span.parents)
    value = rng.choice(values + [rng.randrange(-(1 << (8 * width - 1)), 1 << (8 * width - 1))])
    if span.kind == "uint16":
        value &= 0xFFFF
        new = struct.pack(">H", value)
    else:
        new = value.to_bytes(width, "big", signed=True)
    out = replace(m, span.start, span.end, new, ())
    return fix_batch_crc(m, out, span) if rng.random() < 0.8 else out


class Mutator:
    """Frame and session mutations drawn from one seeded generator."""

    def __init__(self, sessions: list[Captured], seed: int) -> None:
        self.sessions = [s for s in sessions if s.frames]
        self.frames = [f for s in self.sessions for f in s.frames]
        self.rng = random.Random(seed)
        self.used: dict[str, int] = {}
        weighted = [(self.lie_length, 25), (self.null_or_empty, 10), (self.duplicate_element, 5),
                    (self.number, 8), (self.random_version, 5), (self.flip, 15), (self.truncate, 7),
                    (self.insert_or_delete, 5), (self.splice, 7), (self.wrong_body, 3), (self.unknown_tag, 4),
                    (self.stacked, 6)]
        self._ops = [op for op, _ in weighted]
        self._weights = [w for _, w in weighted]

    # -- frames -----------------------------------------------------------------

    def mutate(self, frame: bytes) -> tuple[bytes, str]:
        op = self.rng.choices(self._ops, self._weights)[0]
        name = op.__name__
        self.used[name] = self.used.get(name, 0) + 1
        return op(frame), name

    def _spans(self, frame: bytes, kinds: tuple[str, ...] | None = None) -> tuple[FrameMap, list[Span]] | None:
        m = frame_map(frame)
        if m is None:
            return None
        spans = [s for s in m.spans if kinds is None or s.kind in kinds]
        return (m, spans) if spans else None

    def lie_length(self, frame: bytes) -> bytes:
        found = self._spans(frame, ("array", "string", "bytes", "records", "tags") + _SIZED + ("record_count",
                                                                                            "header_count"))
        if found is None:
            return self.flip(frame)
        m, spans = found
        span = self.rng.choice(spans)
        lie = length_lies(self.rng, span, len(frame) - span.body)
        out = replace(m, span.start, span.body, encode_length(span, lie), span.parents,
                      fix_crc=self.rng.random() < 0.8)
        return fix_batch_crc(m, out, span) if span.kind == "record_count" else out

    def null_or_empty(self, frame: bytes) -> bytes:
        found = self._spans(frame, ("array", "string", "bytes", "records", "nullable_struct", "record_key",
                                    "record_value"))
        if found is None:
            return self.truncate(frame)
        m, spans = found
        span = self.rng.choice(spans)
        if span.kind == "nullable_struct":
            return replace(m, span.start, span.end, b"\xff", span.parents)
        empty = self.rng.random() < 0.3
        new = encode_length(span, 0 if empty else -1)
        return replace(m, span.start, span.end, new, span.parents)

    def duplicate_element(self, frame: bytes) -> bytes:
        found = self._spans(frame, ("array",))
        spans = [s for s in found[1] if s.elements] if found else []
        if not spans or found is None:
            return self.splice(frame)
        m = found[0]
        span = self.rng.choice(spans)
        a, b = self.rng.choice(span.elements)
        times = self.rng.choice([1, 1, 2, 50])
        new = encode_length(span, (span.value or 0) + times) + m.buf[span.body:b] + m.buf[a:b] * times + m.buf[b:span.end]
        return replace(m, span.start, span.end, new, span.parents)

    def number(self, frame: bytes) -> bytes:
        found = self._spans(frame, tuple(k for k in _FIXED if k != "bool") + ("bool",))
        if found is None:
            return self.flip(frame)
        m, spans = found
        return set_number(m, self.rng.choice(spans), self.rng)

    def random_version(self, frame: bytes) -> bytes:
        version = self.rng.choice([-1, 0, 1, 2, 3, 4, 5, 9, 12, 13, 14, 15, 16, 17, 100, 32767, -32768,
                                   self.rng.randrange(-32768, 32768)])
        return frame[:2] + struct.pack(">h", version) + frame[4:]

    def flip(self, frame: bytes) -> bytes:
        out = bytearray(frame)
        for _ in range(self.rng.choice([1, 1, 2, 4, 8])):
            i = self.rng.randrange(len(out))
            if self.rng.random() < 0.5:
                out[i] ^= 1 << self.rng.randrange(8)
            else:
                out[i] = self.rng.choice([0x00, 0xFF, 0x7F, 0x80, 0x01, self.rng.randrange(256)])
        return bytes(out)

    def truncate(self, frame: bytes) -> bytes:
        m = frame_map(frame)
        if m is not None and self.rng.random() < 0.5:  # cut right after a length prefix
            span = self.rng.choice(m.spans)
            return frame[:span.body]
        return frame[:self.rng.randrange(len(frame))]

    def insert_or_delete(self, frame: bytes) -> bytes:
        i = self.rng.randrange(len(frame) + 1)
        if self.rng.random() < 0.5:
            n = self.rng.choice([1, 2, 4, 8, 100])
            filler = self.rng.choice([b"\xff", b"\x00", b"\x80", self.rng.randbytes(1)]) * n
            return frame[:i] + filler + frame[i:]
        return frame[:i] + frame[i + self.rng.choice([1, 2, 4, 16]):]

    def splice(self, frame: bytes) -> bytes:
        other = self.rng.choice(self.frames)
        return frame[:self.rng.randrange(len(frame) + 1)] + other[self.rng.randrange(len(other) + 1):]

    def wrong_body(self, frame: bytes) -> bytes:
        """This frame's header (api key, version) on another request's body."""
        other = self.rng.choice(self.frames)
        m, o = frame_map(frame), frame_map(other)
        head = m.body_start if m is not None else 8
        body = o.body_start if o is not None else 8
        return frame[:head] + other[body:]

    def unknown_tag(self, frame: bytes) -> bytes:
        found = self._spans(frame, ("tags",))
        if found is None:
            return self.insert_or_delete(frame)
        m, spans = found
        span = self.rng.choice(spans)
        tag = self.rng.choice([0, 1, 2, 3, 7, 100, 10_000, (1 << 31) - 1, (1 << 32) - 1])
        data = self.rng.randbytes(self.rng.choice([0, 1, 4, 64]))
        size = len(data) if self.rng.random() < 0.7 else self.rng.choice([len(data) + 1, 1 << 30, (1 << 32) - 1])
        added = uvarint(tag) + uvarint(size) + data
        times = self.rng.choice([1, 1, 2, 1000])
        new = uvarint((span.value or 0) + times) + m.buf[span.body:span.end] + added * times
        return replace(m, span.start, span.end, new, span.parents)

    def stacked(self, frame: bytes) -> bytes:
        ops = [op for op in self._ops if op is not self.stacked]
        for _ in range(self.rng.choice([2, 3, 4])):
            frame = self.rng.choice(ops)(frame) or frame
            if len(frame) < 8:
                break
        return frame

    # -- sessions ---------------------------------------------------------------

    def session(self) -> list[Send]:
        """One connection's worth of frames, some hostile, all for one listener."""
        rng = self.rng
        if rng.random() < 0.6:
            captured = rng.choice(self.sessions)
            frames, listener = list(captured.frames), captured.listener
            if rng.random() < 0.05:  # a session on the other listener: SASL frames unasked, requests before login
                listener = "" if listener else "sasl"
        else:
            frames = [rng.choice(self.frames) for _ in range(rng.choice([1, 2, 5, 10, 20]))]
            listener = "sasl" if rng.random() < 0.2 else ""
        roll = rng.random()
        if roll < 0.1 and frames:
            i = rng.randrange(len(frames))
            frames[i:i] = [frames[i]] * rng.choice([1, 3, 20])
        elif roll < 0.2 and len(frames) > 2:
            i = rng.randrange(len(frames) - 1)
            window = frames[i:i + rng.choice([2, 3, 8])]
            rng.shuffle(window)
            frames[i:i + len(window)] = window
        elif roll < 0.25 and len(frames) > 2:
            del frames[rng.randrange(len(frames))]
        p = rng.choice([0.2, 0.5, 1.0])
        out = []
        for frame in frames:
            how = ""
            if rng.random() < p:
                frame, how = self.mutate(frame)
            send = Send(frame, how, listener)
            roll = rng.random()
            if roll < 0.03:
                send.size = rng.choice([len(frame) + 1, len(frame) - 1, len(frame) + 100, max(len(frame) // 2, 1),
                                        0, -1, 7, 1 << 30, 0x7FFFFFFF, -0x80000000, rng.randrange(1 << 31)])
                send.how = (send.how + "+size_lie").lstrip("+")
            elif roll < 0.08:
                send.pieces = rng.choice([2, 3, 10])
            out.append(send)
        return out


@dataclass(frozen=True, slots=True)
class Captured:
    """One client connection's request frames, and the listener it came through ('' or 'sasl')."""
    frames: list[bytes]
    listener: str = ""


@dataclass(slots=True)
class Send:
    frame: bytes
    how: str  # the mutation, '' for a frame sent as captured
    listener: str = ""  # '' the PLAINTEXT listener, 'sasl' the SASL_PLAINTEXT one
    size: int | None = None  # a lying size prefix
    pieces: int = 1  # written in this many pieces

    def wire(self) -> bytes:
        size = len(self.frame) if self.size is None else self.size
        return struct.pack(">i", _wrap(size, 32)) + self.frame


# Waits a replayed request would spend parked, in ms: a long poll finds no new data and the
# captured JoinGroup's rebalance would wait for members long gone; short, a session goes on.
_SHORT_WAITS = {"FetchRequest.max_wait": 20, "JoinGroupRequest.rebalance_timeout": 200}


def short_waits(frame: bytes) -> bytes:
    m = frame_map(frame)
    if m is None:
        return frame
    out = bytearray(frame)
    for span in m.spans:
        if span.name in _SHORT_WAITS and span.end - span.start == 4:
            struct.pack_into(">i", out, span.start, _SHORT_WAITS[span.name])
    return bytes(out)


def load_corpus(path: Path = CORPUS, short: bool = True) -> list[Captured]:
    """The captured sessions; with `short`, their long polls and rebalance waits cut (see _SHORT_WAITS)."""
    doc = json.loads(path.read_text())
    out = []
    for s in doc["sessions"]:
        frames = [bytes.fromhex(f) for f in s["frames"]]
        out.append(Captured([short_waits(f) for f in frames] if short else frames, s.get("listener", "")))
    return out
