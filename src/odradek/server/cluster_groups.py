"""Group coordinator failover in cluster mode: the coordinator of a group is the leader of its
__consumer_offsets partition, so the groups move with that partition's leadership."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from odradek.coordinator.store import OFFSETS_TOPIC

if TYPE_CHECKING:
    from odradek.server.cluster_broker import ClusterBroker

log = logging.getLogger("odradek.cluster")


def offsets_partition_moved(broker: ClusterBroker, partition: int, is_leader: bool) -> None:
    """Group coordinator failover: the coordinator of a group is the leader of its
    __consumer_offsets partition. On gaining a partition, replay it (the groups
    of the partitions led already stay as they are, live); on losing one, forget
    its groups, so that the new leader's copy is the only one answering."""
    coord = broker.coordinator
    groups = getattr(coord, "groups", None)
    if groups is None:
        return
    partition_for = coord.partition_for
    if not is_leader:
        for gid in [g for g in groups if partition_for(g) == partition]:
            del groups[gid]
        # and the pending transactional offsets of its groups: a marker written while another broker
        # led the partition never reached this one, so pending offsets kept from this term would be
        # applied by a later transaction's marker, taking the group's offsets back (issue 18's
        # campaign: 464 read where committed transactions had reached 2,907)
        _keep_txn_offsets(coord, lambda gid: partition_for(gid) != partition)
        return
    live = dict(groups)
    groups.clear()
    led = {p for (t, p) in broker.replicas.leaders if t == OFFSETS_TOPIC}
    live_pending = {pid: dict(by_group) for pid, by_group in coord.txn_offsets.items()}
    coord.txn_offsets.clear()
    coord.load()  # replays all of __consumer_offsets into coord.groups (and open transactions' offsets)
    # open transactions: the log's for the gained partition; the live ones for the partitions led already
    _keep_txn_offsets(coord, lambda gid: partition_for(gid) == partition)
    for pid, by_group in live_pending.items():
        for gid, offsets in by_group.items():
            if partition_for(gid) in led and partition_for(gid) != partition:
                coord.txn_offsets.setdefault(pid, {})[gid] = offsets
    loaded = dict(groups)
    groups.clear()
    for gid, group in loaded.items():
        if partition_for(gid) == partition:
            groups[gid] = group
            schedule = getattr(coord, "_schedule_heartbeat", None)
            if schedule is not None:
                for member in group.members.values():
                    schedule(group, member)
    for gid, group in live.items():
        if partition_for(gid) in led and partition_for(gid) != partition:
            groups[gid] = group
    count = sum(1 for g in groups if partition_for(g) == partition)
    if count:
        log.info("group coordinator: %s-%d brought %d group(s)", OFFSETS_TOPIC, partition, count)


def _keep_txn_offsets(coord: Any, keep: Callable[[str], bool]) -> None:
    """Drop the pending transactional offsets of the groups `keep` refuses."""
    for pid in list(coord.txn_offsets):
        by_group = coord.txn_offsets[pid]
        for gid in [g for g in by_group if not keep(g)]:
            del by_group[gid]
        if not by_group:
            del coord.txn_offsets[pid]
