"""SharePersister (Kafka's DefaultStatePersister): where a share partition's state is read and written.

The state of (group, topic id, partition) lives in the __share_group_state partition its
key hashes to; the leader of that partition is its share coordinator. A share partition
led here whose state partition is led here too reads and writes it directly; otherwise
it asks the share coordinator with InitializeShareGroupState, ReadShareGroupState,
WriteShareGroupState and DeleteShareGroupState (KIP-932's inter-broker RPCs), as Kafka's
brokers do. As in Kafka's ShareCoordinatorShard, a share partition's state exists once the
group coordinator has initialized it (when it first assigns the partition, or
AlterShareGroupOffsets); a read or write of state never initialized, or deleted since, is
INVALID_REQUEST, and a write or initialization older than the state epoch kept is
FENCED_STATE_EPOCH. The share
coordinator keeps the latest snapshot per key in memory, rebuilt from its replica of the
partition whenever it becomes the partition's leader (a failover), so a new leader
serves what the old one wrote.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from odradek.coordinator.share_partition import StateBatch
from odradek.coordinator.share_state import ShareStateStore, Snapshot

if TYPE_CHECKING:
    from odradek.server.broker import Broker

log = logging.getLogger("odradek.coordinator")
E = ErrorCode
INITIALIZE_STATE, READ_STATE, WRITE_STATE, DELETE_STATE = 83, 84, 85, 86
UNINITIALIZED_READ = "Read operation on uninitialized share partition not allowed."
UNINITIALIZED_WRITE = "Write operation on uninitialized share partition not allowed."
RPC_TIMEOUT_S = 15.0

Key = tuple[str, uuid.UUID, int]


def delivered(batches: list[StateBatch]) -> int:
    """Records of the state batches delivered for good (ACKNOWLEDGED, ARCHIVED)."""
    return sum(b.last_offset - b.first_offset + 1 for b in batches if b.delivery_state in (2, 4))


class SharePersister:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.store = ShareStateStore(broker)
        self.snapshots: dict[Key, Snapshot] = {}
        # Kafka's ShareCoordinatorShard keeps apart the leader epoch that fences a share partition
        # leader's reads and writes (leaderEpochMap) and the one of the latest record (shown by the
        # summary, which an initialization sets to 0); and the summary's delivery complete count
        self.leader_epochs: dict[Key, int] = {}
        self.shown: dict[Key, tuple[int, int]] = {}  # (record leader epoch, delivery complete count)
        self._loaded: dict[int, int] = {}  # state partition -> the leader epoch its snapshots were read at

    def state_partition(self, key: Key) -> int:
        return self.store.partition_for(self.store.share_key(*key))

    def _leader(self, key: Key) -> tuple[int, int]:
        """(the share coordinator's broker id, the state partition) of `key`; -1 when there is none."""
        if not self.store.ensure_topic():
            return -1, -1
        p = self.state_partition(key)
        return self.broker.leader_of(self.store.topic, p), p

    # -- the share coordinator's side (this broker leads the state partition) -----------------

    def _ensure_loaded(self, p: int) -> None:
        """Snapshots of state partition `p` as its log holds them, re-read after a leader change."""
        epoch = self.broker.leader_epoch(self.store.topic, p)
        if self._loaded.get(p) == epoch:
            return
        for key in [k for k in self.snapshots if self.state_partition(k) == p]:
            del self.snapshots[key]
            self.leader_epochs.pop(key, None)
            self.shown.pop(key, None)
        leader_epochs: dict[Key, int] = {}
        loaded = self.store.load([p], leader_epochs)
        self.snapshots.update(loaded)
        self.leader_epochs.update(leader_epochs)
        self.shown.update({k: (leader_epochs.get(k, 0), delivered(snap[2])) for k, snap in loaded.items()})
        self._loaded[p] = epoch

    def summary_local(self, key: Key) -> tuple[ErrorCode, Snapshot | None]:
        """The state kept of `key`, None when it was never initialized (ReadShareGroupStateSummary)."""
        leader, p = self._leader(key)
        if leader != self.broker.node_id:
            return E.not_coordinator, None
        self._ensure_loaded(p)
        return E.none, self.snapshots.get(key)

    def read_local(self, key: Key, leader_epoch: int = -1) -> tuple[ErrorCode, Snapshot | None]:
        """The state of `key`; INVALID_REQUEST when it was never initialized. A share partition
        leader's epoch older than one seen is FENCED_LEADER_EPOCH; a newer one is kept (-1: none)."""
        error, snap = self.summary_local(key)
        if error or snap is None:
            return error or E.invalid_request, None
        if leader_epoch >= 0:
            seen = self.leader_epochs.get(key, 0)
            if seen > leader_epoch:
                return E.fenced_leader_epoch, None
            if leader_epoch > seen:  # Kafka writes the state again with the new leader epoch
                self.store.save(*key, snap, leader_epoch)
                self.leader_epochs[key] = leader_epoch
                self.shown[key] = (leader_epoch, self.shown.get(key, (0, -1))[1])
        return E.none, snap

    async def initialize_local(self, key: Key, state_epoch: int, start_offset: int) -> ErrorCode:
        """InitializeShareGroupState: the state starts over at `start_offset` (-1: the share partition
        leader applies share.auto.offset.reset) with nothing in flight, unless a newer state epoch is kept."""
        return await self.write_local(key, (state_epoch, start_offset, []), initialize=True)

    async def write_local(self, key: Key, snapshot: Snapshot | None, leader_epoch: int = -1, *,
                          initialize: bool = False, delivery_complete: int = -1) -> ErrorCode:
        """A snapshot (None: a tombstone), answered once the ISR holds it in cluster mode (as
        Kafka's coordinators write with acks=all); a write to a state never initialized is
        INVALID_REQUEST, one from an older state epoch FENCED_STATE_EPOCH (the state was
        initialized, altered or deleted since its writer read it), one from a share partition
        leader older than one seen FENCED_LEADER_EPOCH (-1: no leader epoch to check)."""
        leader, p = self._leader(key)
        if leader != self.broker.node_id:
            return E.not_coordinator
        self._ensure_loaded(p)
        current = self.snapshots.get(key)
        if current is None and snapshot is None:  # Kafka: "Attempted to delete non-existent share partition"
            return E.none
        if current is None and not initialize:
            return E.invalid_request
        if not initialize and snapshot is not None and leader_epoch >= 0 and \
                self.leader_epochs.get(key, 0) > leader_epoch:
            return E.fenced_leader_epoch
        if snapshot is not None and current is not None and snapshot[0] < current[0]:
            return E.fenced_state_epoch
        shown = 0 if initialize else leader_epoch if leader_epoch >= 0 else self.shown.get(key, (0, -1))[0]
        if not self.store.save(*key, snapshot, shown):
            return E.coordinator_not_available
        if snapshot is None:
            self.snapshots.pop(key, None)
            self.leader_epochs.pop(key, None)
            self.shown.pop(key, None)
        else:
            self.snapshots[key] = snapshot
            if leader_epoch >= 0 and not initialize:
                self.leader_epochs[key] = leader_epoch
            self.shown[key] = (shown, 0 if initialize else delivery_complete if delivery_complete >= 0
                               else delivered(snapshot[2]))
        wait = getattr(self.broker, "wait_replicated", None)
        plog = self.broker.partition_log(self.store.topic, p)
        if wait is not None and plog is not None:
            code: ErrorCode = await wait(plog, plog.log_end_offset, RPC_TIMEOUT_S)
            if code:
                log.info("share state of %s not replicated: %s", key, code.name)
                return E.coordinator_not_available
        return E.none

    def local_keys(self, group_id: str) -> list[Key]:
        """The group's keys in state partitions this broker leads."""
        if not self.store.exists():
            return []
        for p in range(self.store.num_partitions):
            if self.broker.leader_of(self.store.topic, p) == self.broker.node_id:
                self._ensure_loaded(p)
        return [k for k in self.snapshots if k[0] == group_id and
                self.broker.leader_of(self.store.topic, self.state_partition(k)) == self.broker.node_id]

    # -- the share partition leader's side --------------------------------------------------------

    async def read(self, key: Key, leader_epoch: int = -1) -> tuple[ErrorCode, Snapshot | None]:
        """The state of `key`: INVALID_REQUEST when it was never initialized; a start offset of -1 when
        it was initialized without one. `leader_epoch`: the share partition leader's (-1: not its leader)."""
        leader, _ = self._leader(key)
        if leader == self.broker.node_id:
            return self.read_local(key, leader_epoch)
        if leader < 0:
            return E.coordinator_not_available, None
        group, topic_id, partition = key
        body = {"group_id": group, "topics": [{"topic_id": topic_id, "partitions": [
            {"partition": partition, "leader_epoch": leader_epoch}]}]}
        resp = await self._call(leader, READ_STATE, 0, body)
        if resp is None:
            return E.coordinator_not_available, None
        r = resp.results[0].partitions[0]
        if r.error_code:
            return r.error_code, None
        batches = [StateBatch(b.first_offset, b.last_offset, b.delivery_state, b.delivery_count)
                   for b in r.state_batches]
        return E.none, (r.state_epoch, r.start_offset, batches)

    async def initialize(self, key: Key, state_epoch: int, start_offset: int) -> ErrorCode:
        leader, _ = self._leader(key)
        if leader == self.broker.node_id:
            return await self.initialize_local(key, state_epoch, start_offset)
        if leader < 0:
            return E.coordinator_not_available
        group, topic_id, partition = key
        body = {"group_id": group, "topics": [{"topic_id": topic_id, "partitions": [
            {"partition": partition, "state_epoch": state_epoch, "start_offset": start_offset}]}]}
        resp = await self._call(leader, INITIALIZE_STATE, 0, body)
        return E.coordinator_not_available if resp is None else resp.results[0].partitions[0].error_code

    def has_state(self, group_id: str) -> bool:
        """Whether any state of the group is kept in a replica of __share_group_state here, led or
        not (a share group outlives its members: after a restart or a coordinator failover its
        members find it by its state)."""
        if any(k[0] == group_id for k in self.snapshots):
            return True
        if not self.store.exists():
            return False
        return any(k[0] == group_id for k in self.store.load())

    async def write(self, key: Key, snapshot: Snapshot, leader_epoch: int) -> ErrorCode:
        leader, _ = self._leader(key)
        if leader == self.broker.node_id:
            return await self.write_local(key, snapshot, leader_epoch)
        if leader < 0:
            return E.coordinator_not_available
        group, topic_id, partition = key
        state_epoch, start, batches = snapshot
        body = {"group_id": group, "topics": [{"topic_id": topic_id, "partitions": [{
            "partition": partition, "state_epoch": state_epoch, "leader_epoch": leader_epoch,
            "start_offset": start, "delivery_complete_count": delivered(batches), "state_batches": [
                {"first_offset": b.first_offset, "last_offset": b.last_offset,
                 "delivery_state": b.delivery_state, "delivery_count": b.delivery_count} for b in batches]}]}]}
        resp = await self._call(leader, WRITE_STATE, 1, body)
        return E.coordinator_not_available if resp is None else resp.results[0].partitions[0].error_code

    async def delete(self, key: Key) -> ErrorCode:
        leader, _ = self._leader(key)
        if leader == self.broker.node_id:
            return await self.write_local(key, None)
        if leader < 0:
            return E.coordinator_not_available
        group, topic_id, partition = key
        body = {"group_id": group, "topics": [{"topic_id": topic_id, "partitions": [{"partition": partition}]}]}
        resp = await self._call(leader, DELETE_STATE, 0, body)
        return E.coordinator_not_available if resp is None else resp.results[0].partitions[0].error_code

    async def _call(self, node_id: int, api_key: int, version: int, body: dict[str, Any]) -> Any:
        call = getattr(self.broker, "call_broker", None)  # cluster mode only: a single broker leads everything
        if call is None:
            return None
        try:
            return await call(node_id, api_key, version, body, RPC_TIMEOUT_S)
        except OSError as exc:
            log.info("share state request %d to broker %d failed: %s", api_key, node_id, exc)
            return None
