"""The __consumer_offsets records of KIP-848 consumer groups, in Kafka's schemas.

Keys are an int16 record type and non-flexible strings (as for classic groups, see
records.py); values are version 0 of Kafka's flexible schemas (compact strings and
arrays, empty tagged fields; unknown tagged fields are skipped when read):

  3 ConsumerGroupMetadata               group epoch
  4 ConsumerGroupPartitionMetadata      the subscribed topics' ids, names, partition counts
  5 ConsumerGroupMemberMetadata         a member's subscription, client, rebalance timeout
  6 ConsumerGroupTargetAssignmentMetadata  the assignment epoch
  7 ConsumerGroupTargetAssignmentMember    a member's target partitions
  8 ConsumerGroupCurrentMemberAssignment   a member's epoch, state, owned and revoking partitions

Schemas: group-coordinator/src/main/resources/common/message/ConsumerGroup*.json in Kafka.
Type 16 (ConsumerGroupRegularExpression, Kafka's resolved regex cache) is read and
ignored: odradek resolves regexes against the live topic list.
"""

from __future__ import annotations

import io
import struct
import uuid
from dataclasses import dataclass, field

from odradek.coordinator.records import RecordFormatError

CONSUMER_GROUP_METADATA = 3
CONSUMER_GROUP_PARTITION_METADATA = 4
CONSUMER_GROUP_MEMBER_METADATA = 5
CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA = 6
CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER = 7
CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT = 8
CONSUMER_GROUP_REGULAR_EXPRESSION = 16
CONSUMER_RECORD_TYPES = frozenset({3, 4, 5, 6, 7, 8, 16})
_WITH_MEMBER = frozenset({5, 7, 8})

Partitions = dict[uuid.UUID, set[int]]


@dataclass(frozen=True, slots=True)
class ConsumerGroupKey:
    kind: int
    group: str
    member_id: str | None = None


@dataclass(slots=True)
class MemberMetadataValue:
    instance_id: str | None
    rack_id: str | None
    client_id: str
    client_host: str
    subscribed_topic_names: list[str]
    subscribed_topic_regex: str | None
    rebalance_timeout_ms: int
    server_assignor: str | None
    # tagged field 0, ClassicMemberMetadata: (session timeout, [(protocol, metadata)]) of a
    # member that speaks the classic protocol inside a consumer group; None for the others
    classic: tuple[int, list[tuple[str, bytes]]] | None = None


@dataclass(slots=True)
class CurrentAssignmentValue:
    member_epoch: int
    previous_member_epoch: int
    state: int
    assigned: Partitions = field(default_factory=dict)
    pending_revocation: Partitions = field(default_factory=dict)


# -- writing ----------------------------------------------------------------------


def _uvarint(buf: io.BytesIO, value: int) -> None:
    while value & ~0x7F:
        buf.write(bytes([(value & 0x7F) | 0x80]))
        value >>= 7
    buf.write(bytes([value]))


def _cstr(buf: io.BytesIO, value: str | None) -> None:
    if value is None:
        _uvarint(buf, 0)
        return
    data = value.encode()
    _uvarint(buf, len(data) + 1)
    buf.write(data)


def _partitions(buf: io.BytesIO, value: Partitions) -> None:
    topics = [(t, sorted(ps)) for t, ps in sorted(value.items(), key=lambda kv: str(kv[0])) if ps]
    _uvarint(buf, len(topics) + 1)
    for topic_id, parts in topics:
        buf.write(topic_id.bytes)
        _uvarint(buf, len(parts) + 1)
        buf.writelines(struct.pack(">i", p) for p in parts)
        _uvarint(buf, 0)  # tagged fields of the struct


def key(kind: int, group: str, member_id: str | None = None) -> bytes:
    buf = io.BytesIO()
    buf.write(struct.pack(">h", kind))
    for s in (group, member_id) if kind in _WITH_MEMBER else (group,):
        data = (s or "").encode()
        buf.write(struct.pack(">h", len(data)))
        buf.write(data)
    return buf.getvalue()


def _value() -> io.BytesIO:
    buf = io.BytesIO()
    buf.write(struct.pack(">h", 0))
    return buf


def _end(buf: io.BytesIO) -> bytes:
    _uvarint(buf, 0)  # no tagged fields
    return buf.getvalue()


def group_metadata_value(epoch: int) -> bytes:
    buf = _value()
    buf.write(struct.pack(">i", epoch))
    return _end(buf)


def target_metadata_value(assignment_epoch: int) -> bytes:
    return group_metadata_value(assignment_epoch)  # one int32, the same layout


def partition_metadata_value(topics: dict[str, tuple[uuid.UUID, int]]) -> bytes:
    buf = _value()
    _uvarint(buf, len(topics) + 1)
    for name, (topic_id, count) in sorted(topics.items()):
        buf.write(topic_id.bytes)
        _cstr(buf, name)
        buf.write(struct.pack(">i", count))
        _uvarint(buf, 1)  # PartitionMetadata: empty (deprecated since Kafka 4.0)
        _uvarint(buf, 0)
    return _end(buf)


