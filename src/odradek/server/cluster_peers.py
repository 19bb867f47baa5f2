"""A cluster broker's requests to the other brokers: WriteTxnMarkers to a partition's leader,
AddPartitionsToTxn v4+ to a transaction coordinator (Kafka's AddPartitionsToTxnManager), each
purpose on one kept connection per broker, over the inter-broker listener's TLS and SASL."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cluster.peer import PeerConnection
from odradek.cluster.replication import ReplicaManager
from odradek.cluster.zk import ZkMetadataStore
from odradek.server.broker import Broker, Node

log = logging.getLogger("odradek.cluster")

WRITE_TXN_MARKERS_KEY = 27


class ClusterPeers(Broker):
    """Part of ClusterBroker (server/cluster_broker.py), which sets these attributes up."""

    store: ZkMetadataStore
    replicas: ReplicaManager
    nodes: dict[int, Node]
    client_security: Any
    _peers: dict[tuple[int, str], PeerConnection]

    async def write_txn_marker(self, topic: str, partition: int, producer_id: int, producer_epoch: int,
                               committed: bool, coordinator_epoch: int, transaction_version: int = 0) -> ErrorCode:
        """Local leader: append (and wait for the ISR); otherwise WriteTxnMarkers to the leader."""
        if (topic, partition) in self.replicas.leaders:
            return await super().write_txn_marker(topic, partition, producer_id, producer_epoch, committed,
                                                  coordinator_epoch, transaction_version)
        state = self.store.seen.states.get((topic, partition))
        node = self.nodes.get(state.leader) if state is not None else None
        if node is None or node.node_id == self.node_id:
            return ErrorCode.not_leader_or_follower
        peer = self._peer(node, "txn")
        body = {"markers": [{"producer_id": producer_id, "producer_epoch": producer_epoch,
                             "transaction_result": committed, "coordinator_epoch": coordinator_epoch,
                             "transaction_version": transaction_version,
                             "topics": [{"name": topic, "partition_indexes": [partition]}]}]}
        try:
            resp = await peer.call(WRITE_TXN_MARKERS_KEY, 2, body, timeout=30.0)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            log.info("WriteTxnMarkers to broker %d failed: %r", node.node_id, exc)
            return ErrorCode.not_leader_or_follower
        return resp.markers[0].topics[0].partitions[0].error_code  # type: ignore[no-any-return]

    def _peer(self, node: Node, purpose: str) -> PeerConnection:
        """One kept connection per other broker and purpose (requests on one are sent one at a time)."""
        peer = self._peers.get((node.node_id, purpose))
        if peer is None or (peer.host, peer.port) != (node.host, node.port):
            peer = self._peers[(node.node_id, purpose)] = PeerConnection(
                node.host, node.port, f"broker-{self.node_id}-{purpose}", self.client_security
            )
        return peer

    async def call_broker(self, node_id: int, api_key: int, version: int, body: dict[str, Any],
                          timeout: float) -> Any:
        """A request to another broker (AddPartitionsToTxn v4+ to a transaction coordinator,
        Kafka's AddPartitionsToTxnManager); OSError when it cannot be reached or answer."""
        node = self.nodes.get(node_id)
        if node is None or node_id == self.node_id:
            raise OSError(f"broker {node_id} is not a live peer")
        try:
            return await self._peer(node, "verify").call(api_key, version, body, timeout=timeout)
        except (asyncio.IncompleteReadError, TimeoutError) as exc:
            raise OSError(f"broker {node_id} did not answer: {exc!r}") from exc
