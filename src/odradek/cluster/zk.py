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
while it was paused writes nothing (ControllerMoved).
"""

from __future__ import annotations

import json
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

ZkError = zk_client.ZkError  # raised by the store's calls; importers take it from here

log = logging.getLogger("odradek.zk")
logging.getLogger("kazoo.client").setLevel(logging.WARNING)  # one line per connection state is noise

Post = Callable[..., None]

CONTROLLER_EPOCH_PATH = "/controller_epoch"
Fence = tuple[str, int]  # (path, version) checked in the same transaction as a write


class ControllerMoved(TopicError):
    """A controller's write refused because /controller_epoch moved on (a newer controller),
    or a controller's call asked of a broker that is not the controller: Kafka's
    ControllerMovedException, answered NOT_CONTROLLER."""

    def __init__(self, message: str = "this broker is no longer the controller") -> None:
        super().__init__("not_controller", message)


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    broker_id: int
    host: str
    port: int
    rack: str | None = None
    # (listener name, security protocol, host, port) of every listener (Kafka's "endpoints"
    # and "listener_security_protocol_map" in /brokers/ids/<id>)
    endpoints: tuple[tuple[str, str, str, int], ...] = ()


def _parse_endpoints(d: dict[str, object]) -> tuple[tuple[str, str, str, int], ...]:
    protocols = d.get("listener_security_protocol_map") or {}
    result = []
    for item in d.get("endpoints") or []:  # type: ignore[attr-defined]
        name, _, address = str(item).partition("://")
        host, _, port = address.rpartition(":")
        if not name or not port.isdigit():
            continue
        protocol = protocols.get(name, name) if isinstance(protocols, dict) else name
        result.append((name, str(protocol), host.strip("[]"), int(port)))
    return tuple(result)


@dataclass(frozen=True, slots=True)
class LeaderAndIsr:
    """A partition's state znode (Kafka's LeaderAndIsr) plus the znode version for CAS."""

    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    controller_epoch: int = 0
    zk_version: int = -1

    def to_json(self) -> bytes:
        return json.dumps({
            "controller_epoch": self.controller_epoch, "leader": self.leader, "version": 1,
            "leader_epoch": self.leader_epoch, "isr": list(self.isr),
        }).encode()

    @classmethod
    def from_json(cls, raw: bytes, zk_version: int) -> LeaderAndIsr:
        d = json.loads(raw)
        return cls(int(d["leader"]), int(d["leader_epoch"]), tuple(int(b) for b in d["isr"]),
                   int(d.get("controller_epoch", 0)), zk_version)


def topic_path(topic: str) -> str:
    return f"/brokers/topics/{topic}"


def state_path(topic: str, partition: int) -> str:
    return f"/brokers/topics/{topic}/partitions/{partition}/state"


@dataclass
class _Watched:
    """What the watches have seen so far; replaced (not mutated) so readers never lock."""

    topics: dict[str, TopicMetadata] = field(default_factory=dict)
    brokers: dict[int, BrokerInfo] = field(default_factory=dict)
    states: dict[tuple[str, int], LeaderAndIsr] = field(default_factory=dict)
    controller: int = -1


class ZkMetadataStore:
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
            self.ops.create("/cluster/id", json.dumps({"version": "1", "id": cluster_id or _new_cluster_id()}).encode(),
                            makepath=True)
        except NodeExistsError:
            pass
        self.cluster_id = json.loads(self.ops.get("/cluster/id")[0])["id"]
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
        endpoints = info.endpoints or (("PLAINTEXT", "PLAINTEXT", info.host, info.port),)
        payload = json.dumps({
            "version": 5, "host": info.host, "port": info.port, "rack": info.rack, "jmx_port": -1,
            "timestamp": str(int(time.time() * 1000)),
            "endpoints": [f"{name}://{host}:{port}" for name, _, host, port in endpoints],
            "listener_security_protocol_map": {name: protocol for name, protocol, _, _ in endpoints},
        }).encode()
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
                d = json.loads(raw)
                brokers[int(child)] = BrokerInfo(
                    int(child), d["host"], int(d["port"]), d.get("rack"), _parse_endpoints(d)
                )
            except (NoNodeError, ValueError, KeyError):
                continue
            except KazooException as exc:  # connection lost: the watch fires again on reconnect
                log.debug("reading /brokers/ids/%s: %r", child, exc)
                return
        self.seen.brokers = brokers
        self.post(self.on_brokers)

    def _controller_changed(self, data: bytes | None, stat: Any, event: WatchedEvent | None = None) -> None:
        previous = self.seen.controller
        try:
            self.seen.controller = int(json.loads(data)["brokerid"]) if data else -1
        except (ValueError, KeyError):
            self.seen.controller = -1
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
            topic = self._parse_topic(name, data)
        except KazooException as exc:
            log.debug("reading the configs of %s: %r", name, exc)
            return None
        except (ValueError, KeyError) as exc:
            log.warning("ignoring unreadable /brokers/topics/%s: %s", name, exc)
            return None
        with self._lock:
            self.seen.topics = {**self.seen.topics, name: topic}
        for p in range(topic.partitions):
            self._watch_state(name, p)
        self.post(self.on_topics)
        return None

    def _parse_topic(self, name: str, data: bytes, get: Callable[[str], tuple[bytes, Any]] | None = None) -> TopicMetadata:
        """`get`: kazoo's own (a watch waits for the reconnection), or a bounded one."""
        d = json.loads(data)
        parts = d["partitions"]
        replicas = [list(map(int, parts[str(p)])) for p in range(len(parts))]
        try:
            raw, _ = (get or self.zk.get)(f"/config/topics/{name}")
            configs = {str(k): str(v) for k, v in json.loads(raw).get("config", {}).items()}
        except NoNodeError:
            configs = {}
        topic_id = uuid.UUID(d["topic_id"]) if d.get("topic_id") else uuid.uuid5(uuid.NAMESPACE_DNS, name)
        moving = [{int(p): list(map(int, r)) for p, r in (d.get(k) or {}).items() if r}
                  for k in ("adding_replicas", "removing_replicas")]
        return TopicMetadata(name, topic_id, replicas, configs, moving[0], moving[1])

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
        tx.create(f"/config/topics/{name}", json.dumps({"version": 1, "config": configs}).encode())
        tx.create(topic_path(name), self._assignment_json(topic))
        tx.create(f"{topic_path(name)}/partitions")
        for p, reps in enumerate(replicas):
            self._create_state_ops(tx, name, p, reps, epoch)
        self._commit(tx, name)
        with self._lock:
            self.seen.topics = {**self.seen.topics, name: topic}
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

    @staticmethod
    def _assignment_json(topic: TopicMetadata) -> bytes:
        return json.dumps({
            "version": 3, "topic_id": str(topic.topic_id),
            "partitions": {str(p): r for p, r in enumerate(topic.replicas)},
            "adding_replicas": {str(p): r for p, r in topic.adding.items()},
            "removing_replicas": {str(p): r for p, r in topic.removing.items()},
        }).encode()

    def delete_topic(self, name: str) -> None:
        if not self.ops.exists(topic_path(name)):
            raise TopicError("unknown_topic_or_partition", f"topic {name!r} does not exist")
        self.ops.delete(topic_path(name), recursive=True)
        try:
            self.ops.delete(f"/config/topics/{name}")
        except NoNodeError:
            pass
        with self._lock:
            self.seen.topics = {n: t for n, t in self.seen.topics.items() if n != name}

    def add_partitions(self, name: str, new_replicas: list[list[int]]) -> TopicMetadata:
        raw, stat = self.ops.get(topic_path(name))
        topic = self._parse_topic(name, raw, self.ops.get)
        start = topic.partitions
        topic.replicas.extend(new_replicas)
        epoch = self.controller_epoch()
        tx = self.zk.transaction()
        tx.set_data(topic_path(name), self._assignment_json(topic), version=stat.version)
        for p in range(start, topic.partitions):
            self._create_state_ops(tx, name, p, topic.replicas[p], epoch)
        self._commit(tx, name)
        with self._lock:
            self.seen.topics = {**self.seen.topics, name: topic}
        return topic

    def set_configs(self, name: str, configs: dict[str, str]) -> None:
        self.ops.set(f"/config/topics/{name}", json.dumps({"version": 1, "config": configs}).encode())
        # brokers learn of config changes through the topic znode's watch
        raw, stat = self.ops.get(topic_path(name))
        self.ops.set(topic_path(name), raw, version=stat.version)

    def allocate_producer_id_block(self, broker_id: int, size: int) -> tuple[int, int]:
        """[start, end) of producer ids reserved for this broker (Kafka's ProducerIdManager)."""
        path = "/latest_producer_id_block"
        while True:
            try:
                raw, stat = self.ops.get(path)
                start = int(json.loads(raw)["block_end"]) + 1 if raw else 0
                version = stat.version
            except NoNodeError:
                start, version = 0, -1
            payload = json.dumps({"version": 1, "broker": broker_id, "block_start": str(start),
                                  "block_end": str(start + size - 1)}).encode()
            try:
                if version < 0:
                    self.ops.create(path, payload)
                else:
                    self.ops.set(path, payload, version=version)
                return start, start + size
            except (NodeExistsError, BadVersionError):
                continue  # another broker took the block; take the next one

    # -- partition state -----------------------------------------------------

    def controller_epoch(self) -> int:
        try:
            return int(self.ops.get("/controller_epoch")[0] or b"0")
        except NoNodeError:
            return 0

    def read_state(self, topic: str, partition: int) -> LeaderAndIsr | None:
        try:
            raw, stat = self.ops.get(state_path(topic, partition))
        except NoNodeError:
            return None
        return LeaderAndIsr.from_json(raw, stat.version)

    def write_state(self, topic: str, partition: int, state: LeaderAndIsr,
                    fence: Fence | None = None) -> LeaderAndIsr | None:
        """Compare-and-set on the state znode version; `fence` adds a check op (the
        controller's /controller_epoch version) so a stale controller cannot write.
        Returns the state as written, None when the CAS lost; ControllerMoved when fenced."""
        if fence is None:
            try:
                stat = self.ops.set(state_path(topic, partition), state.to_json(), version=state.zk_version)
            except (BadVersionError, NoNodeError):
                return None
            return _with_version(state, stat.version)
        stat = self.fenced_set(state_path(topic, partition), state.to_json(), state.zk_version, fence)
        return None if stat is None else _with_version(state, stat.version)

    def write_states(self, writes: list[tuple[str, int, LeaderAndIsr]], fence: Fence) -> list[LeaderAndIsr] | int:
        """Several partitions' states in one transaction, each a compare-and-set on its znode's
        version, fenced as write_state: the states as written, in order, or the index of a write
        whose partition changed meanwhile (then none is written); ControllerMoved when fenced."""
        tx = self.zk.transaction()
        tx.check(fence[0], fence[1])
        for topic, partition, state in writes:
            tx.set_data(state_path(topic, partition), state.to_json(), version=state.zk_version)
        results = self._fenced_commit(tx, fence)[1:]
        failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
        if failed:
            return next((i for i in failed if not is_rollback(results[i])), failed[0])
        return [_with_version(state, stat.version) for (_t, _p, state), stat in zip(writes, results, strict=True)]

    def fenced_set(self, path: str, value: bytes, version: int, fence: Fence) -> Any:
        """Set `path` at `version` in one transaction with the check of `fence` (Kafka's
        ZooKeeper-mode controller: a multi-op with a check of /controller_epoch's zkVersion).
        The new stat, None when `path` changed meanwhile; ControllerMoved when fenced."""
        tx = self.zk.transaction()
        tx.check(fence[0], fence[1])
        tx.set_data(path, value, version=version)
        results = self._fenced_commit(tx, fence)
        return None if isinstance(results[1], Exception) else results[1]

    def fenced_delete(self, path: str, version: int, fence: Fence) -> bool:
        """Delete `path` at `version`, fenced as fenced_set; False when it changed or is gone."""
        tx = self.zk.transaction()
        tx.check(fence[0], fence[1])
        tx.delete(path, version=version)
        return not isinstance(self._fenced_commit(tx, fence)[1], Exception)

    def check_fence(self, fence: Fence) -> None:
        """ControllerMoved unless `fence` still holds: for a controller's answers that write nothing."""
        stat = self.ops.exists(fence[0])
        if stat is None or stat.version != fence[1]:
            raise ControllerMoved(f"{fence[0]} is no longer at version {fence[1]}: a newer controller was elected")

    def _fenced_commit(self, tx: Any, fence: Fence) -> list[Any]:
        results = self.ops.commit(tx)
        if isinstance(results[0], Exception) and not is_rollback(results[0]):
            raise ControllerMoved(f"{fence[0]} is no longer at version {fence[1]}: a newer controller "
                                  f"was elected ({type(results[0]).__name__})")
        return results


def _with_version(state: LeaderAndIsr, version: int) -> LeaderAndIsr:
    return LeaderAndIsr(state.leader, state.leader_epoch, state.isr, state.controller_epoch, version)


def _new_cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
