"""Consumer lag as the group coordinator sees it: committed offset against high watermark.

Kafka's brokers export no per-group lag; people run kafka-exporter (or Burrow), which
asks the cluster for each group's committed offsets and each partition's latest
offset. odradek's coordinator already holds the committed offsets of the groups it
coordinates, so it answers the same question without a client: lag is the high
watermark (the latest offset a read_uncommitted consumer can reach, what
ListOffsets LATEST answers) minus the committed offset, never below 0.

A partition with no replica on this broker has no high watermark here: cluster mode
brings those from their leaders (`remote` below), refreshed in the background, so a
scrape never waits on another broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from odradek.coordinator.group import GroupState

if TYPE_CHECKING:
    from odradek.coordinator.coordinator import GroupCoordinator


@dataclass(frozen=True, slots=True)
class GroupLag:
    """One committed offset of one group and how far behind the partition's end it is."""

    group_id: str
    topic: str
    partition: int
    committed: int
    lag: int


def committed_partitions(coordinator: GroupCoordinator) -> list[tuple[str, str, int, int]]:
    """(group, topic, partition, committed offset) of every group this broker coordinates."""
    out = []
    for group in list(coordinator.groups.values()):
        if group.is_in(GroupState.DEAD) or not coordinator.owns(group.group_id):
            continue
        for (topic, partition), value in list(group.offsets.items()):
            out.append((group.group_id, topic, partition, value.offset))
    return out


def consumer_lag(coordinator: GroupCoordinator, remote: dict[tuple[str, int], int] | None = None) -> list[GroupLag]:
    """The lag of each committed offset, against the local replica's high watermark or, for a
    partition this broker does not hold, the leader's as last brought into `remote`."""
    broker = coordinator.broker
    rows = []
    for group_id, topic, partition, committed in committed_partitions(coordinator):
        plog = broker.partition_log(topic, partition)
        end = plog.high_watermark if plog is not None else (remote or {}).get((topic, partition))
        if end is None:
            continue  # not known yet: no series rather than a wrong one
        rows.append(GroupLag(group_id, topic, partition, committed, max(0, end - committed)))
    return rows
