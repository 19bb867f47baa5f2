"""Group coordinator failover in cluster mode: the coordinator of a group is the leader of its
__consumer_offsets partition, so the groups move with that partition's leadership."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

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
        return
    live = dict(groups)
    groups.clear()
    coord.load()  # replays all of __consumer_offsets into coord.groups
    loaded = dict(groups)
    groups.clear()
    led = {p for (t, p) in broker.replicas.leaders if t == OFFSETS_TOPIC}
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
