"""The broker's state and the services handlers call (Kafka's ReplicaManager role).

One `Broker` per process (several in one process for odradek.testing). It owns
the log manager, the metadata store and the purgatory of parked fetches;
handlers reach it through `RequestContext.broker`.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from odradek.cluster.metadata import (
    INTERNAL_TOPICS,
    LocalMetadataStore,
    MetadataStore,
    TopicError,
    TopicMetadata,
    ensure_meta_properties,
    validate_topic_name,
)
from odradek.cluster.topic_config import topic_config_value, validate_topic_configs
from odradek.config import BrokerConfig
from odradek.protocol.records import BatchHeader
from odradek.security.acl_store import FileAclStore
from odradek.security.authorizer import (
    AclStore,
    Authorizer,
    MemoryAclStore,
    OnAclChange,
    authorizer_enabled,
    parse_super_users,
)
from odradek.security.credentials import FILE_NAME as CREDENTIALS_FILE
from odradek.security.credentials import CredentialStore, FileCredentialStore, MemoryCredentialStore
from odradek.security.listeners import Listener, inter_broker_listener, parse_listeners
from odradek.security.sasl import SaslAuthenticator
from odradek.server.metrics import BrokerMetrics
from odradek.storage.log import AppendResult, LogConfig, PartitionLog
from odradek.storage.manager import LogManager
from odradek.storage.retention import enforce_retention

if TYPE_CHECKING:
    from odradek.server.faults import Faults

log = logging.getLogger("odradek.broker")

TopicPartition = tuple[str, int]
RETENTION_STEP = 500
PRODUCER_ID_BLOCK = 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# glibc's mallopt: allocations below this come from the heap, and freed heap memory up to that
# is kept for the next allocations instead of going back to the system
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
LARGE_ALLOCATION = 8 * 1024 * 1024
FREED_MEMORY_KEPT = 32 * 1024 * 1024
_allocator_tuned = False


def keep_freed_memory() -> None:
    """Let glibc's malloc reuse freed buffers of a few hundred KB instead of mapping fresh ones.

    Each Produce of a batched producer is a frame of ~100 KB-1 MB, its records and a few buffers
    of that size, freed when it is answered. glibc maps every allocation over its threshold
    (128 KB, adjusted upwards as such blocks are freed) and gives freed memory at the top of its
    heap back beyond twice that: each request's buffers were fresh pages, faulted in and zeroed,
    then unmapped (page faults, clear_page and unmap_page_range were ~20% of perf's samples of the
    broker writing 650 KB Produce requests; with these settings its CPU a million records went
    from 0.185 to 0.114 s in alternating runs). Process-wide, once; MALLOC_MMAP_THRESHOLD_ or
    MALLOC_TRIM_THRESHOLD_ in the environment (the operator's own choice) leave it alone."""
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ \
            or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, LARGE_ALLOCATION)
    mallopt(_M_TRIM_THRESHOLD, FREED_MEMORY_KEPT)


@dataclass(frozen=True, slots=True)
class PartitionState:
    error: ErrorCode
    leader: int
    leader_epoch: int
    isr: list[int]
    offline: list[int]


@dataclass(frozen=True, slots=True)
class Node:
    """A broker as clients see it: host and port are its inter-broker listener's
    advertised address; `endpoints` has every listener's (name, host, port)."""

    node_id: int
    host: str
    port: int
    rack: str | None = None
    endpoints: tuple[tuple[str, str, int], ...] = ()

    def address(self, listener: str | None) -> tuple[str, int]:
        """Where a client of `listener` reaches this broker (Kafka advertises per listener)."""
        for name, host, port in self.endpoints:
            if name == listener:
                return host, port
        return self.host, self.port


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Purgatory:
    """Parked fetches waiting for data (Kafka's DelayedFetch purgatory).

    A waiter registers interest in a set of partitions; an append to any of them
    wakes it. No polling: the fetch sleeps on a future until woken or timed out.
    """

    def __init__(self) -> None:
        self._watchers: dict[TopicPartition, set[asyncio.Future[None]]] = defaultdict(set)

    async def wait(self, partitions: list[TopicPartition], timeout_s: float) -> None:
        if timeout_s <= 0:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        for tp in partitions:
            self._watchers[tp].add(fut)
        # a timer of its own, not wait_for(shield()): two futures, a task wrapper and their
        # callbacks less for each parked fetch (one a record with linger.ms=0 consumers)
        timer = loop.call_later(timeout_s, _wake, fut)
        try:
            await fut
        finally:
            timer.cancel()
            for tp in partitions:
                watchers = self._watchers.get(tp)
                if watchers is not None:
                    watchers.discard(fut)
                    if not watchers:
                        del self._watchers[tp]

    def notify(self, tp: TopicPartition) -> None:
        watchers = self._watchers.get(tp)
        if watchers:
            for fut in watchers:
                if not fut.done():
                    fut.set_result(None)


