"""__share_group_state: where share-partition state survives a restart (KIP-932).

Kafka's share coordinator keeps, per (group, topic id, partition), a ShareSnapshot
record (key type 0) with the SPSO, the state epoch and the in-flight state batches
(ShareUpdate records, key type 1, carry deltas between snapshots). odradek writes a
full ShareSnapshot on every change of a partition's state, which the compacted topic
keeps the latest of; the schemas are Kafka's (share-coordinator/.../message/
ShareSnapshotKey.json and ShareSnapshotValue.json). A tombstone deletes the state
(DeleteShareGroupOffsets). Group configs (share.auto.offset.reset,
share.isolation.level), which Kafka keeps in the cluster metadata, are kept here in
the data directory (group_configs.json).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import struct
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from odradek.coordinator.share_partition import StateBatch
from odradek.coordinator.store import InternalTopicStore

log = logging.getLogger("odradek.coordinator")

SHARE_STATE_TOPIC = "__share_group_state"
GROUP_CONFIGS_PATH = "/config/groups"
SHARE_SNAPSHOT_KEY = 0
SHARE_UPDATE_KEY = 1
# Group configs a share group takes (GroupConfig in Kafka), with Kafka's defaults.
SHARE_GROUP_CONFIGS = {
    "share.auto.offset.reset": "latest",
    "share.isolation.level": "read_uncommitted",
    "share.record.lock.duration.ms": "",
    "share.session.timeout.ms": "",
    "share.heartbeat.interval.ms": "",
    "share.delivery.count.limit": "",
}

_INT_CONFIGS = {"share.record.lock.duration.ms": 1000, "share.session.timeout.ms": 1,
                "share.heartbeat.interval.ms": 1, "share.delivery.count.limit": 2}

_I16 = struct.Struct(">h")
_KAFKA_UUID = re.compile(r"[A-Za-z0-9_-]{22}(==)?")
_JAVA_INT = re.compile(r"[+-]?[0-9]+")


def kafka_uuid(value: uuid.UUID) -> str:
    """Kafka's Uuid.toString: URL-safe base64 of the 16 bytes, unpadded."""
    return base64.urlsafe_b64encode(value.bytes).decode().rstrip("=")


def parse_share_key(key: str) -> tuple[str, uuid.UUID, int] | str:
    """Kafka's SharePartitionKey.getInstance(String): `group:topicId:partition`, the topic id as
    Uuid.toString writes it (base64), the group what precedes the last two colons (it may hold
    colons); (group, topic id, partition), or why Kafka refuses the key."""
    tokens = key.split(":")
    while tokens and not tokens[-1]:  # Java's String.split drops trailing empty strings
        tokens.pop()
    if not key:
        return "Share partition key cannot be empty"
    if len(tokens) < 3:
        return f"Invalid key format: expected - groupId:topicId:partition, found - {key}"
    group, topic_id, partition = ":".join(tokens[:-2]), tokens[-2], tokens[-1]
    if not group.strip():
        return "GroupId must not be empty"
    if not _KAFKA_UUID.fullmatch(topic_id):
        return f"Invalid topic ID: {topic_id}"
    if not _JAVA_INT.fullmatch(partition) or not -(2**31) <= int(partition) < 2**31:
        return f"Invalid partition: {partition}"
    return group, uuid.UUID(bytes=base64.urlsafe_b64decode(topic_id[:22] + "==")), int(partition)


def validate_group_config(name: str, value: str) -> str | None:
    """Why Kafka's GroupConfig would refuse `name=value` for a share group, or None."""
    if name not in SHARE_GROUP_CONFIGS:
        return f"Unknown group config name: {name}"
    if name == "share.auto.offset.reset" and value not in ("earliest", "latest"):
        return f"Invalid value {value} for configuration share.auto.offset.reset: must be earliest or latest"
    if name == "share.isolation.level" and value not in ("read_committed", "read_uncommitted"):
        return f"Invalid value {value} for configuration share.isolation.level"
    if name in _INT_CONFIGS:
        try:
            ok = int(value) >= _INT_CONFIGS[name]
        except ValueError:
            ok = False
        if not ok:
            return f"Invalid value {value} for configuration {name}: at least {_INT_CONFIGS[name]}"
    return None


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def snapshot_key(group_id: str, topic_id: uuid.UUID, partition: int) -> bytes:
    """ShareSnapshotKey v0 (not flexible): GroupId string, TopicId uuid, Partition int32."""
    g = group_id.encode()
    return _I16.pack(SHARE_SNAPSHOT_KEY) + _I16.pack(len(g)) + g + topic_id.bytes + struct.pack(">i", partition)


