"""Pending transactional offsets move with the leadership of their __consumer_offsets
partition (server/cluster_groups.py): a broker keeps none for a partition it stopped leading,
so a later marker cannot apply offsets of an old term (the fault campaign read a group's
offset back at 464 where committed transactions had reached 2,907)."""

from __future__ import annotations

from types import SimpleNamespace

from odradek.config import BrokerConfig
from odradek.coordinator.coordinator import GroupCoordinator
from odradek.coordinator.records import OffsetValue
from odradek.coordinator.store import OFFSETS_TOPIC
from odradek.server.broker import Broker
from odradek.server.cluster_groups import offsets_partition_moved


def coordinator() -> GroupCoordinator:
    broker = Broker(BrokerConfig(storage="memory"))
    broker.open()
    return GroupCoordinator(broker)


def groups_on_two_partitions(coord: GroupCoordinator) -> tuple[str, str, int, int]:
    names = [f"g{i}" for i in range(200)]
    first = names[0]
    other = next(n for n in names if coord.partition_for(n) != coord.partition_for(first))
    return first, other, coord.partition_for(first), coord.partition_for(other)


def offset(n: int) -> OffsetValue:
    return OffsetValue(n, -1, "", 0, -1)


def test_losing_a_partition_drops_its_pending_transactional_offsets() -> None:
    coord = coordinator()
    moved, kept, p_moved, p_kept = groups_on_two_partitions(coord)
    coord.txn_offsets = {7: {moved: {("t", 0): offset(464)}, kept: {("t", 0): offset(10)}}}
    cluster = SimpleNamespace(coordinator=coord, replicas=SimpleNamespace(leaders={(OFFSETS_TOPIC, p_kept): 1}))
    offsets_partition_moved(cluster, p_moved, False)  # type: ignore[arg-type]
    assert coord.txn_offsets == {7: {kept: {("t", 0): offset(10)}}}
    offsets_partition_moved(cluster, p_kept, False)  # type: ignore[arg-type]
    assert coord.txn_offsets == {}


def test_gaining_a_partition_takes_its_pending_offsets_from_the_log_only() -> None:
    coord = coordinator()
    gained, led, p_gained, p_led = groups_on_two_partitions(coord)
    # left from an earlier term (the log has no open transaction of it), and a live one of a
    # partition led all along, which the replay of the log must not drop
    coord.txn_offsets = {7: {gained: {("t", 0): offset(464)}, led: {("t", 1): offset(5)}}}
    cluster = SimpleNamespace(coordinator=coord,
                              replicas=SimpleNamespace(leaders={(OFFSETS_TOPIC, p_gained): 1,
                                                                (OFFSETS_TOPIC, p_led): 1}))
    offsets_partition_moved(cluster, p_gained, True)  # type: ignore[arg-type]
    assert coord.txn_offsets == {7: {led: {("t", 1): offset(5)}}}