class Broker:
    """Single-node broker services; cluster mode layers replication on top."""

    def __init__(self, config: BrokerConfig, *, faults: Faults | None = None) -> None:
        keep_freed_memory()
        self.config = config
        self.node_id = max(config.broker_id, 0)
        self.listeners = parse_listeners(config)
        self.node = self._node_of(self.listeners)
        self.faults = faults
        self.purgatory = Purgatory()
        self.metrics = BrokerMetrics()
        self.data_dir = config.data_dir
        self.cluster_id = ""
        self.metadata: MetadataStore
        self.logs: LogManager
        self.started_at_ms = now_ms()
        self.coordinator: Any = None  # the group coordinator, set by the server app
        self.transaction_coordinator: Any = None  # set by server/handlers/transactions.py
        self.credentials: CredentialStore = MemoryCredentialStore()  # SCRAM users, set by open()
        self.sasl: SaslAuthenticator  # which SASL logins each listener accepts, set by open()
        self.authorizer: Authorizer | None = None  # authorizer.class.name, set by open_authorizer()
        self._next_pid = 0
        self._pid_block_end = 0
        # topic_by_id's index and the topics dict it was built from (a ZooKeeper store replaces
        # that dict on every change; the local one is told through create/delete_topic)
        self._topics_by_id: dict[uuid.UUID, TopicMetadata] = {}
        self._indexed_topics: dict[str, TopicMetadata] | None = None

    def _node_of(self, listeners: list[Listener]) -> Node:
        inter = inter_broker_listener(self.config, listeners)
        endpoints = tuple((item.name, item.advertised_host, item.advertised_port) for item in listeners)
        return Node(self.node_id, inter.advertised_host, inter.advertised_port, None, endpoints)

    def listener_bound(self, name: str, port: int) -> None:
        """A listener's socket is bound: port 0 becomes the kernel's port everywhere."""
        self.listeners = [item.bound(port) if item.name == name else item for item in self.listeners]
        self.node = self._node_of(self.listeners)

    # -- lifecycle ---------------------------------------------------------

    def open_security(self, credentials: CredentialStore) -> None:
        """SCRAM users and the SASL logins of each listener; a bad SASL key stops the start here."""
        self.credentials = credentials
        self.sasl = SaslAuthenticator(self.config, credentials, self.listeners)

    def open_authorizer(self, store: AclStore, watch: Callable[[OnAclChange], None] | None = None) -> None:
        """authorizer.class.name: the ACLs of `store`; `watch` (cluster mode) first subscribes
        the authorizer to the other brokers' changes, so none falls between it and the load."""
        if not authorizer_enabled(self.config.authorizer_class_name):
            return
        authorizer = Authorizer(store, super_users=parse_super_users(self.config.super_users),
                                allow_everyone_if_no_acl_found=self.config.allow_everyone_if_no_acl_found)
        if watch is not None:
            watch(authorizer.apply)
        authorizer.load()
        self.authorizer = authorizer

    def open(self) -> None:
        self.open_security(MemoryCredentialStore() if self.config.storage == "memory"
                           else FileCredentialStore(self.data_dir / CREDENTIALS_FILE))
        if self.config.storage == "memory":
            from odradek.storage.memory import MemoryLogManager

            self.cluster_id = self.config.cluster_id or "odradek-memory"
            self.metadata = LocalMetadataStore(None, self.cluster_id)
            # MemoryLogManager duck-types LogManager; there is no shared Protocol for the two yet
            self.logs = MemoryLogManager(default_config=self.default_log_config())  # type: ignore[assignment]
        else:
            self.cluster_id = ensure_meta_properties(self.data_dir, self.node_id, self.config.cluster_id)
            self.metadata = LocalMetadataStore(self.data_dir, self.cluster_id)
            self.logs = LogManager(self.data_dir, default_config=self.default_log_config())
        self.open_authorizer(MemoryAclStore() if self.config.storage == "memory" else FileAclStore(self.data_dir))
        self.logs.open()
        for topic in self.metadata.topics().values():
            cfg = self.log_config(topic)
            for p in range(topic.partitions):
                self.logs.get_or_create(topic.name, p, cfg)

    def close(self) -> None:
        wait_synced = getattr(self.metadata, "wait_synced", None)  # topics.json's write on its own thread
        if wait_synced is not None:  # before a restart in this process reads the file
            wait_synced()
        self.logs.close()

    # -- topics ------------------------------------------------------------

    def topics(self) -> dict[str, TopicMetadata]:
        return self.metadata.topics()

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMetadata | None:
        """The topic of a KIP-516 topic id (Produce v13, Fetch v13+), or None."""
        topics = self.topics()
        if topics is not self._indexed_topics or len(topics) != len(self._topics_by_id):
            self._topics_by_id = {t.topic_id: t for t in topics.values()}
            self._indexed_topics = topics
        topic = self._topics_by_id.get(topic_id)
        return topic if topic is not None and topics.get(topic.name) is topic else None

    def default_log_config(self) -> LogConfig:
        return self.log_config(None)

    def log_config(self, topic: TopicMetadata | None) -> LogConfig:
        configs = topic.configs if topic is not None else {}

        def v(name: str) -> Any:
            return topic_config_value(name, configs, self.config)

        return LogConfig(
            segment_bytes=v("segment.bytes"),
            segment_ms=v("segment.ms"),
            index_interval_bytes=v("index.interval.bytes"),
            segment_index_bytes=v("segment.index.bytes"),
            retention_ms=v("retention.ms"),
            retention_bytes=v("retention.bytes"),
            cleanup_policy=v("cleanup.policy"),
            max_message_bytes=v("max.message.bytes"),
            message_timestamp_type=v("message.timestamp.type"),
            delete_retention_ms=v("delete.retention.ms"),
            min_cleanable_dirty_ratio=v("min.cleanable.dirty.ratio"),
            min_compaction_lag_ms=v("min.compaction.lag.ms"),
            max_compaction_lag_ms=v("max.compaction.lag.ms"),
        )

    def partition_limit(self) -> int:
        """max.broker.partitions (KIP-578); Kafka's default, Int.MAX_VALUE, when unset: segment
        files open lazily and at most storage.open_files.OPEN_SEGMENTS at once, so the open-file
        limit no longer bounds how many partitions a broker holds."""
        if self.config.max_broker_partitions >= 0:
            return self.config.max_broker_partitions
        return 2**31 - 1

    def check_partition_limit(self, new_partitions: int) -> None:
        """Refuse, before anything is created, partitions beyond max.broker.partitions."""
        hosted = sum(t.partitions for t in self.topics().values())
        limit = self.partition_limit()
        if hosted + new_partitions > limit:
            raise TopicError(
                "policy_violation",
                f"{new_partitions} more partition(s) would exceed this broker's limit of {limit} "
                f"(max.broker.partitions; {hosted} exist)",
            )

    def create_topic(
        self,
        name: str,
        num_partitions: int = -1,
        replication_factor: int = -1,
        configs: dict[str, str] | None = None,
        *,
        validate_only: bool = False,
    ) -> TopicMetadata | None:
        """Validate and create a topic; raises TopicError or InvalidConfigError."""
        validate_topic_name(name)
        if num_partitions == -1:
            num_partitions = self.config.num_partitions
        if replication_factor == -1:
            replication_factor = self.config.default_replication_factor
        if num_partitions <= 0:
            raise TopicError("invalid_partitions", "number of partitions must be larger than 0")
        if replication_factor <= 0:
            raise TopicError("invalid_replication_factor", "replication factor must be larger than 0")
        if replication_factor > 1:
            raise TopicError(
                "invalid_replication_factor",
                f"replication factor: {replication_factor} larger than available brokers: 1",
            )
        checked = validate_topic_configs(configs or {})
        if name in self.topics():
            raise TopicError("topic_already_exists", f"Topic '{name}' already exists.")  # Kafka's words
        self.check_partition_limit(num_partitions)
        if validate_only:
            return None
        topic = self.metadata.create_topic(name, [[self.node_id] for _ in range(num_partitions)], checked)
        self._indexed_topics = None
        cfg = self.log_config(topic)
        for p in range(num_partitions):
            self.logs.get_or_create(name, p, cfg)
        log.info("created topic %s with %d partitions", name, num_partitions)
        return topic

    def auto_create(self, name: str) -> TopicMetadata | None:
        """auto.create.topics.enable: create a topic the first time a client asks for it."""
        if not self.config.auto_create_topics_enable or name in INTERNAL_TOPICS:
            return None
        try:
            return self.create_topic(name)
        except TopicError as exc:
            if exc.code == "topic_already_exists":
                return self.topics().get(name)
            return None

    def delete_topic(self, name: str) -> None:
        if name not in self.topics():
            raise TopicError("unknown_topic_or_partition", f"topic {name!r} does not exist")
        self.metadata.delete_topic(name)
        self._indexed_topics = None
        self.logs.delete_topic(name)
        log.info("deleted topic %s", name)
        if self.coordinator is not None:  # Kafka's GroupCoordinator.onPartitionsDeleted
            self.coordinator.on_topic_deleted(name)

    def create_partitions(self, name: str, count: int, *, validate_only: bool = False) -> None:
        topic = self.topics().get(name)
        if topic is None:
            raise TopicError("unknown_topic_or_partition", f"topic {name!r} does not exist")
        if count <= topic.partitions:
            raise TopicError(
                "invalid_partitions",
                f"topic currently has {topic.partitions} partitions, {count} would not be an increase",
            )
        self.check_partition_limit(count - topic.partitions)
        if validate_only:
            return
        start = topic.partitions
        topic = self.metadata.add_partitions(name, [[self.node_id] for _ in range(count - start)])
        cfg = self.log_config(topic)
        for p in range(start, count):
            self.logs.get_or_create(name, p, cfg)

    def set_topic_configs(self, name: str, configs: dict[str, str], *, validate_only: bool = False) -> None:
        topic = self.topics().get(name)
        if topic is None:
            raise TopicError("unknown_topic_or_partition", f"topic {name!r} does not exist")
        checked = validate_topic_configs(configs)
        if validate_only:
            return
        self.metadata.set_configs(name, checked)
        cfg = self.log_config(topic)
        for p in range(topic.partitions):
            plog = self.logs.get(name, p)
            if plog is not None:
                plog.update_config(cfg)

    # -- partitions --------------------------------------------------------

    def partition_log(self, topic: str, partition: int) -> PartitionLog | None:
        return self.logs.get(topic, partition)

    def append(self, plog: PartitionLog, data: bytes, batches: list[BatchHeader]) -> AppendResult:
        result = plog.append(data, batches, now_ms=now_ms())
        self.on_append(plog)
        return result

    def on_append(self, plog: PartitionLog) -> None:
        """Single node: the high watermark is the log end offset; wake parked fetches."""
        plog.high_watermark = plog.log_end_offset
        self.purgatory.notify((plog.topic, plog.partition))

    async def produce(
        self, plog: PartitionLog, data: bytes, batches: list[BatchHeader], acks: int, request: Any
    ) -> AppendResult | ErrorCode:
        """Append a validated produce; cluster mode waits here for the ISR when acks=-1."""
        return self.append(plog, data, batches)

    def partition_state(self, topic: str, partition: int) -> PartitionState:
        return PartitionState(ErrorCode.none, self.node_id, 0, [self.node_id], [])

    def check_leader(self, topic: str, partition: int) -> ErrorCode | None:
        """None when this broker leads the partition, else the error to answer."""
        return None

    def check_fetch(self, topic: str, partition: int, is_follower: bool) -> ErrorCode | None:
        return None

    def leader_epoch(self, topic: str, partition: int) -> int:
        return 0

    def on_follower_fetch(self, plog: PartitionLog, replica_id: int, fetch_offset: int) -> None:
        """Replication hook: a follower reports its log end offset by fetching from it."""

    def last_stable_offset(self, plog: PartitionLog) -> int:
        """read_committed consumers stop here: below every open transaction, at most the HW."""
        return plog.producer_state.last_stable_offset(plog.high_watermark)

    def aborted_transactions(self, plog: PartitionLog, fetch_offset: int, upper: int) -> list[dict[str, int]]:
        """The aborted transactions a read_committed fetch from `fetch_offset` must skip."""
        return [{"producer_id": a.producer_id, "first_offset": a.first_offset}
                for a in plog.producer_state.collect_aborted(fetch_offset, upper)]

    async def write_txn_marker(self, topic: str, partition: int, producer_id: int, producer_epoch: int,
                               committed: bool, coordinator_epoch: int, transaction_version: int = 0) -> ErrorCode:
        """Append a COMMIT/ABORT marker as this partition's leader (WriteTxnMarkers); on
        __consumer_offsets it also resolves the producer's pending transactional offsets.
        `transaction_version` is the transaction's (WriteTxnMarkers v2, KIP-890)."""
        from odradek.protocol.record_errors import InvalidRecordError
        from odradek.protocol.records import encode_control_batch, parse_batches

        plog = self.partition_log(topic, partition)
        if plog is None:
            return ErrorCode.unknown_topic_or_partition
        not_leader = self.check_leader(topic, partition)
        if not_leader is not None:
            return not_leader
        refused = plog.producer_state.marker_error(producer_id, producer_epoch, transaction_version,
                                                   coordinator_epoch)
        if refused is not None:
            return refused
        data = encode_control_batch(committed, producer_id, producer_epoch, coordinator_epoch, now_ms())
        try:
            result = await self.produce(plog, data, parse_batches(data), -1, None)
        except InvalidRecordError as exc:
            return exc.error_code
        if isinstance(result, ErrorCode):
            return result
        if topic == "__consumer_offsets" and self.coordinator is not None:
            self.coordinator.complete_txn(producer_id, committed, partition)
        return ErrorCode.none

    async def enforce_retention(self) -> None:
        """Every log's retention, RETENTION_STEP logs a loop iteration (10,000 partitions in one
        go held the loop every log.retention.check.interval.ms)."""
        now = now_ms()
        for i, plog in enumerate(self.logs.logs()):
            if i and i % RETENTION_STEP == 0:
                await asyncio.sleep(0)
            if self.logs.get(plog.topic, plog.partition) is not plog:
                continue  # deleted meanwhile
            try:
                deleted = enforce_retention(plog, now)
            except OSError as exc:
                log.warning("retention of %s-%d failed: %s", plog.topic, plog.partition, exc)
                continue
            if deleted:
                log.info("retention deleted %d segment(s) of %s-%d; log start offset now %d",
                         deleted, plog.topic, plog.partition, plog.log_start_offset)

    def allocate_producer_id(self) -> int:
        """A new producer id; blocks of 1000 are reserved in `producer-id-block` so ids
        are never reused after a restart (Kafka keeps its blocks in ZooKeeper)."""
        if self._next_pid >= self._pid_block_end:
            path = self.data_dir / "producer-id-block" if self.config.storage == "file" else None
            start = int(path.read_text()) if path is not None and path.exists() else 0
            start = max(start, self._pid_block_end)
            self._pid_block_end = start + PRODUCER_ID_BLOCK
            if path is not None:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(str(self._pid_block_end))
                os.replace(tmp, path)
            self._next_pid = start
        pid = self._next_pid
        self._next_pid += 1
        return pid

    def live_nodes(self) -> list[Node]:
        return [self.node]

    def controller_id(self) -> int:
        return self.node_id

    def leader_of(self, topic: str, partition: int) -> int:
        return self.node_id
