"""What replication needs of the broker it runs in, as a protocol (no import of server/).

ReplicaManager and the fetchers are told about their broker (server/cluster_broker.py's
ClusterBroker) through this interface, so that imports point one way, server -> cluster ->
storage, and the replication room can be read (and type-checked) on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from odradek.cluster.metadata import TopicMetadata
    from odradek.cluster.zk import ZkMetadataStore
    from odradek.config import BrokerConfig
    from odradek.storage.log import PartitionLog
    from odradek.storage.manager import LogManager


class ReplicaHost(Protocol):
    @property
    def node_id(self) -> int: ...
    @property
    def config(self) -> BrokerConfig: ...
    @property
    def zk_ok(self) -> bool: ...  # acting on ZooKeeper's word (no ISR write while disconnected)
    @property
    def store(self) -> ZkMetadataStore: ...
    @property
    def logs(self) -> LogManager: ...
    @property
    def purgatory(self) -> Any: ...  # notify((topic, partition)) wakes the fetches parked on it
    @property
    def metrics(self) -> Any: ...  # isr_shrinks / isr_expands counters

    def topics(self) -> dict[str, TopicMetadata]: ...
    def node_by_id(self, broker_id: int) -> Any: ...  # host and port of a live broker, or None
    def append_as_follower(self, plog: PartitionLog, data: bytes) -> None: ...
