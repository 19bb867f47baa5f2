"""Cluster metadata in ZooKeeper, in Kafka's ZooKeeper-era layout (kazoo client).

Paths, under the chroot of `--zookeeper HOST:PORT/chroot`:

    /cluster/id                                   {"version": "1", "id": ...}
    /brokers/ids/<id>                             ephemeral {"host", "port", ...}
    /controller                                   ephemeral {"brokerid": id}, first writer wins
    /controller_epoch                             "<n>", bumped by every new controller
    /brokers/topics/<t>                           {"partitions": {"0": [1, 2, 3]}, "topic_id"}
    /brokers/topics/<t>/partitions/<p>/state      {"leader", "leader_epoch", "isr", "controller_epoch"}
    /config/topics/<t>                            {"version": 1, "config": {...}}

kazoo runs watches on its own thread; this module never touches asyncio. It
hands every event to `post(fn, *args)`, which the broker points at
`loop.call_soon_threadsafe`. Its blocking methods are for threads (the
controller's) and its own `executor`, plus the rare admin call (topic creation).

Nothing here waits for ZooKeeper without a bound. kazoo's own blocking calls wait
for a reconnection forever (a request made while disconnected sits in its queue),
so the store's calls go through `ops`, which gives up after the session timeout,
and at once once the store is `closing` and ZooKeeper is not connected. The
executor's threads are daemons, kazoo reconnects at most a second apart (its
default backs off to an hour), and `stop()` gives up on a kazoo that does not
close in `STOP_TIMEOUT_S`: a broker shutting down with its ZooKeeper gone exits
(the plumbing: cluster/zk_client.py).

Every write of the controller is fenced: one transaction with a check of /controller_epoch's
zkVersion (`fenced_set`, `fenced_delete`, `write_state(fence=...)`), so a controller deposed
while it was paused writes nothing (ControllerMoved): cluster/zk_state.py. The znodes' values
and JSON are cluster/zk_znodes.py's; this module holds the session, the watches and the topic
and broker writes.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooState  # type: ignore[import-untyped]
from kazoo.exceptions import (  # type: ignore[import-untyped]
    BadVersionError,
    KazooException,
    NodeExistsError,
    NoNodeError,
)
from kazoo.handlers.threading import KazooTimeoutError  # type: ignore[import-untyped]
from kazoo.protocol.states import WatchedEvent  # type: ignore[import-untyped]

from odradek.cluster import zk_client
from odradek.cluster.metadata import TopicError, TopicMetadata, check_collision
from odradek.cluster.zk_client import (
    EXECUTOR_GRACE_S,
    STOP_TIMEOUT_S,
    BoundedOps,
    DaemonExecutor,
    is_rollback,
    new_client,
    split_connect,
    stop_client,
)
from odradek.cluster.zk_state import PartitionStates
from odradek.cluster.zk_znodes import (
    CONTROLLER_EPOCH_PATH,
    PRODUCER_ID_BLOCK_PATH,
    BrokerInfo,
    ControllerMoved,
    Fence,
    LeaderAndIsr,
    assignment_json,
    broker_json,
    cluster_id_json,
    config_json,
    config_path,
    next_producer_id_block,
    parse_broker,
    parse_cluster_id,
    parse_controller,
    parse_topic,
    producer_id_block_json,
    state_path,
    topic_path,
)

# What the rest of odradek imports from here (the store's values live in zk_znodes.py).
__all__ = ["CONTROLLER_EPOCH_PATH", "EXECUTOR_GRACE_S", "STOP_TIMEOUT_S", "BrokerInfo", "ControllerMoved",
           "Fence", "LeaderAndIsr", "Post", "ZkError", "ZkMetadataStore", "state_path", "topic_path"]

ZkError = zk_client.ZkError  # raised by the store's calls; importers take it from here

log = logging.getLogger("odradek.zk")
logging.getLogger("kazoo.client").setLevel(logging.WARNING)  # one line per connection state is noise

Post = Callable[..., None]


@dataclass
class _Watched:
    """What the watches have seen so far; replaced (not mutated) so readers never lock."""

    topics: dict[str, TopicMetadata] = field(default_factory=dict)
    brokers: dict[int, BrokerInfo] = field(default_factory=dict)
    states: dict[tuple[str, int], LeaderAndIsr] = field(default_factory=dict)
    controller: int = -1


class ZkMetadataStore(PartitionStates):
    """The MetadataStore of cluster mode, plus broker registration and partition state."""

    def __init__(self, connect: str, session_timeout_ms: int, post: Post | None = None) -> None:
        self.hosts, self.chroot = split_connect(connect)
        self.session_timeout_s = session_timeout_ms / 1000.0
        # a call waits for ZooKeeper's answer (or the reconnection) at most a session timeout
        self.op_timeout_s = self.session_timeout_s
        self.post: Post = post or (lambda fn, *a: fn(*a))
        self.cluster_id = ""
        self.zk = new_client(self.hosts + self.chroot, self.session_timeout_s)
        self.ops = BoundedOps(self)
        self.closing = False  # set at shutdown: calls fail at once while ZooKeeper is not connected
        self.seen = _Watched()
        self.controller_changes = 0  # a new /controller holder seen (Kafka's ControllerChange events)
        self.state_changed_at = 0.0  # time.monotonic() of kazoo's last session state change
        self._lock = threading.Lock()
        self._watched_topics: set[str] = set()
        self._watched_states: set[tuple[str, int]] = set()
        # callbacks, run through `post` (on the broker's event loop)
        self.on_state: Callable[[str, int, LeaderAndIsr | None], None] = lambda t, p, s: None
        self.on_topics: Callable[[], None] = lambda: None
        self.on_brokers: Callable[[], None] = lambda: None
        self.on_session: Callable[[str], None] = lambda state: None
        # The event loop's blocking calls run here; stop() gives those in flight a moment to
        # finish while the client is still connected, then leaves them (daemon threads, calls
        # bounded by op_timeout_s, failed at once by the closed client).
        self.executor = DaemonExecutor(4, "odradek-zk")

    # -- connection ----------------------------------------------------------

    def start(self, cluster_id: str | None = None) -> None:
        """Connect (creating the chroot), read or write /cluster/id, start the watches."""
        if self.chroot:
            root = new_client(self.hosts, self.session_timeout_s)
            try:
                root.start(timeout=10)
                root.ensure_path_async(self.chroot).get(timeout=self.op_timeout_s)
            except (KazooException, KazooTimeoutError, OSError) as exc:
                raise ZkError(f"cannot reach ZooKeeper at {self.hosts}: {exc!r}") from None
            finally:
                stop_client(root, STOP_TIMEOUT_S)
        try:
            self.zk.start(timeout=10)
        except (KazooException, KazooTimeoutError, OSError) as exc:
            raise ZkError(f"cannot reach ZooKeeper at {self.hosts}: {exc}") from None
        self.zk.add_listener(self._session_listener)
        for path in ("/brokers/ids", "/brokers/topics", "/config/topics"):
            self.ops.ensure_path(path)
        try:
            self.ops.create("/cluster/id", cluster_id_json(cluster_id), makepath=True)
        except NodeExistsError:
            pass
        self.cluster_id = parse_cluster_id(self.ops.get("/cluster/id")[0])
        self.zk.ChildrenWatch("/brokers/ids", self._brokers_changed)
        self.zk.ChildrenWatch("/brokers/topics", self._topics_changed)
        self.zk.DataWatch("/controller", self._controller_changed)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Close the session in bounded time, whether or not ZooKeeper answers."""
        self.closing = True
        self.executor.shutdown(wait=True, cancel_futures=True, timeout=EXECUTOR_GRACE_S if self.connected else 0.0)
        stop_client(self.zk, timeout)

    def _session_listener(self, state: str) -> None:
        # Runs on kazoo's connection thread: only hand it over (with when, for cluster/zk_quorum.py).
        self.state_changed_at = time.monotonic()
        self.post(self.on_session, str(state))

    @property
    def connected(self) -> bool:
        return bool(self.zk.state == KazooState.CONNECTED)

    @property
    def session_id(self) -> int:
        cid = self.zk.client_id
        return cid[0] if cid else 0

    # -- brokers -------------------------------------------------------------

    def register_broker(self, info: BrokerInfo) -> None:
        """Create /brokers/ids/<id> (ephemeral); a node left by our own killed process
        is waited out (it lives until its session expires), another live owner is an error."""
        path = f"/brokers/ids/{info.broker_id}"
        payload = broker_json(info)
        deadline = time.monotonic() + self.session_timeout_s * 2 + 5
        while True:
            try:
                self.ops.create(path, payload, ephemeral=True, makepath=True)
                return
            except NodeExistsError:
                try:
                    _, stat = self.ops.get(path)
                except NoNodeError:
                    continue
                if stat.ephemeralOwner == self.session_id:
                    return
                if time.monotonic() > deadline:
                    raise ZkError(f"broker id {info.broker_id} is already registered by another live broker") from None
                time.sleep(0.2)

    def _brokers_changed(self, children: list[str]) -> None:
        brokers: dict[int, BrokerInfo] = {}
        for child in children:
            try:
                raw, _ = self.zk.get(f"/brokers/ids/{child}")
                brokers[int(child)] = parse_broker(int(child), raw)
            except (NoNodeError, ValueError, KeyError):
                continue
            except KazooException as exc:  # connection lost: the watch fires again on reconnect
                log.debug("reading /brokers/ids/%s: %r", child, exc)
                return
        self.seen.brokers = brokers
        self.post(self.on_brokers)

    def _controller_changed(self, data: bytes | None, stat: Any, event: WatchedEvent | None = None) -> None:
        previous = self.seen.controller
        self.seen.controller = parse_controller(data)
        if self.seen.controller >= 0 and self.seen.controller != previous:
            self.controller_changes += 1
        self.post(self.on_brokers)

    # -- topics (MetadataStore) ----------------------------------------------

    def topics(self) -> dict[str, TopicMetadata]:
        return self.seen.topics

    def _topics_changed(self, children: list[str]) -> None:
        current = set(children)
        with self._lock:
            gone = self._watched_topics - current
            for name in gone:
                self._watched_topics.discard(name)
            if gone:
                self.seen.topics = {n: t for n, t in self.seen.topics.items() if n not in gone}
            new = current - self._watched_topics
            self._watched_topics |= new
        for name in new:
            self.zk.DataWatch(topic_path(name), lambda data, stat, event=None, name=name: self._topic_data(name, data))
        if gone:
            self.post(self.on_topics)

    def _topic_data(self, name: str, data: bytes | None) -> bool | None:
        if data is None:
            with self._lock:
                self.seen.topics = {n: t for n, t in self.seen.topics.items() if n != name}
                self._watched_topics.discard(name)
            self.post(self.on_topics)
            return False  # stop watching a deleted topic
        try:
            topic = parse_topic(name, data, self.zk.get)
        except KazooException as exc:
            log.debug("reading the configs of %s: %r", name, exc)
            return None
        except (ValueError, KeyError) as exc:
            log.warning("ignoring unreadable /brokers/topics/%s: %s", name, exc)
            return None
        self.remember_topic(topic)
        for p in range(topic.partitions):
            self._watch_state(name, p)
        self.post(self.on_topics)
        return None

    def remember_topic(self, topic: TopicMetadata) -> None:
        """`topic` as this broker wrote or read it: it answers from it before its watch brings it back."""
        with self._lock:
            self.seen.topics = {**self.seen.topics, topic.name: topic}

    def _watch_state(self, topic: str, partition: int) -> None:
        key = (topic, partition)
        with self._lock:
            if key in self._watched_states:
                return
            self._watched_states.add(key)

        def changed(data: bytes | None, stat: Any, event: WatchedEvent | None = None) -> bool | None:
            if data is None:
                with self._lock:
                    self.seen.states = {k: v for k, v in self.seen.states.items() if k != key}
                    if topic not in self._watched_topics:
                        self._watched_states.discard(key)
                        self.post(self.on_state, topic, partition, None)
                        return False
                self.post(self.on_state, topic, partition, None)
                return None
            state = LeaderAndIsr.from_json(data, stat.version)
            with self._lock:
                self.seen.states = {**self.seen.states, key: state}
            self.post(self.on_state, topic, partition, state)
            return None

        self.zk.DataWatch(state_path(topic, partition), changed)

    def create_topic(self, name: str, replicas: list[list[int]], configs: dict[str, str]) -> TopicMetadata:
        """One ZooKeeper transaction: configs, assignment and every partition's first state."""
        check_collision(name, self.seen.topics)
        topic = TopicMetadata(name, uuid.uuid4(), replicas, dict(configs))
        epoch = self.controller_epoch()
        tx = self.zk.transaction()
        tx.create(config_path(name), config_json(configs))
        tx.create(topic_path(name), assignment_json(topic))
        tx.create(f"{topic_path(name)}/partitions")
        for p, reps in enumerate(replicas):
            self._create_state_ops(tx, name, p, reps, epoch)
        self._commit(tx, name)
        self.remember_topic(topic)
        return topic

    def _create_state_ops(self, tx: Any, name: str, p: int, reps: list[int], epoch: int) -> None:
        tx.create(f"{topic_path(name)}/partitions/{p}")
        tx.create(state_path(name, p), LeaderAndIsr(reps[0], 0, tuple(reps), epoch).to_json())

    def _commit(self, tx: Any, name: str) -> None:
        results = self.ops.commit(tx)
        for r in results:
            if isinstance(r, NodeExistsError):
                raise TopicError("topic_already_exists", f"Topic '{name}' already exists.")  # Kafka's words
            if isinstance(r, BadVersionError):
                raise TopicError("concurrent_transactions", f"topic {name!r} changed concurrently; retry")
            if isinstance(r, Exception) and not is_rollback(r):
                raise TopicError("unknown_server_error", f"ZooKeeper refused the change of {name!r}: {r!r}")

    def delete_topic(self, name: str) -> None:
        if not self.ops.exists(topic_path(name)):
            raise TopicError("unknown_topic_or_partition", f"topic {name!r} does not exist")
        self.ops.delete(topic_path(name), recursive=True)
        try:
            self.ops.delete(config_path(name))
        except NoNodeError:
            pass
        with self._lock:
            self.seen.topics = {n: t for n, t in self.seen.topics.items() if n != name}

    def add_partitions(self, name: str, new_replicas: list[list[int]]) -> TopicMetadata:
        raw, stat = self.ops.get(topic_path(name))
        topic = parse_topic(name, raw, self.ops.get)
        start = topic.partitions
        topic.replicas.extend(new_replicas)
        epoch = self.controller_epoch()
        tx = self.zk.transaction()
        tx.set_data(topic_path(name), assignment_json(topic), version=stat.version)
        for p in range(start, topic.partitions):
            self._create_state_ops(tx, name, p, topic.replicas[p], epoch)
        self._commit(tx, name)
        self.remember_topic(topic)
        return topic

    def set_configs(self, name: str, configs: dict[str, str]) -> None:
        self.ops.set(config_path(name), config_json(configs))
        # brokers learn of config changes through the topic znode's watch
        raw, stat = self.ops.get(topic_path(name))
        self.ops.set(topic_path(name), raw, version=stat.version)

    def allocate_producer_id_block(self, broker_id: int, size: int) -> tuple[int, int]:
        """[start, end) of producer ids reserved for this broker (Kafka's ProducerIdManager)."""
        path = PRODUCER_ID_BLOCK_PATH
        while True:
            try:
                raw, stat = self.ops.get(path)
                start = next_producer_id_block(raw)
                version = stat.version
            except NoNodeError:
                start, version = 0, -1
            payload = producer_id_block_json(broker_id, start, size)
            try:
                if version < 0:
                    self.ops.create(path, payload)
                else:
                    self.ops.set(path, payload, version=version)
                return start, start + size
            except (NodeExistsError, BadVersionError):
                continue  # another broker took the block; take the next one