def snapshot_value(state_epoch: int, leader_epoch: int, start_offset: int, batches: list[StateBatch],
                   create_ms: int, write_ms: int, snapshot_epoch: int = 0) -> bytes:
    """ShareSnapshotValue v0 (flexible): SnapshotEpoch uint16, StateEpoch, LeaderEpoch, StartOffset,
    CreateTimestamp, WriteTimestamp, StateBatches [FirstOffset, LastOffset, DeliveryState, DeliveryCount]."""
    out = bytearray(_I16.pack(0))
    out += struct.pack(">Hiiqqq", snapshot_epoch & 0xFFFF, state_epoch, leader_epoch, start_offset, create_ms, write_ms)
    out += _uvarint(len(batches) + 1)
    for b in batches:
        out += struct.pack(">qqbh", b.first_offset, b.last_offset, b.delivery_state, b.delivery_count) + b"\x00"
    out += b"\x00"  # tagged fields
    return bytes(out)


def parse_key(key: bytes) -> tuple[str, uuid.UUID, int] | None:
    """(group, topic id, partition) of a ShareSnapshotKey or ShareUpdateKey (same fields)."""
    (kind,) = _I16.unpack_from(key, 0)
    if kind not in (SHARE_SNAPSHOT_KEY, SHARE_UPDATE_KEY):
        return None
    (n,) = _I16.unpack_from(key, 2)
    group = key[4:4 + n].decode()
    topic_id = uuid.UUID(bytes=key[4 + n:20 + n])
    (partition,) = struct.unpack_from(">i", key, 20 + n)
    return group, topic_id, partition


def snapshot_leader_epoch(value: bytes) -> int:
    """The LeaderEpoch of a ShareSnapshotValue v0."""
    return int(struct.unpack_from(">i", value, 8)[0])


def parse_snapshot(value: bytes) -> tuple[int, int, list[StateBatch]]:
    """(state epoch, start offset, state batches) of a ShareSnapshotValue v0."""
    _epoch, state_epoch, _leader, start, _create, _write = struct.unpack_from(">Hiiqqq", value, 2)
    count, pos = _read_uvarint(value, 2 + 34)
    batches = []
    for _ in range(count - 1):
        first, last, state, delivered = struct.unpack_from(">qqbh", value, pos)
        pos += 19
        _tags, pos = _read_uvarint(value, pos)
        batches.append(StateBatch(first, last, state, delivered))
    return state_epoch, start, batches


Snapshot = tuple[int, int, list[StateBatch]]


class ShareStateStore(InternalTopicStore):
    """__share_group_state (share.coordinator.state.topic.num.partitions, ...replication.factor)."""

    topic = SHARE_STATE_TOPIC
    topic_configs: ClassVar[Mapping[str, str]] = {"cleanup.policy": "compact", "segment.bytes": "104857600",
                                                  "min.insync.replicas": "1"}

    @property
    def configured_partitions(self) -> int:
        return self.broker.config.share_coordinator_state_topic_num_partitions

    @property
    def configured_replication_factor(self) -> int:
        return self.broker.config.share_coordinator_state_topic_replication_factor

    @staticmethod
    def share_key(group_id: str, topic_id: uuid.UUID, partition: int) -> str:
        """Kafka's SharePartitionKey.asCoordinatorKey, which the share coordinator hashes:
        group:topicId:partition, the topic id in Kafka's base64 form."""
        return f"{group_id}:{kafka_uuid(topic_id)}:{partition}"

    def save(self, group_id: str, topic_id: uuid.UUID, partition: int, snapshot: Snapshot | None,
             leader_epoch: int = 0) -> bool:
        key = snapshot_key(group_id, topic_id, partition)
        value = None
        if snapshot is not None:
            state_epoch, start, batches = snapshot
            now = time.time_ns() // 1_000_000
            value = snapshot_value(state_epoch, leader_epoch, start, batches, now, now)
        error = self.write(self.share_key(group_id, topic_id, partition), [(key, value)])
        if error:
            log.warning("share state of %s %s-%d not written: %s", group_id, topic_id, partition, error.name)
        return not error

    def load(self, partitions: list[int] | None = None,
             leader_epochs: dict[tuple[str, uuid.UUID, int], int] | None = None,
             ) -> dict[tuple[str, uuid.UUID, int], Snapshot]:
        """The latest snapshot per share partition, tombstones deleting (and the leader epoch each
        was written with into `leader_epochs`)."""
        out: dict[tuple[str, uuid.UUID, int], Snapshot] = {}
        for _partition, pid, _control, key, value in self.replay_events(partitions):
            if pid >= 0:
                continue
            parsed = parse_key(key)
            if parsed is None:
                continue
            if value is None:
                out.pop(parsed, None)
            elif _I16.unpack_from(key, 0)[0] == SHARE_SNAPSHOT_KEY:
                try:
                    out[parsed] = parse_snapshot(value)
                    if leader_epochs is not None:
                        leader_epochs[parsed] = snapshot_leader_epoch(value)
                except (struct.error, IndexError) as exc:
                    log.warning("unreadable share snapshot for %s: %s", parsed, exc)
        return out