def member_metadata_value(v: MemberMetadataValue) -> bytes:
    buf = _value()
    _cstr(buf, v.instance_id)
    _cstr(buf, v.rack_id)
    _cstr(buf, v.client_id)
    _cstr(buf, v.client_host)
    _uvarint(buf, len(v.subscribed_topic_names) + 1)
    for name in v.subscribed_topic_names:
        _cstr(buf, name)
    _cstr(buf, v.subscribed_topic_regex)
    buf.write(struct.pack(">i", v.rebalance_timeout_ms))
    _cstr(buf, v.server_assignor)
    if v.classic is None:
        return _end(buf)
    body = io.BytesIO()
    _uvarint(body, 1)  # a tagged nullable struct: present
    session_ms, protocols = v.classic
    body.write(struct.pack(">i", session_ms))
    _uvarint(body, len(protocols) + 1)
    for name, metadata in protocols:
        _cstr(body, name)
        _uvarint(body, len(metadata) + 1)
        body.write(metadata)
        _uvarint(body, 0)
    _uvarint(body, 0)
    _uvarint(buf, 1)  # one tagged field: tag 0, its size, the struct
    _uvarint(buf, 0)
    _uvarint(buf, len(body.getvalue()))
    buf.write(body.getvalue())
    return buf.getvalue()


def target_member_value(partitions: Partitions) -> bytes:
    buf = _value()
    _partitions(buf, partitions)
    return _end(buf)


def current_assignment_value(v: CurrentAssignmentValue) -> bytes:
    buf = _value()
    buf.write(struct.pack(">iib", v.member_epoch, v.previous_member_epoch, v.state))
    _partitions(buf, v.assigned)
    _partitions(buf, v.pending_revocation)
    return _end(buf)


# -- reading ----------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise RecordFormatError("record ends early")
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw

    def num(self, fmt: str) -> int:
        s = struct.Struct(fmt)
        return int(s.unpack(self.take(s.size))[0])

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 35:
                raise RecordFormatError("varint too long")

    def cstr(self) -> str | None:
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()

    def string(self) -> str:
        return self.take(self.num(">h")).decode()

    def tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())

    def partitions(self) -> Partitions:
        out: Partitions = {}
        for _ in range(max(self.uvarint() - 1, 0)):
            topic_id = uuid.UUID(bytes=self.take(16))
            out[topic_id] = {self.num(">i") for _ in range(max(self.uvarint() - 1, 0))}
            self.tags()
        return out

    def version(self) -> None:
        if self.num(">h") != 0:
            raise RecordFormatError("only version 0 of the consumer group records is known")


def read_key(data: bytes) -> ConsumerGroupKey:
    r = _Reader(data)
    kind = r.num(">h")
    group = r.string()
    return ConsumerGroupKey(kind, group, r.string() if kind in _WITH_MEMBER else None)


def read_epoch(data: bytes) -> int:
    """ConsumerGroupMetadataValue's group epoch, or the target assignment epoch."""
    r = _Reader(data)
    r.version()
    return r.num(">i")


def read_partition_metadata(data: bytes) -> dict[str, tuple[uuid.UUID, int]]:
    r = _Reader(data)
    r.version()
    topics = {}
    for _ in range(max(r.uvarint() - 1, 0)):
        topic_id = uuid.UUID(bytes=r.take(16))
        name = r.cstr() or ""
        count = r.num(">i")
        for _ in range(max(r.uvarint() - 1, 0)):  # PartitionMetadata (deprecated)
            r.num(">i")
            for _ in range(max(r.uvarint() - 1, 0)):
                r.cstr()
            r.tags()
        r.tags()
        topics[name] = (topic_id, count)
    return topics


def read_member_metadata(data: bytes) -> MemberMetadataValue:
    r = _Reader(data)
    r.version()
    instance_id, rack_id, client_id, client_host = r.cstr(), r.cstr(), r.cstr() or "", r.cstr() or ""
    names = [r.cstr() or "" for _ in range(max(r.uvarint() - 1, 0))]
    value = MemberMetadataValue(instance_id, rack_id, client_id, client_host, names, r.cstr(), r.num(">i"), r.cstr())
    for _ in range(r.uvarint()):
        tag, size = r.uvarint(), r.uvarint()
        if tag != 0:
            r.take(size)
            continue
        if r.uvarint() <= 0:
            continue
        session_ms = r.num(">i")
        protocols = []
        for _ in range(max(r.uvarint() - 1, 0)):
            name = r.cstr() or ""
            protocols.append((name, r.take(max(r.uvarint() - 1, 0))))
            r.tags()
        r.tags()
        value.classic = (session_ms, protocols)
    return value


def read_target_member(data: bytes) -> Partitions:
    r = _Reader(data)
    r.version()
    return r.partitions()


def read_current_assignment(data: bytes) -> CurrentAssignmentValue:
    r = _Reader(data)
    r.version()
    epoch, previous, state = r.num(">i"), r.num(">i"), r.num(">b")
    return CurrentAssignmentValue(epoch, previous, state, r.partitions(), r.partitions())
