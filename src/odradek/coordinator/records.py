"""The records of __consumer_offsets, in Kafka's own key/value schemas.

Keys start with an int16 record type (Kafka's "version" of the key): 0 and 1 are
OffsetCommitKey, 2 is GroupMetadataKey. Values start with their schema version;
odradek writes OffsetCommitValue v3 and GroupMetadataValue v3 (the last
non-flexible versions, which every Kafka since 2.3 reads) and reads v0-v3, so a
Kafka tool pointed at odradek's data dir, and odradek at Kafka's, understand it.
Schemas: group-coordinator/src/main/resources/common/message/*.json in Kafka.
"""

from __future__ import annotations

import functools
import io
import struct
from dataclasses import dataclass, field

OFFSET_COMMIT_KEY_V1 = 1
GROUP_METADATA_KEY = 2
OFFSET_COMMIT_VALUE_VERSION = 3
GROUP_METADATA_VALUE_VERSION = 3

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


class RecordFormatError(ValueError):
    """A __consumer_offsets record this coordinator cannot read."""


@dataclass(frozen=True, slots=True)
class OffsetKey:
    group: str
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class GroupKey:
    group: str


@dataclass(slots=True)
class OffsetValue:
    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp: int = -1
    expire_timestamp: int = -1


@dataclass(slots=True)
class MemberValue:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout: int
    session_timeout: int
    subscription: bytes
    assignment: bytes


@dataclass(slots=True)
class GroupValue:
    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp: int = -1
    members: list[MemberValue] = field(default_factory=list)


# -- writing -------------------------------------------------------------------


def _str(buf: io.BytesIO, value: str | None) -> None:
    if value is None:
        buf.write(_I16.pack(-1))
        return
    data = value.encode()
    buf.write(_I16.pack(len(data)))
    buf.write(data)


def _bytes(buf: io.BytesIO, value: bytes | None) -> None:
    if value is None:
        buf.write(_I32.pack(-1))
        return
    buf.write(_I32.pack(len(value)))
    buf.write(value)


def offset_key(group: str, topic: str, partition: int) -> bytes:
    buf = io.BytesIO()
    buf.write(_I16.pack(OFFSET_COMMIT_KEY_V1))
    _str(buf, group)
    _str(buf, topic)
    buf.write(_I32.pack(partition))
    return buf.getvalue()


def group_key(group: str) -> bytes:
    buf = io.BytesIO()
    buf.write(_I16.pack(GROUP_METADATA_KEY))
    _str(buf, group)
    return buf.getvalue()


def offset_value(value: OffsetValue) -> bytes:
    buf = io.BytesIO()
    buf.write(_I16.pack(OFFSET_COMMIT_VALUE_VERSION))
    buf.write(_I64.pack(value.offset))
    buf.write(_I32.pack(value.leader_epoch))
    _str(buf, value.metadata or "")
    buf.write(_I64.pack(value.commit_timestamp))
    return buf.getvalue()


def group_value(value: GroupValue) -> bytes:
    buf = io.BytesIO()
    buf.write(_I16.pack(GROUP_METADATA_VALUE_VERSION))
    _str(buf, value.protocol_type)
    buf.write(_I32.pack(value.generation))
    _str(buf, value.protocol)
    _str(buf, value.leader)
    buf.write(_I64.pack(value.current_state_timestamp))
    buf.write(_I32.pack(len(value.members)))
    for m in value.members:
        _str(buf, m.member_id)
        _str(buf, m.group_instance_id)
        _str(buf, m.client_id)
        _str(buf, m.client_host)
        buf.write(_I32.pack(m.rebalance_timeout))
        buf.write(_I32.pack(m.session_timeout))
        _bytes(buf, m.subscription)
        _bytes(buf, m.assignment)
    return buf.getvalue()


