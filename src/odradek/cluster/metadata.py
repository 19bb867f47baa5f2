"""Cluster metadata: topics, their partitions, replica assignments and configs.

`MetadataStore` is what the server asks; `LocalMetadataStore` keeps it in one
JSON file in the data dir for the single-node default. The ZooKeeper store for
cluster mode implements the same methods.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
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
    """A crash leaves the old file or the new one whole: a temporary file, fsynced, renamed over
    it, then the directory fsynced (the rename itself durable)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_writer_thread: ThreadPoolExecutor | None = None  # one for the process: a store restarted in it leaves no thread
_writer_thread_lock = threading.Lock()


def _metadata_thread() -> ThreadPoolExecutor:
    global _writer_thread
    with _writer_thread_lock:
        if _writer_thread is None:
            _writer_thread = ThreadPoolExecutor(1, thread_name_prefix="odradek-metadata")
        return _writer_thread


class _FileWriter:
    """Writes one file's newest contents on the metadata thread, in order, each write atomic.

    `write` takes the text on the caller's thread and returns a future done once a write
    holding it (or newer contents) is durable. Texts given while a write is under way wait
    for one more write of the newest of them: a burst of changes costs two writes, and the
    file never goes back to older contents.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._text = ""
        self._next: Future[None] | None = None  # the write not started yet, and who waits for it
        self._last: Future[None] = Future()
        self._last.set_result(None)

    def write(self, text: str) -> Future[None]:
        with self._lock:
            self._text = text
            if self._next is None:
                self._next = Future()
                _metadata_thread().submit(self._write_next)
            self._last = self._next
            return self._next

    def last(self) -> Future[None]:
        """The future of the newest write asked for (done when everything given so far is durable)."""
        return self._last

    def _write_next(self) -> None:
        with self._lock:
            text, done, self._next = self._text, self._next, None
        assert done is not None
        try:
            _write_atomically(self._path, text)
        except OSError as exc:  # a full disk: whoever waits for this write hears why
            done.set_exception(exc)
        else:
            done.set_result(None)


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


def _line(name: str, topic: TopicMetadata) -> str:
    return f"{json.dumps(name)}: {json.dumps(topic.to_json(), separators=(',', ':'))}"


class LocalMetadataStore:
    """Single-node metadata in `<data_dir>/topics.json`, written atomically on change.

    A change is made in memory and its file written on the store's own thread (the write and
    its fsyncs held the event loop 30-280 ms a CreateTopics under load); `synced` waits until
    the file holds every change made so far, which an admin call's answer awaits (a topic whose
    creation was answered survives a crash). With `data_dir=None` (in-memory storage) nothing
    is written.
    """

    def __init__(self, data_dir: Path | None, cluster_id: str) -> None:
        self.cluster_id = cluster_id
        self._path = data_dir / "topics.json" if data_dir is not None else None
        self._topics: dict[str, TopicMetadata] = {}
        self._lines: dict[str, str] = {}  # each topic's line of the file, encoded when it changed
        self._writer = _FileWriter(self._path) if self._path is not None else None
        if self._path is not None and self._path.exists():
            raw = json.loads(self._path.read_text(encoding="utf-8"))
            self._topics = {name: TopicMetadata.from_json(name, data) for name, data in raw["topics"].items()}
            self._lines = {name: _line(name, t) for name, t in self._topics.items()}

    def _save(self, changed: str) -> None:
        if self._writer is None:
            return
        # one topic a line, each by json's C encoder (indent= takes the pure-Python one: 100 topics of
        # 100 partitions cost CreateTopics ~36% of its time in the encoder, on the event loop), and
        # only the changed topic's line encoded again
        topic = self._topics.get(changed)
        if topic is None:
            self._lines.pop(changed, None)
        else:
            self._lines[changed] = _line(changed, topic)
        body = ",\n".join(self._lines[n] for n in sorted(self._lines))
        self._writer.write(f'{{"version": 1, "topics": {{\n{body}\n}}}}\n')

    async def synced(self) -> None:
        """Return once topics.json holds every change made before the call (raises the write's OSError).

        The write's future is shared by every request waiting for it: a waiter cancelled (its client
        closed the connection) must not cancel it, or the others would be answered CancelledError."""
        if self._writer is not None:
            await asyncio.shield(asyncio.wrap_future(self._writer.last()))

    def wait_synced(self, timeout: float | None = None) -> None:
        """`synced` for a caller off the event loop (a stop, a test harness)."""
        if self._writer is not None:
            self._writer.last().result(timeout)

    def topics(self) -> dict[str, TopicMetadata]:
        return self._topics

    def create_topic(self, name: str, replicas: list[list[int]], configs: dict[str, str]) -> TopicMetadata:
        check_collision(name, self._topics)
        topic = TopicMetadata(name, uuid.uuid4(), replicas, dict(configs))
        self._topics[name] = topic
        self._save(name)
        return topic

    def delete_topic(self, name: str) -> None:
        if self._topics.pop(name, None) is None:
            raise TopicError("unknown_topic_or_partition", f"topic {name!r} does not exist")
        self._save(name)

    def add_partitions(self, name: str, new_replicas: list[list[int]]) -> TopicMetadata:
        topic = self._topics[name]
        topic.replicas.extend(new_replicas)
        self._save(name)
        return topic

    def set_configs(self, name: str, configs: dict[str, str]) -> None:
        self._topics[name].configs = dict(configs)
        self._save(name)
