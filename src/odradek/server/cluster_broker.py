"""The broker of cluster mode: the single-node services plus ZooKeeper and replication.

`ClusterBroker` overrides the hooks of `Broker` (produce, partition_state,
check_leader, on_append, ...) and keeps every decision about roles in one
place: the state znode of each partition, as the watches deliver it, says who
leads at which epoch; this broker leads, follows, or does nothing accordingly.
ZooKeeper events arrive on kazoo's thread and are handed to the event loop with
call_soon_threadsafe; ZooKeeper writes run in the store's executor.

Beside it: the admin writes (topics, partitions, configs, reassignments, elections) in
server/cluster_topics.py and the requests to other brokers in server/cluster_peers.py, its base
classes; the controlled shutdown in server/cluster_shutdown.py; the group coordinator's failover
in server/cluster_groups.py.

Shutdown ends whether or not ZooKeeper answers: the controlled shutdown makes at
most controlled.shutdown.max.retries attempts within max.retries x
controlled.shutdown.retry.backoff.ms, every ZooKeeper call is bounded, and close()
flushes and checkpoints the logs before it leaves ZooKeeper.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cluster.controller import Controller
from odradek.cluster.metadata import NotLeaderError, ensure_meta_properties, read_meta_properties
from odradek.cluster.peer import PeerConnection
from odradek.cluster.replication import ReplicaManager
from odradek.cluster.throttle import DynamicBrokerConfigs, Quota, ReplicationThrottle
from odradek.cluster.topic_config import topic_config_value
from odradek.cluster.zk import BrokerInfo, LeaderAndIsr, ZkError, ZkMetadataStore
from odradek.cluster.zk_acls import ZkAclStore
from odradek.cluster.zk_credentials import ZkCredentialStore
from odradek.cluster.zk_quorum import QuorumLease
from odradek.config import BrokerConfig
from odradek.coordinator.store import OFFSETS_TOPIC
from odradek.protocol.build import timedelta_to_ms
from odradek.security.client import inter_broker_security
from odradek.security.listeners import inter_broker_listener
from odradek.server.broker import PRODUCER_ID_BLOCK, Node, PartitionState
from odradek.server.cluster_groups import offsets_partition_moved
from odradek.server.cluster_peers import ClusterPeers
from odradek.server.cluster_shutdown import controlled_shutdown
from odradek.server.cluster_topics import ClusterTopicAdmin
from odradek.storage.log import AppendResult, PartitionLog
from odradek.storage.manager import LogManager

log = logging.getLogger("odradek.cluster")

RACK_AWARE_SELECTOR = "org.apache.kafka.common.replica.RackAwareReplicaSelector"


class ClusterBroker(ClusterTopicAdmin, ClusterPeers):
    """One broker of a ZooKeeper-coordinated cluster."""

    def __init__(self, config: BrokerConfig, *, faults: Any = None) -> None:
        super().__init__(config, faults=faults)
        self.store: ZkMetadataStore
        self.controller: Controller
        self.replicas = ReplicaManager(self)
        self.throttle = ReplicationThrottle(self.node_id)  # leader/follower.replication.throttled.rate
        self.loop: asyncio.AbstractEventLoop | None = None
        self.zk_ok = False
        self.session_lost = False
        self.quorum_lease: QuorumLease | None = None  # leading on while ZooKeeper has no quorum
        self.shutting_down = False
        self.registered = False
        self.closed = False
        self._known_topics: set[str] = set()
        self.nodes: dict[int, Node] = {}
        # WriteTxnMarkers to other partition leaders, AddPartitionsToTxn to other transaction coordinators
        self._peers: dict[tuple[int, str], PeerConnection] = {}
        # How this broker logs in to the others (inter.broker.listener.name's TLS and SASL).
        self.client_security = inter_broker_security(config, inter_broker_listener(config, self.listeners))
        self.leadership_listeners: list[Callable[[str, int, bool], None]] = [self._coordinator_leadership]
        self._tasks: list[asyncio.Task[Any]] = []
        self._loop_thread = -1
        self._creating: set[str] = set()  # internal topics being created aside (see create_topic)
        self._pid_prefetch: Any = None  # the next producer id block, asked for in the store's executor

    # -- lifecycle ---------------------------------------------------------

    def open(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        loop = self.loop
        assert self.config.zookeeper is not None

        def post(fn: Callable[..., None], *args: Any) -> None:
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop is closed: a kazoo thread outlived the broker
                pass

        store = self.store = ZkMetadataStore(self.config.zookeeper, self.config.zookeeper_session_timeout_ms,
                                             post=post)
        store.on_state = self._on_state
        store.on_topics = self._on_topics
        store.on_brokers = self._on_brokers
        store.on_session = self._on_session
        self.quorum_lease = QuorumLease(store.hosts, store.session_timeout_s)
        previous = read_meta_properties(self.data_dir).get("cluster.id")
        store.start(self.config.cluster_id or previous)  # a fresh ZooKeeper adopts the logs' cluster id
        self.cluster_id = store.cluster_id
        if previous and previous != self.cluster_id:
            store.stop()
            # Kafka's InconsistentClusterIdException: these logs belong to another cluster
            raise OSError(f"{self.data_dir} holds data of cluster {previous}, but ZooKeeper "
                          f"{self.config.zookeeper} is cluster {self.cluster_id}")
        try:
            self.open_security(ZkCredentialStore(store))  # SCRAM users under /config/users
            acls = ZkAclStore(store)  # ACLs under /kafka-acl, changes announced to every broker
            self.open_authorizer(acls, acls.watch)
        except BaseException:
            store.stop()
            raise
        ensure_meta_properties(self.data_dir, self.node_id, self.cluster_id)
        self.metadata = store
        self.logs = LogManager(self.data_dir, default_config=self.default_log_config())
        self.logs.open()
        self.zk_ok = True
        self._register()
        self.registered = True
        # the first producer id block now (starting up may wait for ZooKeeper), the next ones aside
        self._next_pid, self._pid_block_end = store.allocate_producer_id_block(self.node_id, PRODUCER_ID_BLOCK)
        self.broker_configs = DynamicBrokerConfigs(store, self.node_id)
        self.broker_configs.watch(self.throttle.configure)
        self.controller = Controller(store, self.node_id, self.config)
        self.controller.start()
        self._tasks.append(loop.create_task(self.replicas.run_isr_checks()))
        log.info("broker %d joined cluster %s through ZooKeeper %s", self.node_id, self.cluster_id,
                 self.config.zookeeper)

    def _register(self) -> None:
        endpoints = tuple(
            (item.name, item.security_protocol, item.advertised_host, item.advertised_port)
            for item in self.listeners
        )
        self.store.register_broker(BrokerInfo(self.node_id, self.node.host, self.node.port, self.config.broker_rack,
                                              endpoints))

    def close(self) -> None:
        """Flush and checkpoint the logs, then leave ZooKeeper; bounded, and only once (the
        server calls it again when its stop() was cut short)."""
        if self.closed:
            return
        self.closed = True
        self.shutting_down = True
        self.store.closing = True
        for task in self._tasks:
            task.cancel()
        self.replicas.close_now()  # no fetcher appends to a log being closed
        try:
            self.logs.close()
        finally:
            self.controller.stop()
            self.store.stop()
            for peer in self._peers.values():
                peer.close()

    async def controlled_shutdown(self) -> None:
        """SIGTERM: hand the leaderships over and leave the ISRs (server/cluster_shutdown.py)."""
        await controlled_shutdown(self)


    # -- ZooKeeper events (on the loop) ---------------------------------------

    def _on_session(self, state: str) -> None:
        if self.closed:  # the client closing after the broker did: nothing left to act on
            return
        if state == "CONNECTED":
            if not self.zk_ok:
                log.info("ZooKeeper session back")
            self.zk_ok = True
            if self.session_lost:
                self.session_lost = False
                task = asyncio.get_running_loop().create_task(self._reregister())
                self._tasks.append(task)
            return
        if self.zk_ok:
            log.warning("ZooKeeper session %s: broker %d stops acting as leader", state.lower(), self.node_id)
        self.zk_ok = False
        if self.quorum_lease is not None and state != "LOST":  # lead on while the ensemble has no quorum
            self.quorum_lease.watch(lambda: not self.zk_ok and not self.session_lost and not self.closed,
                                    lost_at=self.store.state_changed_at)
        if state == "LOST":
            if self.quorum_lease is not None:
                self.quorum_lease.end()
            self.session_lost = True
            for tp in list(self.replicas.leaders):
                if self.replicas.resign(tp):
                    self._leadership_changed(tp[0], tp[1], False)

    async def _reregister(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.store.executor, self._register)
        except ZkError as exc:
            log.error("cannot register again after losing the ZooKeeper session: %s", exc)
            return
        for (topic, p), state in list(self.store.seen.states.items()):
            self._on_state(topic, p, state)

    def _on_brokers(self) -> None:
        self.nodes = {
            b.broker_id: Node(b.broker_id, b.host, b.port, b.rack, tuple((e[0], e[2], e[3]) for e in b.endpoints))
            for b in self.store.seen.brokers.values()
        }

    def _on_topics(self) -> None:
        topics = self.store.seen.topics
        for topic in topics.values():
            cfg = None
            for p, replicas in enumerate(topic.replicas):
                if self.node_id not in replicas:
                    if self.logs.get(topic.name, p) is not None:
                        self._replica_removed(topic.name, p)
                    continue
                ls = self.replicas.leaders.get((topic.name, p))
                if ls is not None:  # a reassignment adds or removes followers
                    ls.replicas = list(replicas)
                    ls.removing = frozenset(topic.removing.get(p, ()))
                plog = self.logs.get(topic.name, p)
                if plog is None:
                    cfg = cfg or self.log_config(topic)
                    self.logs.get_or_create(topic.name, p, cfg)
                    state = self.store.seen.states.get((topic.name, p))
                    if state is not None:
                        self._on_state(topic.name, p, state)
                elif plog.config != (cfg := cfg or self.log_config(topic)):
                    plog.update_config(cfg)
        # Only topics seen and then deleted lose their logs: a topic missing from a
        # ZooKeeper we just connected to (a wrong chroot) keeps its data as stray logs.
        gone = self._known_topics - set(topics)
        self._known_topics = set(topics)
        for name in gone:
            for plog in [pl for pl in self.logs.logs() if pl.topic == name]:
                self.replicas.forget((name, plog.partition))
            try:
                self.logs.delete_topic(name)
                log.info("deleted the local logs of topic %s", name)
            except OSError as exc:
                log.warning("cannot delete the logs of %s: %s", name, exc)
            if self.coordinator is not None:  # each broker for the groups it coordinates
                self.coordinator.on_topic_deleted(name)

    def _replica_removed(self, topic: str, p: int) -> None:
        """A reassignment moved this replica away (Kafka's StopReplica with deletion): stop
        leading or following it and delete its log."""
        if self.replicas.resign((topic, p)):
            self._leadership_changed(topic, p, False)
        self.replicas.stop_following((topic, p))
        try:
            self.logs.delete_partition(topic, p)
            log.info("%s-%d: replica moved away; deleted its local log", topic, p)
        except OSError as exc:
            log.warning("cannot delete the log of %s-%d: %s", topic, p, exc)

    def _on_state(self, topic: str, p: int, state: LeaderAndIsr | None) -> None:
        if self.closed:
            return
        state = self.store.seen.states.get((topic, p), state)  # events queue up; act on the latest
        if state is None:
            self.replicas.forget((topic, p))
            return
        meta = self.store.seen.topics.get(topic)
        if meta is None or p >= meta.partitions or self.node_id not in meta.replicas[p]:
            if self.replicas.resign((topic, p)):
                self._leadership_changed(topic, p, False)
            self.replicas.stop_following((topic, p))
            return
        plog = self.logs.get(topic, p)
        if plog is None:
            plog = self.logs.get_or_create(topic, p, self.log_config(meta))
        if state.leader == self.node_id and self.zk_ok and self.registered and not self.shutting_down:
            if self.replicas.become_leader(plog, state, meta.replicas[p]):
                self.replicas.leaders[(topic, p)].removing = frozenset(meta.removing.get(p, ()))
                self._leadership_changed(topic, p, True)
        elif self.replicas.become_follower(plog, state):
            self._leadership_changed(topic, p, False)

    def _leadership_changed(self, topic: str, p: int, is_leader: bool) -> None:
        for listener in self.leadership_listeners:
            try:
                listener(topic, p, is_leader)
            except Exception as exc:  # noqa: BLE001 - one room's failure must not keep the others uninformed
                log.warning("leadership listener failed for %s-%d: %s", topic, p, exc)

    def on_leadership_change(self, listener: Callable[[str, int, bool], None]) -> None:
        """Rooms that keep state per partition (the group coordinator) follow leadership here."""
        self.leadership_listeners.append(listener)

    def _coordinator_leadership(self, topic: str, p: int, is_leader: bool) -> None:
        if topic == OFFSETS_TOPIC and self.coordinator is not None:
            offsets_partition_moved(self, p, is_leader)

    # -- partitions --------------------------------------------------------

    def allocate_producer_id(self) -> int:
        """Producer ids must be unique across the cluster: blocks come from ZooKeeper
        (/latest_producer_id_block, compare-and-set), as in Kafka's ZooKeeper mode. The next
        block is asked for in the store's executor once half of the current one is used (as
        KRaft's RPCProducerIdManager prefetches), so the event loop waits for ZooKeeper only
        when a whole half block goes before one ZooKeeper write returns."""
        if self._next_pid >= self._pid_block_end:
            fut, self._pid_prefetch = self._pid_prefetch, None
            if fut is not None and fut.done() and fut.exception() is None:
                self._next_pid, self._pid_block_end = fut.result()
            else:
                self._next_pid, self._pid_block_end = self.store.allocate_producer_id_block(
                    self.node_id, PRODUCER_ID_BLOCK)
        pid = self._next_pid
        self._next_pid += 1
        if self._pid_prefetch is None and self._pid_block_end - self._next_pid <= PRODUCER_ID_BLOCK // 2:
            self._pid_prefetch = self.store.executor.submit(self.store.allocate_producer_id_block, self.node_id,
                                                            PRODUCER_ID_BLOCK)
        return pid

    def node_by_id(self, broker_id: int) -> Node | None:
        return self.nodes.get(broker_id)

    def append(self, plog: PartitionLog, data: bytes, batches: list[Any]) -> AppendResult:
        """Leader appends only: a follower's log takes the leader's offsets, never its own
        (a room appending on its own, like the coordinator's offset expiry, gets an error)."""
        if (plog.topic, plog.partition) not in self.replicas.leaders or not self._may_lead():
            raise NotLeaderError(f"broker {self.node_id} does not lead {plog.topic}-{plog.partition}")
        return super().append(plog, data, batches)

    def append_as_follower(self, plog: PartitionLog, data: bytes) -> None:
        """Replication: whole batches with the leader's offsets and epochs (a torn tail waits)."""
        from odradek.protocol.records import scan_batches

        batches, _ = scan_batches(data)
        plog.append_as_follower(data, batches)

    def on_append(self, plog: PartitionLog) -> None:
        ls = self.replicas.leaders.get((plog.topic, plog.partition))
        if ls is not None:
            self.replicas.advance_high_watermark(ls)
        self.purgatory.notify((plog.topic, plog.partition))  # wakes the followers' fetches

    async def produce(self, plog: PartitionLog, data: bytes, batches: list[Any], acks: int,
                      request: Any) -> AppendResult | ErrorCode:
        tp = (plog.topic, plog.partition)
        ls = self.replicas.leaders.get(tp)
        if ls is None or not self._may_lead() or self.shutting_down:
            return ErrorCode.not_leader_or_follower
        min_isr = self._min_isr(plog.topic)
        if acks == -1 and len(ls.state.isr) < min_isr:
            return ErrorCode.not_enough_replicas
        result = self.append(plog, data, batches)  # the log stamps plog.leader_epoch into each batch
        if acks != -1:
            return result
        required = result.last_offset + 1
        if plog.high_watermark < required:
            fut = ls.wait_for(required)
            timeout_ms = timedelta_to_ms(getattr(request, "timeout", 30000))
            try:
                code = await asyncio.wait_for(fut, max(timeout_ms, 1) / 1000.0)
            except TimeoutError:
                return ErrorCode.request_timed_out
            if code != ErrorCode.none:
                return code
        if len(ls.state.isr) < min_isr:
            return ErrorCode.not_enough_replicas_after_append
        if not self._may_lead():  # cut from ZooKeeper meanwhile: a leader may exist elsewhere, acknowledge nothing
            return ErrorCode.not_leader_or_follower
        return result

    async def wait_replicated(self, plog: PartitionLog, end_offset: int, timeout_s: float) -> ErrorCode:
        """For rooms that append on their own (the group coordinator's commits, Kafka's
        offsets.commit.required.acks=-1): wait until the ISR holds everything below `end_offset`."""
        ls = self.replicas.leaders.get((plog.topic, plog.partition))
        if ls is None or not self._may_lead():
            return ErrorCode.not_leader_or_follower
        if plog.high_watermark < end_offset:
            try:
                code = await asyncio.wait_for(ls.wait_for(end_offset), timeout_s)
            except TimeoutError:
                return ErrorCode.request_timed_out
            if code != ErrorCode.none:
                return code
        # The campaign's zookeeper-quorum-loss: a coordinator whose session was suspended went on
        # acknowledging offset commits (its followers, suspended too, kept fetching) while the
        # controller elected a new leader without them: the commits were lost.
        return ErrorCode.none if self._may_lead() else ErrorCode.not_leader_or_follower

    def min_isr_error(self, plog: PartitionLog) -> ErrorCode | None:
        """NOT_ENOUGH_REPLICAS while the partition's ISR is smaller than min.insync.replicas (the
        topic's, else the broker's), produce's acks=-1 rule (Kafka's Partition.appendRecordsToLeader)
        for the coordinators' own writes to __consumer_offsets and __transaction_state."""
        ls = self.replicas.leaders.get((plog.topic, plog.partition))
        if ls is None:
            return ErrorCode.not_leader_or_follower
        return ErrorCode.not_enough_replicas if len(ls.state.isr) < self._min_isr(plog.topic) else None

    def _min_isr(self, topic: str) -> int:
        meta = self.topics().get(topic)
        return int(topic_config_value("min.insync.replicas", meta.configs if meta else {}, self.config))

    def _state(self, topic: str, partition: int) -> LeaderAndIsr | None:
        return self.store.seen.states.get((topic, partition))

    def partition_state(self, topic: str, partition: int) -> PartitionState:
        state = self._state(topic, partition)
        meta = self.topics().get(topic)
        replicas = meta.replicas[partition] if meta is not None and partition < meta.partitions else []
        offline = [b for b in replicas if b not in self.nodes]
        if state is None:
            return PartitionState(ErrorCode.leader_not_available, -1, 0, [], offline)
        error = ErrorCode.none if state.leader in self.nodes else ErrorCode.leader_not_available
        return PartitionState(error, state.leader if error == ErrorCode.none else -1, state.leader_epoch,
                              list(state.isr), offline)

    def _may_lead(self) -> bool:
        """Connected to ZooKeeper, or cut from an ensemble seen without a quorum (cluster/zk_quorum.py)."""
        return self.zk_ok or (self.quorum_lease is not None and self.quorum_lease.valid())

    def check_leader(self, topic: str, partition: int) -> ErrorCode | None:
        if (topic, partition) in self.replicas.leaders and self._may_lead() and not self.shutting_down:
            return None
        return ErrorCode.not_leader_or_follower

    def check_fetch(self, topic: str, partition: int, leader_only: bool) -> ErrorCode | None:
        """The leader serves every fetch; a follower serves consumers that send client metadata
        (Fetch v11+, KIP-392), up to its own high watermark."""
        tp = (topic, partition)
        if self._may_lead() and (tp in self.replicas.leaders or not leader_only and tp in self.replicas.following):
            return None
        return ErrorCode.not_leader_or_follower

    def preferred_read_replica(self, plog: PartitionLog, fetch_offset: int, client_rack: str) -> int:
        """KIP-392 on the leader, with replica.selector.class = RackAwareReplicaSelector: a replica
        in the consumer's rack that is in the ISR and holds `fetch_offset` (of several, the one
        furthest ahead; the leader itself when it is one of them); -1 for none."""
        if self.config.replica_selector_class != RACK_AWARE_SELECTOR:
            return -1
        ls = self.replicas.leaders.get((plog.topic, plog.partition))
        if ls is None or self.config.broker_rack == client_rack:
            return -1
        fits = [(ls.follower_leo.get(b, -1), b) for b in ls.state.isr
                if b != self.node_id and b in self.nodes and self.nodes[b].rack == client_rack
                and ls.follower_leo.get(b, -1) >= fetch_offset >= plog.log_start_offset]
        return max(fits)[1] if fits else -1

    def leader_epoch(self, topic: str, partition: int) -> int:
        state = self._state(topic, partition)
        return state.leader_epoch if state is not None else -1

    def on_follower_fetch(self, plog: PartitionLog, replica_id: int, fetch_offset: int) -> None:
        self.replicas.on_follower_fetch((plog.topic, plog.partition), replica_id, fetch_offset)

    def leader_throttle(self, plog: PartitionLog, replica_id: int) -> Quota | None:
        """The leader's replication quota when leader.replication.throttled.replicas names this
        partition's replica here and `replica_id` is not in the ISR (Kafka's shouldLeaderThrottle)."""
        ls = self.replicas.leaders.get((plog.topic, plog.partition))
        meta = self.topics().get(plog.topic)
        if ls is None or meta is None or replica_id in ls.state.isr \
                or not self.throttle.leader_throttled(meta.configs, plog.partition):
            return None
        return self.throttle.leader

    def live_nodes(self) -> list[Node]:
        return [self.nodes[b] for b in sorted(self.nodes)] or [self.node]

    def controller_id(self) -> int:
        return self.store.seen.controller

    def leader_of(self, topic: str, partition: int) -> int:
        state = self._state(topic, partition)
        if state is None:
            return -1
        if state.leader == self.node_id and (topic, partition) not in self.replicas.leaders:
            return -1  # not (yet) acting as leader
        return state.leader
