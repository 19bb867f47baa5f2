"""Replaying the KIP-848 consumer-group records of __consumer_offsets (Kafka's
GroupMetadataManager.replay): the groups, their members, target and current
assignments as the log holds them, when the group coordinator loads a partition.
"""

from __future__ import annotations

import time

from odradek.coordinator import consumer_records as cr
from odradek.coordinator.consumer_group import ConsumerGroup, ConsumerMember
from odradek.coordinator.group import Group


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def is_consumer_record(key_bytes: bytes) -> bool:
    return len(key_bytes) >= 2 and int.from_bytes(key_bytes[:2], "big", signed=True) in cr.CONSUMER_RECORD_TYPES


def replay_consumer_record(groups: dict[str, Group], key_bytes: bytes, value: bytes | None) -> None:
    """Apply one consumer-group record of __consumer_offsets (Kafka's GroupMetadataManager.replay)."""
    k = cr.read_key(key_bytes)
    if k.kind == cr.CONSUMER_GROUP_REGULAR_EXPRESSION:
        return
    group = groups.get(k.group)
    if not isinstance(group, ConsumerGroup):
        if value is None:
            return
        fresh = ConsumerGroup(k.group, _now_ms())
        if group is not None:
            fresh.offsets = group.offsets
        group = groups[k.group] = fresh
    group.stored = True
    if k.kind == cr.CONSUMER_GROUP_METADATA:
        if value is None:  # the group was deleted; offsets written after it stay
            del groups[k.group]
            if group.offsets:
                plain = groups[k.group] = Group(k.group, _now_ms())
                plain.offsets = group.offsets
            return
        group.group_epoch = cr.read_epoch(value)
    elif k.kind == cr.CONSUMER_GROUP_PARTITION_METADATA:
        group.subscription_metadata = cr.read_partition_metadata(value) if value is not None else {}
    elif k.kind == cr.CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA:
        group.assignment_epoch = cr.read_epoch(value) if value is not None else 0
    elif k.kind == cr.CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER:
        if value is None:
            group.target.pop(k.member_id or "", None)
        else:
            group.target[k.member_id or ""] = cr.read_target_member(value)
    elif k.kind == cr.CONSUMER_GROUP_MEMBER_METADATA:
        if value is None:
            group.remove_consumer(k.member_id or "")
        else:
            member = group.consumers.get(k.member_id or "") or ConsumerMember(k.member_id or "")
            member.load_metadata(cr.read_member_metadata(value))
            group.add_consumer(member)
    elif k.kind == cr.CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT:
        current = group.consumers.get(k.member_id or "")
        if value is not None:
            if current is None:
                current = group.consumers[k.member_id or ""] = ConsumerMember(k.member_id or "")
            current.load_assignment(cr.read_current_assignment(value))
        elif current is not None:
            current.assigned, current.pending_revocation = {}, {}


def finish_replay(groups: dict[str, Group]) -> None:
    """After a replay: who holds which partition, and each consumer group's state."""
    now = _now_ms()
    for group in groups.values():
        if isinstance(group, ConsumerGroup):
            group.rebuild_owners()
            group.refresh_state(now)