# -- reading -------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _unpack(self, s: struct.Struct) -> int:
        if self.pos + s.size > len(self.data):
            raise RecordFormatError("record ends early")
        (v,) = s.unpack_from(self.data, self.pos)
        self.pos += s.size
        return int(v)

    def i16(self) -> int:
        return self._unpack(_I16)

    def i32(self) -> int:
        return self._unpack(_I32)

    def i64(self) -> int:
        return self._unpack(_I64)

    def string(self) -> str | None:
        n = self.i16()
        if n < 0:
            return None
        raw = self.data[self.pos : self.pos + n]
        if len(raw) != n:
            raise RecordFormatError("string runs past the record")
        self.pos += n
        return raw.decode()

    def bytes_(self) -> bytes:
        n = self.i32()
        if n < 0:
            return b""
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(raw)


def read_key(data: bytes) -> OffsetKey | GroupKey:
    r = _Reader(data)
    kind = r.i16()
    if kind in (0, 1):
        return OffsetKey(r.string() or "", r.string() or "", r.i32())
    if kind == GROUP_METADATA_KEY:
        return GroupKey(r.string() or "")
    raise RecordFormatError(f"unknown __consumer_offsets key type {kind}")


def read_offset_value(data: bytes) -> OffsetValue:
    r = _Reader(data)
    version = r.i16()
    if not 0 <= version <= 3:
        raise RecordFormatError(f"OffsetCommitValue v{version} is not supported")
    offset = r.i64()
    epoch = r.i32() if version >= 3 else -1
    metadata = r.string() or ""
    commit_ts = r.i64()
    expire_ts = r.i64() if version == 1 else -1
    return OffsetValue(offset, epoch, metadata, commit_ts, expire_ts)


def read_group_value(data: bytes) -> GroupValue:
    r = _Reader(data)
    version = r.i16()
    if not 0 <= version <= 3:
        raise RecordFormatError(f"GroupMetadataValue v{version} is not supported")
    value = GroupValue(r.string() or "", r.i32(), r.string(), r.string())
    if version >= 2:
        value.current_state_timestamp = r.i64()
    for _ in range(r.i32()):
        member_id = r.string() or ""
        instance = r.string() if version >= 3 else None
        client_id = r.string() or ""
        client_host = r.string() or ""
        rebalance = r.i32() if version >= 1 else -1
        session = r.i32()
        value.members.append(
            MemberValue(member_id, instance, client_id, client_host, rebalance, session, r.bytes_(), r.bytes_())
        )
        if rebalance < 0:
            value.members[-1].rebalance_timeout = session
    return value


def java_string_hash(value: str) -> int:
    """Java's String.hashCode (over UTF-16 code units, int32 overflow)."""
    h = 0
    data = value.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


@functools.lru_cache(maxsize=65536)
def partition_for(group_id: str, num_partitions: int) -> int:
    """Kafka's Utils.abs(groupId.hashCode) % offsets.topic.num.partitions (cached: every
    request of a group or transaction asks, and the hash walks the id char by char)."""
    h = java_string_hash(group_id)
    h = 0 if h == -(1 << 31) else abs(h)
    return h % num_partitions


def subscribed_topics(protocol_type: str, subscription: bytes) -> set[str]:
    """Topics of a ConsumerProtocolSubscription (any version: topics come first)."""
    if protocol_type != "consumer" or not subscription:
        return set()
    try:
        r = _Reader(subscription)
        r.i16()
        return {r.string() or "" for _ in range(r.i32())}
    except (RecordFormatError, UnicodeDecodeError):
        return set()


def assigned_partitions(assignment: bytes) -> dict[str, list[int]]:
    """Partitions of a ConsumerProtocolAssignment (version, [topic, [partition]], user data)."""
    result: dict[str, list[int]] = {}
    if not assignment:
        return result
    try:
        r = _Reader(assignment)
        r.i16()
        for _ in range(r.i32()):
            topic = r.string() or ""
            result[topic] = [r.i32() for _ in range(r.i32())]
    except (RecordFormatError, UnicodeDecodeError):
        pass
    return result
