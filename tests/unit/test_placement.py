"""Replica placement (cluster/placement.py): Kafka's AdminUtils layouts, without a cluster."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from odradek.cluster.placement import (
    PlacementError,
    assign_replicas,
    distinct_racks,
    rack_alternated,
    rack_preferred,
)


def test_rack_unaware_layout_is_kafkas() -> None:
    # AdminUtils' documented example: 5 brokers, 10 partitions, 3 replicas, start 0
    layout = assign_replicas({b: None for b in range(5)}, 10, 3, fixed_start=0)
    assert layout[:5] == [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 0], [4, 0, 1]]
    assert layout[5:] == [[0, 2, 3], [1, 3, 4], [2, 4, 0], [3, 0, 1], [4, 1, 2]]  # followers shifted by one


def test_rack_alternated_broker_list() -> None:
    assert rack_alternated({0: "a", 1: "a", 2: "b", 3: "c", 4: "c", 5: "a"}) == [0, 2, 3, 1, 4, 5]


@pytest.mark.parametrize("racks", [
    {0: "a", 1: "a", 2: "b", 3: "b"},
    {0: "a", 1: "b", 2: "c", 3: "a", 4: "b", 5: "c"},
    {0: "a", 1: "a", 2: "a", 3: "b"},
    {10: "z1", 11: "z2", 12: "z3", 13: "z1", 14: "z2"},
])
def test_rack_aware_replicas_are_in_distinct_racks(racks: dict[int, str]) -> None:
    rack_count = len(set(racks.values()))
    for rf, start, first in itertools.product(range(1, len(racks) + 1), range(len(racks)), (0, 7)):
        layout = assign_replicas(racks, 24, rf, fixed_start=start, first_partition=first)
        for replicas in layout:
            assert len(set(replicas)) == rf
            assert distinct_racks(replicas, racks) == min(rf, rack_count), (rf, start, replicas)
        if rf == 1:  # the first replicas (preferred leaders) go round every broker
            assert Counter(r[0] for r in layout) == Counter({b: 24 // len(racks) for b in racks}) or 24 % len(racks)


def test_brokers_without_a_rack_get_the_rack_unaware_layout() -> None:
    mixed = {0: "a", 1: None, 2: "b"}
    assert assign_replicas(mixed, 6, 2, fixed_start=1) == assign_replicas({0: None, 1: None, 2: None}, 6, 2,
                                                                          fixed_start=1)


def test_more_replicas_than_brokers_is_refused_in_kafkas_words() -> None:
    with pytest.raises(PlacementError, match="replication factor: 4 larger than available brokers: 3"):
        assign_replicas({0: "a", 1: "b", 2: "c"}, 1, 4)


def test_rack_preferred_picks_brokers_in_racks_the_partition_is_not_in() -> None:
    racks = {0: "a", 1: "a", 2: "b", 3: "c"}
    assert rack_preferred([1, 2, 3], others=[0], racks=racks) == [2, 3]
    assert rack_preferred([1], others=[0], racks=racks) == [1]  # no better one: any
    assert rack_preferred([1, 2], others=[0], racks={}) == [1, 2]  # no racks
