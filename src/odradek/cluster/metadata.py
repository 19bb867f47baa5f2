"""Cluster metadata: topics, their partitions, replica assignments and configs.

`MetadataStore` is what the server asks; `LocalMetadataStore` keeps it in one
JSON file in the data dir for the single-node default. The ZooKeeper store for
cluster mode implements the same methods.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")
MAX_TOPIC_LENGTH = 249
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})


class NotLeaderError(Exception):
    """An append to a partition this broker does not lead (NOT_LEADER_OR_FOLLOWER)."""


class TopicError(Exception):
    """A topic request Kafka refuses; `code` is the kio ErrorCode member name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def validate_topic_name(name: str) -> None:
    """Kafka's Topic.validate: length, characters, and not '.' or '..'."""
    if not name:
        raise TopicError("invalid_topic_exception", "topic name is empty")
    if name in (".", ".."):
        raise TopicError("invalid_topic_exception", f"topic name cannot be {name!r}")
    if len(name) > MAX_TOPIC_LENGTH:
        raise TopicError("invalid_topic_exception", f"topic name is longer than {MAX_TOPIC_LENGTH} characters")
    if not LEGAL_TOPIC.match(name):
        raise TopicError(
            "invalid_topic_exception",
            f"topic name {name!r} may contain only ASCII letters, digits, '.', '_' and '-'",
        )


@dataclass
class TopicMetadata:
    name: str
    topic_id: uuid.UUID
    replicas: list[list[int]]  # per partition, the broker ids holding it (first: preferred leader)
    configs: dict[str, str] = field(default_factory=dict)
    # a reassignment in progress (cluster mode, Kafka's adding_replicas / removing_replicas of
    # /brokers/topics/<t>): per partition, the replicas joining and leaving `replicas`
    adding: dict[int, list[int]] = field(default_factory=dict)
    removing: dict[int, list[int]] = field(default_factory=dict)

    @property
    def partitions(self) -> int:
        return len(self.replicas)

    @property
    def internal(self) -> bool:
        return self.name in INTERNAL_TOPICS

    def to_json(self) -> dict[str, object]:
        return {"topic_id": str(self.topic_id), "replicas": self.replicas, "configs": self.configs}

    @classmethod
    def from_json(cls, name: str, data: dict[str, object]) -> TopicMetadata:
        return cls(
            name=name,
            topic_id=uuid.UUID(str(data["topic_id"])),
            replicas=[list(map(int, r)) for r in data["replicas"]],  # type: ignore[attr-defined]
            configs={str(k): str(v) for k, v in dict(data.get("configs") or {}).items()},  # type: ignore[call-overload]
        )


class MetadataStore(Protocol):
    cluster_id: str

    def topics(self) -> dict[str, TopicMetadata]: ...
    def create_topic(self, name: str, replicas: list[list[int]], configs: dict[str, str]) -> TopicMetadata: ...
    def delete_topic(self, name: str) -> None: ...
    def add_partitions(self, name: str, new_replicas: list[list[int]]) -> TopicMetadata: ...
    def set_configs(self, name: str, configs: dict[str, str]) -> None: ...


def check_collision(name: str, existing: dict[str, TopicMetadata]) -> None:
    """Kafka refuses topics that differ only by '.' vs '_' (metric names collide)."""
    if name in existing:
        raise TopicError("topic_already_exists", f"Topic '{name}' already exists.")  # Kafka's words
    canonical = name.replace(".", "_")
    for other in existing:
        if other.replace(".", "_") == canonical:
            raise TopicError("invalid_topic_exception", f"topic {name!r} collides with existing topic {other!r}")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_meta_properties(data_dir: Path) -> dict[str, str]:
    path = data_dir / "meta.properties"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def ensure_meta_properties(data_dir: Path, broker_id: int, cluster_id: str | None) -> str:
    """Write meta.properties (cluster id, broker id) once; returns the cluster id."""
    data_dir.mkdir(parents=True, exist_ok=True)
    existing = read_meta_properties(data_dir)
    cid = existing.get("cluster.id") or cluster_id or _new_cluster_id()
    if existing.get("cluster.id") != cid or existing.get("broker.id") != str(broker_id):
        _write_atomically(
            data_dir / "meta.properties",
            f"#odradek\nversion=0\nbroker.id={broker_id}\ncluster.id={cid}\n",
        )
    return cid


def _new_cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class LocalMetadataStore:
    """Single-node metadata in `<data_dir>/topics.json`, written atomically on change.

    With `data_dir=None` (in-memory storage) nothing is written.
    """

    def __init__(self, data_dir: Path | None, cluster_id: str) -> None:
        self.cluster_id = cluster_id
        self._path = data_dir / "topics.json" if data_dir is not None else None
        self._topics: dict[str, TopicMetadata] = {}
        if self._path is not None and self._path.exists():
            raw = json.loads(self._path.read_text(encoding="utf-8"))
            self._topics = {name: TopicMetadata.from_json(name, data) for name, data in raw["topics"].items()}

    def _save(self) -> None:
        if self._path is None:
            return
        # one topic a line, each by json's C encoder (indent= takes the pure-Python one: 100 topics of
        # 100 partitions cost CreateTopics ~36% of its time in the encoder, on the event loop)
        body = ",\n".join(f"{json.dumps(n)}: {json.dumps(t.to_json(), separators=(',', ':'))}"
                           for n, t in sorted(self._topics.items()))
        _write_atomically(self._path, f'{{"version": 1, "topics": {{\n{body}\n}}}}\n')

    def topics(self) -> dict[str, TopicMetadata]:
        return self._topics

    def create_topic(self, name: str, replicas: list[list[int]], configs: dict[str, str]) -> TopicMetadata:
        check_collision(name, self._topics)
        topic = TopicMetadata(name, uuid.uuid4(), replicas, dict(configs))
        self._topics[name] = topic
        self._save()
        return topic

    def delete_topic(self, name: str) -> None:
        if self._topics.pop(name, None) is None:
            raise TopicError("unknown_topic_or_partition", f"topic {name!r} does not exist")
        self._save()

    def add_partitions(self, name: str, new_replicas: list[list[int]]) -> TopicMetadata:
        topic = self._topics[name]
        topic.replicas.extend(new_replicas)
        self._save()
        return topic

    def set_configs(self, name: str, configs: dict[str, str]) -> None:
        self._topics[name].configs = dict(configs)
        self._save()
