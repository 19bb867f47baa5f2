"""Topic administration of cluster mode: topics, partitions, configs, reassignments, elections.

`ClusterTopicAdmin` is the part of the cluster broker (server/cluster_broker.py) that writes
cluster metadata for the admin APIs: CreateTopics (placed by Kafka's assignReplicasToBrokers or
by hand), DeleteTopics, CreatePartitions, the dynamic broker configs, and the two calls only
the active controller carries out, AlterPartitionReassignments and ElectLeaders: on any other
broker they raise ControllerMoved (Kafka's NOT_CONTROLLER: the admin clients refresh their
metadata and send to the controller), and on the controller every write is fenced by the
controller epoch (cluster/reassignment.py, cluster/elections.py), so a controller deposed
while it was paused writes nothing.

The topic writes are blocking ZooKeeper calls: handlers run them off the event loop
(server/admin_calls.py); what the broker does on the loop after one (creating logs, taking up
roles) it posts there itself (`topics_changed`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from kazoo.exceptions import KazooException  # type: ignore[import-untyped]

from odradek.cluster.controller import Controller
from odradek.cluster.elections import elect
from odradek.cluster.metadata import TopicError, TopicMetadata, validate_topic_name
from odradek.cluster.placement import PlacementError, assign_replicas, start_index
from odradek.cluster.reassignment import reassign
from odradek.cluster.throttle import DynamicBrokerConfigs
from odradek.cluster.topic_config import validate_topic_configs
from odradek.cluster.zk import ControllerMoved, ZkError, ZkMetadataStore
from odradek.server.broker import Broker, Node

log = logging.getLogger("odradek.cluster")
T = TypeVar("T")

INTERNAL_TOPIC_RF = {"__consumer_offsets": "offsets_topic_replication_factor",
                     "__transaction_state": "transaction_state_log_replication_factor"}


class ClusterTopicAdmin(Broker):
    """The admin writes of a cluster broker; ClusterBroker sets these attributes up in open()."""

    store: ZkMetadataStore
    controller: Controller
    broker_configs: DynamicBrokerConfigs
    nodes: dict[int, Node]
    loop: asyncio.AbstractEventLoop | None
    _loop_thread: int
    _creating: set[str]  # internal topics being created aside (see create_topic)

    def _on_topics(self) -> None:
        """Acting on the topics as they are now (ClusterBroker's)."""
        raise NotImplementedError

    def _assign(self, num_partitions: int, replication_factor: int, *, start: int,
                first: int = 0) -> list[list[int]]:
        """Kafka's AdminUtils.assignReplicasToBrokers over the live brokers, rack-aware when
        every broker has broker.rack (cluster/placement.py)."""
        brokers = {b: n.rack for b, n in self.nodes.items()} or {self.node_id: self.config.broker_rack}
        try:
            return assign_replicas(brokers, num_partitions, replication_factor, fixed_start=start,
                                   first_partition=first)
        except PlacementError as exc:
            raise TopicError("invalid_replication_factor", str(exc)) from None

    def topics_changed(self) -> None:
        """After a topic write of this broker: act on it on the loop, at once or, from the store's
        executor (server/admin_calls.py), posted before the handler waiting there resumes."""
        if self._on_loop():
            self._on_topics()
        elif self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(self._on_topics)
            except RuntimeError:  # the loop closed meanwhile (a stop): nothing left to act on
                pass

    def _on_loop(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def create_topic(self, name: str, num_partitions: int = -1, replication_factor: int = -1,
                     configs: dict[str, str] | None = None, *, validate_only: bool = False) -> TopicMetadata | None:
        if self._on_loop() and not validate_only:
            # a room creating its topic on first use (the coordinators' ensure_topic) must not wait for
            # ZooKeeper here: as Kafka's AutoTopicCreationManager, create it aside and answer "not yet"
            # (FindCoordinator: COORDINATOR_NOT_AVAILABLE, which clients retry)
            self._create_aside(name, num_partitions, replication_factor, configs)
            raise TopicError("leader_not_available", f"topic {name!r} is being created")
        validate_topic_name(name)
        if num_partitions == -1:
            num_partitions = self.config.num_partitions
        if replication_factor == -1:
            replication_factor = self.config.default_replication_factor
        internal_rf = INTERNAL_TOPIC_RF.get(name)
        if internal_rf is not None and internal_rf not in self.config.model_fields_set:
            # Kafka's default for its internal topics is 3; unless configured, take what the cluster has
            replication_factor = max(1, min(3, len(self.nodes)))
            if replication_factor < 3 and not validate_only:
                log.warning("%s gets replication factor %d: only %d broker(s) registered; set %s to "
                            "require more", name, replication_factor, len(self.nodes),
                            internal_rf.replace("_", "."))
        if num_partitions <= 0:
            raise TopicError("invalid_partitions", "number of partitions must be larger than 0")
        if replication_factor <= 0:
            raise TopicError("invalid_replication_factor", "replication factor must be larger than 0")
        checked = validate_topic_configs(configs or {})
        if name in self.topics():
            raise TopicError("topic_already_exists", f"Topic '{name}' already exists.")  # Kafka's words
        self.check_partition_limit(num_partitions)
        # spread the preferred leaders of different topics (Kafka: a random start)
        replicas = self._assign(num_partitions, replication_factor, start=start_index(name, len(self.nodes)))
        if validate_only:
            return None
        topic = self.store.create_topic(name, replicas, checked)
        log.info("created topic %s: %d partition(s), replicas %s", name, num_partitions, replicas)
        self.topics_changed()
        return topic

    def _create_aside(self, name: str, num_partitions: int, replication_factor: int,
                      configs: dict[str, str] | None) -> None:
        if name in self._creating or self.loop is None:
            return
        self._creating.add(name)

        def done(fut: asyncio.Future[TopicMetadata | None]) -> None:
            self._creating.discard(name)
            exc = fut.exception()
            if exc is not None and not (isinstance(exc, TopicError) and exc.code == "topic_already_exists"):
                log.warning("cannot create topic %s: %s", name, exc)

        fut = self.loop.run_in_executor(self.store.executor, functools.partial(
            self.create_topic, name, num_partitions, replication_factor, configs))
        fut.add_done_callback(done)

    def create_partitions(self, name: str, count: int, *, validate_only: bool = False) -> None:
        topic = self.topics().get(name)
        if topic is None:
            raise TopicError("unknown_topic_or_partition", f"topic {name!r} does not exist")
        if count <= topic.partitions:
            raise TopicError("invalid_partitions",
                             f"topic currently has {topic.partitions} partitions, {count} would not be an increase")
        self.check_partition_limit(count - topic.partitions)
        # AdminZkClient.createPartitions: start at partition 0's first replica, go on from its count
        ids = sorted(self.nodes)
        start = next((i for i, b in enumerate(ids) if b >= topic.replicas[0][0]), 0)
        new = self._assign(count - topic.partitions, len(topic.replicas[0]), start=start, first=topic.partitions)
        if validate_only:
            return
        self.store.add_partitions(name, new)
        self.topics_changed()

    def create_partitions_assigned(self, name: str, replicas: list[list[int]], *, validate_only: bool = False) -> None:
        """CreatePartitions with a manual assignment, checked by handlers/topics.py."""
        self.check_partition_limit(len(replicas))
        if validate_only:
            return
        self.store.add_partitions(name, replicas)
        log.info("topic %s: %d partition(s) added, replicas %s (assigned)", name, len(replicas), replicas)
        self.topics_changed()

    def delete_topic(self, name: str) -> None:
        if name not in self.topics():
            raise TopicError("unknown_topic_or_partition", f"topic {name!r} does not exist")
        self.store.delete_topic(name)
        log.info("deleted topic %s", name)
        self.topics_changed()

    def create_topic_assigned(self, name: str, replicas: list[list[int]], configs: dict[str, str] | None = None,
                              *, validate_only: bool = False) -> TopicMetadata | None:
        """CreateTopics with a manual replica assignment (kafka-topics --replica-assignment),
        already checked against the live brokers (handlers/topics.py)."""
        validate_topic_name(name)
        checked = validate_topic_configs(configs or {})
        if name in self.topics():
            raise TopicError("topic_already_exists", f"Topic '{name}' already exists.")  # Kafka's words
        self.check_partition_limit(len(replicas))
        if validate_only:
            return None
        topic = self.store.create_topic(name, replicas, checked)
        log.info("created topic %s: %d partition(s), replicas %s (assigned)", name, len(replicas), replicas)
        self.topics_changed()
        return topic

    # -- broker configs ------------------------------------------------------------------

    async def broker_dynamic_configs(self, name: str) -> dict[str, str]:
        """The dynamic configs of broker `name` ("": the cluster-wide defaults), from ZooKeeper."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.store.executor, self.broker_configs.read, name)

    async def set_broker_configs(self, name: str, configs: dict[str, str]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.store.executor, self.broker_configs.write, name, configs)
        log.info("dynamic configs of broker %s: %s", name or "<default>", configs)

    # -- the controller's calls (cluster/reassignment.py, cluster/elections.py) -------------

    def _controller_fence(self) -> tuple[str, int]:
        """The check that fences this broker's writes as controller; ControllerMoved when it is
        not the active controller (Kafka's NOT_CONTROLLER)."""
        fence = self.controller.fence()
        if fence is None:
            raise ControllerMoved(f"broker {self.node_id} is not the controller "
                                  f"(the controller is broker {self.store.seen.controller})")
        return fence

    async def reassign_partitions(self, topic: str, targets: dict[int, list[int] | None],
                                  allow_replication_factor_change: bool = True) -> dict[int, TopicError | None]:
        """AlterPartitionReassignments of one topic; raises ControllerMoved off the controller."""
        fence = self._controller_fence()
        return await self._as_controller(functools.partial(
            reassign, self.store, topic, targets, set(self.nodes), allow_replication_factor_change, fence=fence))

    async def elect_leader(self, topic: str, p: int, election_type: int) -> None:
        """ElectLeaders of one partition; raises ControllerMoved off the controller."""
        fence = self._controller_fence()
        await self._as_controller(functools.partial(
            elect, self.store, topic, p, election_type, set(self.nodes), fence=fence,
            controller_epoch=self.controller.epoch))

    async def _as_controller(self, call: Callable[[], T]) -> T:
        """A controller's call in the store's executor. A controller that cannot reach ZooKeeper
        cannot tell it still is one (its session may have expired: a pause, a partition), so it
        answers NOT_CONTROLLER, which the admin clients retry after refreshing their metadata."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.store.executor, call)
        except (ZkError, KazooException) as exc:
            raise ControllerMoved(f"broker {self.node_id} cannot act as controller: ZooKeeper did not answer "
                                  f"({str(exc) or type(exc).__name__})") from None
