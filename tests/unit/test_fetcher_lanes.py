"""The follower's fetcher keeps partitions that are catching up out of the lane of those keeping up."""

from __future__ import annotations

from typing import Any

from odradek.cluster.fetcher import CATCH_UP, MAIN, LaneMap


def test_a_new_partition_catches_up_first_then_moves_to_the_main_lane_once_in_sync() -> None:
    lanes = LaneMap()
    partitions: dict[tuple[str, int], Any] = {("t", 0): "fs0"}
    lanes.add(("t", 0))
    assert lanes.members(CATCH_UP, partitions) == ["fs0"]
    assert lanes.members(MAIN, partitions) == []
    assert lanes.answered(("t", 0), in_sync=False) is None  # still behind: stays
    assert lanes.answered(("t", 0), in_sync=True) == MAIN  # caught up: the main lane takes it
    assert lanes.members(MAIN, partitions) == ["fs0"]
    assert lanes.members(CATCH_UP, partitions) == []
    assert lanes.answered(("t", 0), in_sync=True) is None


def test_a_partition_falling_behind_goes_back_to_the_catch_up_lane() -> None:
    lanes = LaneMap()
    partitions: dict[tuple[str, int], Any] = {("t", 0): "fs0", ("t", 1): "fs1"}
    for tp in partitions:
        lanes.add(tp)
        lanes.answered(tp, in_sync=True)
    assert lanes.answered(("t", 1), in_sync=False) == CATCH_UP
    assert lanes.members(MAIN, partitions) == ["fs0"]
    assert lanes.members(CATCH_UP, partitions) == ["fs1"]


def test_a_removed_partition_is_in_no_lane_and_a_late_answer_does_not_bring_it_back() -> None:
    lanes = LaneMap()
    lanes.add(("t", 0))
    lanes.remove(("t", 0))
    assert lanes.answered(("t", 0), in_sync=True) is None
    partitions: dict[tuple[str, int], Any] = {("t", 0): "fs0"}
    assert lanes.members(MAIN, partitions) == [] and lanes.members(CATCH_UP, partitions) == []
    lanes.add(("t", 0))  # following again (a new leader epoch): catching up first
    assert lanes.members(CATCH_UP, partitions) == ["fs0"]