class GroupConfigs:
    """Dynamic configs of GROUP resources (IncrementalAlterConfigs): in group_configs.json on a
    single broker; in cluster mode in ZooKeeper, /config/groups/<group> ({"version": 1, "config":
    {...}}, as topic configs are kept), watched so that every broker, each a share partition
    leader, applies the same share.auto.offset.reset and share.isolation.level."""

    def __init__(self, data_dir: Path, zk_store: Any = None) -> None:
        self.path = data_dir / "group_configs.json"
        self.zk_store = zk_store
        self.configs: dict[str, dict[str, str]] = {}
        if zk_store is not None:
            self._watched: set[str] = set()
            zk_store.executor.submit(self._watch)  # no ZooKeeper call on the event loop
            return
        try:
            self.configs = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s: %s", self.path, exc)

    def _watch(self) -> None:
        from kazoo.exceptions import KazooException  # type: ignore[import-untyped]

        try:
            self.zk_store.ops.ensure_path(GROUP_CONFIGS_PATH)
            self.zk_store.zk.ChildrenWatch(GROUP_CONFIGS_PATH, self._groups_changed)
        except (KazooException, OSError) as exc:
            log.warning("group configs not watched in ZooKeeper: %s", exc)

    def _groups_changed(self, children: list[str]) -> None:
        """ZooKeeper's thread: a DataWatch on each new group's node keeps `configs` current."""
        for group_id in set(children) - self._watched:
            self._watched.add(group_id)

            def changed(data: bytes | None, stat: Any, event: Any = None, group_id: str = group_id) -> None:
                try:
                    values = json.loads(data).get("config") or {} if data else {}
                except ValueError:
                    values = {}
                if values:
                    self.configs[group_id] = {str(k): str(v) for k, v in values.items()}
                else:
                    self.configs.pop(group_id, None)

            self.zk_store.zk.DataWatch(f"{GROUP_CONFIGS_PATH}/{group_id}", changed)

    def get(self, group_id: str, name: str) -> str:
        return self.configs.get(group_id, {}).get(name) or SHARE_GROUP_CONFIGS.get(name, "")

    def set(self, group_id: str, configs: dict[str, str]) -> None:
        if configs:
            self.configs[group_id] = dict(configs)
        else:
            self.configs.pop(group_id, None)
        if self.zk_store is not None:  # the watch brings it to the other brokers
            self.zk_store.executor.submit(self._write_zk, group_id, dict(configs))
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.configs, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)

    def _write_zk(self, group_id: str, configs: dict[str, str]) -> None:
        from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError

        path = f"{GROUP_CONFIGS_PATH}/{group_id}"
        payload = json.dumps({"version": 1, "config": configs}).encode()
        try:
            try:
                self.zk_store.ops.set(path, payload)
            except NoNodeError:
                try:
                    self.zk_store.ops.create(path, payload, makepath=True)
                except NodeExistsError:
                    self.zk_store.ops.set(path, payload)
        except (KazooException, OSError) as exc:
            log.warning("configs of group %s not written to ZooKeeper: %s", group_id, exc)
