"""The group coordinator: classic consumer groups and their committed offsets."""

from odradek.coordinator.coordinator import GroupCoordinator
from odradek.coordinator.group import Group, GroupState

__all__ = ["Group", "GroupCoordinator", "GroupState"]
